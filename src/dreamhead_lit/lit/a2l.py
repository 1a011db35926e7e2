"""Stage 1 of DreamHead: audio-to-landmark (A2L) diffusion as a LightningModule.

The model generates a window of canonical landmark *displacements* from the speaker's reference landmarks,
x0 = (landmarks - ref) / motion_std, conditioned on per-frame audio windows, the diffusion step, the reference and
an emotion code. ``temporal_smooth`` (switchable, see ``A2LNetConfig.temporal_units`` and
``A2LLossConfig.velocity_weight / acceleration_weight``) is the temporal-consistency part: the temporal units of
the network plus velocity and acceleration losses on the x0 prediction.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from ..config import ConfigError, RunConfig
from ..data.audio import build_feature_extractor, windows_for_frames
from ..diffusion import Inpaint, drop_condition
from ..metrics.lmd import landmark_distance, landmark_jitter
from ..models.a2l import A2LDenoiser
from .base import DiffusionConfig, DiffusionLitModule, OptimConfig


@dataclass
class A2LNetConfig:
    dim: int = 256
    depth: int = 4
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    temporal_units: bool = True  # attention across frames + temporal conv (half of `temporal_smooth`)
    temporal_kernel: int = 5
    attention_window: int | None = None  # temporal attention reaches +-this many frames (None: the whole window)
    use_emotion: bool = True  # MEAD-style emotion code as a condition


TemporalWeighting = Literal["all", "signal"]


@dataclass
class A2LLossConfig:
    velocity_weight: float = 1.0  # |Δx̂ - Δx|² on the x0 prediction (half of `temporal_smooth`)
    acceleration_weight: float = 1.0  # |Δ²x̂ - Δ²x|²
    # where on the noise scale the velocity/acceleration losses act on x̂: "all" (every t, equal weight) or "signal"
    # (each window's terms weighted by alpha_bar_t, the signal's share of x_t: full weight where x_t still shows the
    # motion, none in pure noise, where x̂ can only be the mean motion and matching the truth's jerk is guesswork)
    temporal_weighting: TemporalWeighting = "all"
    prefix_prob: float = 0.5  # share of training windows that get known leading frames (teaches continuation)
    # share of training windows whose emotion is replaced by "unknown" (the null code) while the audio stays: speech
    # without a label (a user's audio, HDTF) is then in distribution. Without it, "unknown" was only ever seen with
    # the audio dropped too (classifier-free guidance), and label-free generation was twice as far off and shaky.
    emotion_drop_prob: float = 0.2


@dataclass
class A2LGenerationConfig:
    overlap: int = 8  # frames each window shares with the previous one when generating long audio
    resample: int = 1  # RePaint resampling of the overlap (1 = plain replacement; the prefix channel does the rest)
    # The fast path (issue 17): at demo size 60 s of audio in 0.99 s on one busy core (12.3 s at 20 steps, one lane);
    # whole-clip M-LMD +3.9 %, jitter +0.3 % against 20 steps one lane. window_batch=1, steps=None: the old plan.
    window_batch: int = 16  # windows sampled side by side as parallel lanes on long audio (see generate)
    # a lane gets at least this many windows: short audio (a 4 s bench clip has 4 windows) keeps the sequential plan,
    # whose windows continue each other by inpainting instead of meeting at cross-faded lane seams; 60 s has 62
    min_lane_windows: int = 4
    steps: int | None = 5  # sampler steps for generate (long audio); None = diffusion.sample_steps


@dataclass
class ValidationConfig:
    max_batches: int = 4  # validation batches that are sampled (sampling is the costly part)
    log_media: bool = True  # landmark animations and image grids in TensorBoard
    seed: int = 1234  # fixed noise, so validation metrics compare across epochs


@dataclass
class Stage1Config(RunConfig):
    model: A2LNetConfig = field(default_factory=A2LNetConfig)
    loss: A2LLossConfig = field(default_factory=A2LLossConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    generation: A2LGenerationConfig = field(default_factory=A2LGenerationConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


def window_starts(total: int, *, window: int, overlap: int) -> list[int]:
    """First frame of each generation window: stride window - overlap, the last window flush with the end.

    Each window after the first regenerates nothing it can take from its predecessor: its first
    ``previous_start + window - start`` frames (at least ``overlap``) are known.
    """
    if total <= window:
        return [0]
    starts = list(range(0, total - window + 1, window - overlap))
    if starts[-1] + window < total:
        starts.append(total - window)
    return starts


def to_pixels(canonical: Tensor, to_image: Tensor) -> Tensor:
    """(B, T, N, 2) canonical -> pixels with per-frame affine (B, T, 2, 3)."""
    return torch.einsum("btij,btnj->btni", to_image[..., :2], canonical) + to_image[..., None, :, 2]


class A2LDiffusion(DiffusionLitModule):
    """Audio -> canonical dense-landmark sequence, by conditional diffusion over windows."""

    STAGE = "stage1"

    def __init__(
        self,
        *,
        num_points: int,
        audio_steps: int,
        audio_dim: int,
        index68: list[int],
        resolution: int,
        window: int,
        audio_feature: str = "logmel80",
        audio_context: int = 2,
        net: dict | None = None,
        loss: dict | None = None,
        diffusion: dict | None = None,
        optim: dict | None = None,
        generation: dict | None = None,
        validation: dict | None = None,
    ):
        super().__init__(diffusion=diffusion or {}, optim=optim or {})
        self.save_hyperparameters()
        self.net_cfg = A2LNetConfig(**(net or {}))
        self.loss_cfg = A2LLossConfig(**(loss or {}))
        if self.loss_cfg.temporal_weighting not in get_args(TemporalWeighting):  # a config file is checked on load
            raise ConfigError(f"loss.temporal_weighting={self.loss_cfg.temporal_weighting!r}: choose one of "
                              f"{list(get_args(TemporalWeighting))}")
        self.gen_cfg = A2LGenerationConfig(**(generation or {}))
        self.val_cfg = ValidationConfig(**(validation or {}))
        self.num_points = num_points
        self.index68 = list(index68)
        self.resolution = resolution
        self.window = window
        self.net = A2LDenoiser(num_points=num_points, audio_steps=audio_steps, audio_dim=audio_dim,
                               **asdict(self.net_cfg))
        self.init_diffusion()
        # scale of the displacements, measured on the first training batch (kept in checkpoints)
        self.register_buffer("motion_std", torch.zeros(()))
        self.val_metrics = torch.nn.ModuleDict({
            k: MeanMetric() for k in ("lmd_mouth", "lmd_face", "lmd_mouth_static", "lmd_face_static", "jitter",
                                      "jitter_gt", "loss")
        })

    @classmethod
    def from_datamodule(cls, dm, **kwargs: Any) -> "A2LDiffusion":
        """Build with the shapes the DataModule feeds (call after ``dm.setup()``)."""
        k, d = dm.audio_shape
        ctx = dm.ctx
        index68 = (list(range(68)) if dm.hparams.landmark_set == "68" else list(ctx.topology.index68))
        module = cls(num_points=dm.num_landmarks, audio_steps=k, audio_dim=d, index68=index68,
                     resolution=ctx.resolution, window=dm.hparams.window, audio_feature=dm.hparams.audio_feature,
                     audio_context=dm.hparams.audio_context, **kwargs)
        module.data_info = dm.describe()
        return module

    # -- data <-> diffusion space ------------------------------------------------------------------------------

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self.motion_std.item() == 0.0:  # first step of a new model: measure the displacement scale once
            std = (batch["landmarks"] - batch["ref_landmarks"][:, None]).std().clamp_min(1e-4)
            if self.trainer.world_size > 1:  # every rank must use the same scale
                std = self.trainer.strategy.reduce(std, reduce_op="mean")
            self.motion_std.fill_(float(std))

    def encode(self, landmarks: Tensor, ref: Tensor) -> Tensor:
        """(B, T, N, 2) canonical -> (B, T, 2N) normalised displacement."""
        return ((landmarks - ref[:, None]) / self.motion_std).flatten(2)

    def decode(self, x0: Tensor, ref: Tensor) -> Tensor:
        return ref[:, None] + x0.unflatten(2, (self.num_points, 2)) * self.motion_std

    def _cond(self, batch: dict, *, drop: Tensor, prefix: Tensor | None = None, prefix_len: Tensor | None = None):
        b, t = batch["audio"].shape[:2]
        device = batch["audio"].device
        if prefix is None:
            prefix = torch.zeros(b, t, 2 * self.num_points, device=device)
        frames = torch.arange(t, device=device)[None, :, None]
        lengths = torch.zeros(b, device=device) if prefix_len is None else prefix_len
        mask = (frames < lengths[:, None, None]).float()  # (B, T, 1)
        return {
            "audio": batch["audio"],
            "ref": batch["ref_landmarks"].flatten(1),
            "emotion": batch["emotion"],
            "prefix": prefix,
            "prefix_mask": mask,
            "drop": drop,
        }

    # -- training ------------------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0 = self.encode(batch["landmarks"], batch["ref_landmarks"])  # (B, T, P)
        b, t, _ = x0.shape
        drop = drop_condition(x0[:, 0, 0], self.diffusion_cfg.cond_drop_prob)
        unknown = drop_condition(x0[:, 0, 0], self.loss_cfg.emotion_drop_prob)
        batch = {**batch, "emotion": torch.where(unknown, self.net.emotion.num_embeddings - 1, batch["emotion"])}
        # some windows learn to continue known leading frames (how long audio is stitched seamlessly)
        with_prefix = torch.rand(b, device=self.device) < self.loss_cfg.prefix_prob
        lengths = torch.randint(1, max(2, t // 2 + 1), (b,), device=self.device) * with_prefix
        cond = self._cond(batch, drop=drop, prefix=x0, prefix_len=lengths.float())
        out = self.diffusion.training_losses(self.net, x0, extra_args=cond)
        loss = out["loss"]
        logs = {"train/diffusion": out["loss"]}
        l = self.loss_cfg
        if l.velocity_weight > 0 or l.acceleration_weight > 0:
            x0_hat = out["x0_hat"]
            w = (self.schedule.alphas_cumprod.to(x0)[out["t"]] if l.temporal_weighting == "signal"
                 else torch.ones(b, device=x0.device, dtype=x0.dtype))  # (B,)
            per_window = lambda a, b_: ((a - b_) ** 2).mean(dim=(1, 2))  # noqa: E731
            vel = (w * per_window(x0_hat.diff(dim=1), x0.diff(dim=1))).mean()
            acc = (w * per_window(x0_hat.diff(n=2, dim=1), x0.diff(n=2, dim=1))).mean()
            loss = loss + l.velocity_weight * vel + l.acceleration_weight * acc
            logs.update({"train/velocity": vel, "train/acceleration": acc})
        logs["train/loss"] = loss
        self.log_dict(logs, prog_bar=False, batch_size=b)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b)
        return loss

    # -- validation ----------------------------------------------------------------------------------------------

    def sample_window(self, batch: dict, *, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """Sample canonical landmarks (B, T, N, 2) for a batch of windows."""
        b, t = batch["audio"].shape[:2]
        no = torch.zeros(b, dtype=torch.bool, device=self.device)
        cond = self._cond(batch, drop=no, prefix=kwargs.pop("prefix", None), prefix_len=kwargs.pop("prefix_len", None))
        x0 = self.sample_x0((b, t, 2 * self.num_points), cond=cond, uncond={"drop": ~no}, generator=generator,
                            **kwargs)
        return self.decode(x0, batch["ref_landmarks"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        b = batch["audio"].shape[0]
        x0 = self.encode(batch["landmarks"], batch["ref_landmarks"])
        gen = torch.Generator(device="cpu").manual_seed(self.val_cfg.seed + batch_idx)
        no = torch.zeros(b, dtype=torch.bool, device=self.device)
        with self.ema_weights():
            loss = self.diffusion.training_losses(self.net, x0, extra_args=self._cond(batch, drop=no), generator=gen)
        self.val_metrics["loss"].update(loss["loss"])
        if batch_idx >= self.val_cfg.max_batches:
            return
        values = self.evaluate_batch(batch, generator=gen)
        for k, v in values.items():
            if k in self.val_metrics:
                self.val_metrics[k].update(v)
        if batch_idx == 0 and self.val_cfg.log_media and self.trainer.is_global_zero:
            self._log_media(values["pred_px"][0], values["true_px"][0])

    def evaluate_batch(self, batch: dict, *, generator: torch.Generator | None = None, **sample_kwargs: Any) -> dict:
        """Sample a batch of windows and score it: per-window LMD (pixels at the dataset resolution, 68 points),
        the same for the "reference landmarks held still" baseline, and jitter of prediction and ground truth."""
        pred = self.sample_window(batch, generator=generator, **sample_kwargs)
        to_px = lambda x: to_pixels(x, batch["to_image"])[..., self.index68, :]  # noqa: E731  (B, T, 68, 2)
        pred_px, true_px = to_px(pred), to_px(batch["landmarks"])
        static_px = to_px(batch["ref_landmarks"][:, None].expand_as(batch["landmarks"]))
        mouth, face = list(range(48, 68)), list(range(68))
        return {
            "lmd_mouth": landmark_distance(pred_px, true_px, mouth),
            "lmd_face": landmark_distance(pred_px, true_px, face),
            "lmd_mouth_static": landmark_distance(static_px, true_px, mouth),
            "lmd_face_static": landmark_distance(static_px, true_px, face),
            "jitter": landmark_jitter(pred_px),
            "jitter_gt": landmark_jitter(true_px),
            "pred_px": pred_px,
            "true_px": true_px,
        }

    def on_validation_epoch_end(self) -> None:
        values = self.log_validation_metrics()
        if "jitter" in values:
            self.log("val/jitter_ratio", values["jitter"] / values["jitter_gt"].clamp_min(1e-8))

    def _log_media(self, pred: Tensor, true: Tensor) -> None:
        from ..viz import COLOURS, draw_landmark_frames, log_video, tensorboard_writer

        writer = tensorboard_writer(self.logger)
        if writer is None:
            return
        frames = draw_landmark_frames([true.cpu().numpy(), pred.cpu().numpy()], size=192, source_size=self.resolution,
                                      colours=[COLOURS["true"], COLOURS["pred"]], labels=["true", "pred"])
        log_video(writer, "val/landmarks_pred_vs_true", frames, step=self.global_step)
        writer.add_image("val/landmarks_strip", np.concatenate(list(frames[:: max(1, len(frames) // 8)][:8]), 1),
                         self.global_step, dataformats="HWC")

    # -- generation for any length -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        audio: np.ndarray | Tensor,
        *,
        ref_landmarks: np.ndarray | Tensor,
        emotion: int | None = None,
        num_frames: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        overlap: int | None = None,
        window_batch: int | None = None,
        seed: int = 0,
        progress: bool = False,
        timings: dict[str, float] | None = None,
    ) -> Tensor:
        """Canonical landmarks (F, N, 2) for 16 kHz mono ``audio`` of any length.

        The audio is cut into windows of the training length that overlap by ``overlap`` frames. Each window after
        the first is sampled with the first half of the overlap given as known leading frames (prefix channel +
        replacement inpainting), and over the second half the result is cross-faded from the previous window's
        frames to the new ones (overlap-add), so the windows continue each other without a seam.

        ``window_batch`` (default ``generation.window_batch``) > 1 samples that many windows in one network batch: the
        audio is split into as many overlapping stretches ("lanes"), each continued window by window as above, all
        lanes at once; neighbouring lanes overlap by at least ``overlap`` frames and are cross-faded there. The
        network costs about the same for one window or sixteen on a CPU (it is small: per-call overhead dominates),
        so long audio takes several times less. ``window_batch=1`` is the one-lane plan above, unchanged.
        ``steps`` defaults to ``generation.steps``, else ``diffusion.sample_steps``. ``timings``: receives the
        seconds spent on the audio features (``audio_features``).
        """
        hp = self.hparams
        samples = audio.detach().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio, dtype=np.float32)
        total = num_frames or max(1, int(np.ceil(len(samples) / 640)))
        began = time.perf_counter()
        windows = windows_for_frames(samples, total, build_feature_extractor(hp.audio_feature),
                                     context=hp.audio_context).to(self.device)  # (F, K, D)
        if timings is not None:
            timings["audio_features"] = timings.get("audio_features", 0.0) + time.perf_counter() - began
        w = self.window
        o = self.gen_cfg.overlap if overlap is None else overlap
        if not 0 <= o < w:
            raise ValueError(f"overlap must be in [0, window={w}), got {o}")
        batch_size = self.gen_cfg.window_batch if window_batch is None else window_batch
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"window_batch must be an int >= 1, got {batch_size!r}")
        steps = steps or self.gen_cfg.steps
        origins, offsets, span = lane_plan(total, window=w, overlap=o, lanes=batch_size,
                                           min_windows=self.gen_cfg.min_lane_windows)
        lanes = len(origins)
        p = 2 * self.num_points
        ref = torch.as_tensor(np.asarray(ref_landmarks), dtype=torch.float32, device=self.device)[None]  # (1, N, 2)
        emo = torch.full((lanes,), emotion if emotion is not None else self.net.emotion.num_embeddings - 1,
                         device=self.device)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = torch.zeros(lanes, span, p, device=self.device)  # each lane in its own frame numbering
        origin = torch.as_tensor(origins, device=self.device)[:, None]  # (L, 1)
        no = torch.zeros(lanes, dtype=torch.bool, device=self.device)
        from tqdm.auto import tqdm

        done = 0  # frames of each lane already generated
        with self.ema_weights():  # one swap for all windows
            for start in tqdm(offsets, desc="landmarks", unit="window", disable=not progress, leave=False):
                idx = (origin + torch.arange(start, start + w, device=self.device)).clamp(max=total - 1)  # (L, w)
                batch = {"audio": windows[idx], "ref_landmarks": ref.expand(lanes, -1, -1), "emotion": emo}
                shared = max(0, done - start)  # frames this window shares with what is already generated
                known = (shared + 1) // 2  # the first half is given (prefix channel + inpainting) ...
                prefix = out[:, start : start + w].clone()  # (L, w, P)
                inpaint = None
                if known:
                    mask = (torch.arange(w, device=self.device) < known)[None, :, None]
                    inpaint = Inpaint(mask=mask, known_x0=prefix, resample=self.gen_cfg.resample)
                x0 = self.sample_x0((lanes, w, p),
                                    cond=self._cond(batch, drop=no, prefix=prefix,
                                                    prefix_len=torch.full((lanes,), float(known), device=self.device)),
                                    uncond={"drop": ~no}, sampler=sampler, steps=steps,
                                    guidance_scale=guidance_scale, generator=gen, inpaint=inpaint)
                # ... and the second half is cross-faded from the previous window's frames to this window's, so the
                # trajectory turns from one to the other over several frames instead of at one frame
                blend = torch.zeros(w, 1, device=self.device)
                if shared > known:
                    ramp = torch.arange(1, shared - known + 1, device=self.device, dtype=torch.float32)
                    blend[known:shared, 0] = 1.0 - ramp / (shared - known + 1)
                blend[:known] = 1.0
                out[:, start : start + w] = blend * prefix + (1.0 - blend) * x0
                done = start + w
        return self.decode(merge_lanes(out, origins, total)[None], ref)[0]  # (F, N, 2)


def lane_plan(total: int, *, window: int, overlap: int, lanes: int,
              min_windows: int = 1) -> tuple[list[int], list[int], int]:
    """How :meth:`A2LDiffusion.generate` covers ``total`` frames with up to ``lanes`` lanes sampled side by side.

    Returns ``(origins, offsets, span)``: the first frame of each lane, the first frame of each of its windows
    counted from the lane's origin (the same for every lane, so all lanes sample window ``j`` in one batch), and
    the frames a lane covers. One lane is the plain sequential plan (:func:`window_starts`). With more, every lane
    has ``m`` windows at stride ``window - overlap``, the lanes are spread evenly from the first frame to the last,
    and neighbouring lanes overlap by at least ``overlap`` frames (``lanes * m`` windows cover at least what the
    ``n`` sequential ones do). A lane gets at least ``min_windows`` windows (fewer lanes otherwise).
    """
    starts = window_starts(total, window=window, overlap=overlap)
    lanes = min(lanes, max(1, len(starts) // max(1, min_windows)))
    if lanes == 1:
        return [0], starts, max(total, window)
    per_lane = -(-len(starts) // lanes)  # windows per lane (ceil)
    stride = window - overlap
    span = window + (per_lane - 1) * stride
    lanes = min(lanes, -(-len(starts) // per_lane))  # no lane that would only repeat its neighbours
    if lanes == 1:
        return [0], starts, max(total, window)
    origins = [round(k * (total - span) / (lanes - 1)) for k in range(lanes)]
    return origins, [j * stride for j in range(per_lane)], span


def merge_lanes(out: Tensor, origins: list[int], total: int) -> Tensor:
    """Lanes ``(L, span, P)`` starting at ``origins`` -> one sequence ``(total, P)``, cross-faded linearly where
    neighbouring lanes overlap (overlap-add with weights that sum to one)."""
    lanes, span, p = out.shape
    acc = torch.zeros(total + span, p, device=out.device)
    norm = torch.zeros(total + span, 1, device=out.device)
    for k, origin in enumerate(origins):
        weight = torch.ones(span, 1, device=out.device)
        if k > 0:  # fade in over the overlap with the previous lane
            n = origins[k - 1] + span - origin
            weight[:n, 0] = torch.minimum(weight[:n, 0], torch.arange(1, n + 1, device=out.device) / (n + 1))
        if k + 1 < lanes:  # fade out over the overlap with the next lane
            n = origin + span - origins[k + 1]
            weight[span - n :, 0] = torch.minimum(weight[span - n :, 0],
                                                  torch.arange(n, 0, -1, device=out.device) / (n + 1))
        acc[origin : origin + span] += weight * out[k]
        norm[origin : origin + span] += weight
    return acc[:total] / norm[:total]
