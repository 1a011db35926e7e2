"""Configuration: typed schemas, YAML composition, command-line overrides, run directories.

An experiment file under ``experiments/`` names its parts in a ``defaults`` list (as Hydra does, without Hydra)::

    defaults:
      - data: synthtalk      # experiments/data/synthtalk.yaml, placed under the `data` key
      - trainer: default     # experiments/trainer/default.yaml, under `trainer`
      - size: demo           # experiments/size/demo.yaml; `_global_: true` inside merges it at the root
    name: default

The composed tree is merged into a typed dataclass schema (``OmegaConf.structured``), so an unknown key or a value of
the wrong type is reported with its full key. Command-line overrides are ``key=value`` (dotted keys, YAML values) or
``group=choice`` to swap a part (``data=hdtf``).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


class ConfigError(ValueError):
    """A configuration problem, naming the key or file at fault."""


def project_root() -> Path:
    """The checkout root (where `experiments/` lives); `$DREAMHEAD_ROOT` overrides, else the current directory's."""
    env = os.environ.get("DREAMHEAD_ROOT")
    if env:
        return Path(env)
    here = Path.cwd()
    for candidate in (here, *here.parents):
        if (candidate / "experiments").is_dir():
            return candidate
    source = Path(__file__).resolve().parents[2]
    return source if (source / "experiments").is_dir() else here


def experiments_dir() -> Path:
    return project_root() / "experiments"


# ---------------------------------------------------------------------------------------------------------------
# Schemas shared by every stage. Stage-specific schemas (model sections) live beside their modules.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """What the TalkingHeadDataModule reads and how it batches."""

    root: str = "data/synthtalk"  # a processed dataset (index.jsonl + clips/); relative to the project root
    train_split: str = "train"
    val_split: str = "val"
    test_splits: list[str] = field(default_factory=lambda: ["test", "test_seen"])
    # only these identities' clips, in every split (null: all). One identity is the person-specific protocol of
    # DAE-Talker (train and test on one speaker's clips); SynthTalk has it through each identity's train / val /
    # test_seen clips, HDTF-style data through each long video's train / val / test segments
    identities: list[str] | None = None
    batch_size: int = 16
    num_workers: int = 0  # 0 keeps everything in the main process (fastest for tiny data, debuggable)
    pin_memory: bool = False  # turn on with GPUs
    # stage 1
    window: int = 32  # frames per stage-1 training window (1.28 s at 25 fps)
    audio_feature: str = "logmel80"  # name in data.audio's feature registry
    audio_context: int = 2  # video frames of audio context on each side of a frame (DreamTalk uses ±5 at 50 Hz ≈ ±2.5 frames)
    landmark_set: str = "dense"  # "dense" (the dataset's full set) or "68" (dlib points only); checked in CHOICES
    windows_per_clip: int = 4  # training windows drawn per clip per epoch (random starts)
    # stage 2
    reference_min_gap: int = 12  # frames between target and reference, so the reference is not a copy of the target
    landmark_sigma: float = 0.75  # landmark image blur in pixels at 64 px (scaled with the resolution)
    frames_per_clip: int = 16  # stage-2 training samples drawn per clip per epoch
    # stage 2 works at this resolution whatever the dataset's: frames and landmarks are resized in the DataModule, so
    # demo-size networks (64 px) train on 256 px HDTF crops and paper-size ones (256 px) on any data. None: the data's.
    working_resolution: int | None = None


