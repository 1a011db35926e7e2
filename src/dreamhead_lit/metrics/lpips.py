"""LPIPS (Zhang et al., CVPR 2018), ``lpips.LPIPS(net='alex', version='0.1')`` as the field reports it.

Inputs are ``(B, 3, H, W)`` float images in [-1, 1] (the lpips convention). The linear calibration layers ship inside
the ``lpips`` package; the AlexNet trunk is torchvision's ImageNet ``alexnet-owt-7be5be79.pth``, resolved from disk
(``$DREAMHEAD_WEIGHTS`` or the torch hub cache) and loaded into lpips' trunk slices -- nothing is downloaded.

Without that file there is no LPIPS. Tests may build the network with a *random* trunk
(``allow_random_backbone_for_tests=True``, lpips' own ``pnet_rand=True``) to check the plumbing against the lpips
package; such a metric labels itself and warns whenever it reports, so its number is never mistaken for LPIPS.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from dreamhead_lit.metrics._common import RANGE_TOLERANCE, ReportMixin, check_same_shape
from dreamhead_lit.metrics.weights import LPIPS_ALEXNET, resolve_weights

__all__ = ["RANDOM_BACKBONE_LABEL", "build_lpips_net", "lpips_per_image", "LPIPSMetric"]

PRETRAINED_BACKBONE_LABEL = "alexnet-owt-7be5be79 (ImageNet), lpips v0.1 linear layers"
RANDOM_BACKBONE_LABEL = "RANDOM AlexNet trunk (tests only; not LPIPS)"


def _load_alexnet_trunk(net: nn.Module, path: Path) -> None:
    """Copy torchvision AlexNet ``features.{i}.*`` weights into lpips' ``slice{k}.{i}.*`` trunk, all or nothing.

    lpips splits ``alexnet().features`` into five ``nn.Sequential`` slices that keep each layer's original index as
    its child name, so the torchvision key of trunk parameter ``slice{k}.{i}.{param}`` is ``features.{i}.{param}``.
    """
    from ..checkpoints import safe_load

    state = safe_load(path, what="AlexNet state dict")
    trunk = net.net  # lpips.pretrained_networks.alexnet
    mapped: dict[str, Tensor] = {}
    for name in trunk.state_dict():
        _, index, param = name.split(".")  # "slice2.3.weight" -> ("slice2", "3", "weight")
        key = f"features.{index}.{param}"
        if key not in state:
            raise ValueError(f"{path} is not torchvision's AlexNet: it has no {key!r} (needed for lpips {name!r})")
        mapped[name] = state[key]
    trunk.load_state_dict(mapped, strict=True)


def build_lpips_net(*, allow_random_backbone_for_tests: bool = False, weights_path: str | Path | None = None) -> nn.Module:
    """``lpips.LPIPS(net='alex', version='0.1')`` in eval mode with frozen parameters.

    Args:
        allow_random_backbone_for_tests: build with a random AlexNet trunk (lpips' ``pnet_rand=True``) instead of the
            ImageNet one. For tests only: the result is not LPIPS. Seed torch before calling for reproducibility.
        weights_path: the ``alexnet-owt-7be5be79.pth`` file; resolved from the weights folders when None.

    Raises:
        MissingWeightsError: the AlexNet file is absent (and the random trunk was not asked for).
    """
    import lpips

    if not allow_random_backbone_for_tests:
        path = Path(weights_path) if weights_path is not None else resolve_weights(
            LPIPS_ALEXNET.filename, purpose="LPIPS (AlexNet trunk)", url_hint=LPIPS_ALEXNET.url
        )
    # pnet_rand=True: lpips builds the trunk without asking torchvision to download; its linear layers still load
    # from the package (pretrained=True). The real trunk is then filled in from the resolved file.
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=False`
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        net = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False)
    if not allow_random_backbone_for_tests:
        _load_alexnet_trunk(net, path)
    net.eval().requires_grad_(False)
    return net


def _check_lpips_input(x: Tensor, *, name: str) -> Tensor:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: LPIPS expects (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: LPIPS expects float images in [-1, 1], got dtype {x.dtype}; convert with x / 127.5 - 1")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{name}: LPIPS expects values in [-1, 1], got [{lo:.3f}, {hi:.3f}]")
    return x.float()


def lpips_per_image(net: nn.Module, preds: Tensor, target: Tensor) -> Tensor:
    """LPIPS distance of each pair, ``(B,)``, for images ``(B, 3, H, W)`` in [-1, 1]."""
    check_same_shape(preds, target)
    p = _check_lpips_input(preds, name="preds")
    t = _check_lpips_input(target, name="target")
    with torch.no_grad():
        return net(p, t).flatten()  # (B, 1, 1, 1) -> (B,)


class LPIPSMetric(ReportMixin, Metric):
    """Mean LPIPS (AlexNet, v0.1) over image pairs; state: sum of per-image distances and the count.

    Args:
        allow_random_backbone_for_tests: see :func:`build_lpips_net`. The metric then reports under the label
            :data:`RANDOM_BACKBONE_LABEL` and warns each time it computes.
        weights_path: explicit ``alexnet-owt-7be5be79.pth``; resolved when None.

    Raises (at construction):
        MissingWeightsError: the AlexNet file is absent and no random trunk was asked for.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    dist_sum: Tensor
    count: Tensor

    def __init__(
        self,
        *,
        allow_random_backbone_for_tests: bool = False,
        weights_path: str | Path | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.net = build_lpips_net(allow_random_backbone_for_tests=allow_random_backbone_for_tests, weights_path=weights_path)
        self.random_backbone = bool(allow_random_backbone_for_tests)
        self.backbone = RANDOM_BACKBONE_LABEL if self.random_backbone else PRETRAINED_BACKBONE_LABEL
        self.add_state("dist_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def train(self, mode: bool = True) -> LPIPSMetric:
        """The LPIPS network stays in eval mode (its linear layers carry dropout) whatever ``mode`` is."""
        super().train(mode)
        self.net.eval()
        return self

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add pairs ``(B, 3, H, W)`` in [-1, 1]."""
        d = lpips_per_image(self.net, preds, target)
        self.dist_sum = self.dist_sum + d.to(torch.float64).sum()
        self.count = self.count + d.numel()

    def _mean(self) -> float:
        if self.random_backbone:
            warnings.warn(f"LPIPSMetric: {RANDOM_BACKBONE_LABEL}; this number is not LPIPS", stacklevel=3)
        n = int(self.count)
        if n == 0:
            raise ValueError("LPIPSMetric: no image pairs were added; call update() first")
        return float(self.dist_sum) / n

    def compute(self) -> Tensor:
        return torch.tensor(self._mean(), dtype=torch.float64)

    def _report_values(self) -> dict[str, float | int | str]:
        """``lpips`` (``lpips_random_backbone`` with a random trunk), ``lpips_images`` and ``lpips_backbone``."""
        key = "lpips_random_backbone" if self.random_backbone else "lpips"
        return {key: self._mean(), "lpips_images": int(self.count), "lpips_backbone": self.backbone}
