"""Stage-2 speed: frames generated per second and peak memory, per sampler and step count, at demo and paper size.

    python benchmarks/bench_stage2.py [--sizes demo paper] [--device cpu|cuda] [--frames N] [--batch-size B]
                                      [--runs ddim:10 ddim:25 dpmpp_2m:10 dpmpp_2m:20]

Builds the UNet of experiments/stage2/<size>.yaml at that size's resolution (demo 64 px, paper 256 px; a trained
checkpoint is not needed: the cost does not depend on the weights) and generates one clip's frames with
``L2IDiffusion.generate_frames`` (shared starting noise, classifier-free guidance as configured, so each step is one
forward pass on 2 x batch). Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per measurement; on CPU the
peak resident set size during the measurement (sampled from /proc every 5 ms; ``getrusage`` max RSS where /proc is
missing) and its growth over the RSS before it. Prints one line per measurement.
"""
from __future__ import annotations

import argparse
import resource
import threading
import time
from pathlib import Path

import torch

from dreamhead_lit.config import load_config, to_container
from dreamhead_lit.lit.l2i import L2IDiffusion, Stage2Config

RESOLUTION = {"demo": 64, "paper": 256}
RUNS = (("ddim", 10), ("ddim", 25), ("dpmpp_2m", 10), ("dpmpp_2m", 20))


def rss_mib() -> float:
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * resource.getpagesize() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class PeakRSS:
    """Peak resident memory (MiB) while the block runs, sampled by a thread."""

    def __enter__(self) -> "PeakRSS":
        self.before = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def build(size: str, device: str, resolution: int | None) -> L2IDiffusion:
    cfg = load_config(f"stage2/{size}.yaml", schema=Stage2Config)
    torch.manual_seed(0)
    module = L2IDiffusion(resolution=resolution or RESOLUTION[size], index68=list(range(68)),
                          net=to_container(cfg.model), diffusion=to_container(cfg.diffusion))
    return module.to(device).eval()


def bench(module: L2IDiffusion, *, frames: int, batch_size: int, device: str,
          runs: tuple[tuple[str, int], ...] = RUNS) -> None:
    res = module.resolution
    landmarks = torch.rand(frames, 3, res, res)
    ref, ref_lm = torch.rand(3, res, res) * 2 - 1, torch.rand(3, res, res)
    masked = mask = None
    if module.net.mode == "dubbing":
        masked, mask = torch.rand(frames, 3, res, res) * 2 - 1, torch.zeros(frames, 1, res, res)
    kwargs = dict(ref=ref, ref_landmarks=ref_lm, masked=masked, mask=mask, batch_size=batch_size)
    module.generate_frames(landmarks[:1], steps=2, **kwargs)  # warm-up (allocator, oneDNN / cuDNN plans)
    for sampler, steps in runs:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as rss:
            start = time.perf_counter()
            module.generate_frames(landmarks, sampler=sampler, steps=steps, **kwargs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            secs = time.perf_counter() - start
        if device.startswith("cuda"):
            memory = f"peak {torch.cuda.max_memory_allocated() / 2**20:8.0f} MiB (CUDA)"
        else:
            memory = f"peak RSS {rss.peak:7.0f} MiB (+{rss.peak - rss.before:.0f})"
        print(f"  {sampler:<9} {steps:>3} steps  {frames / secs:8.3g} frames/s  ({secs:7.2f} s for {frames} frames, "
              f"batch {batch_size})  {memory}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["demo", "paper"], choices=sorted(RESOLUTION))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, help="frames per clip (default: 32 on CUDA; CPU: 16 demo, 1 paper)")
    parser.add_argument("--batch-size", type=int, help="frames sampled together (default: min(frames, 16))")
    parser.add_argument("--resolution", type=int, help="override the size's resolution")
    parser.add_argument("--runs", nargs="+", default=[f"{s}:{n}" for s, n in RUNS],
                        help="sampler:steps pairs (default: %(default)s)")
    args = parser.parse_args()
    runs = []
    for item in args.runs:
        sampler, _, steps = item.partition(":")
        if not steps.isdigit():
            parser.error(f"--runs: {item!r} is not sampler:steps, e.g. dpmpp_2m:20")
        runs.append((sampler, int(steps)))
    for size in args.sizes:
        module = build(size, args.device, args.resolution)
        frames = args.frames or (32 if args.device.startswith("cuda") else {"demo": 16, "paper": 1}[size])
        batch = args.batch_size or min(frames, 16)
        n = module.net
        params = sum(p.numel() for p in n.parameters())
        print(f"stage 2 ({size}): {params / 1e6:.2f} M parameters, {module.resolution} px, mode {n.mode}, "
              f"patch {n.patch_size}, guidance {module.diffusion_cfg.guidance_scale}, device {args.device}, "
              f"torch threads {torch.get_num_threads()}", flush=True)
        bench(module, frames=frames, batch_size=batch, device=args.device, runs=tuple(runs))


if __name__ == "__main__":
    main()
