"""What lets preprocessing resume safely: the clips already on disk, stamps of their sources, the destination lock.

- **Validity, not existence**: ``scan_clips`` runs ``validate_clip`` on every clip (headers, lengths, NaN/Inf in the
  landmarks), so a clip damaged after it was written is redone, not kept.
- **Keyed on the source's content**: each clip's meta.json holds ``source_stamp`` (size, mtime_ns, and a sha256 of
  the size with the first and last MiB) of the input it came from. A rerun compares it with the file now: equal size
  and mtime -> unchanged (no read); else a different size or hash -> the input changed and is redone. Hashing the two
  ends costs 2 MiB per input, and only when size or mtime moved (a copied or touched file is not redone). Clips
  written before stamps existed are kept as they are.
- **One run per destination**: ``destination_lock`` holds ``flock`` on ``<dst>/.preprocess.lock`` for the whole run;
  a second run stops at once, naming the first (pid, host, start time). The kernel drops the lock when the holder
  exits or dies, so a crash never leaves a stale lock.
- **Shards of one array job** (``preprocess --shard K/N``): shard K holds ``<dst>/.preprocess.shard-K-of-N.lock`` for
  its whole run (the same shard twice is refused) and the destination lock only for the short steps that touch
  shared files (dataset.json, index.jsonl, skipped.jsonl), waiting for it a while; an unsharded run and ``--merge``
  refuse to start while any shard holds its lock.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .clip import ClipError, ClipRecord, validate_clip

LOCK_NAME = ".preprocess.lock"
_HASH_SPAN = 1 << 20  # bytes hashed at each end of a source file


# ---------------------------------------------------------------------------------------------------------------
# Source stamps
# ---------------------------------------------------------------------------------------------------------------


def _hash_ends(path: Path, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_HASH_SPAN))
        if size > _HASH_SPAN:
            f.seek(max(_HASH_SPAN, size - _HASH_SPAN))
            h.update(f.read(_HASH_SPAN))
    return h.hexdigest()


def file_stamp(path: Path) -> dict | None:
    """``{size, mtime_ns, sha256_ends}`` of a file; None when it cannot be read."""
    try:
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": _hash_ends(path, st.st_size)}
    except OSError:
        return None


def source_stamp(video: Path, audio: Path | None = None) -> dict | None:
    """The stamp of an input: its video file, plus the separate audio file it may use (MEAD's m4a) when present."""
    stamp = file_stamp(video)
    if stamp is not None and audio is not None and Path(audio).is_file():
        stamp["audio"] = file_stamp(audio)
    return stamp


def _file_changed(old: dict, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return True
    if st.st_size == old.get("size") and st.st_mtime_ns == old.get("mtime_ns"):
        return False
    if st.st_size != old.get("size") or "sha256_ends" not in old:
        return True  # an entry without a hash (an older skipped.jsonl) goes by size and mtime, as it did
    try:
        return _hash_ends(path, st.st_size) != old["sha256_ends"]
    except OSError:
        return True


def source_changed(old: dict, video: Path, audio: Path | None = None) -> bool:
    """Whether the input differs from the one stamped ``old`` (see the module docstring)."""
    if _file_changed(old, video):
        return True
    had_audio = old.get("audio") is not None
    has_audio = audio is not None and Path(audio).is_file()
    if had_audio != has_audio:
        return True
    return has_audio and _file_changed(old["audio"], Path(audio))


# ---------------------------------------------------------------------------------------------------------------
# Clips on disk
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DiskClip:
    """A valid clip found on disk, with the input it came from (meta.json's source_path, segment, source_stamp)."""

    record: ClipRecord
    source_path: str
    segment_index: int
    segment_count: int
    source_stamp: dict | None = None  # None: written before stamps were recorded


def scan_clips(dst: Path, *, num_landmarks: int | None = None) -> tuple[list[DiskClip], dict[str, str]]:
    """Valid clips on disk (from their meta.json) and the broken ones ``{clip id: problem}``."""
    good, broken = [], {}
    clips = dst / "clips"
    if not clips.is_dir():
        return good, broken
    for d in sorted(clips.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            meta = json.loads((d / "meta.json").read_text())
            record = ClipRecord.from_json({**meta, "id": d.name}, where=str(d / "meta.json"))
            validate_clip(dst, record, num_landmarks=num_landmarks)
            seg = meta.get("segment") or {}
            stamp = meta.get("source_stamp")
            good.append(DiskClip(record, str(meta.get("source_path", "")), int(seg.get("index", 0)),
                                 int(seg.get("count", 1)), stamp if isinstance(stamp, dict) else None))
        except (OSError, ValueError, KeyError, TypeError, ClipError) as err:
            broken[d.name] = str(err)
    return good, broken


def read_skipped(dst: Path) -> list[dict]:
    """The entries of ``dst/skipped.jsonl`` (path, reason, stamp); unreadable lines are ignored."""
    path = dst / "skipped.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The destination lock
# ---------------------------------------------------------------------------------------------------------------


class DestinationBusy(RuntimeError):
    """Another preprocessing run holds the destination."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has just started; details not yet written"


def shard_lock_name(k: int, n: int) -> str:
    return f".preprocess.shard-{k}-of-{n}.lock"


def running_shards(dst: Path) -> list[str]:
    """The shards (``K/N``) whose runs hold their lock on ``dst`` now; a lock file left by a killed shard is free."""
    busy = []
    for path in sorted(Path(dst).glob(".preprocess.shard-*-of-*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # its run just ended
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            k, n = path.name[len(".preprocess.shard-"):-len(".lock")].split("-of-")
            busy.append(f"{k}/{n} ({_holder(path)})")
        finally:
            os.close(fd)
    return busy


@contextmanager
def destination_lock(dst: Path, *, name: str = LOCK_NAME, wait: float = 0.0) -> Iterator[Path]:
    """Hold ``dst/<name>`` exclusively for the ``with`` block, else raise DestinationBusy (at once, or after trying
    for ``wait`` seconds: shards take the destination lock only for seconds at a time)."""
    path = Path(dst) / name
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise DestinationBusy(
                f"{dst} is being preprocessed by another run ({_holder(path)}); wait for it to finish, or stop "
                "it, then run this command again") from None
        try:  # the previous holder unlinks the file as it leaves: a lock on that old file would guard nothing
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode())
        yield path
    finally:
        path.unlink(missing_ok=True)  # before the unlock, so a waiting run never locks a file about to vanish
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# What a rerun does
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ResumePlan:
    """Which inputs a run processes, and why the others are left alone."""

    todo: list  # inputs (preprocess.SourceVideo) to process now
    carried: list[dict]  # skipped.jsonl entries of unchanged inputs an earlier run skipped
    done: int  # inputs whose clips are all there, valid, and of the same source
    changed: list[str]  # inputs redone because the file changed since their clips were written
    unstamped: int  # clips kept without a source stamp (written by an older version)
    remove: list[str]  # clip folders (ids) to delete before the run: stale, broken or partial clips of todo inputs


def plan_resume(items: list, on_disk: list[DiskClip], broken: dict[str, str], earlier_skips: list[dict], *,
                retry_skipped: bool) -> ResumePlan:
    """Decide per input (``rel``, ``path``, ``audio_path``, ``clip_id``): keep its clips, carry its earlier skip,
    or redo it (its clips on disk, and broken folders of its ids, listed for removal)."""
    by_source: dict[str, list[DiskClip]] = {}
    for c in on_disk:
        by_source.setdefault(c.source_path, []).append(c)
    skips = {e["path"]: e for e in earlier_skips if "path" in e}
    plan = ResumePlan([], [], 0, [], 0, [])
    for item in items:
        clips = by_source.get(item.rel, [])
        stamp = next((c.source_stamp for c in clips if c.source_stamp is not None), None)
        changed = stamp is not None and source_changed(stamp, item.path, item.audio_path)
        count = clips[0].segment_count if clips else 0
        complete = bool(clips) and {c.segment_index for c in clips} == set(range(count)) and all(
            c.segment_count == count for c in clips)
        if changed:
            plan.changed.append(item.rel)
        elif complete:
            plan.done += 1
            plan.unstamped += sum(c.source_stamp is None for c in clips)
            continue
        old = skips.get(item.rel)
        if (not clips and old is not None and not retry_skipped and isinstance(old.get("stamp"), dict)
                and not source_changed(old["stamp"], item.path, item.audio_path)):
            plan.carried.append(old)
            continue
        plan.remove += [c.record.id for c in clips]  # an unfinished or replaced input: its pieces are redone together
        plan.remove += [cid for cid in broken if cid == item.clip_id or cid.startswith(item.clip_id + "_s")]
        plan.todo.append(item)
    return plan
