"""Metric throughput on CPU: frames/s for FID features, LPIPS, SSIM/PSNR, LMD (dlib), CSIM and SyncNet.

    python benchmarks/bench_metrics.py [--frames 16] [--size 256] [--threads N]

Only speed is meaningful here. Inputs are random frames, except for the dlib metrics, which get a real portrait from
../shared/data/real/images when present (so detection runs its full path). Where official weights are absent the
network is built with random weights and its line says so: that measures the network's cost, never the metric.
No assertion on speed.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dreamhead_lit.metrics import (
    CSIMMetric,
    FIDMetric,
    LMDMetric,
    LPIPSMetric,
    MissingWeightsError,
    PSNRMetric,
    SSIMMetric,
    SyncMetric,
    dlib_landmarker,
    format_weights_status,
)
from dreamhead_lit.metrics.sync import SyncNetExpert
from dreamhead_lit.models.syncnet import SyncNetModel

REAL_DATA = Path(os.environ.get("DREAMHEAD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def frames_per_second(fn: Callable[[], None], frames: int) -> float:
    fn()  # warm-up: lazy model loading, allocator, thread pools
    start = time.perf_counter()
    fn()
    return frames / (time.perf_counter() - start)


def portrait_frames(n: int, size: int) -> tuple[np.ndarray, str]:
    """n copies (shifted by a pixel or two) of a real portrait at size x size, or noise when none is available."""
    from PIL import Image

    folder = REAL_DATA / "images"
    paths = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not paths:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), "noise: no real portrait found"
    img = np.asarray(Image.open(paths[0]).convert("RGB").resize((size, size), Image.BILINEAR))
    return np.stack([np.roll(img, i % 3, axis=1) for i in range(n)]), f"portrait {paths[0].name}"


class _TorchvisionInceptionPool(nn.Module):
    """torchvision InceptionV3 with random weights, 2048-d pool features: the cost of the FID network, not FID."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
        self.net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(2 * x - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per measurement")
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, s = args.frames, args.size
    print(f"metric throughput on CPU, {torch.get_num_threads()} torch threads, {n} frames of {s}x{s} per measurement")
    print("weights found:\n  " + format_weights_status().replace("\n", "\n  "))
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8)
    results: list[tuple[str, float]] = []

    def bench(label: str, fn: Callable[[], None], frames: int = n) -> None:
        fps = frames_per_second(fn, frames)
        results.append((label, fps))
        print(f"  {label:<70} {fps:9.1f} frames/s", flush=True)

    print("results:")
    try:
        fid = FIDMetric()
        fid_label = "FID features @299 (official pytorch-fid Inception)"
    except MissingWeightsError:
        fid = FIDMetric(feature_extractor=_TorchvisionInceptionPool(), feature_extractor_name="random InceptionV3")
        fid_label = "FID features @299 (RANDOM torchvision InceptionV3: cost only)"
    bench(fid_label, lambda: fid.update(fake, real=False))

    try:
        lpips = LPIPSMetric()
        lpips_label = "LPIPS alex (official trunk)"
    except MissingWeightsError:
        lpips = LPIPSMetric(allow_random_backbone_for_tests=True)
        lpips_label = "LPIPS alex (RANDOM trunk: cost only, not LPIPS)"
    bench(lpips_label, lambda: lpips.update(fake.float() / 127.5 - 1, real.float() / 127.5 - 1))

    ssim, psnr = SSIMMetric(), PSNRMetric()
    bench("SSIM whole frame (float64)", lambda: ssim.update(fake, real))
    bench("PSNR whole frame", lambda: psnr.update(fake, real))
    lm = torch.zeros(n, 68, 2)
    lm[:, 48:68] = torch.rand(n, 20, 2) * s * 0.25 + s * 0.4
    ssim_mouth = SSIMMetric(region="mouth")
    bench("SSIM mouth crop 96x96 (incl. roi_align)", lambda: ssim_mouth.update(fake, real, mouth_landmarks=lm))

    faces, source = portrait_frames(n, s)
    lmd = LMDMetric(resolution=s, landmarker=dlib_landmarker())
    bench(f"LMD dlib HOG+68 pts, both sides ({source})", lambda: lmd.update(faces, faces))
    csim = CSIMMetric()
    bench(f"CSIM dlib ResNet ({source})", lambda: csim.update(faces, faces[0]))

    try:
        sync = SyncMetric()
        sync_label = "SyncNet forward both streams @224 (official syncnet_v2)"
    except MissingWeightsError:
        torch.manual_seed(0)
        sync = SyncMetric(SyncNetExpert(SyncNetModel(), name="random SyncNet"))
        sync_label = "SyncNet forward both streams @224 (RANDOM weights: cost only)"
    clip = fake.permute(0, 2, 3, 1).numpy()
    audio = np.random.default_rng(0).normal(scale=0.1, size=n * 640).astype(np.float32)
    bench(sync_label, lambda: sync.update(clip, audio), frames=n - 5)  # n - 5 windows per clip


if __name__ == "__main__":
    main()
