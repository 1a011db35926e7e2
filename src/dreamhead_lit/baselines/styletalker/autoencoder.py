"""StyleTalker†'s image side: a frame autoencoder trained on the dataset, the stand-in for the paper's pretrained
style-based generator and its inversion encoder (Min et al., arXiv 2208.10922, Sec. 3.1: frames are edits of the
reference image's latent code). No such generator can be downloaded for these faces, so BASELINES.md's substitute is
this: a deterministic conv encoder, frame (3, H, W) in [-1, 1] -> code w (D,), and a conv decoder, code -> frame.

- Encoder: ``patch_size`` x ``patch_size`` pixels folded into channels, a 3x3 stem, then stride-2 levels (GroupNorm,
  SiLU, 4x4 conv) down to a 4x4 map that is flattened, not averaged (where the mouth and head are is what a talking
  head's code must keep), and a linear layer to D.
- Decoder: a linear layer to that 4x4 map, the levels mirrored (nearest 2x upsampling, 3x3 conv, GroupNorm, SiLU),
  a last conv to ``3 * patch_size**2`` channels unfolded to pixels, tanh. ``decode`` is differentiable: the motion
  model back-propagates its lip-sync loss through this frozen decoder.
- Loss: ``l1_weight * L1 + ssim_weight * (1 - SSIM)`` (the framework's SSIM, ``metrics.image.ssim_per_image``, as a
  float32 convolution: :func:`differentiable_ssim`) and,
  only when the ImageNet AlexNet file resolves (``metrics.weights``), ``lpips_weight * LPIPS``; without that file the
  perceptual term is skipped with a warning naming it, never computed with random weights.

Validation reconstructs every validation frame and scores it as stage 2 does (SSIM / PSNR of whole frames and mouth
crops, ``lit.l2i.frame_scores``), next to "copy the reference frame" (``*_ref``) and, as ``l1`` vs ``l1_mean_frame``,
next to the train split's mean frame: a code that carries its frame beats both by far.

After training, :func:`export_codes` writes every frame's code (``<run>/latents/``) and every frame's code with its
mouth masked (``<run>/motion_latents/``, ``masking.py``: the motion encoder's input), in DAE-Talker†'s cache format
(``baselines/daetalker/latents.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ...config import ConfigError, RunConfig
from ...data.clip import ClipReader
from ...data.datamodule import FrameDataset, resize_frames
from ...lit.base import DiffusionLitModule, OptimConfig, warmup_cosine
from ...lit.l2i import FRAME_METRICS, L2IDiffusion, example_grid, frame_scores, to_unit
from ...metrics.image import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, _gaussian_1d
from ...models.unet import _groups
from ..daetalker.latents import LATENTS_DIR, write_latent_cache
from .masking import DEFAULT_BOX, box_pixels, mask_mouth, mouth_centres

MODEL_NAME = "styletalker_autoencoder"
MOTION_LATENTS_DIR = "motion_latents"


@dataclass
class FrameAENetConfig:
    """The encoder and decoder (:class:`FrameEncoder`, :class:`FrameDecoder`) and the motion encoder's mouth mask."""

    latent_dim: int = 512  # D, the code w (the paper's style-based generator has a 512-d W space)
    patch_size: int = 2  # p x p pixels folded into channels first (unfolded last): no conv runs at full resolution
    # encoder: the stem's channels (at H / p), then one stride-2 level per further entry; the decoder mirrors them
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 512, 512])
    norm_groups: int = 32
    channels_last: bool = True  # NHWC convolutions: faster on CPU (oneDNN) and tensor cores
    mouth_mask: list[float] = field(default_factory=lambda: list(DEFAULT_BOX))  # (width, height), fractions of frame


@dataclass
class FrameAELossConfig:
    l1_weight: float = 1.0
    ssim_weight: float = 0.5  # weight of (1 - SSIM): structure (edges of lips and teeth) that L1 alone blurs
    lpips_weight: float = 0.0  # only when alexnet-owt-7be5be79.pth resolves; skipped with a warning otherwise


