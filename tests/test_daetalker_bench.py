"""The bench's DAE-Talker† kinds (``daetalker``, ``daetalker_reconstruction``) with a real tiny diffusion autoencoder
and speech2latent (untrained: the plumbing is under test, not the frames) or stand-ins of speech2latent with its
documented ``generate``: the videos, the pose that reaches speech2latent, the protocols and their rows, and the
bench's identity filter."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dreamhead_lit.baselines.daetalker.bench import DAEReconstructionMethod, DAETalkerMethod
from dreamhead_lit.baselines.daetalker.pose import pose_from_affine
from dreamhead_lit.baselines.daetalker.speech2latent import Speech2LatentDataModule
from dreamhead_lit.bench import BenchError, MethodConfig, bench_context, build_method, run_bench, select_clips
from dreamhead_lit.bench.config import MethodUnavailable
from dreamhead_lit.config import ConfigError
from dreamhead_lit.data.clip import read_index
from dreamhead_lit.video import read_video

from test_bench import make_cfg, structured
from test_daetalker_autoencoder import nontrivial, tiny_module as tiny_autoencoder
from test_daetalker_speech2latent import TINY_NET as S2L_NET, write_fake_cache
from test_l2i import dm  # noqa: F401  (stage 2's module-scoped DataModule fixture: the autoencoder's data)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

DIM = 16  # test_daetalker_autoencoder.TINY_NET's latent_dim
FRAMES = 12


@pytest.fixture(scope="module")
def autoencoder(dm):  # noqa: F811
    torch.manual_seed(0)
    return nontrivial(tiny_autoencoder(dm, sample_steps=2)).eval()


@pytest.fixture(scope="module")
def s2l_dm(tiny_synth, tmp_path_factory) -> Speech2LatentDataModule:
    run = write_fake_cache(tiny_synth, tmp_path_factory.mktemp("runs") / "daetalker_autoencoder" / "fake", dim=DIM)
    data = Speech2LatentDataModule(latents=run / "latents", root=tiny_synth, window=8, batch_size=4)
    data.prepare_data()
    data.setup()
    return data


@pytest.fixture(scope="module")
def speech2latent(s2l_dm):
    from dreamhead_lit.baselines.daetalker.speech2latent import Speech2LatentModule

    torch.manual_seed(0)
    return Speech2LatentModule.from_datamodule(s2l_dm, net=dict(S2L_NET)).eval()


class FakeSpeech2Latent:
    """speech2latent's documented interface: ``generate(audio, *, num_frames, pose, first_pose, reference_latent)``
    -> (latents (F, D), pose used (F, 4)), recording what it was given."""

    def __init__(self, root, *, net: dict | None = None, identities: list[str] | None = None, dim: int = DIM,
                 resolution: int = 64, autoencoder: dict | None = None) -> None:
        self.hparams = {"latent_dim": dim, "net": net or {}, "autoencoder": autoencoder}
        self.data_info = {"root": str(root), "source_resolution": resolution, "identities": identities}
        self.dim, self.calls = dim, []

    def generate(self, audio, *, num_frames=None, pose=None, first_pose=None, reference_latent=None):
        self.calls.append({"audio": len(audio), "num_frames": num_frames, "pose": pose, "first_pose": first_pose,
                           "reference_latent": reference_latent})
        z = np.random.default_rng(0).standard_normal((num_frames, self.dim)).astype(np.float32)
        return z, (np.zeros((num_frames, 4), np.float32) if pose is None else pose)


def recording(module, name: str) -> list[dict]:
    """Wrap ``module.<name>`` to record its keyword arguments (and the first positional one as ``arg``)."""
    calls: list[dict] = []
    original = getattr(module, name)

    def wrapper(arg, **kw):
        calls.append({"arg": arg, **kw})
        return original(arg, **kw)

    setattr(module, name, wrapper)
    return calls


def seen_identities(root) -> list[str]:
    return sorted({r.identity for r in read_index(root) if r.split == "test_seen"})


def test_daetalker_writes_the_clips_video_and_gives_speech2latent_the_clips_pose(tiny_synth, tmp_path, autoencoder,
                                                                                 speech2latent, s2l_dm):
    given = recording(speech2latent, "generate")
    try:
        cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, max_frames=FRAMES, methods={}))
        ctx = bench_context(cfg)
        methods = {source: DAETalkerMethod(source, MethodConfig(kind="daetalker", steps=1, batch_size=8,
                                                                options={"pose_source": source}), ctx,
                                           speech2latent=speech2latent, autoencoder=autoencoder)
                   for source in ("clip", "predicted")}
        result = run_bench(cfg, methods=methods)
    finally:
        del speech2latent.generate  # the class's own again
    assert [r["status"] for r in result.per_clip] == ["ok", "ok"]
    clip = select_clips(tiny_synth, ["test"], 1, FRAMES)[0]
    for name in methods:  # the clip's frame count and size, with its audio
        video = read_video(result.out_dir / "videos" / name / f"{clip.id}.mp4", with_audio=True)
        assert video.frames.shape == (FRAMES, 64, 64, 3) and video.audio is not None
        assert abs(len(video.audio) - FRAMES * 640) < 2048  # AAC pads a little
    # pose control: the clip's pose as speech2latent's training samples compute it (a validation window of that clip)
    test = s2l_dm.datasets["test"]
    c = next(i for i, r in enumerate(test.readers) if r.record.id == clip.id)
    window = test._item(test.index.index((c, 0)))
    truth = pose_from_affine(test.canonical(test.readers[c], 0, FRAMES)[1], test.ctx.source_resolution)
    by_clip, predicted = given
    np.testing.assert_array_equal(by_clip["pose"], truth)
    np.testing.assert_array_equal(by_clip["pose"][:8], window["pose"].numpy())
    assert by_clip["num_frames"] == FRAMES and len(by_clip["arg"]) == FRAMES * 640
    assert predicted.get("pose") is None and predicted.get("first_pose") is not None
    np.testing.assert_array_equal(predicted["first_pose"], truth[0])
    assert "reference_latent" not in by_clip  # a model without a reference frame is not given one
    facts = result.facts
    assert facts["clip"] == {"kind": "daetalker", "pose_source": "clip", "shared_noise": True,
                             "protocol": "multi_speaker", "pose_modelling": True}
    assert facts["predicted"]["pose_source"] == "predicted"
    row = result.table[0]
    assert row["protocol"] == "multi-speaker" and row["uses_source_video"] is False
    assert "DAE-Talker†" in result.markdown and "log-mel" in result.markdown and "not its pixels" in result.markdown


def test_reconstruction_decodes_the_true_frames_latents(tiny_synth, tmp_path, autoencoder):
    decoded = recording(autoencoder, "decode")
    try:
        cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, max_frames=FRAMES, methods={}))
        method = DAEReconstructionMethod("rec", MethodConfig(kind="daetalker_reconstruction", steps=1, batch_size=8),
                                         bench_context(cfg), autoencoder=autoencoder)
        result = run_bench(cfg, methods={"rec": method})
    finally:
        del autoencoder.decode
    clip = select_clips(tiny_synth, ["test"], 1, FRAMES)[0]
    assert [r["status"] for r in result.per_clip] == ["ok"]
    (call,) = decoded
    torch.testing.assert_close(call["arg"], autoencoder.encode_clip(clip.frames))  # the true frames' latents
    assert call["shared_noise"] is True and call["steps"] == 1 and call["noise_seed"] == 0
    assert result.facts["rec"] == {"kind": "daetalker_reconstruction", "shared_noise": True, "protocol": "multi_speaker"}
    row = result.table[0]
    assert row["protocol"] == "DAE bound" and row["uses_source_video"] is True
    assert read_video(result.out_dir / "videos" / "rec" / f"{clip.id}.mp4").frames.shape == (FRAMES, 64, 64, 3)
    assert "upper bound of DAE-Talker†" in result.markdown and "sees the whole source video" in result.markdown


def test_a_person_specific_model_has_no_video_of_other_identities(tiny_synth, tmp_path, autoencoder):
    me = seen_identities(tiny_synth)[0]
    fake = FakeSpeech2Latent(tiny_synth, identities=[me])
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_frames=FRAMES, methods={},
                              data={"root": str(tiny_synth), "test_splits": ["test_seen"]}))
    ctx = bench_context(cfg)
    method = DAETalkerMethod("ps", MethodConfig(kind="daetalker", steps=1, batch_size=16), ctx,
                             speech2latent=fake, autoencoder=autoencoder)
    assert method.protocol == "person-specific" and method.facts()["protocol"] == "person_specific"
    result = run_bench(cfg, methods={"ps": method})
    status = {r["clip"]: r["status"] for r in result.per_clip}
    mine = [c for c, s in status.items() if c.startswith(me)]
    assert [status[c] for c in mine] == ["ok"] and len(fake.calls) == 1
    others = [s for c, s in status.items() if c not in mine]
    assert len(others) == 2 and all(s.startswith("missing: no video for this clip (person-specific, trained on "
                                                 f"{me};") for s in others)
    row = result.table[0]
    assert (row["clips"], row["clips_expected"]) == (1, 3) and "2 clip(s) not scored" in row["status"]
    assert "| 1/3 |" in result.markdown
    # the bench restricted to that identity: every clip scored, and the report says which identity
    cfg = structured(make_cfg(tiny_synth, tmp_path / "only", metrics=["ssim"], max_frames=FRAMES, methods={},
                              identities=[me], data={"root": str(tiny_synth), "test_splits": ["test_seen"]}))
    result = run_bench(cfg, methods={"ps": DAETalkerMethod("ps", MethodConfig(kind="daetalker", steps=1), ctx,
                                                           speech2latent=fake, autoencoder=autoencoder)})
    assert [r["status"] for r in result.per_clip] == ["ok"]
    assert f"test_seen, identities {me} only (1 clips)" in result.markdown.splitlines()[0]
    # a person-specific model of nobody in the dataset: the row's one reason
    with pytest.raises(MethodUnavailable, match="person-specific, trained on \\['nobody'\\]"):
        DAETalkerMethod("x", MethodConfig(kind="daetalker"), ctx, autoencoder=autoencoder,
                        speech2latent=FakeSpeech2Latent(tiny_synth, identities=["nobody"]))


def test_multi_speaker_reference_latent_and_a_model_without_pose_modelling(tiny_synth, tmp_path, autoencoder):
    fake = FakeSpeech2Latent(tiny_synth, net={"reference": "first_frame", "pose_modelling": False})
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, max_frames=FRAMES, methods={}))
    method = DAETalkerMethod("ms", MethodConfig(kind="daetalker", steps=1, options={"pose_source": "clip"}),
                             bench_context(cfg), speech2latent=fake, autoencoder=autoencoder)
    result = run_bench(cfg, methods={"ms": method})
    assert [r["status"] for r in result.per_clip] == ["ok"]
    clip = select_clips(tiny_synth, ["test"], 1, FRAMES)[0]
    (call,) = fake.calls
    assert call["pose"] is None and call["first_pose"] is None  # no pose modelling: no pose goes in
    np.testing.assert_array_equal(call["reference_latent"], autoencoder.encode_clip(clip.frames[:1])[0].numpy())
    assert method.facts() == {"kind": "daetalker", "pose_source": "none", "shared_noise": True,
                              "protocol": "multi_speaker", "pose_modelling": False}
    assert method.protocol == "one-shot (first frame)" and method.uses_source_video is False
    assert "multi-speaker adaptation" in method.describe()


class SmallAutoencoder:
    """The autoencoder's interface at a 32 px working resolution (decodes grey frames), for the resize."""

    resolution, latent_dim = 32, DIM

    def __init__(self, root) -> None:
        from dreamhead_lit.lit.base import DiffusionConfig

        self.diffusion_cfg = DiffusionConfig(sampler="ddim", sample_steps=3)
        self.hparams = {"resolution": 32}
        self.data_info = {"root": str(root), "source_resolution": 64, "resolution": 32}

    def decode(self, latents, **_):
        return torch.zeros(len(latents), 3, 32, 32)


