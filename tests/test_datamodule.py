"""TalkingHeadDataModule: documented shapes and dtypes for both stages, determinism of evaluation samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamhead_lit.data.datamodule import TalkingHeadDataModule


def test_stage1_batch_has_documented_shapes(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=3, window=16, audio_context=2)
    dm.prepare_data()
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    k, d = dm.audio_shape
    assert (k, d) == (20, 80)
    expected = {
        "audio": ((3, 16, 20, 80), torch.float32),
        "landmarks": ((3, 16, 100, 2), torch.float32),
        "ref_landmarks": ((3, 100, 2), torch.float32),
        "to_image": ((3, 16, 2, 3), torch.float32),
        "emotion": ((3,), torch.int64),
        "intensity": ((3,), torch.int64),
        "identity": ((3,), torch.int64),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(b[key].shape) == shape and b[key].dtype == dtype, key
    # canonical landmarks are in face units (jaw half-width ≈ 1), not pixels
    assert b["landmarks"].abs().max() < 2.0
    assert (tiny_synth / "clips" / dm.datasets["train"].readers[0].record.id / "features" / "logmel80.npy").is_file()


def test_stage1_landmarks_map_back_to_pixels(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=2, window=16)
    dm.setup()
    ds = dm.datasets["val"]
    item = ds[0]
    reader = ds.readers[0]
    pix = np.einsum("tij,tnj->tni", item["to_image"][..., :2].numpy(), item["landmarks"].numpy())
    pix += item["to_image"][:, None, :, 2].numpy()
    np.testing.assert_allclose(pix, np.asarray(reader.landmarks[0:16]), atol=1e-3)


def test_sparse_landmark_set_and_context_change_shapes(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=2, window=8, landmark_set="68", audio_context=0)
    dm.setup()
    b = next(iter(dm.val_dataloader()))
    assert b["landmarks"].shape == (2, 8, 68, 2) and b["audio"].shape == (2, 8, 4, 80)


def test_stage2_batch_has_documented_shapes(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    for key in ("frame", "ref_frame", "masked_frame", "landmark_image", "ref_landmark_image"):
        assert b[key].shape == (4, 3, 64, 64) and b[key].dtype == torch.float32, key
    assert b["mask"].shape == (4, 1, 64, 64)
    assert b["frame"].min() >= -1 and b["frame"].max() <= 1
    assert b["landmark_image"].min() >= 0 and b["landmark_image"].max() <= 1
    # the masked frame hides exactly the masked area
    assert torch.all(b["masked_frame"][b["mask"].expand_as(b["frame"]) > 0] == 0)
    # a reference is another frame of the same identity, not the target itself
    assert not torch.equal(b["ref_frame"], b["frame"])


def test_evaluation_samples_are_deterministic_and_training_samples_seeded(tiny_synth):
    import lightning as L

    dm = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=2, window=16)
    dm.setup()
    v1, v2 = dm.datasets["val"][1], dm.datasets["val"][1]
    assert torch.equal(v1["landmarks"], v2["landmarks"]) and torch.equal(v1["ref_landmarks"], v2["ref_landmarks"])
    L.seed_everything(3, verbose=False)
    a = dm.datasets["train"][0]["start"]
    L.seed_everything(3, verbose=False)
    assert dm.datasets["train"][0]["start"] == a


def test_workers_load_the_same_evaluation_batches(tiny_synth):
    dm0 = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, num_workers=0)
    dm2 = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, num_workers=2)
    dm0.setup()
    dm2.setup()
    for b0, b2 in zip(dm0.val_dataloader(), dm2.val_dataloader()):
        assert torch.equal(b0["frame"], b2["frame"]) and torch.equal(b0["ref_frame"], b2["ref_frame"])


def test_bad_arguments_are_clear(tiny_synth):
    with pytest.raises(ValueError, match="stage must be 'a2l'"):
        TalkingHeadDataModule(root=tiny_synth, stage="a2i")
    dm = TalkingHeadDataModule(root=tiny_synth, stage="a2l", val_split="nope")
    dm.setup()
    with pytest.raises(ValueError, match="split 'nope' has no usable clips"):
        dm.val_dataloader()
    with pytest.raises(FileNotFoundError, match="not a processed dataset"):
        TalkingHeadDataModule(root=tiny_synth / "missing", stage="a2l").setup()
