"""DAE-Talker's diffusion autoencoder as one ``nn.Module``: the semantic encoder and the conditional denoiser that
decodes its latent (the stage-2 UNet with ``condition="latent"``: no landmark image, no reference frame, no audio;
the latent is the only condition, as DAE-Talker has "no hand-made intermediate").

Encoder and decoder are one module so the shared diffusion core's optimiser and EMA cover both: they are trained end
to end by the decoder's diffusion loss alone (DiffAE, Preechakul et al. 2022, Sec. 3), and the EMA copy of the encoder
is the one that writes the latent cache.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ...models.unet import L2IUNet
from .encoder import SemanticEncoder


class DiffusionAutoencoder(nn.Module):
    """``encode(frames (B, 3, H, W)) -> (B, D)``; ``forward(x_t, t, *, latent (B, D), drop=None)`` is the decoder's
    denoiser call (what the diffusion core's loss and samplers see)."""

    def __init__(self, *, resolution: int, latent_dim: int, encoder_channels: Sequence[int], encoder_groups: int,
                 **unet: object):
        super().__init__()
        self.encoder = SemanticEncoder(resolution=resolution, latent_dim=latent_dim, channels=encoder_channels,
                                       norm_groups=encoder_groups)
        self.decoder = L2IUNet(mode="reference", use_reference=False, condition="latent", latent_dim=latent_dim,
                               image_channels=3, resolution=resolution, **unet)

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    def encode(self, frames: Tensor) -> Tensor:
        return self.encoder(frames)  # (B, D)

    def forward(self, x_t: Tensor, t: Tensor, *, latent: Tensor, drop: Tensor | None = None) -> Tensor:
        return self.decoder(x_t, t, latent=latent, drop=drop)  # (B, 3, H, W)


__all__ = ["DiffusionAutoencoder"]