def test_frames_decoded_at_a_lower_resolution_are_resized_to_the_clips(tiny_synth, tmp_path):
    small = SmallAutoencoder(tiny_synth)
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, max_frames=FRAMES, methods={}))
    method = DAETalkerMethod("lo", MethodConfig(kind="daetalker"), bench_context(cfg),
                             speech2latent=FakeSpeech2Latent(tiny_synth), autoencoder=small)
    result = run_bench(cfg, methods={"lo": method})
    clip = select_clips(tiny_synth, ["test"], 1, FRAMES)[0]
    frames = read_video(result.out_dir / "videos" / "lo" / f"{clip.id}.mp4", with_audio=False).frames
    assert frames.shape == (FRAMES, 64, 64, 3) and abs(frames.astype(int) - 128).max() <= 2
    assert "decoded at 32 px and upsampled to the clip's 64 px" in method.describe()
    assert "(ddim, 3 steps)" in method.describe()  # the decoder's configured sampling when the row sets none


def test_settings_keys_and_missing_or_mismatched_models(tiny_synth, tmp_path, autoencoder):
    ctx = bench_context(structured(make_cfg(tiny_synth, tmp_path, methods={})))
    fake = FakeSpeech2Latent(tiny_synth)

    def method(options=None, **cfg):
        return DAETalkerMethod("d", MethodConfig(kind="daetalker", options=options or {}, **cfg), ctx,
                               speech2latent=fake, autoencoder=autoencoder)

    base = method().key()
    for changed in (method({"shared_noise": False}), method({"noise_seed": 3}), method(seed=3),
                    method({"pose_source": "predicted"}), method(steps=5)):
        assert changed.key() != base
    assert method({"shared_noise": False}).facts()["shared_noise"] is False
    assert method({"noise_seed": 3}).key() == method(seed=3).key()  # the noise seed defaults to the method's seed
    with pytest.raises(ConfigError, match="pose_source"):
        method({"pose_source": "mirror"})
    with pytest.raises(ConfigError, match="unknown"):
        method({"shared": True})
    with pytest.raises(ConfigError, match="shared_noise"):
        method({"shared_noise": "yes"})
    with pytest.raises(ConfigError, match="checkpoints: unknown"):
        method(checkpoints={"dreamtalk": "demo"})
    # registered kinds; no runs: the rows' reasons (the hint is find_checkpoint's)
    with pytest.raises(MethodUnavailable, match="no daetalker_speech2latent checkpoint"):
        build_method("d", MethodConfig(kind="daetalker"), ctx)
    with pytest.raises(MethodUnavailable, match="no daetalker_autoencoder checkpoint"):
        build_method("r", MethodConfig(kind="daetalker_reconstruction"), ctx)
    with pytest.raises(MethodUnavailable, match="no daetalker_speech2latent run 'demo'"):
        build_method("d", MethodConfig(kind="daetalker", checkpoints={"daetalker_speech2latent": "demo"}), ctx)
    # the autoencoder it learned from, recorded by speech2latent, is gone
    record = {"latents": str(tmp_path / "ae_run" / "latents"), "dim": DIM, "checkpoint": "last.ckpt"}
    with pytest.raises(MethodUnavailable, match=re.escape(str(tmp_path / "ae_run" / "checkpoints" / "last.ckpt"))):
        DAETalkerMethod("d", MethodConfig(kind="daetalker"), ctx,
                        speech2latent=FakeSpeech2Latent(tiny_synth, autoencoder=record))
    with pytest.raises(MethodUnavailable, match="does not record the autoencoder"):
        DAETalkerMethod("d", MethodConfig(kind="daetalker"), ctx, speech2latent=fake)
    # latents of another size, a model of another dataset
    with pytest.raises(MethodUnavailable, match="predicts 8-d latents.*decodes 16-d"):
        DAETalkerMethod("d", MethodConfig(kind="daetalker"), ctx, autoencoder=autoencoder,
                        speech2latent=FakeSpeech2Latent(tiny_synth, dim=8))
    with pytest.raises(MethodUnavailable, match="256 px frames"):
        DAETalkerMethod("d", MethodConfig(kind="daetalker"), ctx, autoencoder=autoencoder,
                        speech2latent=FakeSpeech2Latent(tiny_synth, resolution=256))


