"""The landmark_hierarchy ablation's model: stage 2 conditioned on audio (``model.condition=audio``), one diffusion from
each frame's audio window to the frame, trained, generated, evaluated and benchmarked by the stage-2 code paths."""
from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.data.audio import build_feature_extractor, windows_for_frames
from dreamhead_lit.data.clip import read_index
from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit.lit.l2i import L2IDiffusion, Stage2Config
from dreamhead_lit.models.unet import L2IUNet
from dreamhead_lit.pipeline import GenerationError, generate
from dreamhead_lit.video import probe_video

from conftest import train_on_one_batch
from test_bench import backends, make_cfg, structured  # the bench tests' stand-in metric networks
from test_generate import _speech
from test_l2i import TINY, TINY_NET

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

AUDIO_NET = {**TINY_NET, "condition": "audio"}


@pytest.fixture(scope="module")
def dm(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, frames_per_clip=2)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def batch(dm):
    return next(iter(dm.val_dataloader()))


def audio_module(dm, *, net: dict | None = None, **kwargs) -> L2IDiffusion:
    return L2IDiffusion.from_datamodule(dm, net={**AUDIO_NET, **(net or {})}, **kwargs)


def responsive(module: L2IDiffusion) -> L2IDiffusion:
    """Give the zero-initialised convolutions (each residual branch's last, the output) small random weights, so the
    output depends on the embedding the audio enters through (and sync the EMA copy that sampling uses)."""
    for name, p in module.net.named_parameters():
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.05)
            if module.ema is not None:
                module.ema.shadow_params[name].copy_(p.detach())
    return module


@pytest.fixture(scope="module")
def audio_run(tiny_synth, tmp_path_factory):
    """`python -m dreamhead_lit.train stage2 --size demo model.condition=audio ...` for 2 steps with a validation."""
    from dreamhead_lit.train import main

    runs = tmp_path_factory.mktemp("runs")
    code = main(["stage2", "--size", "demo", "model.condition=audio", "trainer.max_steps=2", f"data.root={tiny_synth}",
                 f"runs_root={runs}", *TINY, "trainer.val_check_interval=2", "validation.log_media=true"])
    assert code == 0
    return runs / "stage2" / "demo"


@pytest.fixture(scope="module")
def landmark_ckpt(dm, tmp_path_factory):
    """A landmark-conditioned stage-2 checkpoint (one training step): the model the audio paths must refuse."""
    torch.manual_seed(0)
    module = L2IDiffusion.from_datamodule(dm, net={**TINY_NET, "condition": "landmarks"})
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    path = tmp_path_factory.mktemp("landmark") / "stage2.ckpt"
    trainer.save_checkpoint(path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The network


def test_audio_is_embedded_not_an_input_channel_and_guidance_drops_it(dm, batch):
    torch.manual_seed(0)
    module = responsive(audio_module(dm))
    net = module.net
    assert net.conditions == ("audio", "ref", "ref_landmarks")
    channels = L2IUNet.input_channels(mode="reference", use_reference=True, condition="audio")
    assert channels == 3 + 3 + 3 and net.input_conv.in_channels == channels * 2**2  # 2x2 patches
    cond = module.batch_conditions(batch)
    assert list(cond) == list(net.conditions) and cond["audio"].shape == (4, *dm.audio_shape)
    b = len(batch["frame"])
    x, t = torch.randn(b, 3, 64, 64), torch.full((b,), 500)
    other = {**cond, "audio": cond["audio"].flip(0)}  # each row gets another frame's audio
    keep, drop = torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)
    out = net(x, t, **cond, drop=keep)
    assert out.shape == (b, 3, 64, 64)
    assert (out - net(x, t, **other, drop=keep)).abs().max() > 1e-4  # the audio conditions the frame ...
    torch.testing.assert_close(net(x, t, **cond, drop=drop), net(x, t, **other, drop=drop))  # ... unless dropped
    with pytest.raises(ValueError, match="landmarks"):  # the landmark image is not an input of this model
        net(x, t, **cond, landmarks=batch["landmark_image"])
    with pytest.raises(ValueError, match="audio"):
        net(x, t, **{**cond, "audio": cond["audio"][:, :4]})


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # training_step outside a Trainer
def test_training_steps_reduce_the_loss_on_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module = audio_module(dm, diffusion={"cond_drop_prob": 0.1})  # the audio dropped as in training runs
    batch = next(iter(dm.train_dataloader()))
    losses = train_on_one_batch(lambda: module.training_step(batch, 0), module.net.parameters(), lr=3e-3,
                                max_steps=200, factor=4)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 4, (losses[:10], losses[-10:])


