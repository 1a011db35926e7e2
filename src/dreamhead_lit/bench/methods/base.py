"""What a bench method is: :class:`Method` (one video per test clip), the ``kind`` registry a bench config names
(:func:`register_method`) and the run facts a method may use (:class:`BenchContext`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...config import ConfigError
from ...data.clip import atomic_write_text
from ..cache import digest
from ..clips import TestClip
from ..config import MethodConfig, MethodUnavailable


METHOD_KINDS: dict[str, type[Method]] = {}


def find_checkpoint(spec: str | None, model: str, runs_root: str) -> Path:
    """A checkpoint of the registered ``model``: ``spec`` as a file, as a run name under ``runs/<its group>/``, or
    None for the latest run there."""
    from ... import registry
    from ...config import resolve_path
    from ...runs import latest_checkpoint

    group = registry.get(model).group
    recipe = next((r for r in registry.recipes() if model in registry.recipe(r).models), None)
    hint = (f"make train-{model}" if model in ("stage1", "stage2") else
            f"python -m dreamhead_lit.train --method {recipe} (make train-{recipe})" if recipe else
            f"python -m dreamhead_lit.train {model}")
    if spec:
        path = resolve_path(spec)
        if path.is_file():
            return path
        try:
            return latest_checkpoint(group, runs_root=runs_root, name=spec)
        except FileNotFoundError as err:
            raise MethodUnavailable(f"no {model} run {spec!r} ({err}): train it with `{hint}`, or name another run or "
                                    f"a checkpoint file in the method's settings") from err
    try:
        return latest_checkpoint(group, runs_root=runs_root)
    except FileNotFoundError as err:
        raise MethodUnavailable(f"no {model} checkpoint: train one with `{hint}` ({err})") from err


def motion_landmarks_file(video: Path) -> Path:
    """Beside a method's cached ``<clip>.mp4``: the 68 landmarks it generated and rendered, ``(T, 68, 2)`` pixels of
    the video (written by methods that make landmarks; the emotion column's ``emotion_acc_lm`` reads them)."""
    return video.with_suffix(".landmarks68.npy")


def sample_videos(video: Path) -> list[Path]:
    """Beside a method's cached ``<clip>.mp4``: more samples of the clip with other seeds, ``<clip>.sample<k>.mp4``
    (k = 1, 2, ...; written by stochastic methods asked for several samples), for the Motion spread column."""
    return sorted(video.parent.glob(f"{video.stem}.sample*.mp4"), key=lambda p: p.name)


def register_method(kind: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator adding a method kind to :data:`METHOD_KINDS` (the ``kind`` a bench config names)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.kind = kind
        METHOD_KINDS[kind] = cls
        return cls

    return deco


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

    def facts(self) -> dict[str, Any]:
        """What this method is, as the report compares methods: ``kind`` and the settings that make a variant of it
        (JSON values). The orderings check compares only rows whose facts agree on everything but the one fact a
        claim varies (``bench/claims.py``); results.json keeps them under ``methods.<name>.facts``. Unlike
        :meth:`key`, no checkpoint fingerprints or seeds: two runs of one variant have the same facts."""
        return {"kind": self.kind}

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def clip_key(self, clip: TestClip) -> dict[str, Any]:
        """Per-clip additions to the key (a folder method's input file)."""
        return {}

    def generate(self, clip: TestClip, out: Path) -> None:
        """Write the clip's video to ``out`` (an mp4, atomically)."""
        raise NotImplementedError

    def missing_reason(self, clip: TestClip) -> str:
        """Why :meth:`video` has no video for ``clip`` (its per-clip status): by default the method's note."""
        return self.describe()

    def video(self, clip: TestClip, cache_dir: Path) -> tuple[Path | None, bool]:
        """(the clip's mp4, whether it was generated now); ``None`` when the method has no video for the clip.
        Generated videos are cached in ``cache_dir`` under this method's key."""
        out = cache_dir / f"{clip.id}.mp4"
        sidecar = cache_dir / f"{clip.id}.key"
        key = digest(self.key())
        if out.is_file() and sidecar.is_file() and sidecar.read_text().strip() == key:
            return out, False
        out.parent.mkdir(parents=True, exist_ok=True)
        motion_landmarks_file(out).unlink(missing_ok=True)  # never a previous video's landmarks beside a new video
        for stale in sample_videos(out):  # nor its samples
            stale.unlink()
        self.generate(clip, out)
        atomic_write_text(sidecar, key + "\n")
        return out, True


def build_method(name: str, cfg: MethodConfig, ctx: BenchContext) -> Method:
    from ... import registry

    registry.discover()  # the baselines' packages register their kinds when imported
    if cfg.kind not in METHOD_KINDS:
        raise ConfigError(f"methods.{name}.kind={cfg.kind!r}: choose one of {sorted(METHOD_KINDS)}")
    return METHOD_KINDS[cfg.kind](name, cfg, ctx)
