"""StyleTalker's contrastive lip-sync discriminator (Min et al., arXiv 2208.10922; BASELINES.md, StyleTalker item 2):
a SyncNet-style audio / lower-face embedding pair trained contrastively, then frozen and used as a sync loss of the
motion model. Sizes, shifts and the loss form are chosen here (the experiment files say why).

Input (one window of ``model.window`` = W consecutive frames)::

    audio        (B, W, K, A)     each frame's audio window, as the DataModule cuts it (log-mel, ±audio_context frames)
    lower_faces  (B, W, 3, h, w)  the lower halves (rows H/2:) of the frames, resized to model.face_size, in [-1, 1]

The lower faces are the frozen frame autoencoder's ``decode`` of the cached codes (``<autoencoder run>/latents/``):
the discriminator judges the domain the motion model produces (decoded codes), not real video. The autoencoder is
never part of this model's checkpoint: the run that trained it is recorded in the hyper-parameters
(``hparams.autoencoder``) and reloaded from there (or injected: :meth:`SyncDiscriminator.attach_autoencoder`).

Networks (both differ on purpose from the bench's sync scorer, ``models/sync_expert.py``'s joonson-SyncNet layout
with a Conv3d video stream, BatchNorm and MFCC input):

- audio: per frame, a 1-D conv stack over the K steps of its log-mel window (pooled), then a 1-D conv stack over the
  W frames -> a unit vector of ``model.embed_dim`` dims;
- faces: the W lower halves stacked on channels (3W), a 2-D conv stack with stride 2, GroupNorm and SiLU (no
  BatchNorm: no batch statistics, so a sample's score does not depend on its batch, in training, in DDP or as a loss),
  global average pool -> a unit vector.

Score: ``x = cos(a, f) / τ + b`` (τ learnable by default, kept in [0.01, 1]; b learnable).

Training (one sample = ``data.window`` ≥ W + 2·max_shift frames of one clip; the face window sits in the middle and
audio windows are cut at every offset s in [-max_shift, max_shift]):

- InfoNCE, faces -> audio: each face window against every audio window of the batch (every sample, every offset);
  the positive is its own offset 0. Negatives are the other samples' windows (in-batch) and its own clip's windows
  shifted by ≥ ``loss.min_shift`` frames (SyncNet's off-sync pairs: they make it judge timing, not who speaks).
  Windows of the same clip closer than ``min_shift`` frames to the face window (a small shift shares most of its
  audio) are left out, as are another sample's windows of the same clip at such distances;
- InfoNCE, audio -> faces: each offset-0 audio window against the batch's face windows (same exclusion);
- a binary (sigmoid) term on the same scores, ``loss.binary_weight`` × ½ BCE(positives) + ¼ BCE(shifted) + ¼
  BCE(in-batch): InfoNCE is blind to the bias b, the binary term calibrates ``σ(x)`` as P(in sync).

:meth:`SyncDiscriminator.sync_logprob` = ``log σ(x)``: differentiable in the lower faces, bounded above by 0 and
saturating once the pair is judged in sync (its gradient σ(−x) vanishes there), so a generator's loss
``−sync_logprob`` pushes out-of-sync mouths without over-optimising good ones (the log-softmax against shifted pairs
would need audio outside the window the generator produces).

Validation: ``val/sync_acc``, the share of windows whose true offset scores above every shifted offset
``min_shift ≤ |s| ≤ max_shift`` (the negatives the loss sees); ``val/offset_acc``, the share whose best offset in
``[-max_shift, max_shift]`` is exactly 0 (SyncNet's offset search, stricter: the ±1, ±2 neighbours share most of the
audio); ``val/p_sync`` / ``val/p_shifted``, mean σ(x) of true and shifted pairs; ``val/loss``.

:func:`load_sync_discriminator` gives the frozen model to a generator's training; it refuses the bench's sync scorer
and any checkpoint not headed ``styletalker_sync``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ...checkpoints import CheckpointError
from ...config import ConfigError, DataConfig, RunConfig, to_container
from ...data.clip import ClipReader
from ...data.datamodule import clip_windows
from ...lit.base import OptimConfig, warmup_cosine
from ..daetalker.latents import INDEX_FILE, LATENTS_DIR
from ..daetalker.speech2latent import LatentCache, LatentWindowDataset, Speech2LatentDataModule, autoencoder_run_dir

MODEL_NAME = "styletalker_sync"
AUTOENCODER_MODEL = "styletalker_autoencoder"  # runs/<this>/<run>/latents/: the codes decoded into lower faces
VAL_METRICS = ("loss", "sync_acc", "offset_acc", "p_sync", "p_shifted")
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 1.0


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SyncAutoencoderRef:
    """The ``autoencoder:`` section: the frame-autoencoder run whose codes are decoded into the lower faces."""

    run: str | None = None  # a run name under runs/styletalker_autoencoder/, or a run folder (holding latents/)


@dataclass
class SyncNetConfig:
    window: int = 5  # frames judged together (SyncNet's 5 frames, 0.2 s at 25 fps)
    embed_dim: int = 128  # E: both streams' unit embeddings
    audio_channels: int = 128  # width of both audio conv stacks
    audio_layers: int = 2  # 1-D convs over the W frames (after the per-frame stack)
    face_size: int = 64  # frames are resized to this before the lower half (face_size/2 x face_size) is cut
    face_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # one stride-2 conv each
    groups: int = 8  # GroupNorm groups (channel counts must be multiples)
    temperature: float = 0.1  # τ at the start
    learn_temperature: bool = True  # CLIP's learnable τ (kept in [0.01, 1]); false: τ fixed


@dataclass
class SyncLossConfig:
    min_shift: int = 3  # frames: a negative is ≥ this far from the true offset (closer ones share the audio)
    max_shift: int = 6  # frames: offsets in ±this are cut from each sample (data.window ≥ window + 2·max_shift)
    binary_weight: float = 1.0  # the sigmoid term that calibrates σ(x) = P(in sync); 0: InfoNCE only


@dataclass
class SyncDiscriminatorConfig(RunConfig):
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: SyncAutoencoderRef = field(default_factory=SyncAutoencoderRef)
    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    loss: SyncLossConfig = field(default_factory=SyncLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# ---------------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------------


def _conv_gn(conv: nn.Module, channels: int, groups: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.GroupNorm(math.gcd(groups, channels), channels), nn.SiLU())


class AudioEncoder(nn.Module):
    """``(N, W, K, A)`` audio windows -> ``(N, E)`` unit vectors: a 1-D conv stack over each frame's K steps (pooled
    over time, :meth:`frames`), then one over the W frames (:meth:`pool`). Split in two so the frames that the
    shifted windows of one sample share are encoded once."""

    def __init__(self, *, audio_dim: int, window: int, channels: int, layers: int, embed_dim: int,
                 groups: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(audio_dim)  # per step: log-mel levels differ across recordings
        self.frame = nn.Sequential(_conv_gn(nn.Conv1d(audio_dim, channels, 3, padding=1), channels, groups),
                                   _conv_gn(nn.Conv1d(channels, channels, 3, stride=2, padding=1), channels, groups))
        self.time = nn.Sequential(*[_conv_gn(nn.Conv1d(channels, channels, 3, padding=1), channels, groups)
                                    for _ in range(layers)])
        self.head = nn.Linear(channels * window, embed_dim)

    def frames(self, audio: Tensor) -> Tensor:
        """``(..., T, K, A)`` -> ``(..., T, C)``: each frame's audio window on its own."""
        k, a = audio.shape[-2:]
        x = self.norm(audio).reshape(-1, k, a).transpose(1, 2)  # (N·T, A, K)
        return self.frame(x).mean(-1).reshape(*audio.shape[:-2], -1)

    def pool(self, frames: Tensor) -> Tensor:
        """``(N, W, C)`` frame features -> ``(N, E)`` unit vectors."""
        return F.normalize(self.head(self.time(frames.transpose(1, 2)).flatten(1)), dim=-1)

    def forward(self, audio: Tensor) -> Tensor:
        return self.pool(self.frames(audio))


