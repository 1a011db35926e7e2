"""The bench's caches under ``<out>/cache/``: per-clip result rows and FID features, keyed by everything they depend
on, so an interrupted run resumes and a changed method, clip or metric setting is recomputed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.clip import atomic_save_npy, atomic_write_text

CACHE_VERSION = 2  # bump when the scoring code changes what a cached per-clip row would contain


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a file's version for the caches (bench clips, ablation landmark scores): path, size, mtime."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultCache:
    """Where one bench's cached rows and FID features live; features of another FID network are never reused."""

    def __init__(self, out: Path, fid_label: str) -> None:
        self.root = out / "cache"
        self.features = digest(fid_label)

    def row_file(self, method: str, clip_id: str) -> Path:
        return self.root / method / f"{clip_id}.json"

    def fid_file(self, method: str, clip_id: str) -> Path:
        return self.root / method / f"{clip_id}.fid-{self.features}.npy"

    def real_fid_file(self, clip_id: str) -> Path:
        """The ground-truth clip's features, shared by the methods."""
        return self.root / "_fid_real" / self.features / f"{clip_id}.npy"


def load_row(path: Path, key: str) -> dict | None:
    """The cached ``{"key", "row", "status", "states"}`` of a clip when it was made under ``key``."""
    if not path.is_file():
        return None
    try:
        blob = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged cache entry is recomputed
    return blob if blob.get("key") == key else None


def save_row(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Cache a scored per-clip entry (its row values, status and metric states) under ``key``."""
    blob = {"key": key, "row": {k: v for k, v in entry.items() if k not in ("states", "status")},
            "status": entry["status"], "states": entry["states"]}
    atomic_write_text(path, json.dumps(blob))


def save_features(path: Path, feats: np.ndarray) -> None:
    atomic_save_npy(path, feats.astype(np.float32))


def load_features(path: Path, frames: int) -> np.ndarray | None:
    try:
        feats = np.load(path)
    except (OSError, ValueError):
        return None
    return feats if len(feats) == frames else None
