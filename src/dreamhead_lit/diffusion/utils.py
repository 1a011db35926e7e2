"""Shape helpers that let one diffusion implementation serve every data layout.

Stage 1 diffuses landmark sequences ``(B, T, C)`` and stage 2 images ``(B, C, H, W)``. Per-sample scalars such as
``sqrt(alpha_bar_t)`` are ``(B,)`` tensors; :func:`append_dims` right-pads them with singleton axes so they broadcast
against either layout (the k-diffusion habit), and :func:`extract` gathers schedule entries at timesteps and does so
in one call.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from torch import Tensor


class DenoiseFn(Protocol):
    """A denoiser as the samplers see it: noisy input and train-step indices in, an ``x0`` prediction out.

    ``x_t`` has any layout with batch first; ``t`` is a ``torch.long`` tensor ``(B,)`` of indices into the
    training schedule; ``extra_args`` carries the conditioning unchanged from the sampler call.
    """

    def __call__(self, x_t: Tensor, t: Tensor, **extra_args: Any) -> Tensor: ...


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton axes to ``x`` until it has ``ndim`` axes.

    A ``(B,)`` coefficient becomes ``(B, 1, 1)`` for sequences or ``(B, 1, 1, 1)`` for images, so it broadcasts
    against the batch axis only.
    """
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(
            f"append_dims: input has {x.ndim} dims (shape {tuple(x.shape)}) but the target is {ndim}; "
            "pass the ndim of the tensor you want to broadcast against, which must be at least x.ndim"
        )
    return x[(...,) + (None,) * missing]


def extract(arr: Tensor, t: Tensor, ndim: int) -> Tensor:
    """Gather ``arr[t]`` and shape it ``(B, 1, ..., 1)`` with ``ndim`` axes for broadcasting.

    ``arr`` is a 1-D schedule buffer ``(num_train_steps,)``, ``t`` a ``(B,)`` tensor of integer timesteps. The
    indices are moved to ``arr``'s device so a schedule and a batch on different devices fail loudly in the
    arithmetic that follows rather than here with an opaque indexing error.
    """
    if arr.ndim != 1:
        raise ValueError(f"extract: expected a 1-D schedule array, got shape {tuple(arr.shape)}")
    if t.ndim != 1:
        raise ValueError(f"extract: expected timesteps of shape (B,), got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"extract: timesteps must be an integer tensor of train-step indices, got dtype {t.dtype}")
    out = arr.gather(0, t.to(device=arr.device, dtype=torch.long))  # (B,)
    return append_dims(out, ndim)


def randn(
    shape: Sequence[int], *, device: torch.device | str, dtype: torch.dtype, generator: torch.Generator | None
) -> Tensor:
    """Standard normal noise on ``device``, drawn on the generator's own device and then moved.

    A CPU generator therefore gives the same noise for a GPU run as for a CPU run, and a seeded generator never
    fails because it lives on a different device than the data.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)
