"""The bench's configuration: the settings of a run and of each method (:class:`BenchConfig`), read from an experiment
file by :func:`load_bench_config`, and the errors that stop a run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, DataConfig, check_values, compose, experiments_dir, split_overrides
from ..metrics.lmd import LMDNormalisation

# Metrics a bench can compute, in table order.
METRICS = ("ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd", "sync", "csim", "emotion", "fid")

LMDTarget = Literal["frames", "landmarks"]
SyncAudio = Literal["source", "video"]
Protocol = Literal["dubbing", "one_shot"]


class BenchError(RuntimeError):
    """The benchmark cannot run as configured (missing weights under ``--strict``, a clip lost across ranks ...)."""


class MethodUnavailable(RuntimeError):
    """A method cannot produce videos here (e.g. no checkpoint); its table row says why."""


class MetricNotApplicable(RuntimeError):
    """A metric has nothing to measure on this dataset (emotion accuracy without emotion labels): n/a with the reason,
    also under ``strict`` (which refuses missing instruments, not questions the data cannot ask)."""


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
    steps: int | None = None  # None: the checkpoint's configured number of steps (both stages)
    stage2_steps: int | None = None  # stage 2's alone (None: steps): a distilled stage 2 behind a stage 1 at `steps`
    seed: int = 0
    batch_size: int = 16  # frames sampled together by stage 2
    emotion_label: bool = True  # dreamhead: give stage 1 the clip's emotion label when the dataset has one (MEAD)
    # kinds registered outside the bench (baselines, plugins): registered model -> checkpoint file or run name (found
    # with methods.base.find_checkpoint), and the kind's own settings
    checkpoints: dict[str, str | None] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


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
class EmotionSettings:
    # trained: the dataset's runs/scorers/emotion-<dataset> (make train-emotion) | a run folder or emotion.pt. Landmarks
    # come from the LMD landmarker (lmd.landmarker) on each method's frames.
    classifier: str = "trained"


@dataclass
class BenchConfig:
    name: str = "default"  # results go to <out_root>/<dataset>/<name>/
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)  # root and test_splits are read
    max_clips: int | None = None  # per split, spread evenly over its clips (None: all)
    max_frames: int | None = None  # per clip, its first N frames (None: whole clips); quick looks and tests
    # only the clips of these identities (None: all), chosen before max_clips: a person-specific protocol (DAE-Talker's
    # paper: train and test on one speaker) benches e.g. identities [synth000] on the split of seen identities
    identities: list[str] | None = None
    out_root: str = "benchmarks/results"
    runs_root: str = "runs"  # where checkpoints and the dataset-trained scorers are looked up
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    lmd: LMDSettings = field(default_factory=LMDSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    csim: CSIMSettings = field(default_factory=CSIMSettings)
    emotion: EmotionSettings = field(default_factory=EmotionSettings)
    device: str = "auto"  # auto: cuda:<local rank> when available, else cpu
    threads: int | None = None  # torch intra-op threads per process (None: torch's default)
    strict: bool = False  # a metric or method that would be n/a is an error instead
    progress: bool = True
    tensorboard: bool = True
    methods: dict[str, MethodConfig] = field(default_factory=dict)


def load_bench_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Compose a bench experiment file (``defaults`` list, ``key=value`` / ``group=choice`` overrides) into a
    :class:`BenchConfig`. As ``config.load_config``, except that ``methods`` accepts new names (each entry is still
    checked against :class:`MethodConfig`)."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

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