def test_generate_frames_shares_noise_and_guidance_scale_one_is_one_conditional_pass(dm, batch):
    torch.manual_seed(0)
    module = responsive(audio_module(dm, diffusion={"sample_steps": 2}))
    ref = {"ref": batch["ref_frame"][0], "ref_landmarks": batch["ref_landmark_image"][0]}
    same = batch["audio"][:1].expand(3, -1, -1)
    frames = module.generate_frames(same, **ref, noise_seed=3, batch_size=2)  # batches of 2 and 1
    assert frames.shape == (3, 3, 64, 64) and frames.abs().max() <= 1.0
    torch.testing.assert_close(frames[2], frames[0], atol=1e-5, rtol=0)
    varied = module.generate_frames(batch["audio"][:2], **ref, noise_seed=3)
    assert (varied[0] - varied[1]).abs().max() > 1e-3  # shared noise, different audio: different frames
    calls = []
    module.net.register_forward_hook(lambda m, args, kw, out: calls.append(kw["drop"].clone()), with_kwargs=True)
    one = module.generate_frames(batch["audio"][:2], **ref, noise_seed=3, guidance_scale=1.0)
    assert len(calls) == 2 and all(d.tolist() == [False, False] for d in calls)  # one conditional pass a step
    calls.clear()
    guided = module.generate_frames(batch["audio"][:2], **ref, noise_seed=3, guidance_scale=2.0)
    assert len(calls) == 2 and all(d.tolist() == [False, False, True, True] for d in calls)  # cond + null audio
    assert (guided - one).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------------------------------
# Data, configuration, checkpoints


def test_stage2_samples_carry_the_audio_window_of_their_frame(dm):
    ds = dm.datasets["val"]
    extractor = build_feature_extractor("logmel80")
    for i in (0, 1, len(ds) - 1):  # first and last frames: windows edge-replicated at the clip's ends
        item = ds[i]
        c, t = ds.index[i]
        reader = ds.readers[c]
        assert int(item["index"]) == t and item["audio"].shape == dm.audio_shape == (20, 80)
        expected = windows_for_frames(reader.audio(), reader.num_frames, extractor, context=2)[t]
        torch.testing.assert_close(item["audio"], expected, atol=1e-4, rtol=0)


def test_invalid_condition_is_a_config_error(dm, tiny_synth, tmp_path, capsys):
    from dreamhead_lit.train import main

    with pytest.raises(ConfigError, match=r"model.condition='text': choose one of \['landmarks', 'audio'\]"):
        audio_module(dm, net={"condition": "text"})
    assert main(["stage2", "--size", "demo", "model.condition=text", f"data.root={tiny_synth}",
                 f"runs_root={tmp_path}", *TINY]) == 2
    err = capsys.readouterr().err  # now refused at config load, by the schema's Literal type
    assert "model.condition" in err and "expected one of ['landmarks', 'audio']" in err