@dataclass
class TrainerConfig:
    """Arguments forwarded to lightning.Trainer (the ones we set; anything else: `trainer.extra`)."""

    accelerator: str = "auto"
    devices: Any = "auto"  # int, list or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for multi-GPU; gloo is used automatically on CPU
    precision: str = "32-true"  # "bf16-mixed" on recent GPUs
    max_steps: int = 2000
    max_epochs: int = -1
    val_check_interval: Any = None  # int steps or float fraction of an epoch; None = once per epoch
    check_val_every_n_epoch: int | None = 1
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    limit_val_batches: Any = 1.0
    enable_progress_bar: bool = True
    deterministic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """What every training run's config has. A stage's schema adds the sections of its LightningModule, which
    ``registry.ModelSpec.build_module`` hands to the module's ``from_datamodule`` (``model`` as ``net``)."""

    name: str = "default"
    seed: int = 0
    runs_root: str = "runs"
    ckpt_path: str | None = None  # "last" resumes runs/<stage>/<name>/checkpoints/last.ckpt
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf's own parse errors
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: top level must be a mapping")
    return cfg


def _group_file(start: Path, group: str, choice: str) -> Path:
    """``<dir>/<group>/<choice>.yaml`` in the nearest folder at or above ``start`` that has a ``<group>`` folder."""
    base = next((d for d in (start, *start.parents) if (d / group).is_dir()), start)
    path = base / group / f"{choice}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (base / group).glob("*.yaml")) if (base / group).is_dir() else []
        raise ConfigError(f"no {group!r} config named {choice!r} (looked for {path}); choose one of {options}")
    return path


def compose(path: Path, *, choices: dict[str, str] | None = None) -> DictConfig:
    """Compose a YAML file with its ``defaults`` list. ``choices`` replaces group choices (``data=hdtf``)."""
    path = Path(path)
    cfg = _read_yaml(path)
    defaults = cfg.pop("defaults", [])
    base = path.parent
    merged = OmegaConf.create({})
    choices = dict(choices or {})
    for entry in defaults:
        if isinstance(entry, str):
            merged = OmegaConf.merge(merged, compose(base / f"{entry}.yaml"))
            continue
        if not isinstance(entry, (dict, DictConfig)) or len(entry) != 1:
            raise ConfigError(f"{path}: a defaults entry must be `group: choice`, got {entry!r}")
        (group, choice), = entry.items()
        choice = choices.pop(group, choice)
        part = compose(_group_file(base, group, str(choice)))
        if part.pop("_global_", False):
            merged = OmegaConf.merge(merged, part)
        else:
            merged = OmegaConf.merge(merged, OmegaConf.create({group: part}))
    if choices:
        raise ConfigError(f"{path}: override(s) {sorted(choices)} name no group of this config's defaults list")
    return OmegaConf.merge(merged, cfg)


