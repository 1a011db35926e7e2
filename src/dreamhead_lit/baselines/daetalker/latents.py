"""The latent cache: every clip's per-frame DAE latents, written once after training for speech2latent to learn.

Layout, under a run folder::

    latents/<clip_id>.npy   float32 (T, D), frame t's latent (the EMA encoder, eval mode, deterministic)
    latents/index.json      {"dim": D, "clips": {clip_id: T}, "checkpoint": "<file name under checkpoints/>"}

``index.json`` is written last, so a cache with an index is complete. The registry's ``export`` hook
(:func:`export_latents`) runs on rank zero after training while the other ranks have finished; a DDP run's command
returns only when rank zero has, so the cache is there when ``python -m dreamhead_lit.train`` returns.

StyleTalker†'s frame autoencoder writes its code caches (``latents/``, ``motion_latents/``) with the same
:func:`write_latent_cache`, in this format.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import lightning as L
import numpy as np
from omegaconf import DictConfig
from torch import Tensor

from ...data.clip import ClipReader, atomic_write_text

LATENTS_DIR = "latents"
INDEX_FILE = "index.json"


def write_latent_cache(module, readers: Iterable[ClipReader], out: Path, *, checkpoint: str,
                       batch_size: int = 64, progress: bool = False,
                       encode: Callable[[ClipReader], Tensor | np.ndarray] | None = None) -> dict:
    """Encode every frame of every clip in ``readers`` (each clip id once) with ``module`` (an autoencoder with
    ``latent_dim`` and ``encode_clip``: DAE-Talker†'s, StyleTalker†'s) into ``out``; returns the index written to
    ``out/index.json``. ``encode(reader) -> (T, D)`` replaces the default ``module.encode_clip(reader.frames())``
    (StyleTalker†'s mouth-masked codes pass the clip's landmarks too)."""
    from tqdm.auto import tqdm

    if encode is None:
        def encode(reader: ClipReader) -> Tensor:
            return module.encode_clip(reader.frames(), batch_size=batch_size)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unique = {r.record.id: r for r in readers}
    clips: dict[str, int] = {}
    for clip_id, reader in tqdm(sorted(unique.items()), desc=out.name, unit="clip", disable=not progress, leave=False):
        z = np.asarray(encode(reader), dtype=np.float32)  # (T, D)
        if z.shape != (reader.num_frames, int(module.latent_dim)):
            raise ValueError(f"{clip_id}: encoded to {z.shape}, expected ({reader.num_frames}, {module.latent_dim})")
        np.save(out / f"{clip_id}.npy", z)
        clips[clip_id] = int(z.shape[0])
    index = {"dim": int(module.latent_dim), "clips": clips, "checkpoint": checkpoint}
    atomic_write_text(out / INDEX_FILE, json.dumps(index, indent=1))
    return index


def read_latent_cache(folder: Path, *, model: str = "daetalker_autoencoder") -> tuple[dict, dict[str, np.ndarray]]:
    """(index, {clip_id: float32 (T, D) memory map}) of a cache written by :func:`write_latent_cache`; ``folder`` is
    the run folder or its ``latents/`` (or another cache folder, e.g. StyleTalker†'s ``motion_latents/``); ``model``:
    the model whose run writes it, for the error message."""
    folder = Path(folder)
    if not (folder / INDEX_FILE).is_file() and (folder / LATENTS_DIR / INDEX_FILE).is_file():
        folder = folder / LATENTS_DIR
    path = folder / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no latent cache at {folder} ({INDEX_FILE} missing): train {model}, whose export "
                                "writes it under the run folder when training ends")
    index = json.loads(path.read_text())
    return index, {c: np.load(folder / f"{c}.npy", mmap_mode="r") for c in index["clips"]}


def export_latents(run_dir: Path, trainer: L.Trainer, cfg: DictConfig) -> dict:
    """The registry's ``export`` hook (rank zero, after training): the latents of every clip of every split the
    DataModule loaded, from the weights training ended with (those of ``checkpoints/last.ckpt``)."""
    dm = trainer.datamodule
    readers = [r for ds in dm.datasets.values() for r in ds.readers]
    index = write_latent_cache(trainer.lightning_module, readers, Path(run_dir) / LATENTS_DIR, checkpoint="last.ckpt")
    return {"latents": {"dir": LATENTS_DIR, "dim": index["dim"], "clips": len(index["clips"])}}


__all__ = ["INDEX_FILE", "LATENTS_DIR", "export_latents", "read_latent_cache", "write_latent_cache"]
