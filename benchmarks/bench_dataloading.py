"""Data-loading throughput: stage-1 and stage-2 samples/s with 0 and 2 workers.

    python benchmarks/bench_dataloading.py [--root data/synthtalk] [--batches 30]

Generates the demo SynthTalk first when --root does not exist. Prints one line per (stage, workers).
"""
from __future__ import annotations

import argparse
import time

from dreamhead_lit.config import resolve_path
from dreamhead_lit.data.datamodule import TalkingHeadDataModule


def measure(root, stage: str, workers: int, batches: int, batch_size: int) -> float:
    dm = TalkingHeadDataModule(root=root, stage=stage, batch_size=batch_size, num_workers=workers,
                               windows_per_clip=64, frames_per_clip=256)
    dm.prepare_data()
    dm.setup()
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up and feature cache are not what we measure
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        batch = next(it)
        n += len(batch["clip"])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/synthtalk")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    root = resolve_path(args.root)
    if not (root / "index.jsonl").is_file():
        from dreamhead_lit.data.synth import SynthConfig, generate_dataset

        generate_dataset(SynthConfig(out=str(root)))
    print(f"data loading on {root} (batch {args.batch_size}, {args.batches} batches after the first)")
    for stage, label in (("a2l", "stage 1 (audio+landmark windows)"), ("l2i", "stage 2 (frames+landmark images)")):
        for workers in (0, 2):
            rate = measure(root, stage, workers, args.batches, args.batch_size)
            print(f"  {label:<34} workers={workers}  {rate:8.1f} samples/s")


if __name__ == "__main__":
    main()
