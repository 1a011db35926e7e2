"""Fréchet Inception Distance (Heusel et al., NeurIPS 2017) as pytorch-fid computes it.

    FID = ||mu_r - mu_g||^2 + Tr(Sigma_r + Sigma_g - 2 (Sigma_r Sigma_g)^(1/2))

on the 2048-d pool3 features of pytorch-fid's ``InceptionV3([3])`` with the FID weights
``pt_inception-2015-12-05-6726825d.pth`` (a port of the TensorFlow Inception the original FID used). Images go in
as ``(B, 3, H, W)`` uint8 or float in [0, 1]; the network resizes them to 299x299 (bilinear) and scales to [-1, 1]
itself, as pytorch-fid does.

The metric keeps running sums -- sum of features ``(D,)`` and sum of outer products ``(D, D)``, both float64, and a
count -- for the real and the generated side, so a DDP sync is a sum and no feature is ever stored. The mean and
the unbiased covariance (``np.cov``'s ``ddof=1``) come from those sums at compute time.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from dreamhead_lit.metrics._common import ReportMixin, unit_float_images
from dreamhead_lit.metrics.weights import FID_INCEPTION, resolve_weights

__all__ = [
    "FIDInceptionFeatures",
    "fid_inception",
    "fid_sums_update",
    "fid_statistics",
    "frechet_distance",
    "fid_from_features",
    "FIDMetric",
]


class FIDInceptionFeatures(nn.Module):
    """pytorch-fid's ``InceptionV3([3])`` returning ``(B, 2048)`` pool3 features for ``(B, 3, H, W)`` in [0, 1]."""

    num_features = 2048

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception

    def forward(self, images: Tensor) -> Tensor:
        (pool3,) = self.inception(images)  # [(B, 2048, 1, 1)]
        return pool3.flatten(1)  # (B, 2048)


def fid_inception(*, weights_path: str | Path | None = None) -> FIDInceptionFeatures:
    """The FID feature network with the official FID weights, loaded from disk (never downloaded).

    Args:
        weights_path: the ``pt_inception-2015-12-05-6726825d.pth`` file; resolved with
            :func:`~dreamhead_lit.metrics.weights.resolve_weights` when None.

    Raises:
        MissingWeightsError: the weights file is not in any searched folder.
    """
    from pytorch_fid import inception as fid_inception_module

    path = Path(weights_path) if weights_path is not None else resolve_weights(
        FID_INCEPTION.filename, purpose="FID (pytorch-fid InceptionV3)", url_hint=FID_INCEPTION.url
    )

    def load_from_disk(url: str, *args: object, **kwargs: object) -> dict[str, Tensor]:
        if url != fid_inception_module.FID_WEIGHTS_URL:
            raise RuntimeError(f"pytorch-fid asked for unexpected weights {url}; only the FID Inception is served")
        from ..checkpoints import safe_load

        return safe_load(path, what="FID Inception state dict")

    # pytorch-fid builds the FID Inception and then fetches its weights by URL (a download). Serving that one call
    # from the resolved file keeps pytorch-fid's own architecture and strict load, with no network access.
    with mock.patch.object(fid_inception_module, "load_state_dict_from_url", load_from_disk):
        net = fid_inception_module.InceptionV3(
            [fid_inception_module.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
            resize_input=True,
            normalize_input=True,
            requires_grad=False,
            use_fid_inception=True,
        )
    return FIDInceptionFeatures(net.eval())


def fid_sums_update(features: Tensor) -> tuple[Tensor, Tensor, int]:
    """Running-sum increments of a feature batch ``(B, D)``: (sum ``(D,)``, sum of outer products ``(D, D)``, B).

    Both sums are float64 so that the covariance from sums matches ``np.cov`` on the stacked features.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (B, D), got {tuple(features.shape)}")
    f = features.detach().to(torch.float64)
    return f.sum(dim=0), f.T @ f, int(f.shape[0])


def fid_statistics(feature_sum: Tensor, outer_sum: Tensor, count: int | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mu, Sigma) from running sums, Sigma unbiased: (sum x x^T - n mu mu^T) / (n - 1), as ``np.cov``."""
    n = int(count)
    if n < 2:
        raise ValueError(f"FID needs at least 2 images on each side to estimate a covariance, got {n}")
    s = feature_sum.detach().cpu().to(torch.float64).numpy()
    ss = outer_sum.detach().cpu().to(torch.float64).numpy()
    mu = s / n
    sigma = (ss - n * np.outer(mu, mu)) / (n - 1)
    return mu, (sigma + sigma.T) / 2  # the matmul of the sums is symmetric only up to rounding


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), the pytorch-fid formula.

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))`` with ``scipy.linalg.sqrtm``; when the
    product is singular (non-finite root) ``eps`` is added to both diagonals, and a negligible imaginary part of the
    root (numerical) is dropped, as in ``pytorch_fid.fid_score.calculate_frechet_distance``.

    Raises:
        ValueError: shapes differ, or the root has a significant imaginary part (degenerate statistics).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics differ in size: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"FID: the matrix square root has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}; "
                "the statistics are degenerate (too few images for the feature size?)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(real_features: Tensor, fake_features: Tensor) -> float:
    """FID between two stacked feature sets ``(N, D)`` (functional form of :class:`FIDMetric`)."""
    rs, rss, rn = fid_sums_update(real_features)
    fs, fss, fn = fid_sums_update(fake_features)
    return frechet_distance(*fid_statistics(rs, rss, rn), *fid_statistics(fs, fss, fn))


