"""Stage 2 distilled (lit/distill.py): the student's sampler, its loss, the CLI run, and every tool that loads it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamhead_lit.checkpoints import read_header
from dreamhead_lit.config import load_config
from dreamhead_lit.data.clip import read_index
from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit.lit.distill import L2IDistillation, Stage2DistillConfig
from dreamhead_lit.lit.l2i import L2IDiffusion
from dreamhead_lit.pipeline import load_stage
from dreamhead_lit.train import main as train_main

from conftest import train_on_one_batch
from test_generate import _checkpoint, _speech
from test_l2i import TINY_NET

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

TEACHER_STEPS = 3  # the tiny teacher samples its targets in 3 guided steps (its configured default below)


@pytest.fixture(scope="module")
def data(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, frames_per_clip=2, num_workers=0)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def teacher_file(data, tmp_path_factory):
    """A tiny stage 2 trained for 2 steps, guided (scale 1.5, two passes a step): the plumbing is under test."""
    module = L2IDiffusion.from_datamodule(data, net=TINY_NET, diffusion={"sample_steps": TEACHER_STEPS,
                                                                         "guidance_scale": 1.5})
    return _checkpoint(module, data, tmp_path_factory.mktemp("teacher") / "teacher.ckpt")


def _student(teacher_file, *overrides: str) -> L2IDistillation:
    cfg = load_config("stage2_distilled/demo.yaml", [f"teacher.run={teacher_file}", *overrides],
                      schema=Stage2DistillConfig)
    teacher = load_stage(teacher_file, "stage2")
    return L2IDistillation.from_teacher(teacher, cfg, teacher_file=str(teacher_file))


class PassCounter:
    """Counts the frames that go through a network's forward passes."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.frames = 0
        net.register_forward_hook(lambda _m, args, _out: setattr(self, "frames", self.frames + args[0].shape[0]))


def test_student_samples_deterministically_in_one_pass_a_step_like_its_teacher(teacher_file, data):
    student = _student(teacher_file).eval()
    teacher = student.teacher
    assert (student.diffusion_cfg.sampler, student.diffusion_cfg.sample_steps) == ("ddim", 2)
    assert student.diffusion_cfg.guidance_scale == 1.0
    with teacher.ema_weights():  # the student starts from the weights the teacher samples with
        assert all(torch.equal(a, b) for a, b in zip(student.net.parameters(), teacher.net.parameters()))
    batch = next(iter(data.train_dataloader()))
    targets = batch["landmark_image"]
    kwargs = dict(ref=batch["ref_frame"][0], ref_landmarks=batch["ref_landmark_image"][0], noise_seed=3)
    counter = PassCounter(student.net)
    first = student.generate_frames(targets, **kwargs)
    assert counter.frames == 2 * len(targets)  # 2 steps, one pass each: the guidance is in the weights
    assert torch.equal(first, student.generate_frames(targets, **kwargs))  # a seed gives the same frames
    assert not torch.equal(first, student.generate_frames(targets, **{**kwargs, "noise_seed": 4}))
    taught = teacher.generate_frames(targets, **kwargs)
    assert first.shape == taught.shape == (len(targets), 3, 64, 64)
    assert first.dtype == taught.dtype and first.min() >= -1 and first.max() <= 1
    counter = PassCounter(teacher.net)
    teacher.generate_frames(targets, **kwargs)
    assert counter.frames == 2 * TEACHER_STEPS * len(targets)  # the teacher: two passes (guided) a step


def test_distillation_loss_falls_on_a_tiny_model(teacher_file, data, test_seed):
    student = _student(teacher_file).train()
    batch = next(iter(data.train_dataloader()))
    cond = student.batch_conditions(batch)
    x0, noise = student.couplings(cond, torch.Generator().manual_seed(test_seed))
    assert x0.shape == noise.shape == (4, 3, 64, 64) and x0.abs().max() <= 1  # the teacher's frames (clamped)
    assert student.train_timesteps == [999, 499]  # the trailing timesteps of 1 and 2 DDIM steps
    losses = train_on_one_batch(lambda: student.distillation_loss(cond, x0, noise), student.net.parameters(),
                                lr=2e-3, max_steps=150, factor=3.0)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 3, losses[::10]