def test_the_bench_identity_filter(tiny_synth, tmp_path, capsys):
    seen = seen_identities(tiny_synth)
    clips = select_clips(tiny_synth, ["test", "test_seen"], None, identities=seen[:2])
    assert sorted({c.record.identity for c in clips}) == seen[:2] and {c.split for c in clips} == {"test_seen"}
    assert "split 'test' has no clips of identities" in capsys.readouterr().err
    # applied before max_clips: one clip of each split among the named identities' clips
    unseen = sorted({r.identity for r in read_index(tiny_synth) if r.split == "test"})
    one = select_clips(tiny_synth, ["test", "test_seen"], 1, identities=[unseen[0], seen[1]])
    assert [(c.split, c.record.identity) for c in one] == [("test", unseen[0]), ("test_seen", seen[1])]
    with pytest.raises(BenchError, match=f"no clip of identities \\['nobody'\\].*have {unseen[0]}"):
        select_clips(tiny_synth, ["test"], None, identities=["nobody"])
    result = run_bench(structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_frames=4, identities=seen[:1],
                                           data={"root": str(tiny_synth), "test_splits": ["test_seen"]},
                                           methods={"gt": {"kind": "ground_truth"}})))
    assert [r["clip"].split("_")[0] for r in result.per_clip] == seen[:1]
    assert result.markdown.startswith(f"# Benchmark `t` on {tiny_synth.name}: test_seen, identities {seen[0]} only")


def test_the_multi_speaker_speech2latent_module_through_the_kind(tiny_synth, tmp_path, autoencoder, s2l_dm):
    """The real module's multi-speaker variant (model.reference=first_frame): the kind gives it the first frame's
    latent, and the video is the clip's length."""
    from dreamhead_lit.baselines.daetalker.speech2latent import Speech2LatentModule

    torch.manual_seed(0)
    module = Speech2LatentModule.from_datamodule(s2l_dm, net={**S2L_NET, "reference": "first_frame"}).eval()
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, max_frames=FRAMES, methods={}))
    method = DAETalkerMethod("ms", MethodConfig(kind="daetalker", steps=1), bench_context(cfg), speech2latent=module,
                             autoencoder=autoencoder)
    assert method.reference == "first_frame" and method.protocol == "one-shot (first frame)"
    given = recording(module, "generate")
    result = run_bench(cfg, methods={"ms": method})
    assert [r["status"] for r in result.per_clip] == ["ok"]
    (call,) = given
    assert call["reference_latent"].shape == (DIM,) and call["pose"].shape == (call["num_frames"], 4)
