"""Building blocks shared by the networks: the stage networks' embeddings and MLPs, the scorers' input resizing."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(values: Tensor, dim: int, *, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding of (B,) or (T,) values -> (..., dim) (Vaswani et al. 2017, sec. 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    args = values.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return emb if dim % 2 == 0 else torch.cat([emb, torch.zeros_like(emb[..., :1])], -1)


class TimestepEmbedding(nn.Module):
    """Diffusion step t -> conditioning vector (sinusoidal features, then a 2-layer MLP as in DDPM/ADM)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))  # (B, dim)


def audio_window_mlp(audio_steps: int, audio_dim: int, out_dim: int) -> nn.Sequential:
    """A frame's flattened audio window (..., K * D) -> (..., out_dim): the per-frame mapping unit of stage 1, also
    the audio embedding of the audio-conditioned stage-2 UNet (LayerNorm, as log-mel bins differ in scale)."""
    return nn.Sequential(
        nn.LayerNorm(audio_steps * audio_dim),
        nn.Linear(audio_steps * audio_dim, out_dim),
        nn.GELU(),
        nn.Linear(out_dim, out_dim),
    )


def resize_images(images: Tensor, size: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, size, size)``, bilinear and anti-aliased; nothing happens at the native size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
