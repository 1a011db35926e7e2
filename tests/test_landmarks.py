"""Landmark maths: similarity fitting, canonical pose, rasterisation, the dense layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamhead_lit.data.landmarks import (
    apply_affine,
    build_dense_layout,
    canonicalize,
    fit_similarity,
    invert_affine,
    lower_face_mask,
    rasterize_landmarks,
)
from dreamhead_lit.data.synth import neutral_template


def _similarity(angle, scale, tx, ty):
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]], dtype=np.float32)


def test_fit_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 2)).astype(np.float32)
    a = _similarity(0.3, 1.7, 5.0, -2.0)
    dst = apply_affine(src, a)
    np.testing.assert_allclose(fit_similarity(src, dst), a, atol=1e-5)
    np.testing.assert_allclose(apply_affine(dst, invert_affine(a)), src, atol=1e-5)


def test_canonicalize_removes_head_pose_but_keeps_expression():
    template = neutral_template()
    rng = np.random.default_rng(1)
    face = np.repeat(template[None], 5, 0).copy()
    face[:, 57, 1] += np.linspace(0, 0.2, 5)  # the mouth opens over time
    posed = np.stack([apply_affine(f, _similarity(rng.uniform(-0.3, 0.3), rng.uniform(10, 30), 32, 30)) for f in face])
    canon, to_image = canonicalize(posed, posed, template68=template)
    np.testing.assert_allclose(canon, face, atol=1e-4)
    np.testing.assert_allclose(apply_affine(canon, to_image), posed, atol=1e-3)


def test_rasterize_peaks_at_points_in_their_region_channel():
    pts = torch.tensor([[[10.5, 20.5], [40.5, 50.5]]])
    img = rasterize_landmarks(pts, regions=torch.tensor([0, 2]), size=64, sigma=1.0)
    assert img.shape == (1, 3, 64, 64)
    assert img[0, 0, 20, 10] > 0.99 and img[0, 2, 50, 40] > 0.99
    assert img[0, 1].max() == 0 and img[0, 0, 50, 40] < 1e-3
    # subpixel positions move the blob's centre of mass accordingly
    img2 = rasterize_landmarks(torch.tensor([[[10.75, 20.5]]]), regions=torch.tensor([0]), size=64, sigma=1.0)
    xs = torch.arange(64).float() + 0.5
    com = (img2[0, 0].sum(0) * xs).sum() / img2[0, 0].sum()
    assert abs(com.item() - 10.75) < 0.05


def test_lower_face_mask_covers_mouth_and_not_eyes():
    template = neutral_template()
    pix = torch.from_numpy(apply_affine(template, _similarity(0.0, 20.0, 32, 28)))
    mask = lower_face_mask(pix, size=64)
    mouth = pix[48:68].round().long()
    eyes = pix[36:48].round().long()
    assert mask[0, mouth[:, 1], mouth[:, 0]].min() == 1
    assert mask[0, eyes[:, 1], eyes[:, 0]].max() == 0


def test_dense_layout_is_deterministic_and_starts_with_the_68():
    template = neutral_template()
    a, b = build_dense_layout(200, template68=template), build_dense_layout(200, template68=template)
    assert np.array_equal(a.weights, b.weights)
    np.testing.assert_allclose(a.weights[:68], np.eye(68))
    np.testing.assert_allclose(a.weights.sum(1), 1.0, atol=1e-6)
    assert a.topology.num_points == 200 and len(a.topology.regions) == 200
    # every contour keeps its 68-point members in order
    outer = a.topology.contours["outer_lips"]
    assert [i for i in outer if i < 68] == list(range(48, 60))


def test_the_canonical_template_is_synthtalks_mean_neutral_face():
    """Real data is canonicalised onto data.landmarks' template without importing the generator; it must stay the
    template SynthTalk's datasets record, or models would not carry across datasets."""
    from dreamhead_lit.data.landmarks import canonical_template68
    from dreamhead_lit.data.synth import neutral_template

    assert canonical_template68().shape == (68, 2)
    assert np.allclose(canonical_template68(), neutral_template(), atol=1e-6)


def _rasterize_by_convolution(points, *, regions, size, sigma, num_regions=3):
    """The first implementation of ``rasterize_landmarks``: bilinear splat onto the canvas, then the separable Gaussian
    as two convolutions over every pixel. The reference the matmul form must equal."""
    import torch.nn.functional as F

    from dreamhead_lit.data.landmarks import _gaussian_kernel

    b, n, _ = points.shape
    x, y = points[..., 0], points[..., 1]
    x0, y0 = torch.floor(x - 0.5), torch.floor(y - 0.5)
    fx, fy = (x - 0.5) - x0, (y - 0.5) - y0
    canvas = torch.zeros(b, num_regions, size * size)
    region = regions.long().expand(b, n)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).long(), (y0 + dy).long()
        inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        flat = (yi.clamp(0, size - 1) * size + xi.clamp(0, size - 1)) + region * size * size
        canvas.view(b, -1).scatter_add_(1, flat, (w * inside).float())
    img = canvas.view(b * num_regions, 1, size, size)
    k = _gaussian_kernel(sigma, torch.device("cpu"))
    img = F.conv2d(img, k.view(1, 1, 1, -1), padding=(0, k.numel() // 2))
    img = F.conv2d(img, k.view(1, 1, -1, 1), padding=(k.numel() // 2, 0))
    return (img / k.max() ** 2).clamp(0.0, 1.0).view(b, num_regions, size, size)


@pytest.mark.parametrize("size,sigma,n", [(64, 0.75, 100), (256, 3.0, 478), (96, 1.5, 68)])
def test_rasterize_equals_the_splat_then_convolution_reference(size, sigma, n):
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(3, n, 2, generator=g) * (size + 20) - 10  # some points outside the image, some on its edges
    pts[0, :4] = torch.tensor([[0.0, 0.0], [size - 0.5, 3.0], [-0.7, 5.0], [size + 0.2, size - 1.0]])
    regions = torch.randint(0, 3, (n,), generator=g)
    expected = _rasterize_by_convolution(pts, regions=regions, size=size, sigma=sigma)
    got = rasterize_landmarks(pts, regions=regions, size=size, sigma=sigma)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(rasterize_landmarks(pts[1], regions=regions, size=size, sigma=sigma), expected[1],
                               atol=1e-5, rtol=0)
