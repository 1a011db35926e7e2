"""Methods that need no trained model: the ground truth re-encoded (upper bound), the first frame held (lower bound)
and videos made elsewhere, read from a folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...config import ConfigError, resolve_path
from ..cache import file_fingerprint
from ..clips import TestClip
from ..config import MethodConfig, MethodUnavailable
from .base import BenchContext, Method, register_method


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
        from ...video import write_video

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
        from ...video import write_video

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

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "uses_source_video": bool(self.uses_source_video)}

    def clip_key(self, clip: TestClip) -> dict[str, Any]:
        path = self.folder / f"{clip.id}.mp4"
        return {"file": file_fingerprint(path)} if path.is_file() else {"file": None}

    def video(self, clip: TestClip, cache_dir: Path) -> tuple[Path | None, bool]:
        path = self.folder / f"{clip.id}.mp4"
        return (path if path.is_file() else None), False
