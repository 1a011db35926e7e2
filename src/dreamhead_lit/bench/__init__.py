"""The benchmark behind ``make bench``: every method x the test split(s) -> the field's metrics -> one table.

    python -m dreamhead_lit.bench [--config bench/demo.yaml] [--strict] [key=value ...]
    torchrun --nproc-per-node N -m dreamhead_lit.bench [--config ...]          # clips sharded over N processes

For each method of the config (a ``kind`` from :data:`METHOD_KINDS`), a video is produced for each test clip -- or an
already generated one read -- and scored against the clip's ground truth by one piece of code, whatever made it:

=====================  ===================================================================================
``dreamhead``          stage-1 + stage-2 checkpoints through :func:`dreamhead_lit.pipeline.generate`. Protocol
                       ``dubbing`` (the paper's, default): the processed test clip is the reference, so pose and
                       background come from the clip and speech from its audio (a stage-2 model in ``dubbing``
                       mode also sees the clip's frames with the lower face masked); ``one_shot``: its first frame
                       only (frozen pose).
``ground_truth``       the test clip re-encoded by the same mp4 writer (upper bound: only the codec differs).
``static_reference``   the clip's first frame repeated (lower bound).
``stage2_gt_landmarks`` the clip's ground-truth landmarks -> stage 2 (the stage-2 upper bound), through the same
                       ``pipeline.generate`` with a stand-in for stage 1 that returns the true landmarks
                       (:class:`GroundTruthLandmarks`), so rasterisation and conditioning are shared, not copied.
``audio_to_image``     a stage-2 checkpoint trained with ``model.condition=audio`` (the ``landmark_hierarchy``
                       ablation: audio -> frames, no landmarks, no stage 1) through the same ``pipeline.generate``.
                       Without landmarks only a dubbing-mode model can take pose and background from the clip
                       (protocol ``dubbing``); otherwise it is one-shot from the clip's first frame, pose frozen.
``folder``             ``<folder>/<clip_id>.mp4`` made elsewhere (official DreamTalk / SadTalker code ...).
=====================  ===================================================================================

Metrics per clip (mean over its frames): SSIM, PSNR, and both on the 96x96 mouth crop around the ground-truth mouth
(``ssim_mouth``, ``psnr_mouth``); LPIPS; M-LMD and F-LMD (dlib 68 on real data, the trained landmarker of
:mod:`dreamhead_lit.evaluators` on rendered data -- the table names which); LSE-C, LSE-D and the AV offset (the
official SyncNet when ``syncnet_v2.model`` is found, else the trained expert when one exists, else n/a); CSIM against
the clip's first frame. FID is over all frames of a method against the ground-truth frames of the same clips (running
sums). Table values aggregate the per-clip metric *states* with each metric's own reduction (torchmetrics
``merge_state``): SSIM/PSNR/LPIPS/CSIM average over all frames, LMD and LSE over videos, as the metrics define them.

Generated frames are compared with the ground truth over the shorter of the two lengths, after resizing to the
dataset resolution when the sizes differ (both counted per clip). The sync metrics use the clip's source audio (the
audio every method was driven by; ``sync.audio=video`` takes the mp4's own track).

Weights: a metric whose pretrained file is missing is ``n/a`` with the exact file name and where to put it
(``--strict`` makes that an error). Nothing is ever scored with random weights; tests inject small labelled networks
through :class:`Backends`.

Outputs (rank 0): ``<out_root>/<dataset>/<name>/`` with ``table.md``, ``table.csv`` (:data:`TABLE_COLUMNS`),
``results.json``, ``per_clip.csv`` (:data:`PER_CLIP_COLUMNS`) and ``tensorboard/`` (scalars ``bench/<metric>/<method>``
and the table as text). ``videos/<method>/<clip>.mp4`` caches generated videos and ``cache/<method>/<clip>.json`` the
per-clip results, keyed by method + clip + metric settings: an interrupted run resumes where it stopped.

Distributed: under ``torchrun`` (or any launcher setting ``RANK``/``WORLD_SIZE``, e.g. Lightning's; SLURM's
``SLURM_PROCID``/``SLURM_NTASKS`` with ``MASTER_ADDR``) clip ``i`` goes to rank ``i % world``; per-clip rows are
gathered (each clip exactly once, checked), FID sums are reduced, rank 0 writes.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints import CheckpointError, safe_load
from ..config import ConfigError, DataConfig, resolve_path, save_resolved_config, to_container
from ..data.audio import SAMPLES_PER_FRAME
from ..data.clip import ClipError, ClipReader, ClipRecord, atomic_write_text, read_dataset_info, read_index, validate_clip
from ..metrics import (
    CSIMMetric,
    DlibFaceEmbedder,
    FIDMetric,
    LMDMetric,
    LPIPSMetric,
    MissingWeightsError,
    PSNRMetric,
    SSIMMetric,
    SyncMetric,
    SyncNetExpert,
    landmarks_from_frames,
    sync_scores_from_embeddings,
)
from ..metrics._common import unit_float_images
from ..metrics.lmd import DlibLandmarker, LMDNormalisation

__all__ = [
    "METRICS",
    "TABLE_COLUMNS",
    "TABLE_HEADINGS",
    "PER_CLIP_COLUMNS",
    "MethodConfig",
    "LMDSettings",
    "SyncSettings",
    "CSIMSettings",
    "BenchConfig",
    "Backends",
    "BenchError",
    "MethodUnavailable",
    "TestClip",
    "Method",
    "METHOD_KINDS",
    "register_method",
    "GroundTruthLandmarks",
    "Scorer",
    "BenchResult",
    "run_bench",
    "load_bench_config",
    "bench_context",
    "main",
]

# Metrics a bench can compute, in table order.
METRICS = ("ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd", "sync", "csim", "fid")
# The value columns each metric contributes to table.csv (per_clip.csv: the same, with sync_offset for the mean
# absolute offset and no fid).
_VALUE_COLUMNS = {
    "ssim": ("ssim",), "psnr": ("psnr",), "ssim_mouth": ("ssim_mouth",), "psnr_mouth": ("psnr_mouth",),
    "lpips": ("lpips",), "lmd": ("lmd_mouth", "lmd_face", "jitter_ratio"), "sync": ("lse_c", "lse_d", "sync_abs_offset"),
    "csim": ("csim",), "fid": ("fid",),
}
TABLE_COLUMNS = (
    "method", "label", "kind", "protocol", "uses_source_video", "clips", "clips_expected", "frames",
    "ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd_mouth", "lmd_face", "lmd_unit", "jitter_ratio",
    "lse_c", "lse_d", "sync_abs_offset", "csim", "fid", "status",
)
PER_CLIP_COLUMNS = (
    "method", "split", "clip", "status", "frames", "frames_generated", "resized_from",
    "ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd_mouth", "lmd_face", "lmd_missing_frames", "jitter_ratio",
    "lse_c", "lse_d", "sync_offset", "csim",
)
NA = "n/a"
CACHE_VERSION = 2  # bump when the scoring code changes what a cached per-clip row would contain
# Table headings: (column, heading, higher is better; None: closest to 1 is best)
TABLE_HEADINGS = (
    ("ssim", "SSIM", True), ("psnr", "PSNR", True), ("ssim_mouth", "SSIM-m", True), ("psnr_mouth", "PSNR-m", True),
    ("lpips", "LPIPS", False), ("lmd_mouth", "M-LMD", False), ("lmd_face", "F-LMD", False), ("jitter_ratio", "Jitter", None),
    ("lse_c", "LSE-C", True),
    ("lse_d", "LSE-D", False), ("sync_abs_offset", "|offset|", False), ("csim", "CSIM", True), ("fid", "FID", False),
)

LMDTarget = Literal["frames", "landmarks"]
SyncAudio = Literal["source", "video"]
Protocol = Literal["dubbing", "one_shot"]


class BenchError(RuntimeError):
    """The benchmark cannot run as configured (missing weights under ``--strict``, a clip lost across ranks ...)."""


class MethodUnavailable(RuntimeError):
    """A method cannot produce videos here (e.g. no checkpoint); its table row says why."""


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class MethodConfig:
    """One method of the comparison. Only the fields of its ``kind`` are read."""

    # a key of METHOD_KINDS: dreamhead | ground_truth | static_reference | stage2_gt_landmarks | audio_to_image | folder
    kind: str = ""
    label: str | None = None  # table name (default: the method's key)
    enabled: bool = True
    uses_source_video: bool | None = None  # None: the kind's default; required for `folder`
    stage1: str | None = None  # checkpoint file or run name under runs/stage1 (None: the latest run)
    stage2: str | None = None  # checkpoint file or run name under runs/stage2 (None: the latest run)
    protocol: Protocol = "dubbing"  # dreamhead, audio_to_image: dubbing (the test clip is the reference) | one_shot (frame 0)
    folder: str | None = None  # folder: holds <clip_id>.mp4
    sampler: str | None = None  # None: the checkpoint's configured sampler
    steps: int | None = None  # None: the checkpoint's configured number of steps
    seed: int = 0
    batch_size: int = 16  # frames sampled together by stage 2
    emotion_label: bool = True  # dreamhead: give stage 1 the clip's emotion label when the dataset has one (MEAD)


@dataclass
class LMDSettings:
    landmarker: str = "auto"  # auto (trained for SynthTalk, dlib otherwise) | dlib | trained | a landmarker run folder
    target: LMDTarget = "frames"  # frames: the same landmarker on the ground-truth frames (the field's protocol) | landmarks
    normalisation: LMDNormalisation = "pixels"  # pixels (at report_resolution) | face_size (inter-ocular distance)
    report_resolution: int | None = None  # None: the dataset resolution
    dlib_upsample: int = 1  # dlib detector upsampling (1 finds faces down to ~40 px)


@dataclass
class SyncSettings:
    expert: str = "auto"  # auto (official, else trained, else n/a) | official | trained | a sync expert run folder
    vshift: int = 15  # offsets searched on each side
    audio: SyncAudio = "source"  # source: the clip's audio.wav (what drove every method) | video: the mp4's audio track


@dataclass
class CSIMSettings:
    frame_stride: int = 1  # every k-th frame is compared with the reference (dlib's network costs ~0.1 s a frame)


@dataclass
class BenchConfig:
    name: str = "default"  # results go to <out_root>/<dataset>/<name>/
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)  # root and test_splits are read
    max_clips: int | None = None  # per split, spread evenly over its clips (None: all)
    max_frames: int | None = None  # per clip, its first N frames (None: whole clips); quick looks and tests
    out_root: str = "benchmarks/results"
    runs_root: str = "runs"  # where checkpoints and trained evaluators are looked up
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    lmd: LMDSettings = field(default_factory=LMDSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    csim: CSIMSettings = field(default_factory=CSIMSettings)
    device: str = "auto"  # auto: cuda:<local rank> when available, else cpu
    threads: int | None = None  # torch intra-op threads per process (None: torch's default)
    strict: bool = False  # a metric or method that would be n/a is an error instead
    progress: bool = True
    tensorboard: bool = True
    methods: dict[str, MethodConfig] = field(default_factory=dict)


@dataclass
class Backends:
    """Networks injected in place of the ones the bench would resolve (tests). Each is labelled as given in the table;
    ``None`` resolves the real one."""

    fid_features: tuple[nn.Module, str] | None = None  # (module (B, 3, H, W) [0, 1] -> (B, D), label)
    lpips_random_backbone_for_tests: bool = False  # LPIPS with a random AlexNet trunk, labelled as such
    sync_expert: Any | None = None  # a metrics.sync.SyncExpert (name + embed)
    landmarker: tuple[Callable[[np.ndarray], np.ndarray | None], str] | None = None  # (landmarker, label)
    csim_embedder: Any | None = None  # anything with DlibFaceEmbedder's embed(image) -> (descriptor, fallback)


# ---------------------------------------------------------------------------------------------------------------------
# Test clips
# ---------------------------------------------------------------------------------------------------------------------


class TestClip:
    """One ground-truth clip of a test split. Frames and audio are read on first use."""

    def __init__(self, root: Path, record: ClipRecord, meta: dict, *, topology: Any) -> None:
        self.root = root
        self.record = record
        self.reader = ClipReader(root, record, meta)
        self.topology = topology
        self._frames: np.ndarray | None = None
        self._audio: np.ndarray | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def split(self) -> str:
        return self.record.split

    @property
    def folder(self) -> Path:
        return self.reader.dir

    @property
    def fps(self) -> float:
        return float(self.record.fps)

    @property
    def frames(self) -> np.ndarray:
        """``(T, H, W, 3)`` uint8."""
        if self._frames is None:
            self._frames = np.array(self.reader.frames())
        return self._frames

    @property
    def audio(self) -> np.ndarray:
        """The clip's audio cut or zero-padded to exactly ``T`` frames of samples, so every method makes ``T`` frames."""
        if self._audio is None:
            a = self.reader.audio().astype(np.float32)
            n = self.record.num_frames * SAMPLES_PER_FRAME
            self._audio = a[:n] if len(a) >= n else np.concatenate([a, np.zeros(n - len(a), np.float32)])
        return self._audio

    @property
    def landmarks68(self) -> np.ndarray:
        """``(T, 68, 2)`` float64 ground-truth pixels."""
        return np.asarray(self.reader.landmarks68[: self.record.num_frames], dtype=np.float64)

    def release(self) -> None:
        self._frames = self._audio = None