class FaceEncoder(nn.Module):
    """``(N, W, 3, h, w)`` lower faces -> ``(N, E)`` unit vectors: the W frames stacked on channels (3W), stride-2
    convs with GroupNorm, global average pool."""

    def __init__(self, *, window: int, channels: list[int], embed_dim: int, groups: int) -> None:
        super().__init__()
        chans = [3 * window, *channels]
        self.convs = nn.Sequential(*[
            nn.Sequential(_conv_gn(nn.Conv2d(cin, cout, 3, stride=2, padding=1), cout, groups),
                          _conv_gn(nn.Conv2d(cout, cout, 3, padding=1), cout, groups))
            for cin, cout in zip(chans[:-1], chans[1:])])
        self.head = nn.Linear(chans[-1], embed_dim)

    def forward(self, faces: Tensor) -> Tensor:
        x = self.convs(faces.flatten(1, 2))  # (N, C, h', w')
        return F.normalize(self.head(x.mean((-2, -1))), dim=-1)  # (N, E)


# ---------------------------------------------------------------------------------------------------------------
# Data: audio windows + the autoencoder's cached codes
# ---------------------------------------------------------------------------------------------------------------


class SyncWindowDataset(LatentWindowDataset):
    """:class:`LatentWindowDataset`'s windows (the same clips, starts and audio cut) with only what the discriminator
    reads: ``audio`` float32 (T, K, A), ``latents`` float32 (T, D), ``clip`` and ``start`` (where the window lies,
    so windows of one clip are never each other's negatives). The canonical landmarks, reference and pose of the
    full sample are left out: they cost four fifths of its time, and this model trains in a couple of minutes."""

    def _item(self, index: int) -> dict:
        c, start = self.index[index]
        reader, w = self.readers[c], self.window
        if start < 0:  # a training window: a random start, drawn as the parent draws it
            start = int(self._rng().integers(0, reader.num_frames - w + 1))
        audio = clip_windows(self._features(c), start, start + w, num_frames=reader.num_frames,
                             steps_per_frame=self.extractor.steps_per_frame, context=self.context)  # (T, K, A)
        latents = self.cache[reader.record.id][start:start + w]
        return {"audio": audio.contiguous(), "latents": torch.from_numpy(np.array(latents, dtype=np.float32)),
                "clip": torch.tensor(c, dtype=torch.long), "start": torch.tensor(start, dtype=torch.long)}


