"""The trained 68-point landmarker's network (LMD on rendered faces, where dlib's model does not apply).

:class:`LandmarkNet` is a small CNN that predicts 68 heat maps at a quarter of its input resolution and reads each point
off its map with a soft-argmax (integral regression, Sun et al., ECCV 2018: the expected position under the softmax of
the map, so sub-pixel positions are learnable). Frames of any size are resized to the network's input
(:func:`dreamhead_lit.models.layers.resize_images`) and its points scaled back (:func:`resize_points`); training
(:mod:`dreamhead_lit.lit.landmarker`) and scoring (:class:`dreamhead_lit.metrics.scorers.TrainedLandmarker`) both do so.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LandmarkNet", "resize_points"]


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LandmarkNet(nn.Module):
    """Frames ``(B, 3, S, S)`` in [0, 1] -> 68 points ``(B, 68, 2)`` in input pixels (pixel centres at integers).

    Encoder to 1/8 of the side, decoder back to 1/4 with a skip connection, 68 heat maps at 1/4; each point is the
    soft-argmax of its map (integral regression).
    """

    num_points = 68

    def __init__(self, *, input_size: int = 64, channels: tuple[int, int, int] | list[int] = (16, 32, 64),
                 blocks: int = 2) -> None:
        super().__init__()
        if input_size % 8:
            raise ValueError(f"landmarker input_size must be a multiple of 8, got {input_size}")
        c1, c2, c3 = channels
        self.input_size = input_size
        self.stem = nn.Sequential(_conv(3, c1, 2), _conv(c1, c1))  # 1/2
        self.down1 = nn.Sequential(_conv(c1, c2, 2), *[_ResBlock(c2) for _ in range(blocks)])  # 1/4
        self.down2 = nn.Sequential(_conv(c2, c3, 2), *[_ResBlock(c3) for _ in range(blocks)])  # 1/8
        self.fuse = nn.Sequential(_conv(c3 + c2, c2), _ResBlock(c2))  # 1/4
        self.head = nn.Conv2d(c2, self.num_points, 1)
        side = input_size // 4
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) * 4 - 0.5  # cell centres in input pixels
        self.register_buffer("centres", centres, persistent=False)

    def heatmaps(self, x: Tensor) -> Tensor:
        x = (x - 0.5) / 0.25
        f1 = self.down1(self.stem(x))  # (B, c2, S/4, S/4)
        f2 = self.down2(f1)  # (B, c3, S/8, S/8)
        up = F.interpolate(f2, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.fuse(torch.cat([up, f1], dim=1)))  # (B, 68, S/4, S/4) logits

    def forward(self, x: Tensor) -> Tensor:
        logits = self.heatmaps(x)
        b, n, h, w = logits.shape
        prob = logits.flatten(2).softmax(-1).view(b, n, h, w)
        px = (prob.sum(2) * self.centres[:w]).sum(-1)  # (B, 68): expected x
        py = (prob.sum(3) * self.centres[:h]).sum(-1)
        return torch.stack([px, py], dim=-1)  # (B, 68, 2)


def resize_points(points: Tensor | np.ndarray, src: tuple[int, int], dst: tuple[int, int]):
    """Pixel coordinates (centres at integers) from an image of ``src`` (H, W) to one of ``dst`` (H, W)."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    scale = points.new_tensor([sx, sy]) if isinstance(points, Tensor) else np.array([sx, sy])
    return (points + 0.5) * scale - 0.5
