"""DAE-Talker's diffusion autoencoder (Du et al., arXiv 2303.17550, Sec. 3.1, after DiffAE) as a LightningModule on
the shared diffusion core.

Training: every frame is encoded to its latent z = Enc(x0) and the decoder denoises x_t conditioned on z; the one loss
is the standard diffusion loss, back-propagated through the decoder *and* the encoder (no reconstruction or latent
loss: DiffAE's objective). Generation decodes a sequence of latents with a deterministic sampler (DDIM), all frames
from ONE noise image (:meth:`DAETalkerAutoencoder.decode`): DAE-Talker's answer to flicker from a per-frame decoder,
with ``shared_noise=False`` for the ablation.

Validation reconstructs validation frames (EMA weights, encoded then decoded from a fixed seed) and scores them as
stage 2 does (SSIM / PSNR on whole frames and mouth crops), next to "copy the reference frame" (``*_ref``), which a
reconstruction must beat by far since its latent saw the target itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from ...config import ConfigError, RunConfig
from ...data.datamodule import FrameDataset, resize_frames
from ...diffusion import drop_condition
from ...lit.base import DiffusionConfig, DiffusionLitModule, OptimConfig
from ...lit.l2i import FRAME_METRICS, L2IDiffusion, L2IValidationConfig, example_grid, frame_scores
from .autoencoder import DiffusionAutoencoder


@dataclass
class DAENetConfig:
    """The semantic encoder and the decoder UNet (``models/unet.py``, ``condition="latent"``)."""

    latent_dim: int = 512  # the paper's (DiffAE's) z_sem size
    # "adagn": DiffAE's conditioning, the latent scales every residual block's channels (multiplicative), after the
    # step's scale-shift; "add": its embedding added to the step embedding (the audio's way in stage 2)
    latent_conditioning: str = "adagn"
    encoder_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 512, 512])  # stride-2 levels
    encoder_groups: int = 32
    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [16, 8])
    head_channels: int = 32
    dropout: float = 0.1
    norm_groups: int = 32
    patch_size: int = 1
    channels_last: bool = False


@dataclass
class DAEConfig(RunConfig):
    model: DAENetConfig = field(default_factory=DAENetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: L2IValidationConfig = field(default_factory=L2IValidationConfig)


class DAETalkerAutoencoder(DiffusionLitModule):
    """Frame -> latent (semantic encoder) -> frame (latent-conditioned DDIM decoder), trained end to end."""

    STAGE = "daetalker_autoencoder"

    def __init__(self, *, resolution: int, index68: list[int], net: dict | None = None, diffusion: dict | None = None,
                 optim: dict | None = None, validation: dict | None = None):
        super().__init__(diffusion=diffusion or {}, optim=optim or {})
        self.save_hyperparameters()
        self.net_cfg = n = DAENetConfig(**(net or {}))
        self.val_cfg = L2IValidationConfig(**(validation or {}))
        self.resolution, self.index68 = resolution, list(index68)
        try:
            self.net = DiffusionAutoencoder(
                resolution=resolution, latent_dim=n.latent_dim, encoder_channels=tuple(n.encoder_channels),
                encoder_groups=n.encoder_groups, base_channels=n.base_channels, channel_mult=tuple(n.channel_mult),
                num_res_blocks=n.num_res_blocks, attention_resolutions=tuple(n.attention_resolutions),
                head_channels=n.head_channels, dropout=n.dropout, norm_groups=n.norm_groups, patch_size=n.patch_size,
                channels_last=n.channels_last, latent_conditioning=n.latent_conditioning)
        except ValueError as err:
            raise ConfigError(f"{err}. The autoencoder works at data.working_resolution ({resolution} px here): change "
                              "model.encoder_channels / model.attention_resolutions / model.channel_mult / "
                              "model.patch_size, or data.working_resolution, to fit") from err
        if n.channels_last:
            self.net.decoder.to(memory_format=torch.channels_last)
        self.init_diffusion()
        names = [*FRAME_METRICS, *(f"{k}_ref" for k in FRAME_METRICS), "loss"]
        self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in names})

    @classmethod
    def from_datamodule(cls, dm, **kwargs: Any) -> "DAETalkerAutoencoder":
        """Build for the resolution the (stage ``"l2i"``) DataModule feeds; call after ``dm.setup()``."""
        ctx = dm.ctx
        index68 = list(range(68)) if dm.hparams.landmark_set == "68" else list(ctx.topology.index68)
        module = cls(resolution=ctx.resolution, index68=index68, **kwargs)
        module.data_info = dm.describe()
        return module

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    # -- training ------------------------------------------------------------------------------------------------

    def loss(self, frames: Tensor, *, generator: torch.Generator | None = None, drop_prob: float | None = None) -> Tensor:
        """The diffusion loss of decoding ``frames`` (B, 3, H, W) from their own latents; gradients reach the encoder."""
        z = self.net.encode(frames)  # (B, D)
        p = self.diffusion_cfg.cond_drop_prob if drop_prob is None else drop_prob
        drop = drop_condition(frames, p)
        return self.diffusion.training_losses(self.net, frames, extra_args={"latent": z, "drop": drop},
                                              generator=generator)["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss(batch["frame"])
        b = batch["frame"].shape[0]
        self.log("train/loss", loss, batch_size=b)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b)
        return loss

    # -- encoding ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_frames(self, frames: Tensor, *, batch_size: int = 64) -> Tensor:
        """Latents (T, D) float32 on the CPU of frames (T, 3, H, W) in [-1, 1], with the EMA weights in eval mode
        (deterministic: the encoder has no dropout and no batch statistics)."""
        if frames.ndim != 4 or frames.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"encode_frames: expected (T, 3, {self.resolution}, {self.resolution}) frames in [-1, 1], "
                             f"got {tuple(frames.shape)}")
        was_training = self.net.training
        self.net.eval()
        try:
            with self.ema_weights():
                out = [self.net.encode(frames[i:i + batch_size].to(self.device, torch.float32)).float().cpu()
                       for i in range(0, len(frames), batch_size)]
        finally:
            self.net.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.latent_dim)

    def encode_clip(self, frames: np.ndarray | Tensor, *, batch_size: int = 64) -> Tensor:
        """Latents (T, D) of one clip's frames: uint8 (T, H, W, 3) at any resolution (resized as the training
        samples were, ``data.datamodule.resize_frames``), or float (T, 3, H, W) in [-1, 1] at the model's."""
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ValueError(f"encode_clip: expected uint8 (T, H, W, 3) frames, got {frames.dtype} "
                                 f"{frames.shape}")
            frames = torch.stack([FrameDataset.to_tensor(f) for f in resize_frames(frames, self.resolution)]) \
                if len(frames) else torch.zeros(0, 3, self.resolution, self.resolution)
        return self.encode_frames(frames, batch_size=batch_size)

    # -- decoding ------------------------------------------------------------------------------------------------

    def noise_for(self, frames: int, *, noise_seed: int, shared_noise: bool = True) -> Tensor:
        """Starting noise (F, 3, H, W) on the CPU: one image from ``noise_seed`` repeated for every frame, or (the
        ablation) ``frames`` independent images from it. The same seed gives the same noise whatever the batching."""
        gen = torch.Generator(device="cpu").manual_seed(noise_seed)
        shape = (1 if shared_noise else frames, 3, self.resolution, self.resolution)
        noise = torch.randn(shape, generator=gen)
        return noise.expand(frames, -1, -1, -1) if shared_noise else noise

    @torch.no_grad()
    def decode(self, latents: Tensor, *, noise_seed: int = 0, steps: int | None = None, sampler: str | None = None,
               shared_noise: bool = True, batch_size: int = 16, progress: bool = False) -> Tensor:
        """Frames (F, 3, H, W) in [-1, 1] from latents (F, D) (EMA weights; x0 clamped to [-1, 1] at every step).

        ``shared_noise=True``: every frame starts from ONE noise image drawn from ``noise_seed`` (DAE-Talker's way to
        continuous video from a per-frame decoder: with a deterministic sampler, ``ddim`` or ``dpmpp_2m``, equal
        latents give equal frames, and what the latent leaves open is the same in every frame). ``False``: fresh
        noise for each frame (the "shared noise" ablation). ``sampler`` / ``steps``: the config's when None.
        """
        from tqdm.auto import tqdm

        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"decode: expected latents (F, {self.latent_dim}), got {tuple(latents.shape)}")
        noise = self.noise_for(len(latents), noise_seed=noise_seed, shared_noise=shared_noise)
        out = []
        for start in tqdm(range(0, len(latents), batch_size), desc="frames", unit="batch", disable=not progress,
                          leave=False):
            z = latents[start:start + batch_size].to(self.device, torch.float32)
            n = len(z)
            no = torch.zeros(n, dtype=torch.bool, device=self.device)
            x = self.sample_x0((n, 3, self.resolution, self.resolution), cond={"latent": z, "drop": no},
                               uncond={"drop": ~no}, noise=noise[start:start + n].to(self.device).clone(),
                               generator=torch.Generator(device="cpu").manual_seed(noise_seed + 1), sampler=sampler,
                               steps=steps, clip_x0=1.0)
            out.append(x.clamp(-1.0, 1.0))
        return torch.cat(out) if out else torch.zeros(0, 3, self.resolution, self.resolution)

    def reconstruct(self, frames: Tensor, **decode_kwargs: Any) -> Tensor:
        """Frames (F, 3, H, W) in [-1, 1] encoded and decoded: the "DAE reconstruction" upper bound."""
        return self.decode(self.encode_frames(frames), **decode_kwargs)

    # -- validation ----------------------------------------------------------------------------------------------

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        frames = batch["frame"]
        gen = torch.Generator(device="cpu").manual_seed(self.val_cfg.seed + batch_idx)
        with self.ema_weights():
            self.val_metrics["loss"].update(self.loss(frames, generator=gen, drop_prob=0.0))
        if not L2IDiffusion._sampled(self, batch_idx):  # stage 2's spread of sampled batches over the split
            return
        generated = self.reconstruct(frames, noise_seed=self.val_cfg.seed + batch_idx).cpu()
        lm68 = batch["landmarks"][:, self.index68].float().cpu()
        scores = frame_scores(generated, frames.cpu(), lm68)
        ref = frame_scores(batch["ref_frame"].cpu(), frames.cpu(), lm68)
        for k, v in {**scores, **{f"{k}_ref": v for k, v in ref.items()}}.items():
            self.val_metrics[k].update(v.float().to(self.device))
        if batch_idx == 0 and self.val_cfg.log_media and self.trainer.is_global_zero:
            from ...viz import tensorboard_writer

            writer = tensorboard_writer(self.logger)
            if writer is not None:
                grid = example_grid({"reconstructed": generated, "true": frames}, count=self.val_cfg.media_samples)
                writer.add_image("val/examples", grid, self.global_step, dataformats="HWC")

    def on_validation_epoch_end(self) -> None:
        self.log_validation_metrics()


__all__ = ["DAEConfig", "DAENetConfig", "DAETalkerAutoencoder"]
