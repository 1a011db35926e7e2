"""Stage 2 distilled into a few-step, one-pass student: coupling distillation of the guided teacher.

The teacher (a trained stage 2 with its EMA weights, sampler, steps and classifier-free guidance: 20 DPM-Solver++
steps of two UNet passes each at demo size) is a deterministic map from a starting noise ``eps`` and the conditions
``c`` to a frame ``x0* = teacher(eps, c)``. The student, initialised from the teacher's weights, is trained on that
*coupled* pair instead of an independent (frame, noise) pair:

    x_t = alpha_t x0* + sigma_t eps   (x_t = eps at the first, pure-noise step)     loss = || x0_hat(x_t, t, c) - x0* ||^2

at the timesteps its few-step sampler visits (``distill.steps``: the trailing DDIM timesteps of 1 and 2 steps by
default, i.e. t = 999 and 499). If the student predicts ``x0*`` exactly, deterministic DDIM, which keeps the implied
noise from step to step, walks along the straight line from ``eps`` to ``x0*`` and lands on it in any number of those
steps. This is knowledge distillation of the sampler (Luhman & Luhman 2021, "Knowledge distillation in iterative
generative models", one step) extended to a few DDIM steps by training on the teacher's couplings, the "reflow" of
Liu et al. 2023 ("Flow straight and fast"; InstaFlow, Liu et al. 2024, distils Stable Diffusion the same way). The
guidance is distilled with it (Meng et al. 2023, "On distillation of guided diffusion models"): ``x0*`` was made with
guidance, and the student is sampled with none, so each step is one UNet pass instead of two.

Why this method: one training round whose targets come from the real sampler, batch by batch (no trajectory cache on
disk, so an interrupted run resumes like any other and DDP ranks need nothing shared). Progressive distillation
(Salimans & Ho 2022) needs log2(steps) rounds; consistency distillation (Song et al. 2023) tens of thousands of steps.
The loss is on x0 with equal weight at every student timestep: all of them have SNR < 1 on the linear schedule, where
Salimans & Ho's truncated-SNR weighting is exactly the x0 error.

The student is an ordinary stage-2 model: its checkpoint loads as :class:`~dreamhead_lit.lit.l2i.L2IDiffusion` with
``diffusion.sampler=ddim``, ``sample_steps`` = ``distill.sample_steps`` and ``guidance_scale=1``, so ``generate``, the
bench and the ablation harness use it with no special path (``checkpoint["dreamhead"]["distilled"]`` says what it was
distilled from). Validation scores the student as stage 2's does, and the teacher once on the same frames
(``val/teacher_*``), so TensorBoard shows the gap.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from ..config import ConfigError, RunConfig, to_container
from ..diffusion import EMA, make_timesteps
from .base import OptimConfig
from .l2i import FRAME_METRICS, L2IDiffusion, L2IValidationConfig

MODEL_NAME = "stage2_distilled"  # its registry entry and runs/ folder (registry.py registers it)
METHOD = "coupling distillation (Luhman & Luhman 2021; reflow, Liu et al. 2023) with guidance (Meng et al. 2023)"


@dataclass
class TeacherConfig:
    """The trained stage 2 to distil and how it samples the targets (None: its own configured setting)."""

    run: str = "demo"  # a run name under runs/stage2/, a run folder or a checkpoint file
    sampler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None


@dataclass
class DistillConfig:
    steps: list[int] = field(default_factory=lambda: [1, 2])  # step counts trained for: their timesteps' union
    sample_steps: int = 2  # the student's default number of steps (one UNet pass each)
    reuse: int = 4  # optimiser steps on each batch of couplings (the teacher's sampling is most of a step's cost)
    ema_decay: float = 0.99  # a short fine-tuning run: a short EMA horizon


@dataclass
class Stage2DistillConfig(RunConfig):
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: L2IValidationConfig = field(default_factory=L2IValidationConfig)


def teacher_checkpoint(ref: str, runs_root: str | Path) -> Path:
    """``teacher.run``: a checkpoint file, a run folder (its ``last.ckpt``: the weights the bench and generate use)
    or a run name under ``runs/stage2/``."""
    from ..runs import run_checkpoint

    return run_checkpoint(ref, runs_root, model="stage2", key="teacher.run", best=False,
                          remedy="train the teacher first (make train-stage2) or name another run")


class L2IDistillation(L2IDiffusion):
    """A stage-2 student trained on its teacher's couplings (see the module's docstring). Built by
    :meth:`from_teacher`; its hyper-parameters are the teacher's with the student's sampling settings, so its
    checkpoints load as plain :class:`L2IDiffusion`."""

    teacher: L2IDiffusion
    settings: Stage2DistillConfig

    @classmethod
    def from_teacher(cls, teacher: L2IDiffusion, cfg: Stage2DistillConfig, *, teacher_file: str = "") -> "L2IDistillation":
        d = cfg.distill
        if not d.steps or any(s < 1 for s in d.steps) or d.sample_steps not in d.steps:
            raise ConfigError(f"distill.steps={list(d.steps)} must be positive step counts and include "
                              f"distill.sample_steps={d.sample_steps}")
        hp = to_container(dict(teacher.hparams))
        diffusion = {**hp["diffusion"], "sampler": "ddim", "sample_steps": d.sample_steps, "guidance_scale": 1.0,
                     "use_ema": True, "ema_decay": d.ema_decay}
        student = cls(resolution=hp["resolution"], index68=hp["index68"], landmark_channels=hp["landmark_channels"],
                      audio_feature=hp["audio_feature"], audio_context=hp["audio_context"], net=hp["net"],
                      diffusion=diffusion, optim=to_container(cfg.optim), validation=to_container(cfg.validation),
                      codec=teacher.codec)
        with teacher.ema_weights():  # the student starts from the weights the teacher samples with
            student.net.load_state_dict(teacher.net.state_dict())
        student.ema = EMA(student.net, decay=d.ema_decay, warmup=student.diffusion_cfg.ema_warmup)
        student.data_info = teacher.data_info
        # not a submodule: the teacher's weights stay out of the student's checkpoints and optimiser
        object.__setattr__(student, "teacher", teacher.eval().requires_grad_(False))
        object.__setattr__(student, "settings", cfg)
        student.teacher_file = teacher_file
        student.val_metrics.update({f"teacher_{k}": MeanMetric() for k in FRAME_METRICS})
        student._teacher_scored = False
        student._coupled: tuple | None = None  # the couplings in use, and how many steps have used them
        student._uses = 0
        if d.reuse < 1:
            raise ConfigError(f"distill.reuse={d.reuse}: optimiser steps per batch of couplings, at least 1")
        return student

    @property
    def train_timesteps(self) -> list[int]:
        """The timesteps the student's samplers visit: the union of the trailing DDIM timesteps of each step count."""
        n = self.schedule.num_train_steps
        return sorted({t for s in self.settings.distill.steps for t in make_timesteps(n, s)}, reverse=True)

    def teacher_sampling(self) -> dict[str, Any]:
        t = self.settings.teacher
        return {"sampler": t.sampler, "steps": t.steps, "guidance_scale": t.guidance_scale}

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        d, tc = self.settings.distill, self.teacher.diffusion_cfg
        t = self.settings.teacher
        checkpoint["dreamhead"]["distilled"] = {
            "method": METHOD, "teacher": self.teacher_file, "student_steps": list(d.steps),
            "teacher_sampler": t.sampler or tc.sampler, "teacher_steps": t.steps or tc.sample_steps,
            "teacher_guidance_scale": tc.guidance_scale if t.guidance_scale is None else t.guidance_scale}

    # -- training ------------------------------------------------------------------------------------------------

    def couplings(self, cond: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x0*, eps): the teacher's samples for the conditions, each from its own starting noise."""
        b = next(iter(cond.values())).shape[0]
        noise = torch.randn(b, self.x_channels, self.x_size, self.x_size, generator=generator).to(self.device)
        with torch.no_grad():
            x0 = self.teacher.sample_x(cond, noise=noise.clone(), generator=generator, **self.teacher_sampling())
        return x0, noise

    def distillation_loss(self, cond: dict[str, Tensor], x0: Tensor, noise: Tensor) -> Tensor:
        """The x0 error of the student at every one of its timesteps on the coupled pairs (one batch of B x K)."""
        ts = self.train_timesteps
        k, b = len(ts), x0.shape[0]
        t = torch.tensor(ts, device=self.device).repeat_interleave(b)  # (K*B,)
        x0_k, noise_k = x0.repeat(k, 1, 1, 1), noise.repeat(k, 1, 1, 1)
        alpha, sigma = self.schedule.alpha_sigma(t, x0.ndim)
        x_t = alpha.to(x0.dtype) * x0_k + sigma.to(x0.dtype) * noise_k
        first = (t == self.schedule.num_train_steps - 1).view(-1, 1, 1, 1)
        x_t = torch.where(first, noise_k, x_t)  # the samplers start from pure noise at the last train step
        cond_k = {key: v.repeat(k, *([1] * (v.ndim - 1))) for key, v in cond.items()}
        no = torch.zeros(k * b, dtype=torch.bool, device=self.device)
        x0_hat = self.diffusion.model_x0(self.net, x_t, t, **cond_k, drop=no)
        return ((x0_hat.float() - x0_k.float()) ** 2).mean()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        # new couplings every `distill.reuse` steps from the batch of that step (the batches between are not used):
        # the teacher's 2 x steps passes a frame cost about 7x a student step, so each batch of targets serves several
        if self._coupled is None or self._uses >= self.settings.distill.reuse:
            cond = self.batch_conditions(batch)
            # the noise follows (seed, step, rank): a run resumed from a checkpoint draws what it would have drawn
            rank = self.trainer.global_rank if self._trainer is not None else 0
            gen = torch.Generator(device="cpu").manual_seed(
                (self.settings.seed * 1_000_003 + self.global_step * 101 + rank) % (2 ** 63))
            self._coupled, self._uses = (cond, *self.couplings(cond, gen)), 0
        cond, x0, noise = self._coupled
        self._uses += 1
        loss = self.distillation_loss(cond, x0, noise)
        b = x0.shape[0]
        self.log("train/loss", loss, batch_size=b)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b)
        return loss

    # -- validation: the student as stage 2 scores it, and the teacher once on the same frames ----------------------

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self._teacher_scored or self.trainer.sanity_checking or not self._sampled(batch_idx):
            return
        gen = torch.Generator(device="cpu").manual_seed(self.val_cfg.seed + batch_idx)
        values = self.teacher.evaluate_batch(batch, generator=gen, **self.teacher_sampling())
        for k in FRAME_METRICS:
            self.val_metrics[f"teacher_{k}"].update(values[k].float().to(self.device))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            self._teacher_scored = True


