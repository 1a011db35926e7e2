"""A bench method made of registered models loaded from checkpoints (the baselines' kinds): what every such kind
does the same way, shared so that none drifts — its ``options`` and ``checkpoints`` checked against the names it
knows, each model loaded once on the bench's device (or injected by a test), its hyper-parameters and data
description read once from the checkpoint header (facts and notes need them before any clip loads a model), a
model trained on another dataset refused, and frames in [-1, 1] at a working resolution written as the clip's mp4."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...bench.cache import file_fingerprint
from ...config import ConfigError
from ..clips import TestClip
from ..config import MethodConfig, MethodUnavailable
from .base import BenchContext, Method


def source_key(module: Any, ckpt: Path | None) -> Any:
    """What identifies a model in a method's cache key: its checkpoint's fingerprint, or the injected object."""
    return file_fingerprint(ckpt) if ckpt is not None else f"injected {type(module).__name__} {id(module)}"


def trained_identities(*infos: dict) -> list[str] | None:
    """The identities the models were trained on (a person-specific protocol), None when trained on all of them."""
    sets = [set(i["identities"]) for i in infos if i.get("identities") is not None]
    if not sets:
        return None
    return sorted(set.intersection(*sets))


class CheckpointedMethod(Method):
    """Subclasses list the ``OPTIONS`` and ``CHECKPOINTS`` (registered model names) their config may name."""

    OPTIONS: ClassVar[tuple[str, ...]] = ()
    CHECKPOINTS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext) -> None:
        super().__init__(name, cfg, ctx)
        self.options = dict(cfg.options or {})
        unknown = sorted(set(self.options) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(f"methods.{name}.options: unknown {unknown} ({', '.join(self.OPTIONS) or 'none'})")
        unknown = sorted(set(cfg.checkpoints or {}) - set(self.CHECKPOINTS))
        if unknown:
            raise ConfigError(f"methods.{name}.checkpoints: unknown {unknown} ({', '.join(self.CHECKPOINTS)})")
        self._headers: dict[str, dict] = {}  # model -> {"hparams", "data"}, read once

    def bool_option(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"methods.{self.name}.options.{key}={value!r}: true or false")
        return value

    def choice_option(self, key: str, choices: dict | tuple, default: str) -> str:
        value = str(self.options.get(key, default))
        if value not in choices:
            raise ConfigError(f"methods.{self.name}.options.{key}={value!r}: one of {', '.join(choices)}")
        return value

    def load_model(self, path: Path, model: str) -> Any:
        """The registered ``model``'s checkpoint at ``path``, in eval mode on the bench's device."""
        from ... import registry
        from ...checkpoints import CheckpointError

        try:
            return registry.load_checkpoint(path, expected=model).eval().to(self.ctx.device)
        except CheckpointError as err:
            raise MethodUnavailable(f"{model} checkpoint {path}: {err}") from err

    def header(self, model: str, module: Any, path: Path | None) -> dict:
        """``{"hparams": hyper-parameters, "data": data description}`` of a model: from its module when injected or
        loaded, else read once from its checkpoint."""
        if model not in self._headers:
            if module is not None:
                hp, data = dict(getattr(module, "hparams", {}) or {}), getattr(module, "data_info", None)
            else:
                from ...checkpoints import CheckpointError, safe_load

                try:
                    blob = safe_load(path)
                except CheckpointError as err:
                    raise MethodUnavailable(f"{model} checkpoint {path}: {err}") from err
                hp, data = blob.get("hyper_parameters") or {}, (blob.get("dreamhead") or {}).get("data")
            self._headers[model] = {"hparams": dict(hp), "data": dict(data or {})}
        return self._headers[model]

    def learned_autoencoder_checkpoint(self, record: dict | None, model: str, named: str | None, learner: str) -> Path:
        """The ``model`` (an autoencoder) checkpoint to decode a learner's latents with. ``record``: the learner's
        ``autoencoder`` hyper-parameters, ``{"latents": "<run>/latents", "checkpoint": ...}`` (the cache it learned);
        ``named``: the method's ``checkpoints.<model>`` (warned of when it is not the learned one); ``learner``: who
        learned, for the messages."""
        from ...config import resolve_path
        from .base import find_checkpoint

        record = record or {}
        learned = (resolve_path(record["latents"]).parent / "checkpoints" / str(record.get("checkpoint") or "last.ckpt")
                   if record.get("latents") else None)
        if named:
            path = find_checkpoint(named, model, self.ctx.runs_root)
            if learned is not None and path.resolve() != learned.resolve():
                warnings.warn(f"methods.{self.name}: decoding with the autoencoder {path}, but {learner} learned the "
                              f"latents of {learned}: unless both encode alike (the same weights), its latents mean "
                              "other frames to this decoder", RuntimeWarning, stacklevel=3)
            return path
        if learned is None:
            raise MethodUnavailable(f"{learner} does not record the autoencoder it learned from: name it in "
                                    f"checkpoints.{model}")
        if not learned.is_file():
            raise MethodUnavailable(f"the autoencoder {learner} learned from, {learned}, is missing: restore that run, "
                                    f"or name another checkpoint of it in checkpoints.{model}")
        return learned

    def check_dataset(self, info: dict, model: str) -> None:
        """A model trained on frames of another resolution than the bench dataset's was trained on another dataset (or
        another processing of it): its codes and poses mean nothing here. Another folder name is only warned of."""
        have = int(self.ctx.dataset_info.get("resolution") or 0)
        theirs = int(info.get("source_resolution") or 0)
        if have and theirs and have != theirs:
            raise MethodUnavailable(f"{model} was trained on {info.get('root', 'another dataset')} ({theirs} px "
                                    f"frames); the bench's dataset {self.ctx.data_root} has {have} px frames: train it "
                                    f"on this dataset (data.root={self.ctx.data_root}) or bench it on its own")
        root = info.get("root")
        if root and Path(root).name != self.ctx.data_root.name:
            warnings.warn(f"{model} was trained on {root}, the bench's dataset is {self.ctx.data_root}: scored as if "
                          "they were the same data", RuntimeWarning, stacklevel=3)

    def check_identities(self, identities: list[str] | None, model: str) -> None:
        """A person-specific model of none of the dataset's identities has no video for any clip: the row's reason."""
        if identities is None:
            return
        from ...data.clip import read_index

        have = {r.identity for r in read_index(self.ctx.data_root)}
        if not set(identities) & have:
            listed = ", ".join(sorted(have)[:8]) + (" ..." if len(have) > 8 else "")
            raise MethodUnavailable(f"{model} is person-specific, trained on {identities}, none of which is an "
                                    f"identity of {self.ctx.data_root} ({listed})")

    def resize_note(self, working_resolution: int, made: str = "made") -> str:
        have = int(self.ctx.dataset_info.get("resolution") or 0)
        if have and have != working_resolution:
            how = "upsampled" if have > working_resolution else "downsampled"
            return f"; {made} at {working_resolution} px and {how} to the clip's {have} px"
        return ""

    @staticmethod
    def write_frames(x: torch.Tensor, clip: TestClip, out: Path, *, who: str) -> None:
        """Frames ``(F, 3, h, w)`` in [-1, 1] -> the clip's resolution -> ``out`` (mp4 with the clip's audio)."""
        from ...data.datamodule import resize_frames
        from ...video import write_video

        if not torch.isfinite(x).all():  # the writer would round NaN to black: leave nothing instead
            raise RuntimeError(f"{who} made non-finite pixels: non-finite weights, or it diverged; retrain it")
        frames = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        write_video(out, resize_frames(frames, clip.frames.shape[1]), fps=clip.fps, audio=clip.audio)


class AutoencoderMethod(CheckpointedMethod):
    """A kind whose frames come from an autoencoder's decoder (DAE-Talker's, StyleTalker's): the autoencoder loaded
    once from ``ckpt_autoencoder`` (set by the subclass) or injected, its header, working resolution and training
    identities; a model trained on some identities (a person-specific protocol) makes no video of anyone else.
    Subclasses name the registered model in ``AUTOENCODER``."""

    AUTOENCODER: ClassVar[str] = ""

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, autoencoder: Any = None) -> None:
        super().__init__(name, cfg, ctx)
        self._autoencoder = autoencoder
        self.ckpt_autoencoder: Path | None = None

    @property
    def autoencoder(self) -> Any:
        if self._autoencoder is None:
            self._autoencoder = self.load_model(self.ckpt_autoencoder, self.AUTOENCODER)
        return self._autoencoder

    def _ae(self) -> dict:
        return self.header(self.AUTOENCODER, self._autoencoder, self.ckpt_autoencoder)

    @property
    def working_resolution(self) -> int:
        """The autoencoder's frames (its data.working_resolution)."""
        if self._autoencoder is not None:
            return int(self._autoencoder.resolution)
        return int(self._ae()["hparams"]["resolution"])

    @property
    def identities(self) -> list[str] | None:
        """The identities this method makes videos of (None: all)."""
        return trained_identities(self._ae()["data"])

    def video(self, clip: TestClip, cache_dir: Path) -> tuple[Path | None, bool]:
        if self.identities is not None and clip.record.identity not in self.identities:
            return None, False  # a person-specific model: no video of anyone else
        return super().video(clip, cache_dir)

    def missing_reason(self, clip: TestClip) -> str:
        return (f"person-specific, trained on {', '.join(self.identities or [])}; {clip.id} is of "
                f"{clip.record.identity}")


__all__ = ["AutoencoderMethod", "CheckpointedMethod", "source_key", "trained_identities"]
