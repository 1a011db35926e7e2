"""Latent space for stage 2: a frozen autoencoder behind a small interface (latent diffusion, Rombach et al. 2022).

DreamHead's L2I stage is described as a latent diffusion model; at the demo size (64 px) pixel space is cheaper and
needs no pretrained weights, so latent space is an option: set ``model.vae_checkpoint`` to

- a **TorchScript** file (``torch.jit.save(torch.jit.script(model))`` of a module whose ``encode(images) -> latents``
  and ``decode(latents) -> images`` methods are marked ``@torch.jit.export``; images ``(B, 3, H, W)`` in
  ``[-1, 1]``), or
- a **diffusers** ``AutoencoderKL`` folder (``config.json`` + weights, e.g. Stable Diffusion's ``vae/``), which
  needs the ``diffusers`` package.

Latents are multiplied by ``scale_factor`` so the diffusion sees roughly unit variance (Rombach et al. Sec. 4.3.2 and
App. G; 0.18215 for Stable Diffusion's VAE, read from the diffusers config when not given). Any ``nn.Module`` with
``encode``/``decode`` can be wrapped with :class:`ModuleCodec` directly (the tests inject a tiny autoencoder).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import ConfigError, resolve_path


class MissingDependencyError(ConfigError, ImportError):
    """A configured feature needs a package that is not installed (the message names it and how to install it)."""


class LatentCodec(nn.Module):
    """A frozen image autoencoder: ``encode`` (B, 3, H, W) in [-1, 1] -> scaled latents (B, C, h, w), ``decode`` back.

    Frozen means: no gradients, always in eval mode (``train()`` is ignored), never part of the optimiser.
    """

    scale_factor: float

    def encode(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> "LatentCodec":
        return super().train(False)  # stays in eval mode: dropout / norm statistics of a frozen codec never change

    @torch.no_grad()
    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latents of a ``resolution`` x ``resolution`` image (measured with one encode)."""
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        z = self.encode(torch.zeros(1, 3, resolution, resolution, device=device))
        if z.ndim != 4:
            raise ValueError(f"latent codec: encode must return (B, C, h, w) latents, got shape {tuple(z.shape)}")
        return int(z.shape[1]), int(z.shape[2]), int(z.shape[3])


class ModuleCodec(LatentCodec):
    """Wrap a module (plain or TorchScript) with ``encode(images) -> latents`` and ``decode(latents) -> images``."""

    def __init__(self, module: nn.Module, *, scale_factor: float = 1.0):
        super().__init__()
        for method in ("encode", "decode"):
            if not callable(getattr(module, method, None)):
                raise TypeError(f"latent codec: {type(module).__name__} has no {method}() method; a codec needs "
                                "encode(images) -> latents and decode(latents) -> images (in TorchScript: methods "
                                "marked @torch.jit.export)")
        self.module = module.eval()
        for p in module.parameters():  # (ScriptModules have no requires_grad_())
            p.requires_grad_(False)
        self.scale_factor = float(scale_factor)

    def encode(self, images: Tensor) -> Tensor:
        return self.module.encode(images) * self.scale_factor

    def decode(self, latents: Tensor) -> Tensor:
        return self.module.decode(latents / self.scale_factor)


class DiffusersCodec(LatentCodec):
    """A diffusers ``AutoencoderKL``: the posterior mean as the latent (deterministic), scaled."""

    def __init__(self, vae: nn.Module, *, scale_factor: float | None = None):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor if scale_factor is not None
                                  else getattr(vae.config, "scaling_factor", 0.18215))

    def encode(self, images: Tensor) -> Tensor:
        return self.vae.encode(images).latent_dist.mode() * self.scale_factor

    def decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents / self.scale_factor).sample


def load_codec(path: str | Path, *, scale_factor: float | None = None) -> LatentCodec:
    """The codec stored at ``path`` (see the module docstring for the two formats)."""
    p = resolve_path(path)
    where = f"model.vae_checkpoint={path}"
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{where}: the folder has no config.json, so it is not a diffusers AutoencoderKL; give "
                              "that folder or a TorchScript file with encode/decode methods")
        try:
            from diffusers import AutoencoderKL
        except ImportError as err:
            raise MissingDependencyError(
                f"{where} is a diffusers AutoencoderKL folder; loading it needs the `diffusers` package, which is not "
                "installed (`pip install diffusers`), or export the autoencoder to TorchScript with encode/decode "
                "methods and point model.vae_checkpoint at that file"
            ) from err
        return DiffusersCodec(AutoencoderKL.from_pretrained(str(p)), scale_factor=scale_factor)
    if not p.is_file():
        raise FileNotFoundError(f"{where}: no such file or folder ({p})")
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"{where}: not a TorchScript file ({str(err).splitlines()[0]}); save the autoencoder with "
                          "torch.jit.save(torch.jit.script(model)) with @torch.jit.export encode/decode, or give a "
                          "diffusers AutoencoderKL folder") from err
    default = float(getattr(module, "scale_factor", 1.0)) if hasattr(module, "scale_factor") else 1.0
    return ModuleCodec(module, scale_factor=default if scale_factor is None else scale_factor)


__all__ = ["DiffusersCodec", "LatentCodec", "MissingDependencyError", "ModuleCodec", "load_codec"]