def test_distill_cli_run_loads_as_stage2_and_generates(teacher_file, tiny_synth, tmp_path, capsys):
    from dreamhead_lit.generate import main as generate_main

    runs = tmp_path / "runs"
    args = ["stage2_distilled", f"teacher.run={teacher_file}", f"data.root={tiny_synth}", f"runs_root={runs}",
            "data.batch_size=2", "data.frames_per_clip=2", "data.num_workers=0", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "validation.max_batches=1", "validation.log_media=false",
            "trainer.enable_progress_bar=false", "threads=1", "optim.warmup_steps=0"]
    assert train_main(args) == 0
    ckpt = runs / "stage2_distilled" / "demo" / "checkpoints" / "last.ckpt"
    header = read_header(ckpt)
    assert header["model"] == "stage2_distilled" and header["stage"] == "stage2"
    assert header["distilled"]["teacher"] == str(teacher_file)
    assert header["distilled"]["teacher_steps"] == TEACHER_STEPS and header["distilled"]["teacher_guidance_scale"] == 1.5
    assert "teacher." not in " ".join(torch.load(ckpt, weights_only=False)["state_dict"])  # the teacher stays out
    student = load_stage(ckpt, "stage2")  # wherever a stage 2 is asked for
    assert type(student) is L2IDiffusion and student.diffusion_cfg.sampler == "ddim"
    events = list((runs / "stage2_distilled" / "demo").glob("events.out.tfevents.*"))
    assert events  # the teacher's figures are logged beside the student's (val/teacher_*)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0])).Reload().Tags()["scalars"]
    assert "val/ssim_mouth" in tags and "val/teacher_ssim_mouth" in tags

    clip = tiny_synth / "clips" / read_index(tiny_synth)[0].id
    audio = _speech(tmp_path / "speech.wav", seconds=0.4)
    stage1 = _stage1(tiny_synth, tmp_path)
    out = tmp_path / "out.mp4"
    code = generate_main(["--audio", str(audio), "--ref", str(clip), "--out", str(out), "--stage1", str(stage1),
                          "--distilled", "demo", "--runs-root", str(runs)])
    assert code == 0, capsys.readouterr().err
    assert out.is_file()
    code = generate_main(["--audio", str(audio), "--ref", str(clip), "--out", str(tmp_path / "x.mp4"),
                          "--stage1", str(stage1), "--distilled", "--stage2", str(teacher_file)])
    assert code == 2 and "not both" in capsys.readouterr().err

    # --stage2-steps: stage 2 alone, one pass a frame a step; stage 1 keeps its own
    from dreamhead_lit.pipeline import generate

    counter = PassCounter(student.net)
    generate(audio=audio, ref=clip, out=tmp_path / "one.mp4", stage1=stage1, stage2=student, steps=2, stage2_steps=1,
             progress=False)
    assert counter.frames == 10  # 0.4 s: 10 frames, 1 step

    # a distilled model is not a teacher
    assert train_main([*args, f"teacher.run={ckpt}", "name=again"]) == 2
    assert "itself distilled" in capsys.readouterr().err


def _stage1(tiny_synth, tmp_path):
    from dreamhead_lit.lit.a2l import A2LDiffusion

    dm = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=4, window=16)
    dm.prepare_data()
    dm.setup()
    module = A2LDiffusion.from_datamodule(dm, net={"dim": 32, "depth": 1, "heads": 2}, diffusion={"sample_steps": 2})
    return _checkpoint(module, dm, tmp_path / "stage1.ckpt")


def test_a_missing_teacher_says_how_to_make_one(tiny_synth, tmp_path, capsys):
    code = train_main(["stage2_distilled", "teacher.run=nosuchrun", f"data.root={tiny_synth}",
                       f"runs_root={tmp_path}", "trainer.max_steps=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "teacher.run='nosuchrun'" in err and "make train-stage2" in err
