"""Dataset previews: a contact sheet of frames with their landmarks drawn on, one row per clip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .clip import ClipReader, read_dataset_info, read_index
from .landmarks import LandmarkTopology, MOUTH


def draw_landmarks(frame: np.ndarray, points: np.ndarray, *, scale: int = 1, mouth: tuple[int, ...] = MOUTH,
                   index68: tuple[int, ...] | None = None) -> Image.Image:
    """An RGB image of ``frame`` upscaled by ``scale`` with the points drawn (mouth points of the 68 in red)."""
    img = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    red = {index68[i] for i in mouth} if index68 is not None else set()
    for i, (x, y) in enumerate(points * scale):
        colour = (255, 40, 40) if i in red else (40, 255, 80)
        draw.point((float(x), float(y)), fill=colour)
    return img


def write_preview(root: Path, *, clips: int = 6, frames: int = 8, scale: int = 2, out: Path | None = None) -> Path:
    """Write ``root/preview.png``: ``clips`` clips (one per identity first, test split included), ``frames`` frames each."""
    root = Path(root)
    info = read_dataset_info(root)
    topo = LandmarkTopology.from_json(info["landmark_topology"])
    records = read_index(root)
    chosen, seen = [], set()
    for rec in records:
        if rec.identity not in seen:
            chosen.append(rec)
            seen.add(rec.identity)
    chosen = chosen[:clips]
    tiles = []
    for rec in chosen:
        reader = ClipReader(root, rec)
        idx = np.linspace(0, rec.num_frames - 1, frames).round().astype(int)
        row = [draw_landmarks(reader.frame(i), np.asarray(reader.landmarks[i]), scale=scale, index68=topo.index68)
               for i in idx]
        tiles.append(row)
    w, h = tiles[0][0].size
    sheet = Image.new("RGB", (w * frames, h * len(tiles)), (0, 0, 0))
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * w, r * h))
    path = out or root / "preview.png"
    sheet.save(path)
    return path
