"""A model's size and the data's resolution are independent: both stages build and run a step for every
(size, resolution) pair, and stage 2 works at its size's resolution whatever the data's."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.data.clip import read_index, write_index
from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit import registry

pytestmark = pytest.mark.usefixtures("one_thread")

RESOLUTIONS = (64, 128, 256, 512)


def _resized_dataset(src: Path, dst: Path, size: int) -> Path:
    """Two clips of ``src`` (one train, one val) with frames resized to ``size`` and landmarks scaled to match."""
    records = read_index(src)
    keep = [next(r for r in records if r.split == s) for s in ("train", "val")]
    dst.mkdir(parents=True)
    info = json.loads((src / "dataset.json").read_text())
    scale = size / info["resolution"]
    (dst / "dataset.json").write_text(json.dumps({**info, "resolution": size}))
    for rec in keep:
        shutil.copytree(src / "clips" / rec.id, dst / "clips" / rec.id, ignore=shutil.ignore_patterns("features"))
        d = dst / "clips" / rec.id
        frames = np.load(d / "frames.npy")
        big = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])
        np.save(d / "frames.npy", big)
        for name in ("landmarks", "landmarks68"):
            np.save(d / f"{name}.npy", (np.load(d / f"{name}.npy") * scale).astype(np.float32))
    write_index(dst, keep)
    return dst


@pytest.fixture(scope="module")
def datasets(tiny_synth, tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("sizes")
    return {r: _resized_dataset(tiny_synth, root / f"res{r}", r) for r in RESOLUTIONS}


def _one_step(stage: str, size: str, root: Path) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    spec = registry.get(stage)
    cfg = load_config(f"{stage}/{size}.yaml", [f"data.root={root}", "data.batch_size=1", "data.num_workers=0",
                                               "data.frames_per_clip=1", "data.windows_per_clip=1",
                                               "data.window=16"], schema=spec.schema_class())
    dm = spec.make_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    batch = next(iter(dm.train_dataloader()))
    if hasattr(module, "motion_std"):  # measured by the trainer's first batch; no trainer here
        module.motion_std.fill_(0.05)
    with torch.no_grad():
        loss = module.training_step(batch, 0)
    return module, batch, loss


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("size", ["demo", "paper"])
def test_both_stages_build_and_step_for_every_size_and_resolution(datasets, size, resolution):
    for stage in ("stage1", "stage2"):
        module, batch, loss = _one_step(stage, size, datasets[resolution])
        assert torch.isfinite(loss), (stage, size, resolution)
        if stage == "stage2":
            working = {"demo": 64, "paper": 256}[size]
            assert batch["frame"].shape[-1] == working and batch["landmark_image"].shape[-1] == working
            assert module.data_info["resolution"] == working
            assert module.data_info["source_resolution"] == resolution


def test_landmarks_are_scaled_with_the_frames(datasets):
    """A 256 px dataset at working resolution 64: the landmark image of a sample is the one the 64 px data gives."""
    samples = {}
    for r in (64, 256):
        dm = TalkingHeadDataModule(root=datasets[r], stage="l2i", batch_size=1, frames_per_clip=1, working_resolution=64)
        dm.setup()
        samples[r] = dm.datasets["val"][0]
    assert samples[256]["landmarks"].numpy() == pytest.approx(samples[64]["landmarks"].numpy(), abs=1e-3)
    assert torch.allclose(samples[256]["landmark_image"], samples[64]["landmark_image"], atol=1e-4)
    # the frames agree up to the resampling of the fixture (64 -> 256 -> 64)
    assert (samples[256]["frame"] - samples[64]["frame"]).abs().mean() < 0.05


def test_a_unet_that_does_not_fit_the_data_is_a_config_error_naming_the_keys(datasets):
    spec = registry.get("stage2")
    cfg = load_config("stage2/demo.yaml", [f"data.root={datasets[256]}", "data.working_resolution=null"],
                      schema=spec.schema_class())
    dm = spec.make_datamodule(cfg)
    with pytest.raises(ConfigError, match="data.working_resolution"):
        spec.build_module(cfg, dm)