def select_clips(root: Path, splits: list[str], max_clips: int | None,
                 max_frames: int | None = None) -> list[TestClip]:
    """The clips of ``splits`` (validated; sorted by split order then id), at most ``max_clips`` per split spread
    evenly over the split, each cut to its first ``max_frames`` frames."""
    from ..data.landmarks import LandmarkTopology

    info = read_dataset_info(root)
    topo = LandmarkTopology.from_json(info["landmark_topology"])
    records = read_index(root)
    clips: list[TestClip] = []
    present = [s for s in splits if any(r.split == s for r in records)]
    if not present:
        raise BenchError(f"none of the splits {splits} has clips in {root} (data.test_splits; the dataset has "
                         f"{sorted({r.split for r in records})})")
    for split in splits:
        recs = sorted((r for r in records if r.split == split), key=lambda r: r.id)
        if not recs:  # real data often has no seen-identity test split: score the splits that exist, say so
            print(f"note: split {split!r} has no clips in {root}; scoring {present}", file=sys.stderr)
            continue
        if max_clips is not None and len(recs) > max_clips:
            recs = [recs[i] for i in np.linspace(0, len(recs) - 1, max_clips).round().astype(int)]
        for rec in recs:
            meta = validate_clip(root, rec)
            if max_frames is not None and rec.num_frames > max_frames:
                rec = dataclasses.replace(rec, num_frames=max_frames)  # TestClip reads num_frames frames and audio
            clips.append(TestClip(root, rec, meta, topology=topo))
    return clips


# ---------------------------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------------------------


METHOD_KINDS: dict[str, type[Method]] = {}


def register_method(kind: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator adding a method kind to :data:`METHOD_KINDS` (the ``kind`` a bench config names)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.kind = kind
        METHOD_KINDS[kind] = cls
        return cls

    return deco


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a file's version for the caches (bench clips, ablation landmark scores): path, size, mtime."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class BenchContext:
    """What methods may need from the run: the dataset, where runs live, the device."""

    data_root: Path
    runs_root: str
    device: torch.device
    dataset_info: dict


class Method:
    """A way of producing one video per test clip. Subclasses set ``kind`` (via :func:`register_method`) and
    ``default_uses_source_video`` and implement :meth:`generate` (or override :meth:`video`).

    ``key()`` must capture everything that changes the videos (checkpoints, sampler, seed ...): cached videos and
    per-clip results are reused only under the same key.
    """

    kind: ClassVar[str] = ""
    default_uses_source_video: ClassVar[bool] = True

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext) -> None:
        self.name = name
        self.cfg = cfg
        self.ctx = ctx
        self.label = cfg.label or name
        self.uses_source_video = self.source_video(cfg)

    @classmethod
    def source_video(cls, cfg: MethodConfig) -> bool:
        """Whether the method uses the test clip's video (False: one-shot from a single image)."""
        return cls.default_uses_source_video if cfg.uses_source_video is None else bool(cfg.uses_source_video)

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        """Short protocol tag for the table."""
        return ""

    @property
    def protocol(self) -> str:
        return self.protocol_of(self.cfg)

    def describe(self) -> str:
        """One sentence for the table's protocol notes."""
        return self.protocol

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def clip_key(self, clip: TestClip) -> dict[str, Any]:
        """Per-clip additions to the key (a folder method's input file)."""
        return {}

    def generate(self, clip: TestClip, out: Path) -> None:
        """Write the clip's video to ``out`` (an mp4, atomically)."""
        raise NotImplementedError

    def video(self, clip: TestClip, cache_dir: Path) -> tuple[Path | None, bool]:
        """(the clip's mp4, whether it was generated now); ``None`` when the method has no video for the clip.
        Generated videos are cached in ``cache_dir`` under this method's key."""
        out = cache_dir / f"{clip.id}.mp4"
        sidecar = cache_dir / f"{clip.id}.key"
        key = _digest(self.key())
        if out.is_file() and sidecar.is_file() and sidecar.read_text().strip() == key:
            return out, False
        out.parent.mkdir(parents=True, exist_ok=True)
        self.generate(clip, out)
        atomic_write_text(sidecar, key + "\n")
        return out, True


