"""Preprocessing throughput on real clips: frames/s per stage (decode, detect, crop, landmarks, write) and overall.

    python benchmarks/bench_preprocess.py [--src ../shared/data/real/video] [--size 256] [--workers 1]
                                          [--landmarks dlib68 mediapipe] [--max-seconds S]

Each run preprocesses every video of --src into a fresh temporary folder (deleted afterwards) with one worker, so
the per-stage seconds are single-process CPU time on this machine; --workers N adds an end-to-end run with N
processes. Stage throughput is decoded frames / seconds spent in that stage (detection runs every 5th frame, so its
per-detection cost is 5x its per-frame cost). MediaPipe rows are skipped when it is not installed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from dreamhead_lit.config import project_root
from dreamhead_lit.data.detectors import mediapipe_available
from dreamhead_lit.data.preprocess import PreprocessConfig, preprocess

STAGES = ("decode", "detect", "crop", "landmarks", "write")


def default_src() -> Path:
    env = os.environ.get("DREAMHEAD_REAL_DATA")
    base = Path(env) if env else project_root().parent / "shared" / "data" / "real"
    return base / "video"


def run(src: Path, *, size: int, landmarks: str, workers: int, max_seconds: float | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        cfg = PreprocessConfig(src=str(src), dst=str(Path(tmp) / "ds"), layout="plain", size=size,
                               landmarks=landmarks, workers=workers, max_seconds=max_seconds)  # type: ignore[arg-type]
        start = time.perf_counter()
        summary = preprocess(cfg, progress=False)
        summary["wall"] = time.perf_counter() - start
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=default_src(), help="folder of videos (default: the shared real clips)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1, help="also time an end-to-end run with this many processes")
    parser.add_argument("--landmarks", nargs="+", default=["dlib68", "mediapipe"], choices=["dlib68", "mediapipe"])
    parser.add_argument("--max-seconds", type=float, default=None)
    args = parser.parse_args()
    if not args.src.is_dir():
        raise SystemExit(f"no videos at {args.src}; pass --src")
    print(f"preprocessing {args.src} at {args.size} px, {os.cpu_count()} CPU cores visible")
    header = f"  {'landmarks':<10} {'workers':>7} {'frames':>7} {'clips':>5} " + " ".join(
        f"{s + ' f/s':>14}" for s in STAGES) + f" {'overall f/s':>12} {'wall s':>7}"
    print(header)
    for lm in args.landmarks:
        if lm == "mediapipe" and not mediapipe_available():
            print(f"  {lm:<10} skipped: MediaPipe not installed (make install-dense)")
            continue
        for workers in sorted({1, args.workers}):
            s = run(args.src, size=args.size, landmarks=lm, workers=workers, max_seconds=args.max_seconds)
            n = s["frames_decoded"]
            stage = " ".join(f"{n / s['stage_seconds'][k]:>14.0f}" if s["stage_seconds"].get(k) else f"{'-':>14}"
                             for k in STAGES)
            print(f"  {lm:<10} {workers:>7} {n:>7} {s['clips']:>5} {stage} {n / s['wall']:>12.1f} {s['wall']:>7.1f}")


if __name__ == "__main__":
    main()