def split_overrides(overrides: Sequence[str], groups: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Separate ``group=choice`` overrides from ``key=value`` ones; reject malformed ones."""
    choices, values = {}, []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        if "." not in key and key in groups:
            choices[key] = value
        else:
            values.append(item)
    return choices, values


def _defaults_groups(path: Path) -> list[str]:
    cfg = _read_yaml(path)
    groups = []
    for entry in cfg.get("defaults", []):
        if isinstance(entry, (dict, DictConfig)):
            groups.extend(entry.keys())
    return groups


def _explain(err: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    msg = str(err).splitlines()[0]
    if isinstance(err, ConfigKeyError):
        return ConfigError(f"{where}: unknown config key {key!r} ({msg})")
    if isinstance(err, ValidationError):
        what = "bad value" if "expected one of" in msg else "wrong type"
        return ConfigError(f"{where}: {what} for config key {key!r} ({msg})")
    return ConfigError(f"{where}: bad value for config key {key!r} ({msg})")


def load_config(path: str | Path, overrides: Sequence[str] = (), *, schema: type | None = None) -> DictConfig:
    """Compose ``path``, validate it against ``schema`` (a dataclass), apply ``key=value`` overrides, resolve.

    Returns a read-only-structure DictConfig: reading an unknown key later is also an error.
    """
    path = Path(path)
    if not path.is_absolute() and not path.is_file():
        path = experiments_dir() / path
    choices, values = split_overrides(overrides, _defaults_groups(path))
    composed = compose(path, choices=choices)
    try:
        cfg = OmegaConf.structured(schema) if schema is not None else OmegaConf.create({})
        OmegaConf.set_struct(cfg, True)
        cfg = OmegaConf.merge(cfg, composed)
    except OmegaConfBaseException as err:
        raise _explain(err, str(path)) from err
    for item in values:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise _explain(err, f"override {item!r}") from err
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise _explain(err, str(path)) from err
    check_values(cfg)
    return cfg


# Value rules by key name (wherever the key sits), checked at load so a bad number stops the run before any work with
# the key named, instead of a traceback deep inside (batch_size=-3) or a run of NaN (lr=nan).
POSITIVE = {"batch_size", "working_resolution", "lr", "sample_steps", "num_train_steps", "window",
            "accumulate_grad_batches", "frames_per_clip", "windows_per_clip", "num_nodes", "max_clips", "steps",
            "threads"}
NON_NEGATIVE = {"num_workers", "warmup_steps", "weight_decay", "audio_context", "guidance_scale", "reference_min_gap",
                "landmark_sigma", "gradient_clip_val", "seed"}
UNIT_INTERVAL = {"ema_decay", "min_lr_ratio"}  # and every key ending in _prob or _fraction
# closed choices whose values YAML may type as numbers (`landmark_set=68`), so the schema keeps `str` for them; the
# other closed choices are Literal types in their schemas, which OmegaConf checks with the valid values in the message
CHOICES = {"landmark_set": ("dense", "68")}
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # run names become folder names: no '/', no '..'


def check_values(cfg: Any, prefix: str = "") -> None:
    """Reject non-finite numbers anywhere, out-of-range values of the keys above, and a run ``name`` that is not a
    plain folder name. Raises ConfigError naming the key and the rule."""
    if isinstance(cfg, (dict, DictConfig)):
        items = cfg.items()
    elif isinstance(cfg, (list, ListConfig)):
        items = enumerate(cfg)
    else:
        return
    for key, value in items:
        full = f"{prefix}{key}"
        if isinstance(value, (dict, DictConfig, list, ListConfig)):
            check_values(value, f"{full}.")
            continue
        _check_value(str(key), full, value)


def _check_value(key: str, full: str, value: Any) -> None:
    if key == "name" and "." not in full and value is not None and not PLAIN_NAME.match(str(value)):
        raise ConfigError(f"name={value!r}: a run name is a folder name under runs/ (letters, digits, '.', '_', '-'; "
                          "no '/' and not starting with '.')")
    if key in CHOICES and str(value) not in CHOICES[key]:
        raise ConfigError(f"{full}={value}: choose one of {list(CHOICES[key])}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ConfigError(f"{full}={value}: must be a finite number")
    if key in POSITIVE and value <= 0:
        raise ConfigError(f"{full}={value}: must be positive")
    if key in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{full}={value}: must not be negative")
    if (key in UNIT_INTERVAL or key.endswith(("_prob", "_fraction"))) and not 0 <= value <= 1:
        raise ConfigError(f"{full}={value}: must be between 0 and 1")
    if key == "max_steps" and value <= 0 and value != -1:
        raise ConfigError(f"{full}={value}: must be positive (or -1 for no limit, with max_epochs)")


def to_container(cfg: Any) -> Any:
    """Plain Python objects (for `**kwargs` construction)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def resolve_path(path: str | Path) -> Path:
    """A config path: absolute as is, relative to the project root otherwise."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else project_root() / p


# ---------------------------------------------------------------------------------------------------------------
# Run directories
# ---------------------------------------------------------------------------------------------------------------


def run_dir(stage: str, name: str, *, runs_root: str | Path = "runs") -> Path:
    return resolve_path(runs_root) / stage / name


def save_resolved_config(cfg: DictConfig | dict, directory: Path, *, filename: str = "config.yaml") -> Path:
    """Write the resolved config beside the run's checkpoints and logs (atomically)."""
    from .data.clip import atomic_write_text

    if is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    text = OmegaConf.to_yaml(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg), resolve=True)
    out = Path(directory) / filename
    atomic_write_text(out, text)
    return out