@dataclass
class FrameAEValidationConfig:
    max_batches: int = 0  # validation batches scored, spread over the split; 0 = all (a reconstruction is one pass)
    log_media: bool = True  # a TensorBoard grid: true frames, reconstructions, the motion encoder's masked input
    media_samples: int = 8  # columns of that grid


@dataclass
class FrameAEConfig(RunConfig):
    model: FrameAENetConfig = field(default_factory=FrameAENetConfig)
    loss: FrameAELossConfig = field(default_factory=FrameAELossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: FrameAEValidationConfig = field(default_factory=FrameAEValidationConfig)


def _levels(resolution: int, channels: Sequence[int], patch_size: int) -> int:
    """Side of the innermost map; a ValueError when ``resolution`` does not fold and halve down to it evenly."""
    if not channels or patch_size < 1:
        raise ValueError(f"need at least one channel count and patch_size >= 1, got channels={list(channels)}, "
                         f"patch_size={patch_size}")
    div = patch_size * 2 ** (len(channels) - 1)
    if resolution % div:
        raise ValueError(f"{resolution} px frames cannot be folded by patch_size={patch_size} and halved "
                         f"{len(channels) - 1} times (channels={list(channels)})")
    return resolution // div


class FrameEncoder(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] -> codes (B, latent_dim)."""

    def __init__(self, *, resolution: int, latent_dim: int, channels: Sequence[int], patch_size: int = 2,
                 norm_groups: int = 32, channels_last: bool = False):
        super().__init__()
        side = _levels(resolution, channels, patch_size)
        self.resolution, self.latent_dim = resolution, latent_dim
        layers: list[nn.Module] = [nn.PixelUnshuffle(patch_size)] if patch_size > 1 else []
        layers.append(nn.Conv2d(3 * patch_size ** 2, channels[0], 3, padding=1))
        cin = channels[0]
        for cout in channels[1:]:
            layers += [nn.GroupNorm(_groups(cin, norm_groups), cin), nn.SiLU(), nn.Conv2d(cin, cout, 4, stride=2, padding=1)]
            cin = cout
        layers += [nn.GroupNorm(_groups(cin, norm_groups), cin), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(cin * side * side, latent_dim)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, frames: Tensor) -> Tensor:
        if frames.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"FrameEncoder was built for (3, {self.resolution}, {self.resolution}) frames, got "
                             f"{tuple(frames.shape[1:])}")
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        h = self.features(frames)  # (B, C, side, side)
        return self.out(h.flatten(1))  # (B, D)


class FrameDecoder(nn.Module):
    """Codes (B, latent_dim) -> frames (B, 3, H, W) in (-1, 1); ``channels`` in the decoder's order (innermost
    first)."""

    def __init__(self, *, resolution: int, latent_dim: int, channels: Sequence[int], patch_size: int = 2,
                 norm_groups: int = 32, channels_last: bool = False):
        super().__init__()
        self.side = _levels(resolution, channels, patch_size)
        self.resolution, self.latent_dim, self.c0 = resolution, latent_dim, channels[0]
        self.input = nn.Linear(latent_dim, channels[0] * self.side ** 2)
        layers: list[nn.Module] = []
        cin = channels[0]
        for cout in channels[1:]:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                       nn.GroupNorm(_groups(cout, norm_groups), cout), nn.SiLU()]
            cin = cout
        layers += [nn.Conv2d(cin, cin, 3, padding=1), nn.GroupNorm(_groups(cin, norm_groups), cin), nn.SiLU(),
                   nn.Conv2d(cin, 3 * patch_size ** 2, 3, padding=1)]
        if patch_size > 1:
            layers.append(nn.PixelShuffle(patch_size))
        self.body = nn.Sequential(*layers)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, codes: Tensor) -> Tensor:
        h = self.input(codes).view(-1, self.c0, self.side, self.side)  # (B, C, side, side)
        return torch.tanh(self.body(h)).contiguous()  # (B, 3, H, W)


def differentiable_ssim(pred: Tensor, true: Tensor) -> Tensor:
    """SSIM ``(B,)`` of images ``(B, C, H, W)`` in [0, 1], differentiable: ``metrics.image.ssim_per_image``'s definition
    (Wang et al. 2004, eq. 13: 11x11 Gaussian window, sigma 1.5, "valid" filtering, mean over pixels and channels)
    in the images' dtype, the five local statistics filtered together by two depthwise 1-D convolutions. The
    metric's float64 shifted-sum filter is exact but, as a training loss on CPU, costs more than the network
    (6x this; the two agree to 1e-5, see the tests)."""
    c = pred.shape[1]
    stats = torch.cat([pred, true, pred * pred, true * true, pred * true], 1)  # (B, 5C, H, W)
    k = stats.shape[1]
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA, dtype=stats.dtype, device=stats.device)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)  # along W, valid
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)  # along H, valid
    mu_x, mu_y, xx, yy, xy = stats.split(c, 1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y  # population (weighted) statistics
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data range 1
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def dataset_mean_frame(readers: Sequence[ClipReader], resolution: int, *, frames_per_clip: int = 16) -> Tensor:
    """(3, R, R) in [-1, 1]: the mean of ``frames_per_clip`` evenly spaced frames of each clip, resized as the
    training samples are: the "no code at all" baseline a reconstruction must beat."""
    total, count = torch.zeros(3, resolution, resolution, dtype=torch.float64), 0
    for reader in readers:
        idx = np.linspace(0, reader.num_frames - 1, min(frames_per_clip, reader.num_frames)).round().astype(int)
        frames = resize_frames(np.stack([reader.frame(int(t)) for t in idx]), resolution)
        total += torch.from_numpy(frames.astype(np.float64)).sum(0).permute(2, 0, 1) / 127.5 - len(idx)
        count += len(idx)
    return (total / max(count, 1)).float()


class FrameAutoencoder(L.LightningModule):
    """The frame autoencoder: ``encode_frames`` / ``encode_clip`` (frames -> codes, deterministic), ``decode`` (codes
    -> frames, differentiable), ``reconstruct``; trained with L1 + SSIM (+ LPIPS where its weights exist)."""

    STAGE = MODEL_NAME

    def __init__(self, *, resolution: int, index68: list[int], num_points: int, net: dict | None = None,
                 loss: dict | None = None, optim: dict | None = None, validation: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net_cfg = n = FrameAENetConfig(**(net or {}))
        self.loss_cfg = FrameAELossConfig(**(loss or {}))
        self.optim_cfg = OptimConfig(**(optim or {}))
        self.val_cfg = FrameAEValidationConfig(**(validation or {}))
        self.resolution, self.index68, self.num_points = int(resolution), list(index68), int(num_points)
        try:
            box_pixels((self.resolution, self.resolution), n.mouth_mask)
        except ValueError as err:
            raise ConfigError(f"model.mouth_mask={list(n.mouth_mask)}: {err}") from err
        try:
            kw = dict(resolution=self.resolution, latent_dim=n.latent_dim, patch_size=n.patch_size,
                      norm_groups=n.norm_groups, channels_last=n.channels_last)
            self.encoder = FrameEncoder(channels=tuple(n.channels), **kw)
            self.decoder = FrameDecoder(channels=tuple(reversed(n.channels)), **kw)
        except ValueError as err:
            raise ConfigError(f"{err}. The autoencoder works at data.working_resolution ({resolution} px here): change "
                              "model.channels / model.patch_size, or data.working_resolution, to fit") from err
        # the train split's mean frame (set by from_datamodule, saved with the weights): validation's floor
        self.register_buffer("mean_frame", torch.zeros(3, self.resolution, self.resolution))
        names = [*FRAME_METRICS, *(f"{k}_ref" for k in FRAME_METRICS), "loss", "l1", "l1_mean_frame"]
        self.val_metrics = nn.ModuleDict({k: MeanMetric() for k in names})
        self.data_info: dict | None = None
        self.perceptual_loss: str | None = None  # what the LPIPS term ran with, once training started; None: no term
        self._lpips: list[nn.Module] = []  # in a list: never a submodule, so never saved with the weights

    @classmethod
    def from_datamodule(cls, dm, **kwargs: Any) -> "FrameAutoencoder":
        """Build for the resolution the (stage ``"l2i"``) DataModule feeds, with the mean frame of its train split;
        call after ``dm.setup()``."""
        ctx = dm.ctx
        module = cls(resolution=ctx.resolution, index68=list(ctx.topology.index68),
                     num_points=ctx.topology.num_points, **kwargs)
        module.data_info = dm.describe()
        train = dm.datasets.get(dm.hparams.train_split)
        if train is not None:
            module.mean_frame.copy_(dataset_mean_frame(train.readers, ctx.resolution))
        return module

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    # -- landmarks and the mouth mask ----------------------------------------------------------------------------

    def landmarks68(self, landmarks: Tensor | np.ndarray) -> Tensor:
        """``(..., 68, 2)`` float32 of landmarks ``(..., P, 2)``: the dataset's dense set (P = ``num_points``) or the 68
        points already."""
        lm = landmarks if isinstance(landmarks, Tensor) else torch.from_numpy(np.array(landmarks, dtype=np.float32))
        if lm.shape[-2] == 68:
            return lm.float()
        if lm.shape[-2] == self.num_points:
            return lm[..., self.index68, :].float()
        raise ValueError(f"landmarks with {lm.shape[-2]} points: this autoencoder's dataset has {self.num_points} "
                         "(or give the 68-point set)")

    def mask_mouth(self, frames: Tensor, landmarks: Tensor | np.ndarray) -> Tensor:
        """Frames ``(T, 3, R, R)`` in [-1, 1] with the configured mouth box (``model.mouth_mask``) blanked around each
        frame's mouth; ``landmarks`` ``(T, P, 2)`` in pixels of these frames."""
        return mask_mouth(frames, mouth_centres(self.landmarks68(landmarks)), box=self.net_cfg.mouth_mask)

    # -- encoding and decoding -----------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_frames(self, frames: Tensor, *, batch_size: int = 64) -> Tensor:
        """Codes ``(T, D)`` float32 on the CPU of frames ``(T, 3, R, R)`` in [-1, 1] (eval mode, deterministic)."""
        if frames.ndim != 4 or frames.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"encode_frames: expected (T, 3, {self.resolution}, {self.resolution}) frames in [-1, 1], "
                             f"got {tuple(frames.shape)}")
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            out = [self.encoder(frames[i:i + batch_size].to(self.device, torch.float32)).float().cpu()
                   for i in range(0, len(frames), batch_size)]
        finally:
            self.encoder.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.latent_dim)

    def encode_clip(self, frames: np.ndarray | Tensor, *, landmarks: np.ndarray | Tensor | None = None,
                    batch_size: int = 64) -> Tensor:
        """Codes ``(T, D)`` of one clip's frames: uint8 ``(T, H, W, 3)`` at any resolution (resized as the training
        samples were, ``data.datamodule.resize_frames``), or float ``(T, 3, R, R)`` in [-1, 1] at the model's.

        ``landmarks`` ``(T, P, 2)`` (pixels of the frames given; the dataset's dense set or 68 points): the codes of
        the frames with their mouths masked (``motion_latents``, the motion encoder's input) instead."""
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ValueError(f"encode_clip: expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
            scale = self.resolution / frames.shape[1]
        elif frames.ndim != 4 or frames.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"encode_clip: expected float (T, 3, {self.resolution}, {self.resolution}) frames in "
                             f"[-1, 1] (or uint8 (T, H, W, 3)), got {tuple(frames.shape)}")
        else:
            scale = 1.0
        if landmarks is not None and len(landmarks) != len(frames):
            raise ValueError(f"encode_clip: {len(frames)} frames but {len(landmarks)} landmark sets")
        out = []
        for i in range(0, len(frames), batch_size):  # chunks: a long clip is never held as floats at once
            chunk = frames[i:i + batch_size]
            if isinstance(chunk, np.ndarray):
                chunk = resize_frames(np.array(chunk), self.resolution)  # a copy: frames may be read-only memory maps
                chunk = torch.stack([FrameDataset.to_tensor(f) for f in chunk])
            if landmarks is not None:
                lm = self.landmarks68(landmarks[i:i + batch_size]) * scale  # the resize scales pixels with the frame
                chunk = mask_mouth(chunk, mouth_centres(lm), box=self.net_cfg.mouth_mask)
            out.append(self.encode_frames(chunk, batch_size=batch_size))
        return torch.cat(out) if out else torch.zeros(0, self.latent_dim)

    def decode(self, codes: Tensor) -> Tensor:
        """Frames ``(..., 3, R, R)`` in (-1, 1) of codes ``(..., D)``, differentiable (gradients reach the codes), on
        the codes' device (which must be the module's)."""
        if codes.shape[-1] != self.latent_dim:
            raise ValueError(f"decode: expected codes (..., {self.latent_dim}), got {tuple(codes.shape)}")
        weight = self.decoder.input.weight
        if codes.device != weight.device:
            raise ValueError(f"decode: codes on {codes.device}, the decoder on {weight.device}; move one to the other")
        frames = self.decoder(codes.reshape(-1, self.latent_dim).to(weight.dtype))  # (N, 3, R, R)
        return frames.reshape(*codes.shape[:-1], 3, self.resolution, self.resolution)

    @torch.no_grad()
    def reconstruct(self, frames: Tensor, *, batch_size: int = 64) -> Tensor:
        """Frames ``(T, 3, R, R)`` in [-1, 1] encoded and decoded: float32 on the CPU."""
        codes = self.encode_frames(frames, batch_size=batch_size)
        out = [self.decode(codes[i:i + batch_size].to(self.device)).float().cpu()
               for i in range(0, len(codes), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 3, self.resolution, self.resolution)

    # -- training ------------------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        self.setup_perceptual_loss()

    def setup_perceptual_loss(self) -> None:
        """Build the LPIPS network when ``loss.lpips_weight`` > 0 and its AlexNet file resolves; otherwise warn, once,
        naming the file, and train without the term (a random trunk would be a meaningless loss)."""
        self._lpips, self.perceptual_loss = [], None
        weight = self.loss_cfg.lpips_weight
        if weight <= 0:
            return
        from ...metrics.lpips import PRETRAINED_BACKBONE_LABEL, build_lpips_net
        from ...metrics.weights import MissingWeightsError

        try:
            net = build_lpips_net()
        except MissingWeightsError as err:
            rank_zero_warn(f"loss.lpips_weight={weight}: the perceptual (LPIPS) loss is SKIPPED, its weights file "
                           f"{err.filename} was not found (searched: {', '.join(map(str, err.searched))}); training "
                           f"with L1 + SSIM only. Put {err.filename} in {err.searched[0]} to train with it, or set "
                           "loss.lpips_weight=0 to silence this.", category=UserWarning)
            return
        self._lpips = [net.to(self.mean_frame.device)]
        self.perceptual_loss = PRETRAINED_BACKBONE_LABEL

    def losses(self, frames: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """({"l1", "ssim" (1 - SSIM), ["lpips"], "loss" (the weighted sum)}, reconstructions) of frames (B, 3, R, R)."""
        c = self.loss_cfg
        recon = self.decoder(self.encoder(frames))  # (B, 3, R, R)
        terms = {"l1": (recon - frames).abs().mean()}
        total = c.l1_weight * terms["l1"]
        if c.ssim_weight:
            terms["ssim"] = 1.0 - differentiable_ssim(to_unit(recon), to_unit(frames)).mean()
            total = total + c.ssim_weight * terms["ssim"]
        if self._lpips:
            net = self._lpips[0].to(frames.device)
            terms["lpips"] = net(recon, frames).mean()
            total = total + c.lpips_weight * terms["lpips"]
        terms["loss"] = total
        return terms, recon

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        terms, _ = self.losses(batch["frame"])
        b = batch["frame"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=b)
        self.log("loss", terms["loss"], prog_bar=True, logger=False, batch_size=b)
        return terms["loss"]

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        decay, no_decay = [], []
        for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
            (no_decay if p.ndim < 2 else decay).append(p)  # no decay on norms and biases
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas))
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, warmup_steps=o.warmup_steps,
                                                                min_lr_ratio=o.min_lr_ratio, trainer=self._trainer)}

    # -- validation ----------------------------------------------------------------------------------------------

    def _scored(self, batch_idx: int) -> bool:
        return self.val_cfg.max_batches <= 0 or L2IDiffusion._sampled(self, batch_idx)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        frames = batch["frame"]
        terms, recon = self.losses(frames)
        self.val_metrics["loss"].update(terms["loss"])
        if not self._scored(batch_idx):
            return
        recon, true = recon.float().cpu(), frames.float().cpu()
        lm68 = self.landmarks68(batch["landmarks"].float().cpu())
        scores = frame_scores(recon, true, lm68)
        ref = frame_scores(batch["ref_frame"].float().cpu(), true, lm68)
        scores.update({f"{k}_ref": v for k, v in ref.items()})
        scores["l1"] = (recon - true).abs().mean((1, 2, 3))
        scores["l1_mean_frame"] = (self.mean_frame.cpu()[None] - true).abs().mean((1, 2, 3))
        for k, v in scores.items():
            self.val_metrics[k].update(v.float().to(self.device))
        if batch_idx == 0 and self.val_cfg.log_media and self.trainer.is_global_zero:
            from ...viz import tensorboard_writer

            writer = tensorboard_writer(self.logger)
            if writer is not None:
                rows = {"true": true, "reconstructed": recon, "motion input (mouth masked)": self.mask_mouth(true, lm68)}
                grid = example_grid(rows, count=self.val_cfg.media_samples)
                writer.add_image("val/examples", grid, self.global_step, dataformats="HWC")

    def on_validation_epoch_end(self) -> None:
        DiffusionLitModule.log_validation_metrics(self)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # training adds the registry name (training.ModelHeader)
        checkpoint.setdefault("dreamhead", {}).update(stage=self.STAGE, data=self.data_info,
                                                      perceptual_loss=self.perceptual_loss)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        header = checkpoint.get("dreamhead", {})
        self.data_info, self.perceptual_loss = header.get("data"), header.get("perceptual_loss")