class FIDMetric(ReportMixin, Metric):
    """FID between real and generated frames, DDP-safe through running sums.

    Args:
        feature_extractor: module mapping ``(B, 3, H, W)`` float [0, 1] to ``(B, D)`` (or pytorch-fid's list of
            ``(B, D, 1, 1)``). None: the official FID Inception (:func:`fid_inception`; raises MissingWeightsError
            when its file is absent). Any other network gives a Fréchet distance in *its* feature space, not FID:
            name it with ``feature_extractor_name``.
        num_features: D. Defaults to the extractor's ``num_features`` attribute, else is measured with one
            299x299 probe image.
        feature_extractor_name: label reported by :meth:`report`; required with a custom extractor.

    ``update(images, real=True|False)``; ``compute()`` returns the distance as a float64 scalar tensor;
    :meth:`report` adds the image counts and the feature network's name.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    real_sum: Tensor
    real_outer: Tensor
    real_count: Tensor
    fake_sum: Tensor
    fake_outer: Tensor
    fake_count: Tensor

    def __init__(
        self,
        *,
        feature_extractor: nn.Module | None = None,
        num_features: int | None = None,
        feature_extractor_name: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if feature_extractor is None:
            feature_extractor = fid_inception()
            feature_extractor_name = "pytorch-fid InceptionV3 pool3 (pt_inception-2015-12-05)"
        elif not feature_extractor_name:
            raise ValueError(
                "a custom feature_extractor needs feature_extractor_name: the value is a Fréchet distance in that "
                "network's features, not the FID the field reports, and the results must say so"
            )
        self.feature_extractor = feature_extractor.eval()
        self.feature_extractor.requires_grad_(False)
        self.feature_extractor_name = feature_extractor_name
        if num_features is None:
            num_features = getattr(feature_extractor, "num_features", None)
        if num_features is None:
            with torch.no_grad():
                num_features = int(self._features(torch.zeros(1, 3, 299, 299)).shape[1])
        self.num_features = int(num_features)
        d = self.num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", default=torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", default=torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def train(self, mode: bool = True) -> FIDMetric:
        """Metric states follow ``mode``; the feature network stays in eval mode (batch-norm statistics frozen), as
        a LightningModule holding this metric switches between train and eval."""
        super().train(mode)
        self.feature_extractor.eval()
        return self

    def _features(self, images: Tensor) -> Tensor:
        out = self.feature_extractor(images)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.flatten(1)  # (B, D)

    def update(self, images: Tensor, *, real: bool) -> None:
        """Add a batch ``(B, 3, H, W)`` (uint8 or float [0, 1]) to the real (``real=True``) or generated side."""
        x = unit_float_images(images, name="FID images")
        if x.shape[1] != 3:
            raise ValueError(f"FID images must have 3 channels (RGB), got {x.shape[1]}")
        with torch.no_grad():
            feats = self._features(x)
        if feats.shape[1] != self.num_features:
            raise ValueError(f"feature extractor gave {feats.shape[1]} features, the metric expects {self.num_features}")
        s, ss, n = fid_sums_update(feats)
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + s)
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + ss)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + n)

    def statistics(self, *, real: bool) -> tuple[np.ndarray, np.ndarray]:
        """(mu, Sigma) of one side from the current (local, unsynced) sums."""
        side = "real" if real else "fake"
        return fid_statistics(getattr(self, f"{side}_sum"), getattr(self, f"{side}_outer"), getattr(self, f"{side}_count"))

    def _distance(self) -> float:
        mu_r, sigma_r = fid_statistics(self.real_sum, self.real_outer, self.real_count)
        mu_f, sigma_f = fid_statistics(self.fake_sum, self.fake_outer, self.fake_count)
        return frechet_distance(mu_r, sigma_r, mu_f, sigma_f)

    def compute(self) -> Tensor:
        return torch.tensor(self._distance(), dtype=torch.float64)

    def _report_values(self) -> dict[str, float | int | str]:
        """``fid``, ``fid_real_images``, ``fid_fake_images`` and ``fid_features`` (the feature network)."""
        return {
            "fid": self._distance(),
            "fid_real_images": int(self.real_count),
            "fid_fake_images": int(self.fake_count),
            "fid_features": self.feature_extractor_name,
        }