def test_checkpoints_and_configs_without_condition_load_as_landmark_models(landmark_ckpt, tmp_path):
    blob = torch.load(landmark_ckpt, map_location="cpu", weights_only=False)
    hp = blob["hyper_parameters"]
    for key in ("audio_feature", "audio_context"):  # as written before audio-conditioned models existed
        del hp[key]
    del hp["net"]["condition"]
    old = tmp_path / "old.ckpt"
    torch.save(blob, old)
    module = L2IDiffusion.load_from_checkpoint(old, map_location="cpu")
    assert module.net.condition == "landmarks" and not any("audio" in k for k in module.state_dict())
    cfg = OmegaConf.to_container(load_config("stage2/demo.yaml", schema=Stage2Config))
    del cfg["model"]["condition"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert load_config(tmp_path / "config.yaml", schema=Stage2Config).model.condition == "landmarks"


# ---------------------------------------------------------------------------------------------------------------------
# Training, evaluation, generation and the bench


def test_train_cli_writes_an_audio_checkpoint_that_evaluates(audio_run):
    from dreamhead_lit.evaluate import main as evaluate_main

    ckpt = audio_run / "checkpoints" / "last.ckpt"
    module = L2IDiffusion.load_from_checkpoint(ckpt, map_location="cpu")
    assert module.net.condition == "audio" and module.net.audio_shape == (20, 80)
    done = json.loads((audio_run / "done.json").read_text())
    assert done["steps"] == 2 and "val/ssim_mouth" in done["metrics"]  # validation sampled from the audio
    assert evaluate_main(["stage2", "--ckpt", str(ckpt), "--split", "test", "--examples", "2"]) == 0
    result = json.loads((audio_run / "eval" / "stage2_test.json").read_text())
    assert result["condition"] == "audio" and result["frames"] > 0 and "ssim_mouth" in result["metrics"]
    assert (audio_run / "eval" / "stage2_test_examples.png").is_file()


def test_generate_makes_the_video_from_audio_alone(audio_run, landmark_ckpt, tiny_synth, tmp_path, capsys):
    from dreamhead_lit.generate import main

    ckpt = audio_run / "checkpoints" / "last.ckpt"
    audio = _speech(tmp_path / "speech.wav", seconds=0.9)
    clip = tiny_synth / "clips" / read_index(tiny_synth)[0].id
    out = tmp_path / "out.mp4"
    code = main(["--audio", str(audio), "--ref", str(clip), "--out", str(out), "--stage2", str(ckpt), "--steps", "1",
                 "--runs-root", str(tmp_path / "no-runs")])  # no stage-1 run anywhere
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    info = probe_video(out)
    assert info.num_frames == math.ceil(0.9 * 25) and (info.width, info.height) == (64, 64) and info.has_audio
    # a landmark stage 2 without stage 1, or stage 1 given to an audio stage 2: one clear line each
    for stage2, extra, message in [(landmark_ckpt, [], "needs a stage-1 checkpoint"),
                                   (ckpt, ["--stage1", str(landmark_ckpt)], "leave --stage1 out")]:
        code = main(["--audio", str(audio), "--ref", str(clip), "--out", str(tmp_path / "x.mp4"), "--stage2",
                     str(stage2), "--runs-root", str(tmp_path / "no-runs"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
    with pytest.raises(GenerationError, match="conditioned on landmarks"):
        generate(audio=audio, ref=clip, out=tmp_path / "y.mp4", stage2=landmark_ckpt)


def test_bench_scores_audio_to_image_and_refuses_mismatched_checkpoints(audio_run, landmark_ckpt, tiny_synth, tmp_path):
    from dreamhead_lit.bench import run_bench

    ckpt = str(audio_run / "checkpoints" / "last.ckpt")
    methods = {
        # as the ablation harness writes it: the dreamhead method's settings (protocol dubbing), another kind
        "a2i": {"kind": "audio_to_image", "stage2": ckpt, "steps": 1, "protocol": "dubbing"},
        "a2i_landmark_model": {"kind": "audio_to_image", "stage2": str(landmark_ckpt)},
        "bound_audio_model": {"kind": "stage2_gt_landmarks", "stage2": ckpt},
    }
    cfg = make_cfg(tiny_synth, tmp_path, metrics=["ssim", "ssim_mouth", "lmd"], methods=methods, max_clips=1)
    result = run_bench(structured(cfg), backends=backends())
    rows = {r["method"]: r for r in result.table}
    a2i = rows["a2i"]
    assert a2i["status"] == "ok" and a2i["clips"] == 1 and a2i["frames"] > 0
    assert float(a2i["ssim"]) > 0 and float(a2i["lmd_mouth"]) >= 0
    # a reference-mode model cannot follow the clip's pose without landmarks: the row says one-shot, and why
    assert a2i["protocol"] == "one-shot" and a2i["uses_source_video"] is False
    assert "model.condition=audio, mode=reference" in result.markdown
    assert "cannot follow the clip's pose" in result.markdown
    assert rows["a2i_landmark_model"]["status"].startswith("skipped: ")
    assert "is conditioned on landmarks" in rows["a2i_landmark_model"]["status"]
    assert "score it with kind audio_to_image" in rows["bound_audio_model"]["status"]


def test_bench_audio_to_image_dubs_with_a_dubbing_mode_model(dm, tiny_synth, tmp_path):
    """Protocol dubbing with a dubbing-mode model: every frame gets its own masked clip frame (pose, background)."""
    from dreamhead_lit.bench import AudioToImageMethod, MethodConfig, bench_context, run_bench

    torch.manual_seed(0)
    module = audio_module(dm, net={"mode": "dubbing"}).eval()
    seen = []  # per video: the audio windows' shape and the masked frames stage 2 was given
    original = module.frame_batches

    def recording(batches, **kw):
        def recorded():
            taken = []
            for batch in batches:
                taken.append(batch)
                yield batch
            seen.append((torch.cat([b["targets"] for b in taken]).shape, torch.cat([b["masked"] for b in taken])))
        return original(recorded(), **kw)

    module.frame_batches = recording
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, methods={}))
    method = AudioToImageMethod("a2i", MethodConfig(kind="audio_to_image", steps=1, batch_size=64),
                                bench_context(cfg), stage2=module)
    assert method.protocol == "dubbing" and method.uses_source_video
    result = run_bench(cfg, methods={"a2i": method})
    assert [r["status"] for r in result.per_clip] == ["ok"]
    (shape, masked), = seen
    assert shape[1:] == (20, 80) and len(masked) == shape[0]  # one audio window and one masked frame per frame
    assert (masked[1:] - masked[:1]).abs().amax(dim=(1, 2, 3)).max() > 0  # the clip's frames, not one frame