def export_codes(run_dir: Path, trainer: L.Trainer, cfg: DictConfig) -> dict:
    """The registry's ``export`` hook (rank zero, after training): ``<run>/latents/`` (every frame's code) and
    ``<run>/motion_latents/`` (every frame's code with its mouth masked, from the clip's own landmarks) of every clip
    of every split the DataModule loaded, from the weights training ended with (``checkpoints/last.ckpt``)."""
    module: FrameAutoencoder = trainer.lightning_module
    readers = [r for ds in trainer.datamodule.datasets.values() for r in ds.readers]
    out = {}
    for folder, encode in ((LATENTS_DIR, None),
                           (MOTION_LATENTS_DIR, lambda r: module.encode_clip(r.frames(), landmarks=r.landmarks))):
        index = write_latent_cache(module, readers, Path(run_dir) / folder, checkpoint="last.ckpt", encode=encode)
        out[folder] = {"dir": folder, "dim": index["dim"], "clips": len(index["clips"])}
    return out


__all__ = ["FrameAEConfig", "FrameAELossConfig", "FrameAENetConfig", "FrameAEValidationConfig", "FrameAutoencoder",
           "FrameDecoder", "FrameEncoder", "MODEL_NAME", "MOTION_LATENTS_DIR", "dataset_mean_frame", "export_codes",
           "differentiable_ssim"]
