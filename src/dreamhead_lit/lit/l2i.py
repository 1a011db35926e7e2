"""Stage 2 of DreamHead: landmark-to-image (L2I) diffusion as a LightningModule.

The model generates a frame given the target's landmark image and the speaker's appearance (a reference frame of
the same identity and its landmark image; in ``dubbing`` mode also the target frame with its lower face masked), with
the UNet of ``models/unet.py``. It runs in pixel space at the dataset resolution by default (x0 clamped to [-1, 1]
while sampling) and in the latent space of a frozen autoencoder when ``model.vae_checkpoint`` is set
(``models/latent.py``; reference and masked frames are encoded, landmark images and the mask resized to the latent
size).

With ``model.condition=audio`` (the ``landmark_hierarchy`` ablation) the target landmark image is replaced by the
target frame's audio window (the one stage 1 sees for that frame, the ``audio`` of the DataModule's samples): one
diffusion from audio to frames, with the same UNet, reference and dubbing inputs and training budget as stage 2.

Classifier-free guidance drops the *target condition*, landmark image or audio (see ``models/unet.py``), so
``diffusion.guidance_scale`` > 1 strengthens adherence to the target mouth shape. Frames of one clip share their
starting noise (:meth:`L2IDiffusion.generate_frames`), which keeps what the target condition does not determine
(texture, shading) the same from frame to frame.

Validation samples frames from the TRUE landmarks (or the true audio) with the EMA weights and a fixed seed and scores
them against the ground truth: SSIM / PSNR on whole frames and on mouth crops (``metrics.image.crop_mouth`` around the
target's 68 landmarks), next to the same scores for the "copy the reference frame" baseline (``*_ref``), which a model
must beat on the mouth to have learnt anything from its condition.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from ..config import ConfigError, RunConfig
from ..data.audio import build_feature_extractor, window_shape, windows_for_frames
from ..data.landmarks import NUM_REGIONS
from ..diffusion import drop_condition
from ..metrics.image import crop_mouth, psnr_per_image, ssim_per_image
from ..models.latent import LatentCodec, load_codec
from ..models.unet import L2ICondition, L2IMode, L2IUNet
from .a2l import ValidationConfig
from .base import DiffusionConfig, DiffusionLitModule, OptimConfig

FRAME_METRICS = ("ssim", "psnr", "ssim_mouth", "psnr_mouth")


@dataclass
class L2INetConfig:
    """The L2I UNet (models/unet.py) and the optional latent space."""

    mode: L2IMode = "reference"  # reference | dubbing (adds the masked target frame and its mask, DreamHead's inputs)
    use_reference: bool = True  # false = the reference_image ablation: no reference frame / landmark image
    condition: L2ICondition = "landmarks"  # landmarks | audio (the landmark_hierarchy ablation: audio window -> frame)
    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [16, 8])  # feature-map sides (latent sides in LDM)
    head_channels: int = 32
    dropout: float = 0.1
    norm_groups: int = 32
    patch_size: int = 1  # 1 = ADM; 2 folds 2x2 pixels into channels (the UNet runs at half resolution)
    channels_last: bool = False  # NHWC convolutions: faster on CPU (oneDNN) and tensor cores
    vae_checkpoint: str | None = None  # TorchScript file or diffusers AutoencoderKL folder -> latent diffusion
    vae_scale_factor: float | None = None  # latent scale; None: the diffusers config's (0.18215 for SD) or 1.0


@dataclass
class L2IValidationConfig(ValidationConfig):
    media_samples: int = 4  # columns of the TensorBoard grid (rows: reference, landmarks or audio, generated, true)


@dataclass
class Stage2Config(RunConfig):
    model: L2INetConfig = field(default_factory=L2INetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: L2IValidationConfig = field(default_factory=L2IValidationConfig)


def to_unit(images: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] (clamped), the range of the image metrics."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def frame_scores(pred: Tensor, true: Tensor, landmarks68: Tensor) -> dict[str, Tensor]:
    """Per-image SSIM / PSNR on whole frames and on mouth crops; images (B, 3, H, W) in [-1, 1], landmarks (B, 68, 2)
    pixels of the ground-truth frame. Returns (B,) float64 tensors named as in ``FRAME_METRICS``."""
    p, t = to_unit(pred), to_unit(true)
    pm, tm = crop_mouth(p, landmarks68), crop_mouth(t, landmarks68)
    return {"ssim": ssim_per_image(p, t), "psnr": psnr_per_image(p, t),
            "ssim_mouth": ssim_per_image(pm, tm), "psnr_mouth": psnr_per_image(pm, tm)}


def audio_image(windows: Tensor, size: int) -> Tensor:
    """Audio windows (B, K, D) as (B, 1, size, size) images in [0, 1]: time left to right, low bins at the bottom.
    Normalised log-mel spans about [-3.2 (silence), 2.5] (``data.audio.LOGMEL_MEAN``/``LOGMEL_STD``)."""
    image = ((windows.detach().float().cpu() + 3.2) / 5.7).clamp(0, 1).transpose(1, 2).flip(1)[:, None]  # (B, 1, D, K)
    return F.interpolate(image, size=(size, size), mode="nearest")


def example_grid(rows: dict[str, Tensor], *, count: int, min_side: int = 128) -> np.ndarray:
    """uint8 (H, W, 3) grid: one row per entry of ``rows`` ((B, 3, H, W) in [-1, 1], or images in [0, 1] named
    ``landmarks``, ``mask`` or ``audio``), ``count`` samples as columns, enlarged (nearest) to at least ``min_side``
    pixels."""
    from ..viz import image_grid

    out = []
    for name, images in rows.items():
        x = images[:count].detach().float().cpu()
        x = x.clamp(0, 1) if "landmark" in name or name in ("mask", "audio") else to_unit(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        scale = max(1, -(-min_side // x.shape[-1]))
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="nearest")
        out.append([(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in x])
    return image_grid(out)


class L2IDiffusion(DiffusionLitModule):
    """Landmark image (or audio window) + reference appearance [+ masked target] -> frame, by conditional diffusion
    (pixel or latent). ``audio_feature`` / ``audio_context`` name the audio window of ``condition="audio"`` models
    (the DataModule's; unused by landmark models)."""

    STAGE = "stage2"

    def __init__(
        self,
        *,
        resolution: int,
        index68: list[int],
        landmark_channels: int = NUM_REGIONS,
        audio_feature: str = "logmel80",
        audio_context: int = 2,
        net: dict | None = None,
        diffusion: dict | None = None,
        optim: dict | None = None,
        validation: dict | None = None,
        codec: LatentCodec | None = None,
    ):
        super().__init__(diffusion=diffusion or {}, optim=optim or {})
        self.save_hyperparameters(ignore=["codec"])
        self.net_cfg = L2INetConfig(**(net or {}))
        self.val_cfg = L2IValidationConfig(**(validation or {}))
        self.resolution = resolution
        self.index68 = list(index68)
        n = self.net_cfg
        if n.mode not in get_args(L2IMode):
            raise ConfigError(f"model.mode={n.mode!r}: choose one of {list(get_args(L2IMode))}")
        if n.condition not in get_args(L2ICondition):
            raise ConfigError(f"model.condition={n.condition!r}: choose one of {list(get_args(L2ICondition))}")
        self.audio_feature, self.audio_context = audio_feature, audio_context
        audio_steps = audio_dim = None
        if n.condition == "audio":
            audio_steps, audio_dim = window_shape(build_feature_extractor(audio_feature), context=audio_context)
        if codec is None and n.vae_checkpoint:
            codec = load_codec(n.vae_checkpoint, scale_factor=n.vae_scale_factor)
        self.codec = codec
        if codec is not None:
            channels, h, w = codec.latent_shape(resolution)
            if h != w:
                raise ValueError(f"latent codec gives non-square {h}x{w} latents for {resolution} px frames")
            self.x_channels, self.x_size = channels, h
        else:
            self.x_channels, self.x_size = 3, resolution
        try:
            self.net = L2IUNet(
                mode=n.mode, use_reference=n.use_reference, condition=n.condition, audio_steps=audio_steps,
                audio_dim=audio_dim, image_channels=self.x_channels,
                landmark_channels=landmark_channels, resolution=self.x_size, base_channels=n.base_channels,
                channel_mult=tuple(n.channel_mult), num_res_blocks=n.num_res_blocks,
                attention_resolutions=tuple(n.attention_resolutions), head_channels=n.head_channels,
                dropout=n.dropout, norm_groups=n.norm_groups, patch_size=n.patch_size, channels_last=n.channels_last,
            )
        except ValueError as err:  # a layout that does not fit the working resolution: say which keys to change
            raise ConfigError(f"{err}. The UNet works at data.working_resolution ({resolution} px here): set "
                              "data.working_resolution to the size's own (64 demo, 256 paper) or change "
                              "model.attention_resolutions / model.channel_mult / model.patch_size to fit") from err
        if n.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.init_diffusion()
        names = [*FRAME_METRICS, *(f"{k}_ref" for k in FRAME_METRICS), "loss"]
        self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in names})

    @classmethod
    def from_datamodule(cls, dm, **kwargs: Any) -> "L2IDiffusion":
        """Build with the resolution and landmark layout the DataModule feeds (call after ``dm.setup()``)."""
        ctx = dm.ctx
        index68 = list(range(68)) if dm.hparams.landmark_set == "68" else list(ctx.topology.index68)
        module = cls(resolution=ctx.resolution, index68=index68, landmark_channels=NUM_REGIONS,
                     audio_feature=dm.hparams.audio_feature, audio_context=dm.hparams.audio_context, **kwargs)
        module.data_info = dm.describe()
        return module

    @property
    def latent(self) -> bool:
        return self.codec is not None

    # -- checkpoints: the frozen codec comes from model.vae_checkpoint (or the caller), not from our checkpoint ---

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("codec.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.codec is not None:
            checkpoint["state_dict"].update({f"codec.{k}": v for k, v in self.codec.state_dict().items()})

    # -- data <-> diffusion space ------------------------------------------------------------------------------

    def encode(self, images: Tensor) -> Tensor:
        """Frames (B, 3, H, W) in [-1, 1] -> diffusion space (the frames themselves, or scaled latents)."""
        if self.codec is None:
            return images
        with torch.no_grad():
            return self.codec.encode(images)

    def decode(self, x: Tensor) -> Tensor:
        """Diffusion space -> frames (B, 3, H, W) in [-1, 1]."""
        if self.codec is None:
            return x.clamp(-1.0, 1.0)
        with torch.no_grad():
            return self.codec.decode(x).clamp(-1.0, 1.0)

    def _resize(self, image: Tensor, *, mask: bool = False) -> Tensor:
        if image.shape[-1] == self.x_size:
            return image
        if mask:  # a latent cell is masked if any of its pixels is
            return F.adaptive_max_pool2d(image, self.x_size)
        return F.interpolate(image, size=(self.x_size, self.x_size), mode="bilinear", antialias=True,
                             align_corners=False)

    def conditions(
        self,
        *,
        landmark_image: Tensor | None = None,
        audio: Tensor | None = None,
        ref_frame: Tensor | None = None,
        ref_landmark_image: Tensor | None = None,
        masked_frame: Tensor | None = None,
        mask: Tensor | None = None,
        skip: set[str] = frozenset(),
    ) -> dict[str, Tensor]:
        """The UNet's conditions in diffusion space, only those it takes (see ``L2IUNet.condition_names``): the
        target's ``landmark_image`` (B, L, H, W) or ``audio`` window (B, K, D), and the appearance inputs.
        ``skip``: conditions the caller has already converted (left out of the result)."""
        given = {"landmarks": landmark_image, "audio": audio, "ref": ref_frame, "ref_landmarks": ref_landmark_image,
                 "masked": masked_frame, "mask": mask}
        missing = [k for k in self.net.conditions if given[k] is None and k not in skip]
        if missing:
            raise ValueError(f"stage 2 (mode={self.net.mode!r}, use_reference={self.net.use_reference}, "
                             f"condition={self.net.condition!r}) needs {list(self.net.conditions)}; missing {missing}")
        to_space = {"landmarks": self._resize, "audio": lambda a: a, "ref": self.encode, "ref_landmarks": self._resize,
                    "masked": self.encode, "mask": lambda m: self._resize(m, mask=True)}
        return {k: to_space[k](given[k]) for k in self.net.conditions if k not in skip}

    def batch_conditions(self, batch: dict) -> dict[str, Tensor]:
        return self.conditions(landmark_image=batch.get("landmark_image"), audio=batch.get("audio"),
                               ref_frame=batch.get("ref_frame"), ref_landmark_image=batch.get("ref_landmark_image"),
                               masked_frame=batch.get("masked_frame"), mask=batch.get("mask"))

    def audio_windows(self, samples: np.ndarray, num_frames: int) -> Tensor:
        """The per-frame audio windows (F, K, D) of 16 kHz mono ``samples``, as this model's training data had them."""
        return windows_for_frames(samples, num_frames, build_feature_extractor(self.audio_feature),
                                  context=self.audio_context)

    # -- training ------------------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0 = self.encode(batch["frame"])  # (B, C, h, w)
        drop = drop_condition(x0, self.diffusion_cfg.cond_drop_prob)
        out = self.diffusion.training_losses(self.net, x0, extra_args={**self.batch_conditions(batch), "drop": drop})
        b = x0.shape[0]
        self.log("train/loss", out["loss"], batch_size=b)
        self.log("loss", out["loss"], prog_bar=True, logger=False, batch_size=b)
        return out["loss"]

    # -- sampling ------------------------------------------------------------------------------------------------

    def sample_x(
        self,
        cond: dict[str, Tensor],
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        **sample_kwargs: Any,
    ) -> Tensor:
        """Samples in diffusion space (B, C, h, w) for conditions from :meth:`conditions` (sampler, steps,
        guidance_scale and progress as in ``sample_x0``); pixel-space predictions of x0 are clamped to [-1, 1] at
        every step. Distillation's targets (``lit/distill.py``) are these, before decoding."""
        b = next(iter(cond.values())).shape[0]
        no = torch.zeros(b, dtype=torch.bool, device=self.device)
        return self.sample_x0((b, self.x_channels, self.x_size, self.x_size), cond={**cond, "drop": no},
                              uncond={"drop": ~no}, noise=noise, generator=generator,
                              clip_x0=None if self.latent else 1.0, **sample_kwargs)

    def sample_frames(self, cond: dict[str, Tensor], **kwargs: Any) -> Tensor:
        """Frames (B, 3, H, W) in [-1, 1]: :meth:`sample_x`, decoded."""
        return self.decode(self.sample_x(cond, **kwargs))

    @torch.no_grad()
    def generate_frames(
        self,
        targets: Tensor,
        *,
        ref: Tensor | None = None,
        ref_landmarks: Tensor | None = None,
        masked: Tensor | None = None,
        mask: Tensor | None = None,
        noise_seed: int = 0,
        batch_size: int = 16,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Frames (T, 3, H, W) in [-1, 1] of one clip from its target conditions: landmark images (T, L, H, W), or
        audio windows (T, K, D) for a ``condition="audio"`` model.

        ``ref`` / ``ref_landmarks``: the reference frame and its landmark image, (3, H, W) / (L, H, W) shared by all
        frames or one per frame; ``masked`` (T, 3, H, W) and ``mask`` (T, 1, H, W) in dubbing mode. All frames start
        from ONE noise tensor (1, C, h, w) drawn from ``noise_seed``, so what the targets leave open is the same in
        every frame (with a deterministic sampler, ddim or dpmpp_2m, identical inputs give identical frames whatever
        the batching; ddpm adds fresh noise at every step). Frames are sampled ``batch_size`` at a time.
        """
        from tqdm.auto import tqdm

        frames = targets.shape[0]
        starts = range(0, frames, batch_size)

        def batch(start: int) -> dict[str, Tensor]:
            sel = targets[start : start + batch_size]
            out = {"targets": sel}
            for k, v in (("masked", masked), ("mask", mask), ("ref", ref), ("ref_landmarks", ref_landmarks)):
                if v is not None and v.ndim == 4:  # one per frame
                    out[k] = v[start : start + batch_size]
                elif v is not None and k in ("masked", "mask"):  # one for the clip
                    out[k] = v[None].expand(len(sel), *v.shape)
            return out

        batches = (batch(start) for start in tqdm(starts, desc="frames", unit="batch", disable=not progress,
                                                  leave=False))
        shared = {k: v for k, v in (("ref", ref), ("ref_landmarks", ref_landmarks)) if v is not None and v.ndim == 3}
        return torch.cat(list(self.frame_batches(batches, **shared, noise_seed=noise_seed, sampler=sampler,
                                                 steps=steps, guidance_scale=guidance_scale)))

    @torch.no_grad()
    def frame_batches(
        self,
        batches: Iterable[dict[str, Tensor]],
        *,
        ref: Tensor | None = None,
        ref_landmarks: Tensor | None = None,
        noise_seed: int = 0,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
    ) -> Iterator[Tensor]:
        """:meth:`generate_frames` one batch at a time, for streaming: yields frames (n, 3, H, W) in [-1, 1] for each
        dict of ``batches`` as soon as they are made.

        Each batch holds ``"targets"`` (n, L, H, W) or (n, K, D) and, per frame, ``"masked"``/``"mask"`` (dubbing)
        and optionally ``"ref"``/``"ref_landmarks"``. A reference shared by the whole clip, ``ref`` (3, H, W) /
        ``ref_landmarks`` (L, H, W), is brought to diffusion space ONCE here (a latent model encodes it once per
        video, not once per frame) and expanded per batch. Noise as in :meth:`generate_frames`, so the frames are the
        same whatever the batching.
        """
        dev = self.device
        target_key = "landmark_image" if self.net.condition == "landmarks" else "audio"  # conditions()' keyword
        # the shared reference in diffusion space, (1, ...) each: only what the network takes
        fixed: dict[str, Tensor] = {}
        if ref is not None and "ref" in self.net.conditions:
            fixed["ref"] = self.encode(ref.to(dev)[None])
        if ref_landmarks is not None and "ref_landmarks" in self.net.conditions:
            fixed["ref_landmarks"] = self._resize(ref_landmarks.to(dev)[None])
        gen = torch.Generator(device="cpu").manual_seed(noise_seed)
        noise = torch.randn(1, self.x_channels, self.x_size, self.x_size, generator=gen).to(dev)  # (1, C, h, w)
        for batch in batches:
            targets = batch["targets"].to(dev)
            n = len(targets)
            pick = lambda k: None if batch.get(k) is None else batch[k].to(dev)  # noqa: E731
            shared = {k: v.expand(n, *v.shape[1:]) for k, v in fixed.items() if k not in batch}
            cond = self.conditions(**{target_key: targets}, ref_frame=pick("ref"),
                                   ref_landmark_image=pick("ref_landmarks"), masked_frame=pick("masked"),
                                   mask=pick("mask"), skip=set(shared))
            cond.update(shared)
            yield self.sample_frames(cond, noise=noise.expand(n, -1, -1, -1).clone(),
                                     generator=torch.Generator(device="cpu").manual_seed(noise_seed + 1),
                                     sampler=sampler, steps=steps, guidance_scale=guidance_scale)

    # -- validation ----------------------------------------------------------------------------------------------

    def evaluate_batch(self, batch: dict, *, generator: torch.Generator | None = None, **sample_kwargs: Any) -> dict:
        """Sample frames from the batch's TRUE landmark images (or audio windows) and score them; also score the
        "copy the reference frame" baseline (``*_ref``). Per-image (B,) tensors, plus the ``generated`` frames."""
        generated = self.sample_frames(self.batch_conditions(batch), generator=generator, **sample_kwargs)
        lm68 = batch["landmarks"][:, self.index68].float().cpu()  # (B, 68, 2) pixels of the target frame
        frame = batch["frame"].cpu()
        scores = frame_scores(generated.cpu(), frame, lm68)
        ref = frame_scores(batch["ref_frame"].cpu(), frame, lm68)
        return {**scores, **{f"{k}_ref": v for k, v in ref.items()}, "generated": generated}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        b = batch["frame"].shape[0]
        gen = torch.Generator(device="cpu").manual_seed(self.val_cfg.seed + batch_idx)
        x0 = self.encode(batch["frame"])
        no = torch.zeros(b, dtype=torch.bool, device=self.device)
        with self.ema_weights():
            loss = self.diffusion.training_losses(self.net, x0, extra_args={**self.batch_conditions(batch), "drop": no},
                                                  generator=gen)
        self.val_metrics["loss"].update(loss["loss"])
        if not self._sampled(batch_idx):
            return
        values = self.evaluate_batch(batch, generator=gen)
        for k, v in values.items():
            if k in self.val_metrics:
                self.val_metrics[k].update(v.float().to(self.device))
        if batch_idx == 0 and self.val_cfg.log_media and self.trainer.is_global_zero:
            self._log_media(batch, values["generated"])

    def _sampled(self, batch_idx: int) -> bool:
        """Whether this validation batch is sampled: ``max_batches`` batches spread evenly over the split (its frames
        come clip by clip, so the first batches alone would show one clip)."""
        trainer = self._trainer
        total = None
        if trainer is not None:
            counts = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
            total = counts[0] if counts else None
        if not total or total == float("inf"):
            return batch_idx < self.val_cfg.max_batches
        stride = max(1, int(total) // max(1, self.val_cfg.max_batches))
        return batch_idx % stride == 0 and batch_idx // stride < self.val_cfg.max_batches

    def on_validation_epoch_end(self) -> None:
        self.log_validation_metrics()

    def _log_media(self, batch: dict, generated: Tensor) -> None:
        from ..viz import tensorboard_writer

        writer = tensorboard_writer(self.logger)
        if writer is None:
            return
        grid = example_grid(self.example_rows(batch, generated), count=self.val_cfg.media_samples)
        writer.add_image("val/examples", grid, self.global_step, dataformats="HWC")  # rows in the order of `rows`

    def example_rows(self, batch: dict, generated: Tensor) -> dict[str, Tensor]:
        """The rows of an example grid (validation and ``evaluate.py``): what the model was given (reference, the
        target landmark image or the audio window drawn as a spectrogram, [the masked target]), what it generated
        and the truth."""
        if self.net.condition == "landmarks":
            target = {"landmarks": batch["landmark_image"]}
        else:
            target = {"audio": audio_image(batch["audio"], batch["frame"].shape[-1])}
        rows = {"reference": batch["ref_frame"], **target}
        if self.net.mode == "dubbing":
            rows["masked"] = batch["masked_frame"]
        rows.update({"generated": generated, "true": batch["frame"]})
        return rows


__all__ = ["L2IDiffusion", "L2INetConfig", "L2IValidationConfig", "Stage2Config", "audio_image",
           "frame_scores", "example_grid"]