class SyncDataModule(Speech2LatentDataModule):
    """:class:`Speech2LatentDataModule` on a ``styletalker_autoencoder`` run's code cache (``latents``: its
    ``latents/`` folder), serving :class:`SyncWindowDataset` samples of T = ``window`` frames."""

    def __init__(self, *, latents: str | Path, **data) -> None:
        cache = LatentCache(latents, model=AUTOENCODER_MODEL)  # a missing cache named as this model's
        super().__init__(latents=latents, **data)
        self.cache = cache
        self.autoencoder_dir = Path(latents).parent

    def _make_dataset(self, readers: list[ClipReader], *, train: bool) -> SyncWindowDataset:
        h = self.hparams
        return SyncWindowDataset(self.ctx, readers, cache=self.cache, window=h.window, feature=h.audio_feature,
                                 context=h.audio_context, train=train, windows_per_clip=h.windows_per_clip)


def sync_datamodule(cfg: DictConfig) -> SyncDataModule:
    """The registry's ``datamodule`` hook: ``data`` with the codes of the ``autoencoder.run``, set up for fitting."""
    run = autoencoder_run_dir(cfg.autoencoder.run, cfg.runs_root, model=AUTOENCODER_MODEL)
    dm = SyncDataModule(latents=str(run / LATENTS_DIR), **to_container(cfg.data))  # str: saved in checkpoints
    dm.prepare_data()
    dm.setup("fit")
    dm.require_splits(cfg.data.train_split, cfg.data.val_split)
    return dm


