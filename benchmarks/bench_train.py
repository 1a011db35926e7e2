"""Training speed of either stage at any size on any processed dataset: steps/s, samples/s and peak memory.

    python benchmarks/bench_train.py --stage stage2 --size paper --data data/realclips [--steps 5] [--batch-size 2]
                                     [--precision 32-true|bf16-mixed] [--devices 1] [--strategy auto|ddp] [key=value ...]

Runs the real training entry (``training.fit``: the DataModule, the LightningModule, Lightning's Trainer) for a few steps
with validation off, in a throw-away runs folder, and times each optimiser step after ``--warmup`` steps with a
callback (on CUDA, synchronised). Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak
resident set size on CPU (``getrusage``; with DDP, rank 0's). Prints one line; a machine that is slow only makes the
figure smaller, nothing fails.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time

import torch
from lightning.pytorch.callbacks import Callback

from dreamhead_lit.config import load_config
from dreamhead_lit.training import fit, stage_specs


class StepTimer(Callback):
    def __init__(self, warmup: int):
        self.warmup, self.times, self._start = warmup, [], 0.0

    def _sync(self, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(trainer)
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["stage1", "stage2"], default="stage2")
    p.add_argument("--size", default="paper")
    p.add_argument("--data", required=True, help="a processed dataset")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2, help="per device")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--devices", default="1")
    p.add_argument("--strategy", default="auto")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_config(f"{args.stage}/{args.size}.yaml", [
            f"data.root={args.data}", f"runs_root={runs}", f"data.batch_size={args.batch_size}",
            f"trainer.max_steps={args.steps + args.warmup}", "trainer.limit_val_batches=0",
            "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1000", "trainer.max_epochs=-1",
            f"trainer.precision={args.precision}", f"trainer.accelerator={accelerator}",
            f"trainer.devices={args.devices}", f"trainer.strategy={args.strategy}", "trainer.enable_progress_bar=false",
            *args.overrides], schema=stage_specs()[args.stage].schema)
        timer = StepTimer(args.warmup)
        if accelerator == "gpu":
            torch.cuda.reset_peak_memory_stats()
        fit(args.stage, cfg, callbacks=[timer])
    if not timer.times:
        print("no timed steps (the epoch was shorter than --warmup: lower it)", file=sys.stderr)
        return 1
    per_step = sorted(timer.times)[len(timer.times) // 2]  # median: robust to a stray slow step
    if accelerator == "gpu":
        memory = f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (CUDA, this process)"
    else:
        memory = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    print(f"{args.stage} {args.size} on {args.data}: {1 / per_step:.3g} steps/s, "
          f"{args.batch_size / per_step:.3g} samples/s per device (median of {len(timer.times)} steps, batch "
          f"{args.batch_size}, {args.precision}, {accelerator} x {args.devices}, torch threads "
          f"{torch.get_num_threads()}), {memory}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
