"""Stochastic methods' several samples of a clip: the Motion spread column (``metrics.lmd.motion_spread``), the
sample videos beside a method's video (``bench.methods.base.sample_videos``) and how the report shows them."""
from __future__ import annotations

import numpy as np
import pytest

from dreamhead_lit.bench import run_bench
from dreamhead_lit.bench.methods import register_method, sample_videos
from dreamhead_lit.bench.methods.reference import StaticReferenceMethod
from dreamhead_lit.metrics.lmd import MOTION_POINTS, motion_spread
from test_bench import LANDMARKER_LABEL, backends, make_cfg, read_csv, structured

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:LPIPSMetric. RANDOM AlexNet trunk")]

GAINS = (1.0, 0.8, 0.6)  # the main video and its two samples: the same frame, darker


def test_motion_spread_is_the_std_across_samples_without_the_mouth():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 68, 2))
    assert motion_spread([base, base.copy(), base.copy()]) == pytest.approx(0.0, abs=1e-12)
    moved = base.copy()
    moved[:, MOTION_POINTS] += 2.0  # every non-mouth point 2 px right and down in one of two samples
    assert motion_spread([base, moved]) == pytest.approx(1.0)  # std of {0, 2} is 1, in x and y alike
    lips = base.copy()
    lips[:, 48:] += 5.0  # the mouth does not count
    assert motion_spread([base, lips]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        motion_spread([base])


class _ShiftLandmarker:
    """A 68-point template moved right by the frame's mean brightness (so darker samples read as other poses)."""

    def __init__(self) -> None:
        self.template = np.random.default_rng(1).normal(scale=8.0, size=(68, 2)) + 32

    def __call__(self, frame):
        return self.template + np.array([10.0 * frame.mean() / 255.0, 0.0])


@register_method("test_sampled_static")
class SampledStatic(StaticReferenceMethod):
    """The first frame held still, and two more "samples" of it at lower brightness."""

    def generate(self, clip, out):
        from dreamhead_lit.video import write_video

        frames = np.repeat(clip.frames[:1], clip.record.num_frames, axis=0)
        for k, gain in enumerate(GAINS):
            path = out if k == 0 else out.with_name(f"{out.stem}.sample{k}.mp4")
            write_video(path, (frames * gain).round().astype(np.uint8), fps=clip.fps, audio=clip.audio)


def test_a_method_with_samples_gets_a_motion_spread_others_do_not(tiny_synth, tmp_path):
    methods = {"static": {"kind": "static_reference", "label": "static"},
               "sampled": {"kind": "test_sampled_static", "label": "sampled"}}
    cfg = make_cfg(tiny_synth, tmp_path, methods=methods, metrics=["lmd"], max_clips=1)
    lm = _ShiftLandmarker()
    result = run_bench(structured(cfg), backends=backends(landmarker=(lm, LANDMARKER_LABEL)))
    rows = {r["method"]: r for r in result.table}
    assert rows["static"]["motion_spread"] == "n/a"
    clip = result.per_clip[0]["clip"]
    video = result.out_dir / "videos" / "sampled" / f"{clip}.mp4"
    assert [p.name for p in sample_videos(video)] == [f"{clip}.sample1.mp4", f"{clip}.sample2.mp4"]
    # what the landmarker reads: x offsets 10·brightness of the three videos (codec-exact brightness not assumed)
    spread = float(rows["sampled"]["motion_spread"])
    from dreamhead_lit.video import read_video

    means = [read_video(v, with_audio=False).frames.mean() for v in [video, *sample_videos(video)]]
    expected = np.std([10.0 * m / 255.0 for m in means]) / np.sqrt(2)  # x only; RMS over x and y
    assert spread == pytest.approx(expected, rel=0.05) and spread > 0.3
    head, per_clip = read_csv(result.out_dir / "per_clip.csv")
    assert "motion_spread" in head
    md = (result.out_dir / "table.md").read_text()
    assert "Motion spread" in md and "0 = every seed moves alike" in md


def test_without_samples_the_column_is_not_shown(tiny_synth, tmp_path):
    cfg = make_cfg(tiny_synth, tmp_path, methods={"static": {"kind": "static_reference"}}, metrics=["lmd"],
                   max_clips=1)
    result = run_bench(structured(cfg), backends=backends())
    assert "Motion spread" not in (result.out_dir / "table.md").read_text()


def test_a_regenerated_video_leaves_no_stale_samples(tmp_path):
    from dreamhead_lit.bench.methods.base import Method

    class Once(Method):
        def key(self):
            return {"kind": "once", "n": self.n}

        def generate(self, clip, out):
            out.write_bytes(b"video")

    video = tmp_path / "c.mp4"
    (tmp_path / "c.sample1.mp4").write_bytes(b"old sample")
    m = Once.__new__(Once)
    m.n = 1
    clip = type("C", (), {"id": "c"})()
    m.video(clip, tmp_path)
    assert video.is_file() and sample_videos(video) == []