def build_student(spec: Any, cfg: Any, dm: Any) -> L2IDistillation:
    """The registry's ``build``: the teacher loaded and checked against the data the student is fed."""
    from ..checkpoints import read_header
    from ..pipeline import GenerationError, load_checked

    path = teacher_checkpoint(cfg.teacher.run, cfg.runs_root)
    try:
        teacher = load_checked(path, "stage2")
    except GenerationError as err:
        raise ConfigError(f"teacher.run={cfg.teacher.run!r}: {err}") from err
    if read_header(path).get("distilled"):
        raise ConfigError(f"teacher.run={cfg.teacher.run!r} ({path}) is itself distilled: distil a trained stage 2")
    have, want = dm.describe(), teacher.data_info or {}
    for key in ("resolution", "point_index", "landmark_sigma"):
        if key in want and have.get(key) != want.get(key):
            raise ConfigError(f"the data config feeds {key}={have.get(key)!r} but the teacher {path} was trained on "
                              f"{want.get(key)!r}: give the data settings of the teacher's run "
                              f"({path.parent.parent / 'config.yaml'})")
    return L2IDistillation.from_teacher(teacher, copy.deepcopy(cfg), teacher_file=str(path))


def load_student(path: Path) -> L2IDiffusion:
    """A distilled checkpoint as the stage-2 model it is (``generate``, the bench)."""
    from ..checkpoints import load_module

    return load_module(L2IDiffusion, path).eval()


__all__ = ["DistillConfig", "MODEL_NAME", "L2IDistillation", "METHOD", "Stage2DistillConfig", "TeacherConfig", "build_student",
           "load_student", "teacher_checkpoint"]
