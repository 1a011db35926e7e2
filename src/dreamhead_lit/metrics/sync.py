"""Lip-sync scores LSE-D and LSE-C: the joonson/syncnet_python evaluation, as Wav2Lip and later papers report it.

Per video (25 fps face crops, 16 kHz audio):

1. embeddings per frame position ``i`` in ``0 .. min(T, floor(N / 640)) - 6``: video from frames ``i .. i+4``,
   audio from MFCC steps ``4i .. 4i+19`` (0.2 s each; the official loop stops 5 frames before the end);
2. for each offset ``k`` in ``-vshift .. +vshift`` (15 frames): ``dist[i, k] = ||v_i - a_{i+k} + 1e-6||`` (torch's
   ``pairwise_distance``), with zero vectors standing in for audio beyond either end, as the original pads;
3. ``mdist[k]`` = mean over ``i``; **LSE-D** = ``min mdist``, **LSE-C** = ``median(mdist) - min(mdist)``;
   **AV offset** = ``vshift - argmin`` (index into the 31 offsets).

Sign convention of the offset: ``offset = +k`` means video frame ``i`` matches audio frame ``i - k`` best, i.e. the
video lags the audio by ``k`` frames (the audio comes ``k`` frames early); 0 is in sync.

The network that produces the embeddings is an *expert*: the official SyncNet (``syncnet_v2.model``, resolved from
the weights folders) or a framework-trained one. Results always carry the expert's name: an LSE from another
expert is not comparable with published LSE numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from dreamhead_lit.data.audio import SAMPLE_RATE, SAMPLES_PER_FRAME
from dreamhead_lit.metrics._common import ReportMixin, uint8_frames
from dreamhead_lit.metrics.weights import SYNCNET_V2, resolve_weights
from dreamhead_lit.models.syncnet import (
    MFCC_STEPS_PER_FRAME,
    MFCC_WINDOW_STEPS,
    SYNCNET_FRAME_SIZE,
    SYNCNET_WINDOW_FRAMES,
    SyncNetModel,
    load_syncnet,
    syncnet_mfcc,
)

__all__ = [
    "DEFAULT_VSHIFT",
    "OFFICIAL_EXPERT_NAME",
    "SyncScores",
    "sync_scores_from_embeddings",
    "SyncExpert",
    "SyncNetExpert",
    "SyncMetric",
]

DEFAULT_VSHIFT = 15
OFFICIAL_EXPERT_NAME = "syncnet_v2 (joonson/syncnet_python official)"


@dataclass(frozen=True)
class SyncScores:
    """The sync evaluation of one video."""

    lse_d: float  # min over offsets of the mean embedding distance (lower is better)
    lse_c: float  # median minus min of that curve (higher is better)
    offset: int  # vshift - argmin; > 0: the video lags the audio by that many frames
    mdist: np.ndarray  # (2 * vshift + 1,): mdist[j] pairs video i with audio i + j - vshift (AV offset vshift - j)
    num_frames: int  # frame positions that were compared


def sync_scores_from_embeddings(video_emb: Tensor, audio_emb: Tensor, *, vshift: int = DEFAULT_VSHIFT) -> SyncScores:
    """LSE-D, LSE-C and AV offset from per-frame embeddings ``(T, D)`` of video and audio (module docstring)."""
    if video_emb.ndim != 2 or video_emb.shape != audio_emb.shape:
        raise ValueError(
            f"video and audio embeddings must both be (T, D), got {tuple(video_emb.shape)} and {tuple(audio_emb.shape)}"
        )
    if len(video_emb) == 0:
        raise ValueError("no embeddings to compare (the clip is shorter than one 5-frame window)")
    if vshift < 0:
        raise ValueError(f"vshift must be >= 0, got {vshift}")
    v, a = video_emb.detach().float().cpu(), audio_emb.detach().float().cpu()
    win = 2 * vshift + 1
    a_padded = F.pad(a, (0, 0, vshift, vshift))  # (T + 2 vshift, D): zeros beyond both ends, as the original
    a_windows = a_padded.unfold(0, win, 1).transpose(1, 2)  # (T, win, D): row i holds audio i - vshift .. i + vshift
    dist = F.pairwise_distance(v[:, None, :].expand_as(a_windows), a_windows)  # (T, win)
    mdist = dist.mean(dim=0)  # (win,)
    min_val, min_idx = torch.min(mdist, dim=0)
    return SyncScores(
        lse_d=float(min_val),
        lse_c=float(torch.median(mdist) - min_val),
        offset=int(vshift - int(min_idx)),
        mdist=mdist.numpy(),
        num_frames=int(len(v)),
    )


@runtime_checkable
class SyncExpert(Protocol):
    """What the sync metric needs from a lip-sync expert: a name and per-frame embeddings of one clip."""

    name: str

    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[Tensor, Tensor]:
        """``frames`` ``(T, H, W, 3)`` uint8 RGB face crops at 25 fps, ``audio`` ``(N,)`` float32 16 kHz ->
        ``(video_emb, audio_emb)``, each ``(T', D)``, row ``i`` covering the same 0.2 s of both streams."""
        ...


class SyncNetExpert:
    """A :class:`SyncNetModel` with the official preprocessing: the expert behind LSE-C / LSE-D.

    Frames are resized to 224x224 (bilinear, anti-aliased), turned to BGR with raw 0-255 values (the official
    model saw OpenCV images); audio goes through :func:`~dreamhead_lit.models.syncnet.syncnet_mfcc`.

    Args:
        model: the network (eval mode is set here).
        name: label that goes with every score; :meth:`official` uses :data:`OFFICIAL_EXPERT_NAME`.
        batch_size: windows per forward pass.
        device: where to run the network (default: where its parameters are).
    """

    def __init__(self, model: SyncNetModel, *, name: str, batch_size: int = 20, device: str | torch.device | None = None) -> None:
        if not name:
            raise ValueError("a sync expert needs a name: the results must say which network scored them")
        self.model = model.eval()
        self.name = name
        self.batch_size = int(batch_size)
        first = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        self.model.to(self.device)

    @classmethod
    def official(cls, *, weights_path: str | Path | None = None, batch_size: int = 20, device: str | torch.device | None = None) -> SyncNetExpert:
        """The official SyncNet from ``syncnet_v2.model``.

        Raises:
            MissingWeightsError: the file is in none of the weights folders.
        """
        path = Path(weights_path) if weights_path is not None else resolve_weights(
            SYNCNET_V2.filename, purpose="LSE-C/LSE-D (official SyncNet)", url_hint=SYNCNET_V2.url
        )
        return cls(load_syncnet(path), name=OFFICIAL_EXPERT_NAME, batch_size=batch_size, device=device)

    def _video_tensor(self, frames: np.ndarray) -> Tensor:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W) RGB 0-255
        if x.shape[-2:] != (SYNCNET_FRAME_SIZE, SYNCNET_FRAME_SIZE):
            x = F.interpolate(x, size=(SYNCNET_FRAME_SIZE, SYNCNET_FRAME_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x.flip(1)  # RGB -> BGR, (T, 3, 224, 224)

    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[Tensor, Tensor]:
        clip = uint8_frames(frames, name="frames")
        if clip.ndim != 4:
            raise ValueError(f"frames must be a clip (T, H, W, 3), got shape {clip.shape}")
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        num_frames = min(len(clip), len(audio) // SAMPLES_PER_FRAME)
        positions = num_frames - SYNCNET_WINDOW_FRAMES  # the official loop: range(0, min_length - 5)
        if positions < 1:
            raise ValueError(
                f"clip too short for SyncNet: {len(clip)} frames and {len(audio)} samples give {num_frames} usable "
                f"frames; at least {SYNCNET_WINDOW_FRAMES + 1} are needed"
            )
        video = self._video_tensor(clip[: positions + SYNCNET_WINDOW_FRAMES - 1])  # (T, 3, 224, 224)
        cc = torch.from_numpy(syncnet_mfcc(audio, sample_rate=SAMPLE_RATE))  # (13, steps)
        v_out, a_out = [], []
        with torch.no_grad():
            for start in range(0, positions, self.batch_size):
                idx = range(start, min(positions, start + self.batch_size))
                vwin = torch.stack([video[i : i + SYNCNET_WINDOW_FRAMES].transpose(0, 1) for i in idx])  # (B, 3, 5, 224, 224)
                awin = torch.stack(
                    [cc[:, i * MFCC_STEPS_PER_FRAME : i * MFCC_STEPS_PER_FRAME + MFCC_WINDOW_STEPS] for i in idx]
                )[:, None]  # (B, 1, 13, 20)
                v_out.append(self.model.forward_lip(vwin.to(self.device)).cpu())
                a_out.append(self.model.forward_aud(awin.to(self.device)).cpu())
        return torch.cat(v_out), torch.cat(a_out)


class SyncMetric(ReportMixin, Metric):
    """Mean LSE-C and LSE-D over videos (one video per ``update(frames, audio)``), DDP-safe.

    Args:
        expert: None for the official SyncNet (:meth:`SyncNetExpert.official`; raises MissingWeightsError when
            ``syncnet_v2.model`` is absent); a :class:`SyncExpert`; or a :class:`SyncNetModel` (e.g. trained by this
            framework), wrapped in :class:`SyncNetExpert` under ``expert_name``.
        expert_name: required with a bare module; overrides nothing otherwise.
        vshift: offsets searched on each side (15 frames, as the field).

    ``compute()`` returns ``{"lse_c", "lse_d"}`` tensors; :meth:`report` adds ``sync_expert`` (which network scored),
    ``sync_videos`` and ``sync_abs_offset`` (mean |AV offset| in frames).
    """

    higher_is_better = None  # LSE-C: higher is better; LSE-D: lower is better
    is_differentiable = False
    full_state_update = False

    lse_c_sum: Tensor
    lse_d_sum: Tensor
    abs_offset_sum: Tensor
    videos: Tensor

    def __init__(
        self,
        expert: SyncExpert | nn.Module | None = None,
        *,
        expert_name: str | None = None,
        vshift: int = DEFAULT_VSHIFT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if expert is None:
            expert = SyncNetExpert.official()
        elif isinstance(expert, nn.Module):
            if not (hasattr(expert, "forward_lip") and hasattr(expert, "forward_aud")):
                raise TypeError("a module expert must have forward_lip and forward_aud (the SyncNetModel interface)")
            if not expert_name:
                raise ValueError("expert_name is required with a module expert: results must say which network scored them")
            expert = SyncNetExpert(expert, name=expert_name)  # type: ignore[arg-type]
        elif not isinstance(expert, SyncExpert):
            raise TypeError(f"expert must be a SyncExpert, a SyncNetModel or None, got {type(expert).__name__}")
        self.expert = expert
        self.expert_name = expert.name
        self.vshift = int(vshift)
        for name in ("lse_c_sum", "lse_d_sum", "abs_offset_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("videos", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, frames: Any, audio: Any) -> None:
        """Add one video: face-crop frames ``(T, H, W, 3)`` uint8 RGB at 25 fps and its 16 kHz mono audio ``(N,)``."""
        audio_np = audio.detach().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
        v, a = self.expert.embed(uint8_frames(frames, name="frames"), audio_np.astype(np.float32))
        scores = sync_scores_from_embeddings(v, a, vshift=self.vshift)
        self.lse_c_sum = self.lse_c_sum + scores.lse_c
        self.lse_d_sum = self.lse_d_sum + scores.lse_d
        self.abs_offset_sum = self.abs_offset_sum + abs(scores.offset)
        self.videos = self.videos + 1

    def _means(self) -> tuple[float, float, float]:
        n = int(self.videos)
        if n == 0:
            raise ValueError("SyncMetric: no video was added; call update(frames, audio) first")
        return float(self.lse_c_sum) / n, float(self.lse_d_sum) / n, float(self.abs_offset_sum) / n

    def compute(self) -> dict[str, Tensor]:
        c, d, _ = self._means()
        return {"lse_c": torch.tensor(c, dtype=torch.float64), "lse_d": torch.tensor(d, dtype=torch.float64)}

    def _report_values(self) -> dict[str, float | int | str]:
        c, d, off = self._means()
        return {"lse_c": c, "lse_d": d, "sync_abs_offset": off, "sync_videos": int(self.videos), "sync_expert": self.expert_name}
