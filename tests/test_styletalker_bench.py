"""The bench's StyleTalker† kinds (``styletalker``, ``styletalker_reconstruction``) with stand-ins of the frame
autoencoder and the motion model that follow their documented interfaces: what reaches the motion model (the first
frame's code and mouth-masked code, the driving clip's masked codes, the seeds), the videos and sample videos, the
facts and notes, and the Motion spread a sampled row gets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamhead_lit.baselines.styletalker.bench import StyleTalkerMethod, StyleTalkerReconstructionMethod
from dreamhead_lit.bench import MethodConfig, bench_context, run_bench, select_clips
from dreamhead_lit.bench.methods import sample_videos
from dreamhead_lit.config import ConfigError
from dreamhead_lit.video import read_video

from test_bench import LANDMARKER_LABEL, backends, make_cfg, structured
from test_bench_samples import _ShiftLandmarker

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, RES, FRAMES = 6, 32, 10


class FakeAutoencoder:
    """``encode_clip(frames, landmarks=None)`` -> (T, D) codes (the frames' mean colour; the last channel says whether
    the mouth was masked), ``decode(codes)`` -> flat frames whose brightness is the first channel."""

    resolution, latent_dim = RES, DIM

    def __init__(self, root) -> None:
        self.hparams = {"resolution": RES}
        self.data_info = {"root": str(root), "source_resolution": 64}
        self.encoded: list[dict] = []

    def encode_clip(self, frames, *, landmarks=None):
        self.encoded.append({"frames": len(frames), "masked": landmarks is not None})
        x = np.asarray(frames, np.float32).mean(axis=(1, 2)) / 127.5 - 1  # (T, 3)
        codes = np.zeros((len(frames), DIM), np.float32)
        codes[:, :3] = x
        codes[:, -1] = 1.0 if landmarks is not None else 0.0
        return torch.from_numpy(codes)

    def decode(self, codes):
        level = torch.tanh(codes[..., :1])  # (..., 1)
        return level[..., None, None].expand(*codes.shape[:-1], 3, RES, RES).clone()


class FakeMotion:
    """The motion model's ``generate``: codes whose brightness channel depends on the seed (audio mode) or follows
    the driving codes (clip mode), recording what it was given."""

    def __init__(self, root, *, prior="flow", sync=True) -> None:
        self.hparams = {"net": {"prior": prior}, "sync_discriminator": {"run": "demo"} if sync else {"run": None},
                        "loss": {"sync_weight": 0.1}}
        self.data_info = {"root": str(root), "source_resolution": 64}
        self.calls: list[dict] = []

    def generate(self, audio, *, reference_code, reference_motion_code, num_frames=None, motion_codes=None, seed=0,
                 temperature=1.0):
        self.calls.append({"audio": len(audio), "reference_code": reference_code, "num_frames": num_frames,
                           "reference_motion_code": reference_motion_code, "motion_codes": motion_codes,
                           "seed": seed, "temperature": temperature})
        codes = np.repeat(np.asarray(reference_code, np.float32)[None], num_frames, axis=0)
        codes[:, 0] = 0.8 * seed / 3 - 0.4 if motion_codes is None else motion_codes[:, 0]
        return codes


def method(root, cfg, *, options=None, motion=None, ae=None, name="st"):
    return StyleTalkerMethod(name, MethodConfig(kind="styletalker", options=options or {}), bench_context(cfg),
                             motion=motion or FakeMotion(root), autoencoder=ae or FakeAutoencoder(root))


def test_audio_mode_gives_the_first_frames_codes_and_writes_samples_with_their_seeds(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["lmd"], max_clips=1, max_frames=FRAMES, methods={}))
    motion, ae = FakeMotion(tiny_synth), FakeAutoencoder(tiny_synth)
    st = method(tiny_synth, cfg, options={"samples": 3, "seed": 4}, motion=motion, ae=ae)
    result = run_bench(cfg, methods={"st": st}, backends=backends(landmarker=(_ShiftLandmarker(), LANDMARKER_LABEL)))
    clip = select_clips(tiny_synth, ["test"], 1, FRAMES)[0]
    assert [c["seed"] for c in motion.calls] == [4, 5, 6] and all(c["motion_codes"] is None for c in motion.calls)
    first = motion.calls[0]
    assert first["num_frames"] == FRAMES and first["audio"] == FRAMES * 640
    np.testing.assert_allclose(first["reference_code"], ae.encode_clip(clip.frames[:1])[0].numpy())
    assert first["reference_motion_code"][-1] == 1.0  # the masked frame's code
    video = result.out_dir / "videos" / "st" / f"{clip.id}.mp4"
    assert read_video(video).frames.shape == (FRAMES, 64, 64, 3)
    assert len(sample_videos(video)) == 2
    row = result.table[0]
    assert float(row["motion_spread"]) > 0.1  # three seeds, three brightness levels, three landmark positions
    assert row["protocol"] == "one-shot (first frame)" and row["uses_source_video"] is False
    assert result.facts["st"] == {"kind": "styletalker", "motion_source": "audio", "prior": "flow",
                                  "sync_discriminator": True}
    assert "frame autoencoder trained on the dataset" in result.markdown and "StyleTalker†" in result.markdown


def test_clip_mode_drives_the_motion_with_the_clips_masked_codes(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, max_frames=FRAMES, methods={}))
    motion, ae = FakeMotion(tiny_synth), FakeAutoencoder(tiny_synth)
    st = method(tiny_synth, cfg, options={"motion_source": "clip", "samples": 3}, motion=motion, ae=ae)
    result = run_bench(cfg, methods={"st": st})
    (call,) = motion.calls  # no samples: the motion is the clip's
    assert call["motion_codes"].shape == (FRAMES, DIM) and (call["motion_codes"][:, -1] == 1.0).all()
    clip = select_clips(tiny_synth, ["test"], 1, FRAMES)[0]
    assert sample_videos(result.out_dir / "videos" / "st" / f"{clip.id}.mp4") == []
    assert result.table[0]["protocol"] == "one-shot (first frame), motion from clip"
    assert result.facts["st"]["motion_source"] == "clip"


def test_ablated_models_say_so_in_their_facts_and_notes(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path, methods={}))
    st = method(tiny_synth, cfg, motion=FakeMotion(tiny_synth, prior="gaussian", sync=False))
    assert st.facts() == {"kind": "styletalker", "motion_source": "audio", "prior": "gaussian",
                          "sync_discriminator": False}
    assert "Gaussian prior" in st.describe() and "WITHOUT the lip-sync discriminator" in st.describe()


def test_bad_options_are_refused_by_name(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path, methods={}))
    with pytest.raises(ConfigError, match="motion_source"):
        method(tiny_synth, cfg, options={"motion_source": "video"})
    with pytest.raises(ConfigError, match="unknown"):
        method(tiny_synth, cfg, options={"noise": 1})


def test_reconstruction_decodes_the_true_frames_codes(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, max_frames=FRAMES, methods={}))
    ae = FakeAutoencoder(tiny_synth)
    rec = StyleTalkerReconstructionMethod("rec", MethodConfig(kind="styletalker_reconstruction"), bench_context(cfg),
                                          autoencoder=ae)
    result = run_bench(cfg, methods={"rec": rec})
    assert ae.encoded == [{"frames": FRAMES, "masked": False}]
    assert result.table[0]["protocol"] == "autoencoder bound" and result.table[0]["uses_source_video"] is True
    assert float(result.table[0]["ssim"]) > 0
