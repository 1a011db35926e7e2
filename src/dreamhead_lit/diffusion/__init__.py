"""Diffusion core shared by both stages: schedule, targets, training loss, samplers, guidance and EMA.

One implementation serves landmark sequences ``(B, T, C)`` (stage 1) and images ``(B, C, H, W)`` (stage 2).
Typical use::

    schedule = NoiseSchedule(kind="linear", num_train_steps=1000)
    diffusion = GaussianDiffusion(schedule=schedule, target="x0")
    losses = diffusion.training_losses(net, x0, extra_args={"audio": audio})
    denoise = classifier_free_guidance(diffusion.denoiser(net), scale=2.0, uncond_args={"audio": null_audio})
    x = sample("ddim", denoise, (B, T, C), schedule=schedule, steps=10, extra_args={"audio": audio})
"""

from dreamhead_lit.diffusion.ema import EMA
from dreamhead_lit.diffusion.gaussian import GaussianDiffusion, LossWeighting, ModelFn, clip_denoiser
from dreamhead_lit.diffusion.guidance import (
    ClassifierFreeGuidance,
    classifier_free_guidance,
    drop_condition,
    mask_condition,
)
from dreamhead_lit.diffusion.samplers import (
    SAMPLERS,
    Inpaint,
    SamplerName,
    Spacing,
    StepCallback,
    make_timesteps,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from dreamhead_lit.diffusion.schedules import NoiseSchedule, ScheduleKind
from dreamhead_lit.diffusion.targets import (
    PredictionTarget,
    output_to_x0_eps,
    predict_x0_eps,
    target_from_x0_eps,
    training_target,
)
from dreamhead_lit.diffusion.utils import DenoiseFn, append_dims, extract

__all__ = [
    "EMA",
    "SAMPLERS",
    "ClassifierFreeGuidance",
    "DenoiseFn",
    "GaussianDiffusion",
    "Inpaint",
    "LossWeighting",
    "ModelFn",
    "NoiseSchedule",
    "PredictionTarget",
    "SamplerName",
    "ScheduleKind",
    "Spacing",
    "StepCallback",
    "append_dims",
    "classifier_free_guidance",
    "clip_denoiser",
    "drop_condition",
    "extract",
    "make_timesteps",
    "mask_condition",
    "output_to_x0_eps",
    "predict_x0_eps",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "target_from_x0_eps",
    "training_target",
]