@register_method("ground_truth")
class GroundTruthMethod(Method):
    """The test clip through the same mp4 writer as generated videos: what the codec alone costs."""

    default_uses_source_video = True

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "upper bound"

    def describe(self) -> str:
        return "the ground-truth clip re-encoded by the bench's mp4 writer (H.264 crf 18): only the codec differs"

    def generate(self, clip: TestClip, out: Path) -> None:
        from ..video import write_video

        write_video(out, clip.frames, fps=clip.fps, audio=clip.audio)


@register_method("static_reference")
class StaticReferenceMethod(Method):
    """The clip's first frame held for the whole clip: no motion at all."""

    default_uses_source_video = False

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "lower bound"

    def describe(self) -> str:
        return "the clip's first frame repeated with the clip's audio (no motion)"

    def generate(self, clip: TestClip, out: Path) -> None:
        from ..video import write_video

        frames = np.repeat(clip.frames[:1], clip.record.num_frames, axis=0)
        write_video(out, frames, fps=clip.fps, audio=clip.audio)


@register_method("folder")
class FolderMethod(Method):
    """Videos made elsewhere: ``<folder>/<clip_id>.mp4``, scored by the same code."""

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext) -> None:
        if cfg.uses_source_video is None:
            raise ConfigError(f"methods.{name}: a folder method must state uses_source_video (true when the outputs "
                              "were made from the test clip's video, false for one-shot methods driven by one image)")
        if not cfg.folder:
            raise ConfigError(f"methods.{name}: kind folder needs folder: (a folder of <clip_id>.mp4)")
        super().__init__(name, cfg, ctx)
        self.folder = resolve_path(cfg.folder)
        if not self.folder.is_dir():
            raise MethodUnavailable(f"folder {self.folder} does not exist")

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "external" if cfg.uses_source_video else "external, one-shot"

    def describe(self) -> str:
        return f"videos read from {self.folder}/<clip_id>.mp4"

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind, "folder": str(self.folder)}

    def clip_key(self, clip: TestClip) -> dict[str, Any]:
        path = self.folder / f"{clip.id}.mp4"
        return {"file": file_fingerprint(path)} if path.is_file() else {"file": None}

    def video(self, clip: TestClip, cache_dir: Path) -> tuple[Path | None, bool]:
        path = self.folder / f"{clip.id}.mp4"
        return (path if path.is_file() else None), False


def _checkpoint(spec: str | None, stage: str, runs_root: str) -> Path:
    """A checkpoint file from a path, a run name under ``runs/<stage>/`` or None (the latest run of the stage)."""
    from ..runs import latest_checkpoint

    if spec:
        path = resolve_path(spec)
        if path.is_file():
            return path
        try:
            return latest_checkpoint(stage, runs_root=runs_root, name=spec)
        except FileNotFoundError as err:
            raise MethodUnavailable(f"no {stage} run {spec!r} ({err}): train it with `make train-{stage}`, or name "
                                    f"another run or a checkpoint file in the method's {stage}:") from err
    try:
        return latest_checkpoint(stage, runs_root=runs_root)
    except FileNotFoundError as err:
        raise MethodUnavailable(f"no {stage} checkpoint: train one with `make train-{stage}` ({err})") from err


class _StageMethod(Method):
    """Shared by the methods that run trained stages: checkpoint resolution, lazy loading, the pipeline call."""

    needs_stage1: ClassVar[bool] = True
    stage2_condition: ClassVar[str] = "landmarks"  # the stage-2 model.condition the method drives

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, stage1: Any = None, stage2: Any = None) -> None:
        super().__init__(name, cfg, ctx)
        self._stage1, self._stage2 = stage1, stage2  # loaded modules may be injected (tests)
        self.ckpt1 = None if stage1 is not None or not self.needs_stage1 else _checkpoint(cfg.stage1, "stage1", ctx.runs_root)
        self.ckpt2 = None if stage2 is not None else _checkpoint(cfg.stage2, "stage2", ctx.runs_root)
        self._ckpt_facts: dict[str, dict] = {}  # stage -> {"net": settings, "data": description}, read once
        condition = self._stage2_setting("condition")
        if condition != self.stage2_condition:
            use = "audio_to_image" if condition == "audio" else "dreamhead or stage2_gt_landmarks"
            raise MethodUnavailable(f"the stage-2 model {self.ckpt2 or '(injected)'} is conditioned on {condition} "
                                    f"(model.condition={condition}), kind {self.kind} needs one conditioned on "
                                    f"{self.stage2_condition}: score it with kind {use}")
        self._check_landmark_sets()

    def _check_landmark_sets(self) -> None:
        """The models must use the dataset's landmark set (a 131-point model cannot read dlib's 68 points): checked
        before any clip, from the checkpoints' headers (no model is built), so a mismatch is the row's one reason
        instead of an error on every clip."""
        from ..data.landmarks import LandmarkTopology
        from ..pipeline import GenerationError, check_landmark_set

        topo = self.ctx.dataset_info.get("landmark_topology")
        if not topo:
            return
        data = LandmarkTopology.from_json(topo)
        remedy = (f"train it on this dataset (make train-stage1 / train-stage2 DATA={self.ctx.data_root}) or bench it "
                  "on data with its landmark set")
        for stage in ("stage1", "stage2") if self.needs_stage1 else ("stage2",):
            ckpt = self.ckpt1 if stage == "stage1" else self.ckpt2
            model = f"the {stage.replace('stage', 'stage-')} model {ckpt or '(injected)'}"
            try:
                check_landmark_set(self._facts(stage)["data"], data.num_points, f"the dataset {self.ctx.data_root}",
                                   model=model, points_name=data.name, remedy=remedy)
            except GenerationError as err:
                raise MethodUnavailable(str(err)) from err

    def _facts(self, stage: str) -> dict:
        """``{"net": model settings, "data": data description}`` of a stage: from its module when loaded or injected,
        else read once from its checkpoint (the file is opened once, whatever is asked of it)."""
        module = self._stage1 if stage == "stage1" else self._stage2
        if module is not None:
            return {"net": None, "data": getattr(module, "data_info", None) or {}}
        if stage not in self._ckpt_facts:
            blob = safe_load(self.ckpt1 if stage == "stage1" else self.ckpt2)
            self._ckpt_facts[stage] = {"net": blob.get("hyper_parameters", {}).get("net", {}) or {},
                                       "data": (blob.get("dreamhead") or {}).get("data") or {}}
        return self._ckpt_facts[stage]

    def _source(self, module: Any, ckpt: Path | None) -> Any:
        return file_fingerprint(ckpt) if ckpt is not None else f"injected {type(module).__name__} {id(module)}"

    def key(self) -> dict[str, Any]:
        c = self.cfg
        key = {"kind": self.kind, "stage2": self._source(self._stage2, self.ckpt2), "sampler": c.sampler,
               "steps": c.steps, "seed": c.seed}
        if self.needs_stage1:
            key["stage1"] = self._source(self._stage1, self.ckpt1)
        return key

    @property
    def stage2(self) -> Any:
        from ..pipeline import load_checked

        if self._stage2 is None:
            self._stage2 = load_checked(self.ckpt2, "stage2").to(self.ctx.device)
        return self._stage2

    @property
    def stage1(self) -> Any:
        from ..pipeline import load_checked

        if self._stage1 is None:
            self._stage1 = load_checked(self.ckpt1, "stage1").to(self.ctx.device)
        return self._stage1

    def _stage2_setting(self, name: str) -> str:
        """A setting of the stage-2 network (``mode``, ``condition``), read without building the network when it is
        not loaded yet; checkpoints written before a setting existed have its default."""
        from ..lit.l2i import L2INetConfig

        if self._stage2 is None:
            return str(self._facts("stage2")["net"].get(name, getattr(L2INetConfig, name)))
        return str(getattr(self.stage2.net, name))

    def _stage2_mode(self) -> str:
        return self._stage2_setting("mode")

    def _run_pipeline(self, clip: TestClip, out: Path, *, ref: Any, stage1: Any) -> None:
        from ..pipeline import generate

        c = self.cfg
        generate(audio=clip.audio, ref=ref, out=out, stage1=stage1, stage2=self.stage2, sampler=c.sampler,
                 steps=c.steps, seed=c.seed, batch_size=c.batch_size, progress=False,
                 emotion=self.emotion_of(clip) if stage1 is not None else None)

    def emotion_of(self, clip: TestClip) -> str | None:
        """The clip's emotion label for stage 1 (``emotion_label``), or None ("unknown")."""
        from ..data.clip import EMOTIONS

        return clip.record.emotion if self.cfg.emotion_label and clip.record.emotion in EMOTIONS else None