# ---------------------------------------------------------------------------------------------------------------
# The frozen autoencoder
# ---------------------------------------------------------------------------------------------------------------


def autoencoder_checkpoint(run_dir: Path) -> Path:
    """The autoencoder checkpoint whose encoder wrote the run's code cache (``latents/index.json``'s
    ``checkpoint``): its decoder is the one that turns those codes back into frames, so a named checkpoint that is
    missing is an error, never another checkpoint's decoder. Without one named there: the run's best checkpoint,
    else ``last.ckpt``."""
    import json

    from ...runs import run_checkpoint

    index = run_dir / LATENTS_DIR / INDEX_FILE
    named = json.loads(index.read_text()).get("checkpoint") if index.is_file() else None
    if named:
        path = run_dir / "checkpoints" / Path(named).name
        if not path.is_file():
            raise ConfigError(f"{index} names checkpoint {named!r}, but {path} is missing: codes are decoded with "
                              "the autoencoder that wrote them")
        return path
    return run_checkpoint(str(run_dir), run_dir.parent, model=AUTOENCODER_MODEL, key="autoencoder.run")


def load_autoencoder(run: str | Path, runs_root: str | Path = "runs") -> nn.Module:
    """The frozen (eval, no gradients) ``styletalker_autoencoder`` of a run (its name under
    ``runs/styletalker_autoencoder/`` or its folder), loaded through the registry; a ConfigError otherwise."""
    from ... import registry

    run_dir = autoencoder_run_dir(str(run), runs_root, model=AUTOENCODER_MODEL)
    path = autoencoder_checkpoint(run_dir)
    try:
        module = registry.load_checkpoint(path, expected=AUTOENCODER_MODEL)
    except CheckpointError as err:
        raise ConfigError(f"autoencoder.run={str(run)!r}: {err}") from err
    return module.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# LightningModule
# ---------------------------------------------------------------------------------------------------------------


