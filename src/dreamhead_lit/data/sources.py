"""The input videos of a raw folder, by layout (``hdtf``, ``mead``, ``plain``): each one's clip id, identity, emotion
and intensity, separate audio file (MEAD) and face detection window (HDTF crop files). The rules are spelled out in
``preprocess.py``'s docstring (step 1, Discover)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Layout = Literal["hdtf", "mead", "plain"]
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
# what each layout looks for, for the message when a --src holds none
LAYOUT_HINTS = {
    "hdtf": "--layout hdtf looks for <name>_<idx>.mp4 files",
    "mead": "--layout mead looks for <actor>/video/front/<emotion>/level_<k>/<nnn>.mp4",
    "plain": f"--layout plain looks for {', '.join(VIDEO_SUFFIXES)} files, hidden ones left out",
}


@dataclass
class SourceVideo:
    """One input video and what the layout says about it."""

    path: Path
    rel: str  # path relative to src (posix), the key of skipped.jsonl and meta.json's source_path
    clip_id: str
    identity: str
    emotion: str = "neutral"
    intensity: int = 0
    audio_path: Path | None = None  # audio file to use when the video has no audio track (MEAD)
    roi: tuple[float, float, float, float] | None = None  # detection window (HDTF crop file)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "clip"


def hdtf_identity(stem: str) -> str:
    """HDTF's speaker: the name before the last ``_<digits>`` (``WDA_KatieHill_000`` -> ``WDA_KatieHill``)."""
    m = re.match(r"^(.+)_\d+$", stem)
    return m.group(1) if m else stem


def read_hdtf_crops(src: Path) -> dict[str, tuple[float, float, float, float]]:
    """HDTF ``*_crop_wh.txt`` files under src: ``{video file name: (x0, y0, x1, y1)}``.

    HDTF's format is ``<name>_<idx>.mp4 x width y height`` (ffmpeg ``crop=width:height:x:y``)."""
    crops = {}
    for path in sorted(src.rglob("*_crop_wh.txt")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            try:
                x, w, y, h = (float(v) for v in parts[1:5])
            except ValueError as err:
                raise ValueError(f"{path}:{n}: expected `<name>.mp4 x width y height`, got {line!r}") from err
            crops[parts[0]] = (x, y, x + w, y + h)
    return crops


def discover(src: Path, layout: Layout, *, identity_from: str = "name") -> list[SourceVideo]:
    """The input videos of ``src`` for ``layout``, sorted by clip id. Raises ValueError on clashing clip ids."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} is not a folder")
    items: list[SourceVideo] = []
    if layout == "mead":
        for path in sorted(src.rglob("*.mp4")):
            parts = path.relative_to(src).parts
            # <actor>/video/front/<emotion>/level_<k>/<nnn>.mp4, src may be the MEAD root or one actor's folder
            if len(parts) < 5 or parts[-5:-3] != ("video", "front") or not parts[-2].startswith("level_"):
                continue
            actor_dir = path.parents[4]
            actor = actor_dir.name
            emotion, level = parts[-3], parts[-2]
            intensity = int(level.split("_", 1)[1]) if level.split("_", 1)[1].isdigit() else 0
            audio = actor_dir / "audio" / emotion / level / f"{path.stem}.m4a"
            items.append(SourceVideo(path, path.relative_to(src).as_posix(),
                                     _safe_id(f"{actor}_{emotion}_level{intensity}_{path.stem}"), actor,
                                     emotion=emotion, intensity=intensity, audio_path=audio))
    else:
        crops = read_hdtf_crops(src) if layout == "hdtf" else {}
        suffixes = (".mp4",) if layout == "hdtf" else VIDEO_SUFFIXES
        for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
            rel = path.relative_to(src)
            if any(part.startswith(".") for part in rel.parts):
                continue  # hidden files, e.g. half-written downloads
            stem_id = "__".join(rel.with_suffix("").parts)
            if layout == "hdtf":
                identity = hdtf_identity(path.stem)
            else:
                identity = path.parent.name if identity_from == "parent" and rel.parent.parts else path.stem
            items.append(SourceVideo(path, rel.as_posix(), _safe_id(stem_id), identity, roi=crops.get(path.name)))
    ids: dict[str, str] = {}
    for item in items:
        if item.clip_id in ids:
            raise ValueError(f"inputs {ids[item.clip_id]} and {item.rel} both map to clip id {item.clip_id!r}; "
                             "rename one of them")
        ids[item.clip_id] = item.rel
    return sorted(items, key=lambda s: s.clip_id)
