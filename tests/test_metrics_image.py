"""SSIM and PSNR against scikit-image and torchmetrics; the mouth region."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio

from dreamhead_lit.metrics.image import (
    MOUTH_CROP_SIZE,
    PSNRMetric,
    SSIMMetric,
    crop_mouth,
    mouth_boxes,
    psnr_per_image,
    ssim_per_image,
)


def _noisy_pair(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    smooth = torch.nn.functional.avg_pool2d(target.float(), 5, stride=1, padding=2)  # some structure to compare
    preds = (smooth + torch.randint(-25, 26, shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return preds, target


def _skimage_ssim(p: np.ndarray, t: np.ndarray, data_range: float) -> float:
    # (C, H, W) -> per-channel SSIM averaged, the reference the metric must equal
    return float(
        structural_similarity(
            p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range, channel_axis=0
        )
    )


@pytest.mark.parametrize("shape", [(3, 3, 32, 40), (2, 1, 23, 17)])
def test_ssim_matches_skimage_for_uint8_and_float(shape):
    preds, target = _noisy_pair(shape)
    expected = [_skimage_ssim(preds[i].numpy(), target[i].numpy(), 255) for i in range(shape[0])]
    np.testing.assert_allclose(ssim_per_image(preds, target).numpy(), expected, rtol=1e-7, atol=1e-9)
    pf, tf = preds.double() / 255, target.double() / 255
    expected_f = [_skimage_ssim(pf[i].numpy(), tf[i].numpy(), 1.0) for i in range(shape[0])]
    np.testing.assert_allclose(ssim_per_image(pf, tf).numpy(), expected_f, rtol=1e-6, atol=1e-8)


def test_psnr_matches_torchmetrics_per_image():
    preds, target = _noisy_pair((4, 3, 20, 24), seed=1)
    expected = peak_signal_noise_ratio(
        preds.double() / 255, target.double() / 255, data_range=1.0, dim=(1, 2, 3), reduction="none"
    )
    torch.testing.assert_close(psnr_per_image(preds, target), expected.double())
    # uint8 with data_range 255 is the same number
    expected_255 = peak_signal_noise_ratio(preds.double(), target.double(), data_range=255.0, dim=(1, 2, 3), reduction="none")
    torch.testing.assert_close(psnr_per_image(preds, target), expected_255.double())


def test_metrics_average_per_frame_over_uneven_batches():
    preds, target = _noisy_pair((7, 3, 24, 24), seed=2)
    ssim, psnr = SSIMMetric(), PSNRMetric()
    for a, b in ((0, 1), (1, 5), (5, 7)):
        ssim.update(preds[a:b], target[a:b])
        psnr.update(preds[a:b], target[a:b])
    per_frame_ssim = [_skimage_ssim(preds[i].numpy(), target[i].numpy(), 255) for i in range(7)]
    assert float(ssim.compute()) == pytest.approx(np.mean(per_frame_ssim), rel=1e-9)
    assert float(psnr.compute()) == pytest.approx(float(psnr_per_image(preds, target).mean()), rel=1e-12)
    assert ssim.report() == {"ssim": pytest.approx(np.mean(per_frame_ssim)), "ssim_frames": 7}
    assert float(SSIMMetric()(target, target)) == pytest.approx(1.0)


def test_inputs_are_checked():
    preds, target = _noisy_pair((1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ssim_per_image(preds.float() / 127.5 - 1, target)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_per_image(preds[..., :8, :8], target[..., :8, :8])
    with pytest.raises(ValueError, match="region must be one of"):
        SSIMMetric(region="lips")
    with pytest.raises(ValueError, match="mouth_landmarks"):
        PSNRMetric(region="mouth").update(preds, target)


def _mouth_landmarks(batch: int, cx: float, cy: float, w: float, h: float) -> torch.Tensor:
    lm = torch.zeros(batch, 68, 2)
    angle = torch.linspace(0, 2 * np.pi, 21)[:20]
    lm[:, 48:68, 0] = cx + w / 2 * torch.cos(angle)
    lm[:, 48:68, 1] = cy + h / 2 * torch.sin(angle)
    return lm


def test_mouth_box_geometry_and_crop():
    lm = _mouth_landmarks(2, cx=40, cy=50, w=20, h=8)
    boxes = mouth_boxes(lm)
    torch.testing.assert_close(boxes[0], torch.tensor([25.0, 35.0, 55.0, 65.0], dtype=torch.float64), atol=1e-4, rtol=0)
    # a crop of an image that is constant inside the box is that constant, at the stated size
    img = torch.zeros(2, 3, 80, 80)
    img[:, :, 30:70, 20:60] = 0.6
    crop = crop_mouth(img, lm)
    assert crop.shape == (2, 3, MOUTH_CROP_SIZE, MOUTH_CROP_SIZE)
    torch.testing.assert_close(crop, torch.full_like(crop, 0.6))
    # the crop follows the box: an edge between pixels 39 and 40 (x = 39.5) lands at
    # (39.5 - 25) / 30 * 96 = 46.4 output pixels, blurred by bilinear sampling over about one output pixel each side
    img2 = torch.zeros(1, 1, 80, 80)
    img2[..., 40:] = 1.0
    c = crop_mouth(img2, lm[:1])[0, 0]
    assert c[:, :44].max() < 0.01 and c[:, 49:].min() > 0.99
    assert float(c[0, 44:49].mean()) == pytest.approx(0.5, abs=0.15)


def test_mouth_region_ignores_changes_outside_the_mouth():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 256, (2, 3, 96, 96), generator=g, dtype=torch.uint8)
    preds = target.clone()
    preds[:, :, :20] = 0  # damage the top of the frame only, far from the mouth
    lm = _mouth_landmarks(2, cx=48, cy=70, w=24, h=10)
    frame_ssim, mouth_ssim = SSIMMetric(region="frame"), SSIMMetric(region="mouth")
    frame_ssim.update(preds, target)
    mouth_ssim.update(preds, target, mouth_landmarks=lm)
    assert float(mouth_ssim.compute()) == pytest.approx(1.0)
    assert float(frame_ssim.compute()) < 0.9
    psnr_mouth = PSNRMetric(region="mouth")
    damaged = preds.clone()
    damaged[:, :, 65:75, 40:56] = 255 - damaged[:, :, 65:75, 40:56]
    psnr_mouth.update(damaged, target, mouth_landmarks=lm)
    assert psnr_mouth.report()["psnr_mouth"] < 20
