"""Pictures a person would rather look at than read: landmark animations, image grids, TensorBoard GIFs."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .data.landmarks import CONTOURS_68

COLOURS = {"pred": (230, 60, 60), "true": (40, 160, 60), "ref": (90, 90, 220)}


def draw_landmark_frames(
    sequences: Sequence[np.ndarray],
    *,
    size: int,
    source_size: int,
    colours: Sequence[tuple[int, int, int]],
    labels: Sequence[str] = (),
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Overlay several 68-point landmark sequences (T, 68, 2) given in ``source_size`` pixels on one canvas per frame.

    Returns uint8 (T, size, size, 3): the dlib contours drawn as polylines, one colour per sequence.
    """
    scale = size / source_size
    frames = []
    for t in range(len(sequences[0])):
        img = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(img)
        for seq, colour in zip(sequences, colours):
            pts = np.asarray(seq[t], dtype=np.float64) * scale
            for _, idx, closed in CONTOURS_68:
                line = [tuple(pts[i]) for i in idx] + ([tuple(pts[idx[0]])] if closed else [])
                draw.line(line, fill=colour, width=max(1, size // 128))
        for k, (label, colour) in enumerate(zip(labels, colours)):
            draw.text((4, 4 + 12 * k), label, fill=colour)
        frames.append(np.asarray(img))
    return np.stack(frames)


def gif_bytes(frames: np.ndarray, *, fps: float = 25.0) -> bytes:
    """Encode uint8 (T, H, W, 3) frames as an animated GIF."""
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def log_video(writer, tag: str, frames: np.ndarray, *, step: int, fps: float = 25.0) -> None:
    """Log an animation to TensorBoard's image tab as a GIF (what SummaryWriter.add_video does, without moviepy)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    t, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps=fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def tensorboard_writer(logger):
    """The SummaryWriter behind a Lightning logger, or None when the logger is not TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter

    experiment = getattr(logger, "experiment", None)
    return experiment if isinstance(experiment, SummaryWriter) else None


def image_grid(rows: Sequence[Sequence[np.ndarray]], *, pad: int = 2) -> np.ndarray:
    """Tile uint8 (H, W, 3) images into a grid, rows × columns, with a black border."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    grid = np.zeros((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid[pad + i * (h + pad) : pad + i * (h + pad) + h, pad + j * (w + pad) : pad + j * (w + pad) + w] = img
    return grid


def write_landmark_video(
    path: Path,
    sequences: Sequence[np.ndarray],
    *,
    audio: np.ndarray | None,
    source_size: int,
    labels: Sequence[str],
    size: int = 256,
    fps: float = 25.0,
) -> Path:
    """An mp4 (with the audio) of landmark sequences drawn over each other: how a person checks lip sync."""
    from .video import write_video

    colours = [COLOURS.get(label.split()[0], (0, 0, 0)) for label in labels]
    frames = draw_landmark_frames(sequences, size=size, source_size=source_size, colours=colours, labels=labels)
    write_video(path, frames, fps=fps, audio=audio)
    return Path(path)