@register_method("dreamhead")
class DreamHeadMethod(_StageMethod):
    """Audio -> stage 1 -> stage 2 -> mp4, by :func:`dreamhead_lit.pipeline.generate`."""

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, **modules: Any) -> None:
        if cfg.protocol not in get_args(Protocol):
            raise ConfigError(f"methods.{name}.protocol must be one of {get_args(Protocol)}, got {cfg.protocol!r}")
        super().__init__(name, cfg, ctx, **modules)

    @classmethod
    def source_video(cls, cfg: MethodConfig) -> bool:
        return cfg.protocol == "dubbing" if cfg.uses_source_video is None else bool(cfg.uses_source_video)

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "dubbing" if cfg.protocol == "dubbing" else "one-shot"

    def describe(self) -> str:
        mode = self._stage2_mode()
        if self.cfg.protocol == "dubbing":
            given = ("the clip's frames with the lower face masked" if mode == "dubbing"
                     else "the clip's first frame as appearance")
            return (f"dubbing (the paper's protocol): pose and background from the test clip, speech from its audio; "
                    f"stage 2 (mode={mode}) is given {given}; {self._emotion_note()}")
        return (f"one-shot: the clip's first frame only (pose frozen), speech from its audio; stage 2 mode={mode}; "
                f"{self._emotion_note()}")

    def _emotion_note(self) -> str:
        return ("stage 1 is given the clip's emotion label where the dataset has one" if self.cfg.emotion_label
                else "stage 1 speaks with the emotion 'unknown'")

    def key(self) -> dict[str, Any]:
        return {**super().key(), "protocol": self.cfg.protocol, "emotion_label": self.cfg.emotion_label}

    def generate(self, clip: TestClip, out: Path) -> None:
        from ..pipeline import Reference

        if self.cfg.protocol == "dubbing":
            ref: Any = clip.folder  # the processed clip folder: exact landmarks, every frame
        else:
            dense = np.asarray(clip.reader.landmarks[:1], dtype=np.float32)
            ref = Reference(clip.frames[:1], dense, clip.topology.sparse(dense), "clip")
        self._run_pipeline(clip, out, ref=ref, stage1=self.stage1)


class GroundTruthLandmarks:
    """A stand-in for stage 1 that "predicts" a clip's true landmarks, so ``pipeline.generate`` renders them.

    ``pipeline.generate`` canonicalises the reference (the processed clip itself) and maps the stage-1 output back
    with the reference's per-frame pose; returning the clip's own canonical landmarks therefore reproduces the true
    pixel landmarks exactly (up to float rounding), and stage 2 receives them rasterised by the pipeline's own code.
    """

    def __init__(self, clip: TestClip, data_info: dict) -> None:
        from ..data.landmarks import canonicalize

        template = np.asarray(data_info["canonical_template68"], dtype=np.float32)
        dense = np.asarray(clip.reader.landmarks, dtype=np.float32)
        if dense.shape[1] != clip.topology.num_points:
            raise ClipError(clip.id, f"{dense.shape[1]} landmarks, the dataset's topology has {clip.topology.num_points}")
        self.canonical, _ = canonicalize(dense, clip.topology.sparse(dense), template68=template)  # (T, N, 2)
        n = self.canonical.shape[1]
        self.data_info = {"canonical_template68": data_info["canonical_template68"], "point_index": list(range(n)),
                          "landmark_set": "dense"}

    def generate(self, audio: Any, *, num_frames: int, **_: Any) -> Tensor:
        idx = np.minimum(np.arange(num_frames), len(self.canonical) - 1)
        return torch.from_numpy(self.canonical[idx])  # (F, N, 2)


@register_method("stage2_gt_landmarks")
class Stage2GTLandmarksMethod(_StageMethod):
    """Ground-truth landmarks -> stage 2: what stage 2 can do with perfect landmarks (the stage-2 upper bound)."""

    needs_stage1 = False
    default_uses_source_video = True

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "stage-2 bound"

    def describe(self) -> str:
        return (f"the clip's ground-truth landmarks rendered by stage 2 (mode={self._stage2_mode()}) with the test clip "
                "as reference, through pipeline.generate")

    def generate(self, clip: TestClip, out: Path) -> None:
        info = self.stage2.data_info or {}
        self._run_pipeline(clip, out, ref=clip.folder, stage1=GroundTruthLandmarks(clip, info))


@register_method("audio_to_image")
class AudioToImageMethod(DreamHeadMethod):
    """Audio -> frames by ONE stage-2 model conditioned on audio (``model.condition=audio``): the landmark_hierarchy
    ablation, scored like ``dreamhead`` (the same references, protocols and ``pipeline.generate``) without stage 1."""

    needs_stage1 = False
    stage2_condition = "audio"

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, **modules: Any) -> None:
        super().__init__(name, cfg, ctx, **modules)
        # Without landmarks nothing carries the clip's pose but the masked clip frames of a dubbing-mode model: a
        # reference-mode model under protocol dubbing sees only the clip's first frame, and its row says one-shot.
        self.dubbing = cfg.protocol == "dubbing" and self._stage2_mode() == "dubbing"
        if cfg.uses_source_video is None:
            self.uses_source_video = self.dubbing

    @property
    def protocol(self) -> str:
        return "dubbing" if self.dubbing else "one-shot"

    @property
    def stage1(self) -> None:
        return None  # the audio drives stage 2 directly

    def describe(self) -> str:
        if self.dubbing:
            how = "dubbing: the test clip's frames with the lower face masked give pose and background"
        else:
            how = "one-shot: the clip's first frame as appearance, pose frozen"
            if self.cfg.protocol == "dubbing":
                how += " (protocol dubbing: without landmarks a reference-mode model cannot follow the clip's pose)"
        return (f"audio -> frames by one stage-2 model conditioned on the audio (model.condition=audio, "
                f"mode={self._stage2_mode()}; no landmarks, no stage 1), speech from the clip's audio; {how}")


def build_method(name: str, cfg: MethodConfig, ctx: BenchContext) -> Method:
    if cfg.kind not in METHOD_KINDS:
        raise ConfigError(f"methods.{name}.kind={cfg.kind!r}: choose one of {sorted(METHOD_KINDS)}")
    return METHOD_KINDS[cfg.kind](name, cfg, ctx)


# ---------------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------------


class _RecordingExpert:
    """Passes a sync expert through and keeps the last embeddings, for the per-clip signed AV offset."""

    def __init__(self, expert: Any) -> None:
        self.expert = expert
        self.name = expert.name
        self.last: tuple[Tensor, Tensor] | None = None

    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[Tensor, Tensor]:
        self.last = self.expert.embed(frames, audio)
        return self.last