class SyncDiscriminator(L.LightningModule):
    """The contrastive lip-sync discriminator (see the module doc). Public: :attr:`window`, :attr:`face_height`,
    :attr:`face_width`, :meth:`lower_half`, :meth:`decode_lower`, :meth:`sync_logit`, :meth:`sync_logprob`,
    :meth:`attach_autoencoder`."""

    STAGE = MODEL_NAME

    def __init__(self, *, audio_steps: int, audio_dim: int, latent_dim: int, autoencoder: dict | None = None,
                 net: dict | None = None, loss: dict | None = None, optim: dict | None = None) -> None:
        super().__init__()
        # ``autoencoder``: the run whose decoder made the training faces ({"run", "dir", "checkpoint", ...}); it is
        # reloaded from there, never saved in this checkpoint
        self.save_hyperparameters()
        self.net_cfg = SyncNetConfig(**(net or {}))
        self.loss_cfg = SyncLossConfig(**(loss or {}))
        self.optim_cfg = OptimConfig(**(optim or {}))
        n, lc = self.net_cfg, self.loss_cfg
        if n.window < 1 or n.face_size < 2 or n.face_size % 2:
            raise ConfigError(f"model.window={n.window}, model.face_size={n.face_size}: a positive window and an even "
                              "face size are needed")
        if not 1 <= lc.min_shift <= lc.max_shift:
            raise ConfigError(f"loss.min_shift={lc.min_shift}, loss.max_shift={lc.max_shift}: 1 ≤ min_shift ≤ max_shift "
                              "is needed (shifted negatives exist only up to max_shift)")
        if not MIN_TEMPERATURE <= n.temperature <= MAX_TEMPERATURE:
            raise ConfigError(f"model.temperature={n.temperature}: in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        self.audio_encoder = AudioEncoder(audio_dim=audio_dim, window=n.window, channels=n.audio_channels,
                                          layers=n.audio_layers, embed_dim=n.embed_dim, groups=n.groups)
        self.face_encoder = FaceEncoder(window=n.window, channels=list(n.face_channels), embed_dim=n.embed_dim,
                                        groups=n.groups)
        log_t = torch.tensor(math.log(n.temperature))
        self.log_temperature = nn.Parameter(log_t) if n.learn_temperature else None
        if self.log_temperature is None:
            self.register_buffer("fixed_log_temperature", log_t)
        self.bias = nn.Parameter(torch.zeros(()))
        self.val_metrics = nn.ModuleDict({k: MeanMetric() for k in VAL_METRICS})
        self._frozen: dict[str, nn.Module] = {}  # the autoencoder, outside the module tree: not saved, not trained
        self.data_info: dict | None = None

    @classmethod
    def from_datamodule(cls, dm: SyncDataModule, *, autoencoder: dict | None = None,
                        autoencoder_module: nn.Module | None = None, **kwargs: Any) -> SyncDiscriminator:
        """Shapes from the DataModule. ``autoencoder``: the config's section (its ``run`` is recorded);
        ``autoencoder_module``: an autoencoder object to decode with (default: loaded from the DataModule's run)."""
        k, a = dm.audio_shape
        run_dir = dm.autoencoder_dir.resolve()
        info = {"run": str((autoencoder or {}).get("run") or run_dir), "dir": str(run_dir), **dm.cache.describe()}
        module = cls(audio_steps=k, audio_dim=a, latent_dim=dm.cache.dim, autoencoder=info, **kwargs)
        need = module.window + 2 * module.loss_cfg.max_shift
        if dm.hparams.window < need:
            raise ConfigError(f"data.window={dm.hparams.window}: a sample must hold model.window={module.window} "
                              f"frames and offsets of ±loss.max_shift={module.loss_cfg.max_shift}: set data.window "
                              f"≥ {need}")
        module.attach_autoencoder(autoencoder_module if autoencoder_module is not None else load_autoencoder(run_dir))
        module.data_info = dm.describe()
        return module

    # -- the frozen autoencoder ----------------------------------------------------------------------------------

    def attach_autoencoder(self, autoencoder: nn.Module) -> None:
        """Decode with ``autoencoder`` (frozen here: eval mode, no gradients; kept out of this model's checkpoint).
        It must take codes of this model's latent dimension."""
        dim = getattr(autoencoder, "latent_dim", None)
        if dim is not None and int(dim) != int(self.hparams.latent_dim):
            raise ConfigError(f"the autoencoder's codes have {dim} dims; this discriminator was trained on "
                              f"{self.hparams.latent_dim}-dim codes ({(self.hparams.autoencoder or {}).get('dir')})")
        if isinstance(autoencoder, nn.Module):
            autoencoder.eval().requires_grad_(False)
        self._frozen["autoencoder"] = autoencoder

    @property
    def autoencoder(self) -> nn.Module:
        """The attached autoencoder; without one, the recorded run's (``hparams.autoencoder``: its folder, else its
        name under ``runs/``), loaded once."""
        if "autoencoder" not in self._frozen:
            info = self.hparams.autoencoder or {}
            where = info.get("dir") if info.get("dir") and Path(info["dir"]).is_dir() else info.get("run")
            if not where:
                raise ConfigError("this sync discriminator records no autoencoder run: attach one "
                                  "(attach_autoencoder) to decode codes")
            self.attach_autoencoder(load_autoencoder(where))
        return self._frozen["autoencoder"]

    # -- faces ---------------------------------------------------------------------------------------------------

    @property
    def window(self) -> int:
        return self.net_cfg.window

    @property
    def face_height(self) -> int:
        """Rows of a lower face: the lower half (rows ``face_size/2:``) of the frame resized to ``face_size``."""
        return self.net_cfg.face_size // 2

    @property
    def face_width(self) -> int:
        return self.net_cfg.face_size

    def lower_half(self, frames: Tensor) -> Tensor:
        """``(..., 3, H, W)`` frames in [-1, 1] -> ``(..., 3, face_height, face_width)``: resized to ``face_size``
        (bilinear, anti-aliased; nothing happens at that size) and cut to rows ``face_size/2:``. Differentiable."""
        s = self.net_cfg.face_size
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:])
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x[..., s // 2:, :].reshape(*lead, 3, s // 2, s)

    def decode_lower(self, codes: Tensor) -> Tensor:
        """``(..., D)`` codes -> ``(..., 3, face_height, face_width)`` lower faces through the frozen autoencoder's
        decoder (differentiable in ``codes``; the decoder's weights never train)."""
        ae = self.autoencoder
        if isinstance(ae, nn.Module):  # outside the module tree: Lightning does not move it
            ae.to(codes.device)
        return self.lower_half(ae.decode(codes))

    # -- scores --------------------------------------------------------------------------------------------------

    @property
    def temperature(self) -> Tensor:
        log_t = self.log_temperature if self.log_temperature is not None else self.fixed_log_temperature
        return log_t.clamp(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)).exp()

    def _check(self, audio: Tensor, faces: Tensor) -> None:
        w, h, fw = self.window, self.face_height, self.face_width
        if audio.ndim != 4 or audio.shape[1] != w:
            raise ValueError(f"audio must be (B, {w}, K, A) windows of {w} frames, got {tuple(audio.shape)}")
        if faces.ndim != 5 or tuple(faces.shape[1:]) != (w, 3, h, fw):
            raise ValueError(f"lower_faces must be (B, {w}, 3, {h}, {fw}) (see lower_half), got {tuple(faces.shape)}")

    def sync_logit(self, audio: Tensor, lower_faces: Tensor) -> Tensor:
        """``x = cos(a, f) / τ + b`` ``(B,)`` of aligned pairs: audio ``(B, W, K, A)``, lower faces
        ``(B, W, 3, h, w)``."""
        self._check(audio, lower_faces)
        a, f = self.audio_encoder(audio), self.face_encoder(lower_faces)
        return (a * f).sum(-1) / self.temperature + self.bias

    def sync_logprob(self, audio: Tensor, lower_faces: Tensor) -> Tensor:
        """``log P(in sync) = log σ(x)`` ``(B,)`` of each (audio window, lower-face window) pair; differentiable in
        ``lower_faces``. A generator's sync loss is ``−sync_logprob`` (see the module doc for why this form)."""
        return F.logsigmoid(self.sync_logit(audio, lower_faces))

    # -- training ------------------------------------------------------------------------------------------------

    def _layout(self, t: int) -> tuple[int, Tensor]:
        """(start of the face window in a sample of ``t`` frames, offsets -max_shift..max_shift)."""
        k = self.loss_cfg.max_shift
        return (t - self.window) // 2, torch.arange(-k, k + 1)

    def scores(self, batch: dict) -> dict[str, Tensor]:
        """Scaled cosines of a batch (see the module doc): ``fa`` ``(B, B, S)`` (face window i, audio of sample j
        at offset index s), ``af`` ``(B, B)`` (offset-0 audio i, face j), and the masks ``pos_fa``, ``valid_fa``,
        ``valid_af``, ``shifted`` (own-clip offsets with |s| ≥ min_shift, ``(S,)``)."""
        audio, codes = batch["audio"], batch["latents"]
        b, t = codes.shape[:2]
        w = self.window
        c, offsets = self._layout(t)
        offsets = offsets.to(codes.device)
        with torch.no_grad():  # the autoencoder is frozen and the codes are data
            faces = self.decode_lower(codes[:, c:c + w])  # (B, W, 3, h, w)
        f = self.face_encoder(faces)  # (B, E)
        starts = c + offsets  # (S,)
        span = audio[:, starts[0]:starts[-1] + w]  # (B, S + W - 1, K, A): every frame an offset window reads
        feats = self.audio_encoder.frames(span)  # (B, S + W - 1, C), each frame once
        windows = feats.unfold(1, w, 1).transpose(-1, -2)  # (B, S, W, C)
        a = self.audio_encoder.pool(windows.flatten(0, 1)).unflatten(0, (b, len(starts)))  # (B, S, E)
        scale = 1.0 / self.temperature
        zero = self.loss_cfg.max_shift  # index of offset 0
        fa = torch.einsum("ie,jse->ijs", f, a) * scale  # (B, B, S)
        af = a[:, zero] @ f.T * scale  # (B, B)
        # where each window lies in its clip: same clip and closer than min_shift = the same audio, not a negative
        clip = batch["clip"].to(codes.device)
        start = batch["start"].to(codes.device)
        same = clip[:, None] == clip[None, :]  # (B, B)
        dist = (start[None, :, None] + offsets[None, None] - start[:, None, None]).abs()  # (B, B, S)
        eye = torch.eye(b, dtype=torch.bool, device=codes.device)
        pos_fa = eye[:, :, None] & (offsets == 0)[None, None]
        valid_fa = pos_fa | ~(same[:, :, None] & (dist < self.loss_cfg.min_shift))
        valid_af = eye | ~(same & ((start[None, :] - start[:, None]).abs() < self.loss_cfg.min_shift))
        shifted = offsets.abs() >= self.loss_cfg.min_shift
        return {"fa": fa, "af": af, "pos_fa": pos_fa, "valid_fa": valid_fa, "valid_af": valid_af, "shifted": shifted}

    def losses(self, batch: dict, scores: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The training objective (InfoNCE both ways + the binary term) and the batch's sync accuracy; ``scores``:
        :meth:`scores` of the batch, when already computed."""
        s = self.scores(batch) if scores is None else scores
        fa, af = s["fa"], s["af"]
        b, _, n = fa.shape
        zero = self.loss_cfg.max_shift
        rows = torch.arange(b, device=fa.device)
        nce_fa = F.cross_entropy(fa.masked_fill(~s["valid_fa"], float("-inf")).flatten(1), rows * n + zero)
        nce_af = F.cross_entropy(af.masked_fill(~s["valid_af"], float("-inf")), rows)
        nce = 0.5 * (nce_fa + nce_af)
        x = fa + self.bias  # the sigmoid's logits
        own = x[rows, rows]  # (B, S)
        pos = own[:, zero]
        shifted = own[:, s["shifted"]]
        other = x[~torch.eye(b, dtype=torch.bool, device=fa.device)]  # (B(B-1), S)
        other_valid = s["valid_fa"][~torch.eye(b, dtype=torch.bool, device=fa.device)]
        binary = 0.5 * F.softplus(-pos).mean() + 0.25 * F.softplus(shifted).mean()
        binary = binary + (0.25 * F.softplus(other[other_valid]).mean() if bool(other_valid.any()) else 0.0)
        loss = nce + self.loss_cfg.binary_weight * binary
        # accuracy as val/sync_acc counts it: the true offset above every shifted one of the same window
        acc = (pos[:, None] > shifted).all(-1).float().mean()
        return {"loss": loss, "nce": nce, "binary": binary, "sync_acc": acc}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.losses(batch)
        b = batch["audio"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in out.items()}, batch_size=b)
        self.log("train/temperature", self.temperature.detach(), batch_size=b)
        self.log("loss", out["loss"], prog_bar=True, logger=False, batch_size=b)
        return out["loss"]

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on norms, biases, τ and b
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas))
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, warmup_steps=o.warmup_steps,
                                                                min_lr_ratio=o.min_lr_ratio, trainer=self._trainer)}

    # -- validation ----------------------------------------------------------------------------------------------

    def evaluate_batch(self, batch: dict, scores: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Per-window figures ``(B,)`` of the validation (see the module doc), each window's own clip's offsets."""
        s = self.scores(batch) if scores is None else scores
        rows = torch.arange(s["fa"].shape[0], device=s["fa"].device)
        own = s["fa"][rows, rows]  # (B, S)
        zero = self.loss_cfg.max_shift
        pos, shifted = own[:, zero], own[:, s["shifted"]]
        p = torch.sigmoid(own + self.bias)
        return {"sync_acc": (pos[:, None] > shifted).all(-1).float(),
                "offset_acc": (own.argmax(-1) == zero).float(),
                "p_sync": p[:, zero], "p_shifted": p[:, s["shifted"]].mean(-1)}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        b = batch["audio"].shape[0]
        scores = self.scores(batch)
        self.val_metrics["loss"].update(self.losses(batch, scores)["loss"], weight=b)
        for k, v in self.evaluate_batch(batch, scores).items():
            self.val_metrics[k].update(v)

    def on_validation_epoch_end(self) -> None:
        for k, m in self.val_metrics.items():
            if m.update_count > 0:
                self.log(f"val/{k}", m.compute(), prog_bar=k == "sync_acc", sync_dist=False)  # already synchronised
            m.reset()

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # training adds the registry name (training.ModelHeader)
        checkpoint.setdefault("dreamhead", {}).update(stage=self.STAGE, data=self.data_info)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.data_info = checkpoint.get("dreamhead", {}).get("data")


# ---------------------------------------------------------------------------------------------------------------
# Loading for a generator's training
# ---------------------------------------------------------------------------------------------------------------


def load_sync_discriminator(ref: str, runs_root: str | Path = "runs", *,
                            autoencoder: nn.Module | None = None) -> SyncDiscriminator:
    """The frozen (eval, no gradients) sync discriminator named by ``ref`` (a checkpoint, a run folder or a run name
    under ``runs/styletalker_sync/``), decoding with ``autoencoder`` when given, else (when first needed) with the
    autoencoder run it was trained on. A ConfigError for the bench's sync scorer (its file, a ``runs/scorers/`` or
    ``syncnet-*`` folder: a loss network must never be the network that scores the bench) and for any checkpoint
    not headed ``styletalker_sync``."""
    from ... import registry
    from ...metrics.scorers import refuse_scorer
    from ...runs import run_checkpoint

    key = "sync_discriminator.run"
    refuse_scorer(ref, runs_root, what=key, model=MODEL_NAME)  # before resolving: a scorer folder has no .ckpt
    path = run_checkpoint(str(ref), runs_root, model=MODEL_NAME, key=key)
    refuse_scorer(path, runs_root, what=key, model=MODEL_NAME, given=str(ref))
    try:
        module = registry.load_checkpoint(path, expected=MODEL_NAME)
    except CheckpointError as err:
        raise ConfigError(f"{key}={str(ref)!r}: {err}") from err
    if autoencoder is not None:
        module.attach_autoencoder(autoencoder)
    return module.eval().requires_grad_(False)


__all__ = ["AUTOENCODER_MODEL", "AudioEncoder", "FaceEncoder", "MODEL_NAME", "SyncAutoencoderRef", "SyncDataModule",
           "SyncDiscriminator", "SyncDiscriminatorConfig", "SyncLossConfig", "SyncNetConfig", "SyncWindowDataset",
           "autoencoder_checkpoint",
           "load_autoencoder", "load_sync_discriminator", "sync_datamodule"]
