"""The bench's ``dreamtalk`` method kind with tiny untrained modules: every style source reaches the denoiser as it
should, the rows carry their facts, and the frames are stage 2's rendering of DreamTalk†'s landmarks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamhead_lit.baselines.dreamtalk.bench import DreamTalkMethod
from dreamhead_lit.bench import MethodConfig, bench_context, run_bench, select_clips
from dreamhead_lit.bench.config import MethodUnavailable
from dreamhead_lit.config import ConfigError
from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit.lit.l2i import L2IDiffusion

from test_bench import make_cfg, structured
from test_dreamtalk import dm, tiny_module  # noqa: F401,F811  (dm: the module-scoped DataModule fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

NET2 = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [16],
        "head_channels": 8, "norm_groups": 4, "dropout": 0.0, "patch_size": 2, "mode": "dubbing"}


@pytest.fixture(scope="module")
def models(dm, tiny_synth):  # noqa: F811
    torch.manual_seed(0)
    dm2 = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, frames_per_clip=2)
    dm2.setup()
    l2i = L2IDiffusion.from_datamodule(dm2, net=NET2).eval()
    denoiser = tiny_module(dm).eval()
    denoiser.hparams["lip_expert"] = {"variant": "style"}
    return denoiser, l2i


class Predictor:
    """A style predictor stand-in: a fixed code, and what it was asked."""

    def __init__(self, dim: int) -> None:
        self.code, self.calls = torch.full((dim,), 0.5), []

    def predict_style(self, audio, portrait, *, seed=0):
        self.calls.append((len(audio), portrait.shape, seed))
        return self.code


def test_each_style_source_reaches_the_denoiser_and_the_rows_say_which(tiny_synth, tmp_path, models):
    denoiser, l2i = models
    given: list[dict] = []
    original = denoiser.generate

    def recording(audio, **kw):
        given.append(kw)
        return original(audio, **kw)

    denoiser.generate = recording
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim", "ssim_mouth"], max_clips=1, max_frames=12,
                              methods={}))
    ctx = bench_context(cfg)
    predictor = Predictor(denoiser.net.null_style.numel())
    methods = {}
    for source in ("same_clip", "other_identity_same_emotion", "predicted", "none"):
        mcfg = MethodConfig(kind="dreamtalk", steps=1, batch_size=64,
                            options={"style_source": source, "motion_steps": 2, "style_frames": 8, "guidance_scale": 2.0})
        methods[source] = DreamTalkMethod(source, mcfg, ctx, stage2=l2i, denoiser=denoiser, style_predictor=predictor)
    result = run_bench(cfg, methods=methods)
    assert [r["status"] for r in result.per_clip] == ["ok"] * 4
    clip = select_clips(tiny_synth, ["test"], 1, 12)[0]
    data = methods["same_clip"].data
    dataset, index = methods["same_clip"]._dataset_of(clip.id)
    own = dataset.canonical(dataset.readers[index], 0, 8)[0]
    same, other, predicted, none = given
    np.testing.assert_array_equal(same["style_landmarks"], own)  # the clip's own first frames: the leak, labelled
    assert other["style_landmarks"].shape == own.shape and not np.allclose(other["style_landmarks"], own)
    ref_of = {i: r for i, r in data.references.items()}
    assert not np.array_equal(other["style_ref_landmarks"], ref_of[clip.record.identity])  # another identity's
    assert predicted["style"] is predictor.code and predictor.calls == [(12 * 640, own.shape[1:], 0)]
    assert none["style"] == "none"
    for kw in given:  # the identity's neutral reference, the settings of the row
        np.testing.assert_array_equal(kw["ref_landmarks"], ref_of[clip.record.identity])
        assert kw["num_frames"] == 12 and kw["guidance_scale"] == 2.0 and kw["steps"] == 2
    facts = {name: m.facts() for name, m in methods.items()}
    assert facts["none"] == {"kind": "dreamtalk", "lip_expert": "style", "style_source": "none", "guidance_scale": 2.0}
    assert "LEAKS" in result.markdown and "rendered by DreamHead stage 2" in result.markdown
    for name in methods:  # the landmarks DreamTalk† drew, kept beside each video for the emotion column's motion reading
        drawn = np.load(result.out_dir / "videos" / name / f"{clip.id}.landmarks68.npy")
        assert drawn.shape == (12, 68, 2) and np.isfinite(drawn).all()


def test_the_other_identity_style_clip_has_the_emotion_and_is_stable(tiny_synth, tmp_path, models):
    denoiser, l2i = models
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], methods={}))
    ctx = bench_context(cfg)
    method = DreamTalkMethod("dt", MethodConfig(kind="dreamtalk"), ctx, stage2=l2i, denoiser=denoiser)
    found = 0
    for clip in select_clips(tiny_synth, ["test", "test_seen"], None):
        try:
            dataset, s = method._style_clip(clip)
        except MethodUnavailable as err:  # the tiny dataset lacks some (identity, emotion) pairs: that clip's error
            assert f"no clip of another identity with emotion {clip.record.emotion!r}" in str(err)
            continue
        found += 1
        style = dataset.readers[s].record
        assert style.identity != clip.record.identity and style.emotion == clip.record.emotion
        assert method._style_clip(clip) == (dataset, s)
    assert found >= 2


def test_bad_settings_are_config_errors_and_missing_runs_are_the_rows_reason(tiny_synth, tmp_path, models):
    denoiser, l2i = models
    ctx = bench_context(structured(make_cfg(tiny_synth, tmp_path, methods={})))
    with pytest.raises(ConfigError, match="style_source"):
        DreamTalkMethod("dt", MethodConfig(kind="dreamtalk", options={"style_source": "mirror"}), ctx, stage2=l2i,
                        denoiser=denoiser)
    with pytest.raises(ConfigError, match="unknown"):
        DreamTalkMethod("dt", MethodConfig(kind="dreamtalk", options={"guidance": 2}), ctx, stage2=l2i,
                        denoiser=denoiser)
    with pytest.raises(MethodUnavailable, match=r"no dreamtalk checkpoint.*--method dreamtalk \(make train-dreamtalk\)"):
        DreamTalkMethod("dt", MethodConfig(kind="dreamtalk"), ctx, stage2=l2i)
    # a key per setting: a cached video of one guidance scale is never served for another
    keys = {DreamTalkMethod("dt", MethodConfig(kind="dreamtalk", options={"guidance_scale": g}), ctx, stage2=l2i,
                            denoiser=denoiser).key()["guidance_scale"] for g in (0.0, 1.0, 3.0)}
    assert keys == {0.0, 1.0, 3.0}
