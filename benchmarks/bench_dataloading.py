"""Data-loading throughput: stage-1 and stage-2 samples/s per dataset and number of workers.

    python benchmarks/bench_dataloading.py [--root data/synthtalk ...] [--stages a2l l2i] [--workers 0 2]
        [--batches 30] [--batch-size 16] [--pin-memory]

Generates the demo SynthTalk first when the default --root does not exist. Prints one line per (root, stage,
workers). Paper size (issue 18): roots of 256 and 512 px SynthTalk with jpg and npy frames, --stages l2i; compare
with the steps/s x batch size a training step consumes (benchmarks/bench_train.py).
"""
from __future__ import annotations

import argparse
import time

from dreamhead_lit.config import resolve_path
from dreamhead_lit.data.clip import read_dataset_info
from dreamhead_lit.data.datamodule import TalkingHeadDataModule


def measure(root, stage: str, workers: int, batches: int, batch_size: int, *, pin_memory: bool = False) -> float:
    dm = TalkingHeadDataModule(root=root, stage=stage, batch_size=batch_size, num_workers=workers,
                               windows_per_clip=64, frames_per_clip=256, pin_memory=pin_memory)
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
    parser.add_argument("--root", nargs="+", default=["data/synthtalk"], help="processed dataset(s)")
    parser.add_argument("--stages", nargs="+", choices=("a2l", "l2i"), default=["a2l", "l2i"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2], help="DataLoader workers to try")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pin-memory", action="store_true", help="pinned batches (what data.pin_memory=true does)")
    args = parser.parse_args()
    labels = {"a2l": "stage 1 (audio+landmark windows)", "l2i": "stage 2 (frames+landmark images)"}
    for name in args.root:
        root = resolve_path(name)
        if not (root / "index.jsonl").is_file():
            if name != "data/synthtalk":
                parser.error(f"--root {root}: no processed dataset there (index.jsonl)")
            from dreamhead_lit.data.synth import SynthConfig, generate_dataset

            generate_dataset(SynthConfig(out=str(root)))
        info = read_dataset_info(root)
        fmt = (info.get("generator") or info.get("preprocess") or {}).get("frames_format", "?")
        print(f"data loading on {root} ({info['resolution']} px, {fmt} frames; batch {args.batch_size}, "
              f"{args.batches} batches after the first)", flush=True)
        for stage in args.stages:
            for workers in args.workers:
                rate = measure(root, stage, workers, args.batches, args.batch_size, pin_memory=args.pin_memory)
                print(f"  {labels[stage]:<34} workers={workers}  {rate:8.1f} samples/s", flush=True)


if __name__ == "__main__":
    main()
