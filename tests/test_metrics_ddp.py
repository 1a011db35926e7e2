"""Metric sync under DDP: two gloo processes on sharded inputs give the single-process values on all inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

WORLD_SIZE = 2
NUM_VIDEOS = 5  # odd on purpose: the shards differ in size


class _Features(nn.Module):
    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # same weights in every process
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


class _ColourExpert:
    """A deterministic stand-in sync expert: embeddings from frame colour and audio energy per 0.2 s."""

    name = "colour/energy test expert"

    def embed(self, frames, audio):
        t = min(len(frames), len(audio) // 640) - 5
        v = torch.tensor(np.array([frames[i : i + 5].mean(axis=(0, 1, 2)) / 255.0 for i in range(t)]), dtype=torch.float32)
        a = torch.tensor(
            [[np.abs(audio[i * 640 : (i + 5) * 640]).mean() * k for k in (1.0, 2.0, 3.0)] for i in range(t)],
            dtype=torch.float32,
        )
        return v, a


def _videos():
    """Per video: (generated frames, real frames, generated landmarks, real landmarks, audio)."""
    rng = np.random.default_rng(0)
    out = []
    for v in range(NUM_VIDEOS):
        t = 8 + v
        real = rng.integers(0, 256, size=(t, 24, 24, 3), dtype=np.uint8)
        fake = np.clip(real.astype(int) + rng.integers(-40, 41, size=real.shape), 0, 255).astype(np.uint8)
        lm_real = rng.uniform(20, 230, size=(t, 68, 2))
        lm_fake = lm_real + rng.normal(scale=1.0 + v, size=lm_real.shape)
        audio = rng.normal(scale=0.1, size=t * 640).astype(np.float32) * np.repeat(rng.uniform(0.2, 1, t), 640)
        out.append((fake, real, lm_fake, lm_real, audio))
    return out


def _run(videos):
    """Build the metrics, feed `videos`, return every metric's report (synced across ranks when under DDP)."""
    from dreamhead_lit.metrics import FIDMetric, LMDMetric, PSNRMetric, SSIMMetric, SyncMetric

    fid = FIDMetric(feature_extractor=_Features(), feature_extractor_name="ddp test net")
    ssim, psnr = SSIMMetric(), PSNRMetric()
    lmd = LMDMetric(resolution=256)
    sync = SyncMetric(_ColourExpert())
    for fake, real, lm_fake, lm_real, audio in videos:
        f = torch.from_numpy(fake).permute(0, 3, 1, 2)
        r = torch.from_numpy(real).permute(0, 3, 1, 2)
        fid.update(r, real=True)
        fid.update(f, real=False)
        ssim.update(f, r)
        psnr.update(f, r)
        lmd.update(lm_fake, lm_real)
        sync.update(fake, audio)
    results = {}
    for m in (fid, ssim, psnr, lmd, sync):
        results.update(m.report())
    results["compute_ssim"] = float(ssim.compute())
    return results


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        shard = _videos()[rank::WORLD_SIZE]  # rank 0: 3 videos, rank 1: 2 videos
        torch.save(_run(shard), f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # leave together: a rank tearing gloo down while the other still talks to it aborts (seen once)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_process_gloo_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    expected = _run(_videos())
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    for rank in range(WORLD_SIZE):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert set(got) == set(expected)
        for key, value in expected.items():
            if isinstance(value, str):
                assert got[key] == value, key
            else:
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert expected["fid_real_images"] == sum(8 + v for v in range(NUM_VIDEOS))
    assert expected["sync_videos"] == NUM_VIDEOS and expected["lmd_videos"] == NUM_VIDEOS
