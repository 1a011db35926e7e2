"""Raw talking-face video -> processed dataset (the format of ``clip.py``): CLI, parallel, resumable.

    python -m dreamhead_lit.data.preprocess --src RAW_DIR --dst OUT_DIR --layout hdtf|mead|plain \\
        [--size 256] [--workers N] [--landmarks dlib68|mediapipe] [--max-seconds S] [--splits FILE]

Per input video:

1. **Discover** by layout. ``hdtf``: ``<name>_<idx>.mp4`` anywhere under RAW_DIR, identity = the name before the last
   ``_<idx>`` (``WDA_KatieHill_000`` -> ``WDA_KatieHill``); HDTF crop files (``*_crop_wh.txt``, lines
   ``<name>_<idx>.mp4 x width y height`` in the video's pixels) are optional and only restrict face detection to that
   window. ``mead``: ``<actor>/video/front/<emotion>/level_<k>/<nnn>.mp4``, identity = actor, emotion and intensity
   from the folders, audio from the mp4's own track, else ``<actor>/audio/<emotion>/level_<k>/<nnn>.m4a``.
   ``plain``: every video under RAW_DIR (mp4, mov, mkv, avi, webm, m4v), identity = file stem, or the parent folder
   with ``--identity-from parent``. Clip id: the file stem (MEAD: ``<actor>_<emotion>_level<k>_<nnn>``; files in
   sub-folders of a plain layout: the relative path with ``/`` -> ``__``).
2. **Decode** with PyAV (``video.iter_frames``), resampled to 25 fps by frame timestamps (so variable frame rate is
   handled), audio to 16 kHz mono (channel mean). Audio longer than the video is cut; shorter trims the video.
3. **Detect** the face (dlib HOG, ``detectors.FaceDetector``) every ``--detect-every`` frames (default 5 = 0.2 s;
   boxes are linearly interpolated in between, where the head barely moves), keep the best detection (the highest
   score among those overlapping the previous face, else the highest score), reject faces smaller than
   ``--min-face`` px (80). **Gaps**: where two successive detections are more than ``--max-gap`` s apart (0.5 s,
   i.e. two missed detections in a row), the clip is split; the pieces of at least ``--min-seconds`` (2 s) become
   separate clips ``<id>_s<k>`` (k = 0, 1, ... in time order among the kept pieces), the rest is dropped; shorter
   gaps are interpolated over. A video with no usable piece is skipped.
4. **Crop**: the box track is cleaned and smoothed (``detectors.smooth_boxes``: median over 5 detections, Gaussian
   of 3 frames on the centre and 8 on the size), made square (``square_crop_box``: 1.6x the face box, centre 0.05
   box down) and cut out at ``--size`` (``crop_and_resize``, edge padding outside the image). The crop box of every
   frame (source pixels) goes into meta.json.
5. **Landmarks** on every frame of a 512 px working crop (the same box), scaled to ``--size``: dlib's 68 always
   (``landmarks68.npy``); the dense set is MediaPipe FaceMesh (478 points, ``--landmarks mediapipe``, needs
   ``make install-dense``; frames where the mesh is lost are interpolated, a piece losing it in more than half its
   frames is dropped) or the same 68 (``--landmarks dlib68``).
6. **Write** each clip atomically (``clip.write_clip``; jpg frames from 128 px up, npy below, or
   ``--frames-format``), then rebuild ``index.jsonl`` from the clips on disk, and write ``dataset.json`` and
   ``skipped.jsonl`` (one line per input that gave no clip: path, reason).

Splits are identity-disjoint and never change once written (``splits.py``): ``--splits FILE`` (JSON
``{identity: split}`` or lines ``identity split``) first; MEAD's customary held-out actors M003, M030, W024 are "test"
when present; an identity with clips in the dataset keeps its recorded split; a new identity's split comes from a
seeded hash of its name alone (about 80/10/10 train/val/test), so preprocessing a second ``--src`` into a dataset
adds to it without moving any clip between splits (the summary says what was added). At least one val identity from
two identities up and one test identity from three up (5 identities: 3/1/1), taken from new identities only. These
names match ``TalkingHeadDataModule``'s defaults (``test_seen`` simply stays empty). ``--seed`` applies to new
identities; ``--splits`` is the way to move an identity that has clips.

Resuming (``resume.py``): a second run with the same settings keeps every clip that passes ``validate_clip`` (NaN or
a truncated array counts as broken) and whose source file is unchanged (meta.json's ``source_stamp``: size, mtime,
hash of the first and last MiB); it redoes inputs whose clips are missing, broken or stale (an interrupted run
leaves only whole clips: ``write_clip`` renames a finished folder into place), and does not retry inputs recorded in
``skipped.jsonl`` unless they changed or ``--retry-skipped``. The index is rebuilt from the clips on disk at the end
of every run, also after Ctrl-C. Different output settings on an existing OUT_DIR are refused (``--overwrite`` starts
over). A run holds ``OUT_DIR/.preprocess.lock`` (flock) throughout: a second run on the same OUT_DIR stops at once
(exit 2) naming the first.

Many machines (an array job): ``--shard K/N`` processes only every N-th input of the list sorted by relative path,
from the K-th (0-based: ``--shard $SLURM_ARRAY_TASK_ID/N`` with ``--array=0-<N-1>``), into the same OUT_DIR as the
other shards; the N shares cover every input exactly once. Splits are drawn from all the discovered inputs'
identities, so each shard assigns them as one unsharded run would. Shard K holds ``.preprocess.shard-K-of-N.lock``
for its run and the destination lock only around dataset.json, index.jsonl and skipped.jsonl (each shard keeps the
others' skip records). Afterwards ``--merge`` (same flags, no ``--shard``; refused while a shard runs) clears the
shards' leftovers, rebuilds index.jsonl, prints the summary and exits 1 naming any input with neither clips nor a
skip record (a failed shard: run it again). The lock is ``flock``: OUT_DIR must be on a file system where it works
across machines (NFS v4, Lustre mounted with ``flock``).

Parallelism and memory: ``--workers N`` runs N inputs at once in processes started with "spawn" (a worker that
dies on an input is replaced and that input skipped with the reason). A worker holds one input: the decoded frames
between the two passes while they fit in 512 MB (else the video is decoded twice), and the crops in memory up to
256 MB per clip (else in a memory-mapped file under OUT_DIR/.work).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Literal

from .clip import FPS, SAMPLE_RATE, ClipRecord, atomic_write_text, read_index, write_index
from .detectors import mediapipe_available, mediapipe_topology
from .landmarks import LandmarkTopology, canonical_template68, topology_68
from .preprocess_video import SourceResult, process_job
from .process_pool import run_in_processes
from .resume import (  # noqa: F401 - DiskClip and scan_clips are part of this module's interface
    DestinationBusy,
    DiskClip,
    destination_lock,
    plan_resume,
    running_shards,
    shard_lock_name,
    read_skipped,
    scan_clips,
    source_stamp,
)
from .sources import (  # noqa: F401 - re-exported: discovery was part of this module
    LAYOUT_HINTS,
    Layout,
    SourceVideo,
    discover,
    hdtf_identity,
    read_hdtf_crops,
)
from .splits import SPLIT_SEED, assign_splits, read_split_file, recorded_splits  # noqa: F401 - re-exported
from .tracking import TrackSettings, find_segments  # noqa: F401 - find_segments re-exported

LandmarkChoice = Literal["dlib68", "mediapipe"]
SHARD_LOCK_WAIT = 300.0  # seconds a shard waits for the destination lock (others hold it for seconds at a time)
MEAD_TEST_ACTORS = ("M003", "M030", "W024")
# Settings that change what is written: dataset.json records them and a run with other values on the same dst is
# refused. The split settings are not among them: the index (rebuilt every run) is where splits live.
OUTPUT_SETTINGS = ("layout", "size", "landmarks", "frames_format", "identity_from", "max_seconds", "detect_every",
                   "detect_max_side", "upsample", "min_face", "crop_scale", "crop_shift", "pad", "smooth_median",
                   "smooth_sigma_centre", "smooth_sigma_size", "max_gap", "min_seconds", "landmark_size",
                   "jpeg_quality")


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig(TrackSettings):
    """Settings of one preprocessing run (the CLI flags). The face track's (``detect_every``, ``min_face``,
    ``crop_scale``, ``max_gap``, ``landmark_size``, ...) are ``tracking.TrackSettings``'s, whose defaults a reference
    video for generation is tracked with too."""

    src: str  # raw videos
    dst: str  # processed dataset folder
    layout: Layout = "plain"
    size: int = 256  # output crop side in pixels
    workers: int = 1  # parallel processes (one input video each)
    landmarks: LandmarkChoice = "dlib68"  # dense set: the 68 themselves, or MediaPipe FaceMesh (478)
    frames_format: str | None = None  # "jpg" / "npy"; None: jpg from 128 px up, npy below
    identity_from: Literal["name", "parent"] = "name"  # plain layout: file stem or parent folder
    splits: str | None = None  # split file: JSON {identity: split} or lines "identity split"
    seed: int = SPLIT_SEED  # seeded identity split
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_seconds: float | None = None  # only the first seconds of every video (quick runs, tests)
    min_seconds: float = 2.0  # shortest clip kept
    jpeg_quality: int = 95
    frame_cache_mb: int = 512  # decoded frames kept from the detection pass for the crop pass (else decoded twice)
    name: str | None = None  # dataset name in dataset.json (default: the layout, or the dst folder for plain)
    overwrite: bool = False  # delete an existing dataset at dst first
    retry_skipped: bool = False  # retry inputs that an earlier run skipped
    shard: str | None = None  # "K/N": only the K-th of N shares of the sorted inputs (an array job's task K, 0-based)
    merge: bool = False  # after the shards: rebuild and check the index, process nothing, print the summary

    def resolved_frames_format(self) -> str:
        fmt = self.frames_format or ("jpg" if self.size >= 128 else "npy")
        if fmt not in ("jpg", "npy"):
            raise ValueError(f"--frames-format must be jpg or npy, got {fmt!r}")
        return fmt

    def track_settings(self) -> TrackSettings:
        """The face-track settings alone, as a plain ``TrackSettings``."""
        return TrackSettings(**{f.name: getattr(self, f.name) for f in fields(TrackSettings)})

    def output_settings(self) -> dict:
        out = {k: getattr(self, k) for k in OUTPUT_SETTINGS}
        out["frames_format"] = self.resolved_frames_format()
        return out

    def check(self) -> None:
        if self.layout not in ("hdtf", "mead", "plain"):
            raise ValueError(f"--layout must be hdtf, mead or plain, got {self.layout!r}")
        if self.landmarks not in ("dlib68", "mediapipe"):
            raise ValueError(f"--landmarks must be dlib68 or mediapipe, got {self.landmarks!r}")
        if self.identity_from not in ("name", "parent"):
            raise ValueError(f"--identity-from must be name or parent, got {self.identity_from!r}")
        if self.size < 16 or self.detect_every < 1 or self.workers < 1:
            raise ValueError(f"need --size >= 16, --detect-every >= 1, --workers >= 1 (got {self.size}, "
                             f"{self.detect_every}, {self.workers})")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"--max-seconds must be positive, got {self.max_seconds}")
        self.resolved_frames_format()
        if self.shard is not None:
            parse_shard(self.shard)
            if self.merge:
                raise ValueError("--merge runs once after all the shards: give it without --shard")
            if self.overwrite:
                raise ValueError("--overwrite with --shard would let one shard delete the others' clips: start over "
                                 "with an unsharded --overwrite run (or an empty --dst), then run the shards")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N (an array job's 0-based task id over its task count)."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be K/N with whole numbers (e.g. 0/8 ... 7/8), got {text!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard {text}: need 0 <= K < N (shards are numbered 0 to N-1, as SLURM_ARRAY_TASK_ID "
                         "with --array=0-<N-1>)")
    return k, n


def shard_items(items: list[SourceVideo], k: int, n: int) -> list[SourceVideo]:
    """Shard K of N: every N-th input of the list sorted by relative path, from the K-th. Depends only on the paths,
    so N tasks discovering the same --src cover every input exactly once, with counts differing by at most one."""
    return sorted(items, key=lambda i: i.rel)[k::n]


# ---------------------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------------------


def dataset_topology(cfg: PreprocessConfig) -> LandmarkTopology:
    return mediapipe_topology(478) if cfg.landmarks == "mediapipe" else topology_68()


def dataset_info(cfg: PreprocessConfig, dst: Path) -> dict:
    """dataset.json: the keys ``synth.dataset_info`` writes, plus the preprocessing settings."""
    return {
        "name": cfg.name or (cfg.layout if cfg.layout != "plain" else dst.name),
        "source": cfg.layout,
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "resolution": cfg.size,
        "landmark_topology": dataset_topology(cfg).to_json(),
        # canonicalisation is a similarity fit onto this template, so canonical landmarks are in its face units
        "canonical_template68": canonical_template68().round(6).tolist(),
        "preprocess": cfg.output_settings(),
    }


def preprocess(cfg: PreprocessConfig, *, progress: bool = True,
               on_result: Callable[[SourceResult], None] | None = None) -> dict:
    """Run preprocessing (or finish an earlier run). Returns the summary (see :func:`format_summary`).

    ``on_result`` is called in the main process after each input is done (a hook for progress reporting; an
    exception raised from it stops the run like Ctrl-C: what was written is indexed, then it propagates).
    """
    from ..config import resolve_path

    cfg.check()
    if cfg.landmarks == "mediapipe" and not mediapipe_available():
        from .detectors import INSTALL_DENSE_HINT

        raise ImportError(INSTALL_DENSE_HINT)
    src, dst = resolve_path(cfg.src), resolve_path(cfg.dst)
    # every argument is checked before anything is created: a bad one leaves no empty dataset behind
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"--dst {dst} is a file, not a dataset folder; choose a folder (new or existing dataset)")
    items = discover(src, cfg.layout, identity_from=cfg.identity_from)
    if not items:
        raise ValueError(f"no videos found under {src} ({LAYOUT_HINTS[cfg.layout]}); nothing was written")
    fixed = read_split_file(Path(cfg.splits)) if cfg.splits else None
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--dst {dst}: cannot create it ({err.strerror or err})") from err
    if cfg.shard is not None:
        k, n = parse_shard(cfg.shard)
        with destination_lock(dst, name=shard_lock_name(k, n)):  # the same shard twice: refused
            # the destination lock only around the steps on shared files; splits come from ALL the inputs'
            # identities, so every shard assigns them as one unsharded run would
            brief = lambda: destination_lock(dst, wait=SHARD_LOCK_WAIT)  # noqa: E731
            return _preprocess_locked(cfg, src, dst, shard_items(items, k, n), fixed, progress=progress,
                                      on_result=on_result, all_items=items, section=brief)
    with destination_lock(dst):  # one run per destination, for the whole run
        busy = running_shards(dst)
        if busy:
            raise DestinationBusy(f"{dst}: shard(s) {', '.join(busy)} still running; "
                                  f"{'--merge' if cfg.merge else 'an unsharded run'} starts after the last one ends")
        return _preprocess_locked(cfg, src, dst, items, fixed, progress=progress, on_result=on_result)


def _prepare_destination(cfg: PreprocessConfig, dst: Path) -> None:
    """Refuse other settings on an existing dataset (or start over with --overwrite); write dataset.json; clear what
    a killed run left (crops, half-written clip folders)."""
    info = dataset_info(cfg, dst)
    info_path = dst / "dataset.json"
    if info_path.is_file() and not cfg.overwrite:
        old = json.loads(info_path.read_text())
        if old.get("preprocess") != info["preprocess"]:
            what = "other preprocessing settings" if "preprocess" in old else f"another dataset ({old.get('name')})"
            changed = sorted(k for k in info["preprocess"] if (old.get("preprocess") or {}).get(k) != info["preprocess"][k])
            raise ValueError(f"{dst} holds {what} (differs in: {', '.join(changed)}); pass --overwrite to start over "
                             "or choose another --dst")
    if cfg.overwrite:
        for name in ("clips", ".work"):
            shutil.rmtree(dst / name, ignore_errors=True)
        for name in ("index.jsonl", "skipped.jsonl", "dataset.json"):
            (dst / name).unlink(missing_ok=True)
    atomic_write_text(info_path, json.dumps(info))
    if cfg.shard is not None:  # other shards' crops and half-written clips are in progress: --merge clears leftovers
        return
    shutil.rmtree(dst / ".work", ignore_errors=True)  # crops of an interrupted run
    if (dst / "clips").is_dir():  # half-written clip folders of a killed run (write_clip's temporary names)
        for d in (dst / "clips").glob(".*.tmp"):
            shutil.rmtree(d, ignore_errors=True)


def _recorded(dst: Path, on_disk: list[DiskClip]) -> dict[str, str]:
    """The split recorded for each identity with clips: index.jsonl (where --splits changes land), else the clips'
    meta.json (clips written after the last index, by a killed run)."""
    indexed = read_index(dst) if (dst / "index.jsonl").is_file() else []
    ids = {r.id for r in indexed}
    pairs = [(r.identity, r.split) for r in indexed]
    pairs += [(c.record.identity, c.record.split) for c in on_disk if c.record.id not in ids]
    return recorded_splits(pairs)


def _preprocess_locked(cfg: PreprocessConfig, src: Path, dst: Path, items: list[SourceVideo],
                       fixed: dict[str, str] | None, *, progress: bool, on_result,
                       all_items: list[SourceVideo] | None = None, section=contextlib.nullcontext) -> dict:
    """Process ``items`` (a shard's share of ``all_items``); ``section()`` guards the steps on shared files (a
    shard's brief destination lock; nothing more when the whole run holds it)."""
    num_points = dataset_topology(cfg).num_points
    with section():
        _prepare_destination(cfg, dst)
        on_disk, broken = scan_clips(dst, num_landmarks=num_points)
        # an identity's split comes from its name or from what is recorded, never from the others present: adding
        # videos (another --src) must not move a clip between splits (splits.py)
        recorded = _recorded(dst, on_disk)
        identities = {i.identity for i in all_items or items} | {c.record.identity for c in on_disk}
        splits = assign_splits(identities, seed=cfg.seed, val_fraction=cfg.val_fraction,
                               test_fraction=cfg.test_fraction, fixed=fixed,
                               held_out_test=MEAD_TEST_ACTORS if cfg.layout == "mead" else (), recorded=recorded)
        plan = plan_resume(items, on_disk, broken, read_skipped(dst), retry_skipped=cfg.retry_skipped)
        if cfg.merge:  # nothing is processed or removed: what is missing is reported
            missing, plan.todo, plan.remove = [i.rel for i in plan.todo], [], []
        for cid in plan.remove:
            shutil.rmtree(dst / "clips" / cid, ignore_errors=True)
    removed = set(plan.remove)
    before = {"clips": sum(c.record.id not in removed for c in on_disk), "recorded": recorded, "changed": plan.changed,
              "unstamped": plan.unstamped}

    results: list[SourceResult] = []
    start = time.perf_counter()
    interrupted = False
    try:
        _run_jobs(plan.todo, cfg, splits, dst, results, progress=progress, on_result=on_result)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        with section():
            summary = _finish(cfg, dst, items, results, plan.carried, splits, num_points, plan.done, before,
                              seconds=time.perf_counter() - start, interrupted=interrupted)
    summary["shard"] = cfg.shard
    summary["missing"] = missing if cfg.merge else []
    summary["merge_only"] = cfg.merge
    return summary


def _run_jobs(todo: list[SourceVideo], cfg: PreprocessConfig, splits: dict[str, str], dst: Path,
              results: list[SourceResult], *, progress: bool, on_result) -> None:
    from tqdm.auto import tqdm

    jobs = [(item, cfg, splits[item.identity], dst) for item in todo]
    bar = tqdm(total=len(jobs), desc="preprocess", unit="video", disable=not progress)
    frames = 0

    def handle(res: SourceResult) -> None:
        nonlocal frames
        results.append(res)
        frames += sum(n for _, n in res.clips)
        bar.set_postfix(frames=frames, skipped=sum(r.skipped is not None for r in results))
        bar.update()
        if on_result is not None:
            on_result(res)

    try:
        if cfg.workers > 1 and len(jobs) > 1:
            _run_parallel(jobs, min(cfg.workers, len(jobs)), handle)
        else:
            for job in jobs:
                handle(process_job(job))
    finally:
        bar.close()


def _crashed(job: tuple, err: BaseException) -> SourceResult:
    return SourceResult(job[0].rel, skipped=f"failed: the worker process died on this input ({err}); a native "
                                            "library (FFmpeg, dlib, MediaPipe) crashed or the process ran out of memory")


def _run_parallel(jobs: list[tuple], workers: int, handle: Callable[[SourceResult], None], *,
                  fn: Callable[[tuple], SourceResult] = process_job) -> None:
    """Process inputs in ``workers`` spawned processes (``process_pool``); an input that kills its worker is skipped
    with that reason and the run goes on."""
    run_in_processes(jobs, workers, handle, fn=fn, on_crash=_crashed)


def _finish(cfg: PreprocessConfig, dst: Path, items: list[SourceVideo], results: list[SourceResult],
            carried: list[dict], splits: dict[str, str], num_points: int, already_done: int, before: dict, *,
            seconds: float, interrupted: bool) -> dict:
    """Rebuild index.jsonl from the clips on disk, write skipped.jsonl, and summarise (``before``: what the
    dataset held when the run started, see ``_preprocess_locked``)."""
    on_disk, broken = scan_clips(dst, num_landmarks=num_points)
    records = []
    for c in on_disk:
        rec = c.record
        rec.split = splits.get(rec.identity, rec.split)
        records.append(rec)
    write_index(dst, records)
    by_rel = {i.rel: i for i in items}
    skipped = list(carried)
    for res in results:
        if res.skipped is not None:
            item = by_rel[res.rel]
            skipped.append({"path": res.rel, "reason": res.skipped,
                            "stamp": source_stamp(item.path, item.audio_path)})
    if cfg.shard is not None:  # skipped.jsonl is shared: the other shards' entries stay
        skipped += [e for e in read_skipped(dst) if e.get("path") not in by_rel]
    skipped.sort(key=lambda e: e["path"])
    atomic_write_text(dst / "skipped.jsonl", "".join(json.dumps(e) + "\n" for e in skipped))
    if cfg.shard is None:
        shutil.rmtree(dst / ".work", ignore_errors=True)
    times: dict[str, float] = {}
    for res in results:
        for k, v in res.times.items():
            times[k] = times.get(k, 0.0) + v
    splits_summary: dict[str, dict] = {}
    for r in records:
        s = splits_summary.setdefault(r.split, {"clips": 0, "frames": 0, "identities": set()})
        s["clips"] += 1
        s["frames"] += r.num_frames
        s["identities"].add(r.identity)
    new_frames = sum(n for res in results for _, n in res.clips)
    return {
        "src": str(cfg.src),
        "dst": str(dst),
        "inputs": len(items),
        "processed_now": len(results),
        "already_done": already_done,
        "skipped_earlier": len(carried),
        "clips_written": sum(len(res.clips) for res in results),
        "frames_written": new_frames,
        "hours_written": new_frames / FPS / 3600.0,
        "clips": len(records),
        "frames": sum(r.num_frames for r in records),
        "hours": sum(r.num_frames for r in records) / FPS / 3600.0,
        "identities": len({r.identity for r in records}),
        "splits": {k: {**v, "identities": len(v["identities"])} for k, v in sorted(splits_summary.items())},
        "skipped": [{"path": e["path"], "reason": e["reason"]} for e in skipped],
        "notes": {res.rel: res.notes for res in results if res.notes},
        "broken": broken,
        "merge": _merge_summary(before, records, results, splits),
        "changed": before["changed"],
        "unstamped": before["unstamped"],
        "frames_decoded": sum(res.frames_decoded for res in results),
        "stage_seconds": times,
        "seconds": seconds,
        "interrupted": interrupted,
    }


def _merge_summary(before: dict, records: list[ClipRecord], results: list[SourceResult],
                   splits: dict[str, str]) -> dict:
    """What this run added to the clips that were there, and which recorded splits --splits changed."""
    recorded = before["recorded"]
    identity = {r.id: r.identity for r in records}
    added = [cid for res in results for cid, _ in res.clips if cid in identity]
    new = sorted({identity[c] for c in added} - set(recorded))
    on_disk = set(identity.values())
    moved = {i: [old, splits[i]] for i, old in sorted(recorded.items()) if i in on_disk and splits.get(i, old) != old}
    return {"existing_clips": before["clips"], "clips_added": len(added), "new_identities": new,
            "clips_of_new_identities": sum(identity[c] in new for c in added), "moved": moved}


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _merge_lines(s: dict) -> list[str]:
    m, lines = s["merge"], []
    if m["existing_clips"] and m["clips_added"]:
        new, k = len(m["new_identities"]), m["clips_of_new_identities"]
        what = _n(m["clips_added"], "clip")
        if new:
            ids = _n(new, "new identity", "new identities")
            what += f" of {ids}" if k == m["clips_added"] else f" ({k} of them of {ids})"
        keep = "existing clips keep their splits" + (", except as --splits moves them" if m["moved"] else "")
        lines.append(f"  added {what} to an existing dataset of {_n(m['existing_clips'], 'clip')}; {keep}")
    if m["moved"]:
        moves = ", ".join(f"{i} {a} -> {b}" for i, (a, b) in m["moved"].items())
        lines.append(f"  --splits moved {_n(len(m['moved']), 'identity', 'identities')} with clips: {moves}")
    if s["changed"]:
        lines.append(f"  {_n(len(s['changed']), 'input')} changed since their clips were written, redone (old clips "
                     f"replaced): {', '.join(s['changed'])}")
    if s["unstamped"]:
        lines.append(f"  note: {_n(s['unstamped'], 'clip')} kept without a source stamp (written by an older version): "
                     "a replaced video is not noticed for them; --overwrite redoes everything")
    return lines


def format_summary(summary: dict) -> str:
    s = summary
    what = (f"shard {s['shard']} of" if s.get("shard") else "merged and checked" if s.get("merge_only") else "preprocessed")
    lines = [
        f"{'INTERRUPTED: ' if s['interrupted'] else ''}{what} {s['src']} -> {s['dst']}",
        f"  inputs: {s['inputs']} found, {s['processed_now']} processed now, {s['already_done']} already done, "
        f"{s['skipped_earlier']} skipped by an earlier run (--retry-skipped retries them)",
        f"  written now: {s['clips_written']} clips, {s['frames_written']} frames ({s['hours_written']:.4f} h) "
        f"in {s['seconds']:.1f} s",
        f"  dataset: {s['clips']} clips, {s['identities']} identities, {s['frames']} frames ({s['hours']:.4f} h)",
    ]
    for name, sp in s["splits"].items():
        lines.append(f"    {name:<10} {sp['clips']:>5} clips {sp['identities']:>4} identities {sp['frames']:>8} frames")
    lines += _merge_lines(s)
    if s["stage_seconds"]:
        n = max(1, s["frames_decoded"])
        stages = ", ".join(f"{k} {v:.1f} s ({n / v:.0f} frames/s)" if v > 0 else f"{k} 0 s"
                           for k, v in sorted(s["stage_seconds"].items()))
        lines.append(f"  time per stage over {s['frames_decoded']} decoded frames: {stages}")
    if s["skipped"]:
        lines.append(f"  skipped {len(s['skipped'])} input(s) (listed in skipped.jsonl):")
        lines += [f"    {e['path']}: {e['reason']}" for e in s["skipped"]]
    if s["notes"]:
        lines.append("  handled:")
        lines += [f"    {rel}: {note}" for rel, notes in sorted(s["notes"].items()) for note in notes]
    if s.get("missing"):
        lines.append(f"  MISSING: {_n(len(s['missing']), 'input')} with neither clips nor a skip record (a shard "
                     "that failed or is still to run; run it again, or run without --shard):")
        lines += [f"    {rel}" for rel in s["missing"]]
    if s["broken"]:
        lines.append(f"  {len(s['broken'])} broken clip folder(s) left out of the index:")
        lines += [f"    {cid}: {why}" for cid, why in sorted(s["broken"].items())]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = PreprocessConfig(src="", dst="")
    p = argparse.ArgumentParser(prog="python -m dreamhead_lit.data.preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="folder of raw videos")
    p.add_argument("--dst", required=True, help="output dataset folder")
    p.add_argument("--layout", choices=("hdtf", "mead", "plain"), default=d.layout)
    p.add_argument("--size", type=int, default=d.size, help="crop side in pixels (default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="parallel processes (default %(default)s)")
    p.add_argument("--landmarks", choices=("dlib68", "mediapipe"), default=d.landmarks,
                   help="dense landmark set (mediapipe needs `make install-dense`)")
    p.add_argument("--frames-format", choices=("jpg", "npy"), default=None,
                   help="default: jpg from 128 px up, npy below")
    p.add_argument("--identity-from", choices=("name", "parent"), default=d.identity_from,
                   help="plain layout: identity from the file stem or the parent folder")
    p.add_argument("--splits", help="split file: JSON {identity: split} or lines `identity split`")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the split of identities new to the dataset (recorded splits never move)")
    p.add_argument("--max-seconds", type=float, default=None, help="use only the first seconds of each video")
    p.add_argument("--detect-every", type=int, default=d.detect_every, help="frames between face detections")
    p.add_argument("--min-face", type=float, default=d.min_face, help="smallest face box side kept (source px)")
    p.add_argument("--upsample", type=int, default=d.upsample, help="dlib detector upsampling (small faces)")
    p.add_argument("--crop-scale", type=float, default=d.crop_scale, help="crop side / face box side")
    p.add_argument("--pad", choices=("edge", "black"), default=d.pad, help="filling outside the frame")
    p.add_argument("--max-gap", type=float, default=d.max_gap, help="seconds without a face that split a clip")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds, help="shortest clip kept")
    p.add_argument("--name", help="dataset name in dataset.json")
    p.add_argument("--overwrite", action="store_true", help="delete an existing dataset at --dst first")
    p.add_argument("--retry-skipped", action="store_true", help="retry inputs an earlier run skipped")
    p.add_argument("--shard", metavar="K/N",
                   help="process only shard K (0-based) of N of the sorted inputs, into the same --dst as the other "
                        "shards (an array job: --shard $SLURM_ARRAY_TASK_ID/N); then --merge once")
    p.add_argument("--merge", action="store_true",
                   help="after the shards (same flags, no --shard): clear their leftovers, rebuild and check the "
                        "index, print the dataset's summary; exit 1 if an input has neither clips nor a skip record")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    keys = set(PreprocessConfig.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in keys}
    return PreprocessConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        summary = preprocess(cfg, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\ninterrupted: the clips written so far are indexed; run the same command again to finish",
              file=sys.stderr)
        return 130
    except (ValueError, ImportError, FileNotFoundError, DestinationBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 1 if summary["missing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
