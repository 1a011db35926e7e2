"""DAE-Talker's semantic encoder: a frame -> one latent vector (Preechakul et al. 2022's z_sem, which DAE-Talker
reuses as the per-frame target of its speech2latent).

DiffAE's semantic encoder is the encoder half of its UNet followed by pooling to 512 dims. Here a plain strided conv
stack stands in (one stride-2 level per entry of ``channels``, two GroupNorm-SiLU-conv layers each) ending at a small
map that is flattened, not averaged: a global average would throw away *where* the mouth and head are, which is
exactly what a talking-head latent must keep.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ...models.unet import _groups


class SemanticEncoder(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] -> latents (B, latent_dim).

    Args:
        resolution: H = W of the frames.
        latent_dim: D, size of the latent (512 in the paper).
        channels: channels of each stride-2 level; the last map is resolution / 2**len(channels) pixels a side.
        norm_groups: GroupNorm groups (reduced to a divisor of the channel count where needed).
    """

    def __init__(self, *, resolution: int, latent_dim: int, channels: Sequence[int] = (32, 64, 128, 128),
                 norm_groups: int = 32):
        super().__init__()
        if resolution % 2 ** len(channels):
            raise ValueError(f"SemanticEncoder: {resolution} px cannot be halved {len(channels)} times "
                             f"(channels={list(channels)}); give fewer levels or another resolution")
        self.resolution, self.latent_dim = resolution, latent_dim
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1)]
        cin = channels[0]
        for cout in channels:
            layers += [nn.GroupNorm(_groups(cin, norm_groups), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                       nn.GroupNorm(_groups(cout, norm_groups), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = resolution // 2 ** len(channels)
        self.out = nn.Linear(cin * side * side, latent_dim)

    def forward(self, frames: Tensor) -> Tensor:
        if frames.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"SemanticEncoder was built for (3, {self.resolution}, {self.resolution}) frames, got "
                             f"{tuple(frames.shape[1:])}")
        h = F.silu(self.features(frames))  # (B, C, side, side)
        return self.out(h.flatten(1))  # (B, D)


__all__ = ["SemanticEncoder"]