class _FeatureFID(FIDMetric):
    """FIDMetric fed with features computed (and cached) per clip: the running sums are the same."""

    def features(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` uint8 or [0, 1] -> ``(B, D)`` float32, as ``update`` computes them."""
        with torch.no_grad():
            return self._features(unit_float_images(images, name="FID images")).float().cpu()

    def add_features(self, features: Tensor, *, real: bool) -> None:
        from ..metrics import fid_sums_update

        s, ss, n = fid_sums_update(features)
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + s.to(self.real_sum))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + ss.to(self.real_outer))
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + n)


@dataclass
class MetricSetup:
    """Whether one requested metric runs here, the network that computes it, or why it is n/a."""

    name: str
    available: bool
    label: str = ""
    reason: str = ""


def _state_to_json(metric: Any) -> dict[str, Any]:
    return {k: (v.item() if v.numel() == 1 else v.tolist()) for k, v in metric.metric_state.items()}


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


class Scorer:
    """Builds every requested metric once (or records why it is n/a) and scores one clip at a time.

    Per clip each metric is reset, updated with the clip, and its report (the per-clip row) and state (for the table)
    taken; :meth:`aggregate` merges the states of many clips with each metric's own reduction. The metrics never
    synchronise across processes themselves (``sync_on_compute=False``): the bench gathers per-clip states instead.
    FID is kept per method in running sums (:meth:`fid_metric`) that do synchronise.
    """

    def __init__(self, cfg: BenchConfig, *, data_root: Path, dataset_info: dict, device: torch.device,
                 backends: Backends | None = None) -> None:
        b = backends or Backends()
        self.cfg = cfg
        self.device = device
        self.resolution = int(dataset_info.get("resolution", 0)) or None
        self.synthetic = str(dataset_info.get("source", dataset_info.get("name", ""))).startswith("synth")
        unknown = sorted(set(cfg.metrics) - set(METRICS))
        if unknown:
            raise ConfigError(f"metrics: unknown {unknown}; choose from {list(METRICS)}")
        self.requested = [m for m in METRICS if m in cfg.metrics]
        self.setup: dict[str, MetricSetup] = {}
        self.metrics: dict[str, Any] = {}
        self.landmarker: Callable | None = None
        self.expert: _RecordingExpert | None = None
        self._fid_proto: nn.Module | None = None
        self._fid_label = ""
        self._gt_landmarks: dict[str, np.ndarray] = {}
        self.key_files: dict[str, Any] = {}  # evaluator files whose change must invalidate cached rows
        for name in self.requested:
            try:
                label = getattr(self, f"_build_{name}")(b, data_root)
                self.setup[name] = MetricSetup(name, True, label)
            except (MissingWeightsError, FileNotFoundError, MethodUnavailable, CheckpointError) as err:
                self.setup[name] = MetricSetup(name, False, reason=str(err))

    # -- construction ---------------------------------------------------------------------------------------------

    def _build_ssim(self, b: Backends, root: Path) -> str:
        self.metrics["ssim"] = SSIMMetric(region="frame", sync_on_compute=False)
        return "Gaussian 11x11, sigma 1.5 (Wang et al. 2004), per frame"

    def _build_psnr(self, b: Backends, root: Path) -> str:
        self.metrics["psnr"] = PSNRMetric(region="frame", sync_on_compute=False)
        return "per frame, [0, 1] range"

    def _build_ssim_mouth(self, b: Backends, root: Path) -> str:
        self.metrics["ssim_mouth"] = SSIMMetric(region="mouth", sync_on_compute=False)
        return "96x96 crop around the ground-truth mouth points 48-67"

    def _build_psnr_mouth(self, b: Backends, root: Path) -> str:
        self.metrics["psnr_mouth"] = PSNRMetric(region="mouth", sync_on_compute=False)
        return "96x96 crop around the ground-truth mouth points 48-67"

    def _build_lpips(self, b: Backends, root: Path) -> str:
        m = LPIPSMetric(allow_random_backbone_for_tests=b.lpips_random_backbone_for_tests, sync_on_compute=False)
        self.metrics["lpips"] = m.to(self.device)
        return m.backbone

    def _build_lmd(self, b: Backends, root: Path) -> str:
        s = self.cfg.lmd
        if s.target not in get_args(LMDTarget):
            raise ConfigError(f"lmd.target must be one of {get_args(LMDTarget)}, got {s.target!r}")
        if b.landmarker is not None:
            self.landmarker, name = b.landmarker
        else:
            choice = s.landmarker
            if choice == "auto":
                choice = "trained" if self.synthetic else "dlib"
            if choice == "dlib":
                self.landmarker = DlibLandmarker(upsample_num_times=s.dlib_upsample)
                name = "dlib 68 (shape_predictor_68_face_landmarks.dat)"
                self.key_files["landmarker"] = file_fingerprint(Path(self.landmarker.predictor_path))
            else:
                from ..evaluators import LANDMARKER_FILE, TrainedLandmarker, evaluator_run_dir

                run = (evaluator_run_dir("landmarker", root, runs_root=self.cfg.runs_root) if choice == "trained"
                       else resolve_path(choice))
                self.landmarker = TrainedLandmarker.load(run)
                name = self.landmarker.name
                self.key_files["landmarker"] = file_fingerprint(run / LANDMARKER_FILE if run.is_dir() else run)
        norm: LMDNormalisation = s.normalisation  # type: ignore[assignment]
        res = s.report_resolution or self.resolution
        self.metrics["lmd"] = LMDMetric(normalisation=norm, resolution=res if norm == "pixels" else None,
                                        sync_on_compute=False)
        return name

    def _build_sync(self, b: Backends, root: Path) -> str:
        s = self.cfg.sync
        if s.audio not in get_args(SyncAudio):
            raise ConfigError(f"sync.audio must be one of {get_args(SyncAudio)}, got {s.audio!r}")
        if b.sync_expert is not None:
            expert = b.sync_expert
        else:
            from ..evaluators import EXPERT_FILE, TrainedSyncExpert, evaluator_run_dir

            run = evaluator_run_dir("syncnet", root, runs_root=self.cfg.runs_root)
            if s.expert in ("auto", "official"):
                try:
                    expert = SyncNetExpert.official(device=self.device)
                except MissingWeightsError as official_missing:
                    if s.expert == "official":
                        raise
                    try:
                        expert = TrainedSyncExpert.load(run, device=self.device)
                    except FileNotFoundError as no_trained:
                        raise FileNotFoundError(
                            f"neither the official SyncNet nor a trained expert is available.\n{official_missing}\n"
                            f"Or: {no_trained}"
                        ) from no_trained
                    self.key_files["sync_expert"] = file_fingerprint(run / EXPERT_FILE)
            else:
                path = run if s.expert == "trained" else resolve_path(s.expert)
                expert = TrainedSyncExpert.load(path, device=self.device)
                self.key_files["sync_expert"] = file_fingerprint(path / EXPERT_FILE if path.is_dir() else path)
        self.expert = _RecordingExpert(expert)
        self.metrics["sync"] = SyncMetric(self.expert, vshift=s.vshift, sync_on_compute=False)
        return expert.name

    def _build_csim(self, b: Backends, root: Path) -> str:
        from ..metrics import IDENTITY_NETWORK

        embedder = b.csim_embedder if b.csim_embedder is not None else DlibFaceEmbedder()
        self.metrics["csim"] = CSIMMetric(embedder=embedder, sync_on_compute=False)
        label = getattr(embedder, "name", IDENTITY_NETWORK)
        k = max(1, self.cfg.csim.frame_stride)
        every = "every frame" if k == 1 else f"1 frame in {k}"
        return f"{label}; {every} against the clip's first frame (the reference)"

    def _build_fid(self, b: Backends, root: Path) -> str:
        if b.fid_features is not None:
            net, label = b.fid_features
            self._fid_proto = _FeatureFID(feature_extractor=net, feature_extractor_name=label).to(self.device)
        else:
            self._fid_proto = _FeatureFID().to(self.device)
        self._fid_label = self._fid_proto.feature_extractor_name
        return self._fid_label

    # -- use ----------------------------------------------------------------------------------------------------------

    @property
    def available(self) -> list[str]:
        return [m for m in self.requested if self.setup[m].available]

    def unavailable(self) -> dict[str, str]:
        return {m: s.reason for m, s in self.setup.items() if not s.available}

    def key(self) -> dict[str, Any]:
        """Everything about the scoring that a cached per-clip row depends on."""
        c = self.cfg
        return {"version": CACHE_VERSION, "metrics": [m for m in self.available if m != "fid"],
                "labels": {m: self.setup[m].label for m in self.available if m != "fid"},
                "files": self.key_files, "lmd": to_container(c.lmd) if "lmd" in self.available else None,
                "sync": to_container(c.sync) if "sync" in self.available else None,
                "csim": to_container(c.csim) if "csim" in self.available else None}

    def fid_metric(self) -> _FeatureFID | None:
        """A fresh running-sum FID for one method (shares the feature network)."""
        if self._fid_proto is None:
            return None
        return _FeatureFID(feature_extractor=self._fid_proto.feature_extractor, feature_extractor_name=self._fid_label,
                           num_features=self._fid_proto.num_features).to(self.device)

    def fid_features(self, frames: np.ndarray) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 -> ``(T, D)`` float32 FID features."""
        assert self._fid_proto is not None
        out = []
        for start in range(0, len(frames), 32):
            x = torch.from_numpy(np.ascontiguousarray(frames[start : start + 32])).permute(0, 3, 1, 2).to(self.device)
            out.append(self._fid_proto.features(x))
        return torch.cat(out).numpy()

    def _landmarks(self, frames: np.ndarray) -> np.ndarray:
        predict = getattr(self.landmarker, "predict", None)
        if callable(predict):
            return np.asarray(predict(frames), dtype=np.float64)
        return landmarks_from_frames(frames, landmarker=self.landmarker)

    def score(self, generated: np.ndarray, clip: TestClip, *, audio: np.ndarray | None = None) -> tuple[dict, dict]:
        """Score one generated clip against the ground truth: (row values, metric states).

        ``generated`` ``(T', H', W', 3)`` uint8; compared over ``min(T', T)`` frames, resized to the ground-truth size
        first when it differs. ``audio``: the track for the sync metrics (default: the clip's source audio).
        """
        gt = clip.frames
        t = min(len(generated), len(gt))
        if t == 0:
            raise ValueError(f"clip {clip.id}: the generated video has no frames")
        row: dict[str, Any] = {"frames": t, "frames_generated": len(generated), "resized_from": ""}
        gen = generated[:t]
        if gen.shape[1:3] != gt.shape[1:3]:
            row["resized_from"] = f"{gen.shape[1]}x{gen.shape[2]}"
            x = torch.from_numpy(np.ascontiguousarray(gen)).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=gt.shape[1:3], mode="bilinear", align_corners=False, antialias=True)
            gen = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        real = gt[:t]
        g = torch.from_numpy(np.ascontiguousarray(gen)).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        r = torch.from_numpy(np.ascontiguousarray(real)).permute(0, 3, 1, 2)
        lm68 = clip.landmarks68[:t]
        states: dict[str, Any] = {}
        for name in self.available:
            if name == "fid":
                continue
            m = self.metrics[name]
            m.reset()
            if name in ("ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips"):
                for s in range(0, t, 16):  # chunks bound the float64 SSIM buffers at large resolutions
                    if name == "lpips":
                        m.update((g[s : s + 16].float() / 127.5 - 1).to(self.device), (r[s : s + 16].float() / 127.5 - 1).to(self.device))
                    elif name.endswith("_mouth"):
                        m.update(g[s : s + 16], r[s : s + 16], mouth_landmarks=lm68[s : s + 16])
                    else:
                        m.update(g[s : s + 16], r[s : s + 16])
            elif name == "lmd":
                target = self._gt_landmarks.get(clip.id)
                if target is None:
                    target = self._landmarks(gt) if self.cfg.lmd.target == "frames" else clip.landmarks68
                    self._gt_landmarks = {clip.id: target}  # one clip at a time: shared by the methods
                m.update(self._landmarks(gen), target[:t], source_resolution=int(gt.shape[1]))
            elif name == "sync":
                sound = clip.audio if audio is None else audio
                m.update(gen, sound)
                v, a = self.expert.last  # type: ignore[union-attr]
                row["sync_offset"] = sync_scores_from_embeddings(v, a, vshift=self.cfg.sync.vshift).offset
            elif name == "csim":
                m.update(gen[:: max(1, self.cfg.csim.frame_stride)], gt[0])
            states[name] = _state_to_json(m)
            row.update(self._values(name, m))
        return row, states

    def _values(self, name: str, m: Any) -> dict[str, Any]:
        """The stable columns of one metric from its report (NaN when it has nothing to report)."""
        try:
            rep = m.report()
        except ValueError:  # e.g. LMD with no detected face in any frame
            rep = {}
        if name == "lmd":
            mouth, face = m.names
            return {"lmd_mouth": rep.get(mouth, float("nan")), "lmd_face": rep.get(face, float("nan")),
                    "jitter_ratio": rep.get("lmd_jitter_ratio", float("nan")),
                    "lmd_missing_frames": rep.get("lmd_missing_frames", 0)}
        if name == "lpips":
            return {"lpips": rep.get("lpips", rep.get("lpips_random_backbone", float("nan")))}
        if name == "sync":
            return {k: rep.get(k, float("nan")) for k in ("lse_c", "lse_d", "sync_abs_offset")}
        return {name: rep.get(name, float("nan"))}

    def aggregate(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """Table values of one method from its clips' states (merged in the given order); plus the report extras."""
        out: dict[str, Any] = {}
        for name in self.available:
            if name == "fid":
                continue
            m = self.metrics[name]
            m.reset()
            for st in states:
                if name in st:
                    m.merge_state({k: torch.tensor(v, dtype=getattr(m, k).dtype) for k, v in st[name].items()})
            values = self._values(name, m)
            values.pop("lmd_missing_frames", None)
            out.update(values)
        return out

    @property
    def lmd_unit(self) -> str:
        if "lmd" not in self.available:
            return ""
        mouth, _ = self.metrics["lmd"].names
        return mouth.removeprefix("lmd_mouth_")


# ---------------------------------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------------------------------


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether this call initialised the process group)."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) <= 1 and int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        env.setdefault("RANK", env["SLURM_PROCID"])  # SLURM (srun) without torchrun
        env.setdefault("WORLD_SIZE", env["SLURM_NTASKS"])
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
        env.setdefault("MASTER_PORT", "29500")
    if int(env.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    """What :func:`run_bench` produced (on every rank)."""

    out_dir: Path
    table: list[dict[str, Any]]  # table.csv rows
    per_clip: list[dict[str, Any]]  # per_clip.csv rows
    stats: dict[str, dict[str, int]]  # method -> {"computed", "cached", "generated", "errors"} summed over ranks
    markdown: str


def _load_cached(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        blob = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged cache entry is recomputed
    return blob if blob.get("key") == key else None


def _save_features(path: Path, feats: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, feats.astype(np.float32))
    os.replace(tmp, path)


def _load_features(path: Path, frames: int) -> np.ndarray | None:
    try:
        feats = np.load(path)
    except (OSError, ValueError):
        return None
    return feats if len(feats) == frames else None


def _device(setting: str) -> torch.device:
    if setting != "auto":
        return torch.device(setting)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def run_bench(cfg: Any, *, backends: Backends | None = None, methods: dict[str, Method] | None = None) -> BenchResult:
    """Run the benchmark of ``cfg`` (a :class:`BenchConfig` tree); see the module docstring.

    ``methods`` replaces the config's methods by ready-made ones (tests inject cheap or counting methods);
    ``backends`` replaces resolved networks by labelled stand-ins. Under DDP every rank calls this with the same config.

    Raises:
        BenchError: under ``strict``, a metric or method that would be n/a; a clip lost or scored twice across ranks.
    """
    start = time.perf_counter()
    cfg = _as_config(cfg)
    rank, world, owns_group = _distributed()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        result = _run(cfg, backends, methods, rank, world, start)
        if owns_group:  # rank 0 may still be writing the table: leave together (only on success: a failed rank exits)
            import torch.distributed as dist

            dist.barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _as_config(cfg: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return cfg
    return OmegaConf.structured(cfg)


def bench_context(cfg: Any) -> BenchContext:
    """What methods built outside the config (``run_bench(methods=...)``) need: dataset, runs folder, device."""
    cfg = _as_config(cfg)
    root = resolve_path(cfg.data.root)
    return BenchContext(root, cfg.runs_root, _device(cfg.device), read_dataset_info(root))


def _run(cfg: Any, backends: Backends | None, injected: dict[str, Method] | None, rank: int, world: int,
         start: float) -> BenchResult:
    from tqdm.auto import tqdm

    from ..video import read_video

    torch.manual_seed(cfg.seed)
    root = resolve_path(cfg.data.root)
    info = read_dataset_info(root)
    device = _device(cfg.device)
    dataset = root.name
    out = resolve_path(cfg.out_root) / dataset / cfg.name
    splits = list(cfg.data.test_splits)
    clips = select_clips(root, splits, cfg.max_clips, cfg.max_frames)
    splits = [s for s in splits if any(c.split == s for c in clips)]
    ctx = BenchContext(root, cfg.runs_root, device, info)

    scorer = Scorer(cfg, data_root=root, dataset_info=info, device=device, backends=backends)
    missing = scorer.unavailable()
    if cfg.strict and missing:
        raise BenchError("strict: metric(s) not available:\n" + "\n".join(f"[{m}] {r}" for m, r in missing.items()))

    methods: dict[str, Method] = {}
    skipped: dict[str, tuple[MethodConfig, str]] = {}
    if injected is not None:
        methods = dict(injected)
    else:
        if not cfg.methods:
            raise ConfigError("the bench config lists no methods (methods: {name: {kind: ...}})")
        for name, mcfg in cfg.methods.items():
            if not mcfg.enabled:
                continue
            try:
                methods[name] = build_method(name, mcfg, ctx)
            except MethodUnavailable as err:
                if cfg.strict:
                    raise BenchError(f"strict: method {name!r} cannot run: {err}") from err
                skipped[name] = (mcfg, str(err))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out)
    _barrier(world)

    scorer_key = scorer.key()
    mine = clips[rank::world]  # clip i -> rank i % world
    fids = {name: scorer.fid_metric() for name in methods}
    fid_real_dir = out / "cache" / "_fid_real" / _digest(scorer._fid_label)
    stats = {name: {"computed": 0, "cached": 0, "generated": 0, "errors": 0} for name in methods}
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(mine) * len(methods), desc=f"bench {cfg.name}", unit="video",
               disable=not cfg.progress or rank != 0)
    for clip in mine:
        real_feats: np.ndarray | None = None
        for name, method in methods.items():
            entry: dict[str, Any] = {"method": name, "split": clip.split, "clip": clip.id}
            try:
                key = _digest({"method": method.key(), "clip_key": method.clip_key(clip), "clip": clip.id,
                               **({"frames": clip.record.num_frames} if cfg.max_frames else {}),
                               "split": clip.split, "scorer": scorer_key})
                cache_file = out / "cache" / name / f"{clip.id}.json"
                fid_file = out / "cache" / name / f"{clip.id}.fid-{_digest(scorer._fid_label)}.npy"
                cached = _load_cached(cache_file, key)
                fake_feats = None
                if cached is not None and fids[name] is not None:
                    fake_feats = _load_features(fid_file, cached["row"].get("frames", -1))
                    if fake_feats is None:
                        cached = None  # the FID features are gone: rescore the clip
                if cached is not None:
                    entry.update(cached["row"], status=cached["status"], states=cached["states"])
                    stats[name]["cached"] += 1
                else:
                    video, made = method.video(clip, out / "videos" / name)
                    stats[name]["generated"] += int(made)
                    if video is None:
                        entry.update(status=f"missing: no video for this clip ({method.describe()})", states={})
                    else:
                        data = read_video(video, with_audio=cfg.sync.audio == "video", target_fps=clip.fps)
                        track = data.audio if cfg.sync.audio == "video" else None
                        row, states = scorer.score(data.frames, clip, audio=track)
                        entry.update(row, status="ok", states=states)
                        if fids[name] is not None:
                            fake_feats = scorer.fid_features(_aligned(data.frames, clip))
                            _save_features(fid_file, fake_feats)
                        stats[name]["computed"] += 1
                    blob = {"key": key, "row": {k: v for k, v in entry.items() if k not in ("states", "status")},
                            "status": entry["status"], "states": entry["states"]}
                    atomic_write_text(cache_file, json.dumps(blob))
                if fake_feats is not None and entry["status"] == "ok":
                    if real_feats is None:
                        real_feats = _real_features(scorer, clip, fid_real_dir)
                    fids[name].add_features(torch.from_numpy(fake_feats), real=False)
                    fids[name].add_features(torch.from_numpy(real_feats[: len(fake_feats)]), real=True)
            except Exception as err:  # one clip's failure must not hang the other ranks: recorded, reported, not cached
                stats[name]["errors"] += 1
                entry.update(status=f"error: {type(err).__name__}: {err}", states={})
                if cfg.progress:
                    traceback.print_exc()
            rows.append(entry)
            bar.update(1)
        clip.release()
    bar.close()

    # -- merge across ranks -------------------------------------------------------------------------------------
    gathered = _gather({"rows": rows, "stats": stats}, world)
    all_rows = [r for g in gathered for r in g["rows"]]
    seen: dict[tuple[str, str], int] = {}
    for r in all_rows:
        seen[(r["method"], r["clip"])] = seen.get((r["method"], r["clip"]), 0) + 1
    twice = sorted(k for k, n in seen.items() if n > 1)
    lost = sorted((m, c.id) for m in methods for c in clips if (m, c.id) not in seen)
    if twice or lost:
        raise BenchError(f"sharding error: scored twice {twice[:5]}, lost {lost[:5]} (world size {world})")
    total_stats = {m: {k: sum(g["stats"][m][k] for g in gathered) for k in stats[m]} for m in methods}
    fid_values: dict[str, Any] = {}
    for name in methods:  # collective on every rank: torchmetrics sums the running sums across processes
        fm = fids[name]
        if fm is None:
            continue
        try:
            fid_values[name] = fm.report()
        except ValueError as err:
            fid_values[name] = {"fid": float("nan"), "error": str(err)}
    order = {c.id: i for i, c in enumerate(clips)}
    all_rows.sort(key=lambda r: (list(methods).index(r["method"]), order[r["clip"]]))

    table = []
    for name, method in methods.items():
        mine_rows = [r for r in all_rows if r["method"] == name]
        ok = [r for r in mine_rows if r["status"] == "ok"]
        values = scorer.aggregate([r["states"] for r in ok]) if ok else {}
        if name in fid_values:
            values["fid"] = fid_values[name].get("fid", float("nan"))
        bad = [r for r in mine_rows if r["status"] != "ok"]
        status = "ok" if not bad else f"{len(bad)} clip(s) not scored: {bad[0]['clip']}: {bad[0]['status']}"
        table.append(_table_row(name, method.label, method.kind, method.protocol, method.uses_source_video, len(ok),
                                len(clips), sum(r.get("frames", 0) for r in ok), values, scorer, status))
    for name, (mcfg, reason) in skipped.items():
        cls = METHOD_KINDS[mcfg.kind]
        table.append(_table_row(name, mcfg.label or name, mcfg.kind, cls.protocol_of(mcfg), cls.source_video(mcfg), 0,
                                len(clips), 0, {}, scorer, f"skipped: {reason}"))

    per_clip = [{c: _cell(r.get(c, "")) for c in PER_CLIP_COLUMNS} for r in all_rows]
    notes = {name: m.describe() for name, m in methods.items()}
    markdown = _markdown(cfg, dataset, splits, clips, table, scorer, notes, skipped, fid_values, world)
    result = BenchResult(out, table, per_clip, total_stats, markdown)
    if rank == 0:
        _write_outputs(out, cfg, result, scorer, notes, fid_values, world, time.perf_counter() - start, clips)
        print(markdown)
        print(f"\nwritten: {out}/{{table.md, table.csv, results.json, per_clip.csv}}")
    _barrier(world)
    return result


def _aligned(frames: np.ndarray, clip: TestClip) -> np.ndarray:
    """The generated frames the metrics compared: the first min(T', T), at the ground-truth size."""
    gen = frames[: min(len(frames), clip.record.num_frames)]
    h, w = clip.frames.shape[1:3]
    if gen.shape[1:3] != (h, w):
        x = torch.from_numpy(np.ascontiguousarray(gen)).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        gen = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return gen


def _real_features(scorer: Scorer, clip: TestClip, folder: Path) -> np.ndarray:
    path = folder / f"{clip.id}.npy"
    feats = _load_features(path, clip.record.num_frames) if path.is_file() else None
    if feats is None:
        feats = scorer.fid_features(clip.frames)
        _save_features(path, feats)
    return feats


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return NA
        return round(v, 6)
    return v


def _table_row(name: str, label: str, kind: str, protocol: str, uses_source: bool | None, clips: int, expected: int,
               frames: int, values: dict[str, Any], scorer: Scorer, status: str) -> dict[str, Any]:
    row: dict[str, Any] = {"method": name, "label": label, "kind": kind, "protocol": protocol,
                           "uses_source_video": "" if uses_source is None else bool(uses_source), "clips": clips,
                           "clips_expected": expected, "frames": frames, "lmd_unit": scorer.lmd_unit, "status": status}
    for metric in scorer.requested:
        for col in _VALUE_COLUMNS[metric]:
            v = values.get(col, float("nan")) if scorer.setup[metric].available else float("nan")
            row[col] = _cell(v)
    for col in TABLE_COLUMNS:
        row.setdefault(col, "")
    return {c: row[c] for c in TABLE_COLUMNS}


def arrow(higher_is_better: bool | None) -> str:
    """The heading's direction mark: higher, lower or closest to 1 is best."""
    return {True: "↑", False: "↓", None: "→1"}[higher_is_better]


def _fmt(v: Any, col: str) -> str:
    if v in ("", None):
        return ""
    if v == NA:
        return NA
    if col == "sync_abs_offset":
        return f"{float(v):.2f}"
    if col in ("psnr", "psnr_mouth", "fid"):
        return f"{float(v):.2f}"
    return f"{float(v):.4f}" if col in ("ssim", "ssim_mouth", "lpips", "csim") else f"{float(v):.3f}"


def _markdown(cfg: Any, dataset: str, splits: list[str], clips: list[TestClip], table: list[dict], scorer: Scorer,
              notes: dict[str, str], skipped: dict[str, tuple[MethodConfig, str]], fid_values: dict, world: int) -> str:
    cols = [(c, h, hib) for c, h, hib in TABLE_HEADINGS if any(c in _VALUE_COLUMNS[m] for m in scorer.requested)]
    head = ["method", "protocol", "source video", "clips"] + [f"{h} {arrow(hib)}" for _, h, hib in cols]
    lines = [f"# Benchmark `{cfg.name}` on {dataset}: {', '.join(splits)} ({len(clips)} clips)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        src = {True: "yes", False: "no (one-shot)", "": "?"}.get(row["uses_source_video"], "?")
        cells = [row["label"], row["protocol"] or "-", src, f"{row['clips']}/{row['clips_expected']}"]
        cells += [_fmt(row[c], c) for c, _, _ in cols]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Protocols:"]
    for name, text in notes.items():
        lines.append(f"- {name}: {text}")
    for name, (_, reason) in skipped.items():
        lines.append(f"- {name}: skipped -- {reason}")
    bad = [r for r in table if r["status"] not in ("ok",) and not r["status"].startswith("skipped")]
    for r in bad:
        lines.append(f"- {r['method']}: {r['status']}")
    s = scorer.setup
    lines += ["", "Settings:"]
    if "lmd" in s and s["lmd"].available:
        lmd = cfg.lmd
        unit = (f"pixels at {lmd.report_resolution or scorer.resolution} px" if lmd.normalisation == "pixels"
                else "divided by the ground-truth inter-ocular distance (points 36-45)")
        target = ("the same landmarker on the ground-truth frames" if lmd.target == "frames"
                  else "the dataset's landmarks68.npy")
        lines.append(f"- LMD: landmarks by {s['lmd'].label}; reference: {target}; M-LMD = mouth points 48-67, F-LMD = all "
                     f"68; each frame's points centred on their mean, mean L2 per point, mean over frames, then "
                     f"videos; {unit}. Jitter: mean acceleration magnitude |x[t+1] - 2x[t] + x[t-1]| of the 68 "
                     f"detected points, over that of the ground truth's (1 = as smooth as the ground truth)")
    if "sync" in s and s["sync"].available:
        lines.append(f"- LSE-C / LSE-D / |offset|: expert {s['sync'].label}; offsets searched ±{cfg.sync.vshift} "
                     f"frames; audio: {'the clip source audio' if cfg.sync.audio == 'source' else 'the video track'}")
    if "fid" in s and s["fid"].available:
        counts = next(iter(fid_values.values()), {})
        lines.append(f"- FID: features {s['fid'].label}; all compared frames of a method vs the ground-truth frames "
                     f"of the same clips (running sums)" + (f"; e.g. {counts.get('fid_fake_images')} generated frames"
                                                            if counts.get("fid_fake_images") else ""))
    if "lpips" in s and s["lpips"].available:
        lines.append(f"- LPIPS: {s['lpips'].label}")
    if "csim" in s and s["csim"].available:
        lines.append(f"- CSIM: {s['csim'].label}")
    if any(m in s and s[m].available for m in ("ssim", "psnr", "ssim_mouth", "psnr_mouth")):
        lines.append("- SSIM / PSNR: per frame against the ground truth, mean over all frames; -m: on the 96x96 crop "
                     "around the ground-truth mouth (metrics.image.crop_mouth)")
    lines.append(f"- frames compared over min(generated, ground-truth) length at the dataset resolution; "
                 f"{world} process(es)")
    missing = scorer.unavailable()
    if missing:
        lines += ["", "Not available (n/a):"]
        for m, reason in missing.items():
            body = reason.replace("\n", "\n    ")
            lines.append(f"- {m}: {body}")
    return "\n".join(lines)


def _write_outputs(out: Path, cfg: Any, result: BenchResult, scorer: Scorer, notes: dict[str, str], fid_values: dict,
                   world: int, seconds: float, clips: list[TestClip]) -> None:
    def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    atomic_write_text(out / "table.md", result.markdown + "\n")
    atomic_write_text(out / "table.csv", csv_text(result.table, TABLE_COLUMNS))
    atomic_write_text(out / "per_clip.csv", csv_text(result.per_clip, PER_CLIP_COLUMNS))
    results = {
        "name": cfg.name, "dataset": out.parent.name, "data_root": str(resolve_path(cfg.data.root)),
        "splits": list(cfg.data.test_splits), "clips": [c.id for c in clips], "world_size": world,
        "seconds": round(seconds, 1), "columns": {"table": list(TABLE_COLUMNS), "per_clip": list(PER_CLIP_COLUMNS)},
        "lmd_unit": scorer.lmd_unit,
        "settings": {m: scorer.setup[m].label for m in scorer.available},
        "not_available": scorer.unavailable(),
        "protocols": notes,
        "fid": {k: {kk: _finite(vv) for kk, vv in v.items()} for k, v in fid_values.items()},
        "stats": result.stats,
        "methods": {r["method"]: {k: (None if v == NA else v) for k, v in r.items()} for r in result.table},
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tensorboard")) as tb:
            for row in result.table:
                for col, _, _ in TABLE_HEADINGS:
                    v = row.get(col)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        tb.add_scalar(f"bench/{col}/{row['method']}", float(v), 0)
            tb.add_text("bench/table", result.markdown, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def load_bench_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Compose a bench experiment file (``defaults`` list, ``key=value`` / ``group=choice`` overrides) into a
    :class:`BenchConfig`. As ``config.load_config``, except that ``methods`` accepts new names (each entry is still
    checked against :class:`MethodConfig`)."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..config import check_values, compose, experiments_dir, split_overrides

    p = Path(path)
    if not p.is_absolute() and not p.is_file():
        p = experiments_dir() / p
    if not p.is_file():
        raise ConfigError(f"bench config {p} not found")
    raw = OmegaConf.load(p)
    groups = [k for e in raw.get("defaults", []) if isinstance(e, (dict, DictConfig)) for k in e]
    choices, values = split_overrides(list(overrides), groups)
    composed = compose(p, choices=choices)
    where = str(p)
    try:
        cfg = OmegaConf.structured(BenchConfig)
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_struct(cfg.methods, False)  # method names are the user's; their fields are checked
        cfg = OmegaConf.merge(cfg, composed)
        for item in values:
            where = f"override {item!r}"
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None)
        raise ConfigError(f"{where}: bad config key {key!r} ({str(err).splitlines()[0]})") from err
    check_values(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench/demo.yaml", help="experiment file under experiments/ (or a path)")
    parser.add_argument("--strict", action="store_true", help="a metric or method that would be n/a is an error")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_clips=2 methods.dreamhead.steps=10")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_bench_config(args.config, args.overrides)
        if args.strict:
            cfg.strict = True
        result = run_bench(cfg)
    except (ConfigError, BenchError, ClipError, MissingWeightsError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    errors = sum(s["errors"] for s in result.stats.values())
    if errors:
        print(f"error: {errors} video(s) failed (see per_clip.csv status)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
