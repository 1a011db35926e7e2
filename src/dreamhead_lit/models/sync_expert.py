"""The trained sync expert's network (LSE-C / LSE-D when the official ``syncnet_v2.model`` is absent) and its input.

:class:`ReducedSyncNet` is the joonson SyncNet two-stream layout of :mod:`dreamhead_lit.models.syncnet` (audio: the
same 13x20 MFCC input, conv/pool sequence and final 5x4 convolution; video: a Conv3d with a 5x7x7 kernel consuming 5
frames, then 2-D convolutions) with every channel count multiplied by ``width`` and the video tail ending in a global
average pool instead of the 6x6 convolution, so it takes **small inputs**: the face crop at ``input_size`` (64 px =
SynthTalk's native size; upsampling 64 px faces to the official 224 px would cost 12x the compute for no information),
of which the lower half (``crop="lower_half"``, Wav2Lip's expert input) is used. Embeddings are L2-normalised.

:func:`sync_video_input` prepares its frames; it sits beside the network, as ``syncnet_mfcc`` sits beside SyncNet,
because the training windows (:mod:`dreamhead_lit.data.scorer_data`) and the scoring wrapper
(:class:`dreamhead_lit.metrics.scorers.TrainedSyncExpert`) must prepare frames identically.
"""
from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import resize_images
from .syncnet import MFCC_WINDOW_STEPS, SYNCNET_WINDOW_FRAMES, _conv_bn_relu_2d, _conv_bn_relu_3d

__all__ = ["ReducedSyncNet", "SyncCrop", "check_crop", "sync_video_input"]

SyncCrop = Literal["lower_half", "full"]


def check_crop(crop: str) -> SyncCrop:
    if crop not in get_args(SyncCrop):
        raise ValueError(f"model.crop must be one of {get_args(SyncCrop)}, got {crop!r}")
    return crop  # type: ignore[return-value]


def sync_video_input(frames: np.ndarray, *, input_size: int, crop: SyncCrop) -> Tensor:
    """The expert's video input: face crops ``(T, H, W, 3)`` uint8 RGB -> ``(T, 3, h, w)`` float in [-1, 1].

    Resized to ``input_size`` (bilinear, anti-aliased; nothing happens at the native size) and, for
    ``crop="lower_half"``, cut to the lower half (rows ``input_size // 2`` onward). Training and evaluation both use it.
    """
    x = torch.from_numpy(np.array(frames, dtype=np.uint8))  # a copy: frames may be read-only
    x = x.permute(0, 3, 1, 2).float() / 255.0
    x = resize_images(x, input_size)
    if crop == "lower_half":
        x = x[:, :, input_size // 2 :]
    return x * 2 - 1


def _audio_stream(width: float, embed_dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    c = [max(8, round(n * width)) for n in (64, 192, 384, 256, 256, 512)]
    cnn = nn.Sequential(  # the joonson audio CNN with widths scaled: (B, 1, 13, 20) -> (B, c5, 1, 1)
        *_conv_bn_relu_2d(1, c[0], (3, 3), (1, 1)),
        nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
        *_conv_bn_relu_2d(c[0], c[1], (3, 3), (1, 1)),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),  # 13x20 -> 11x9
        *_conv_bn_relu_2d(c[1], c[2], (3, 3), (1, 1)),
        *_conv_bn_relu_2d(c[2], c[3], (3, 3), (1, 1)),
        *_conv_bn_relu_2d(c[3], c[4], (3, 3), (1, 1)),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),  # -> 5x4
        nn.Conv2d(c[4], c[5], kernel_size=(5, 4), padding=0),  # -> 1x1
        nn.BatchNorm2d(c[5]),
        nn.ReLU(),
    )
    return cnn, _head(c[5], embed_dim)


def _video_stream(width: float, embed_dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    c = [max(8, round(n * width)) for n in (96, 256, 256, 256, 256, 512)]
    cnn = nn.Sequential(  # (B, 3, 5, h, w) -> (B, c5, 1, 1, 1); strides suit 32..224 px inputs
        *_conv_bn_relu_3d(3, c[0], (5, 7, 7), (1, 2, 2), (0, 3, 3)),  # the 5 frames are consumed here
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        *_conv_bn_relu_3d(c[0], c[1], (1, 5, 5), (1, 1, 1), (0, 2, 2)),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        *_conv_bn_relu_3d(c[1], c[2], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        *_conv_bn_relu_3d(c[2], c[3], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        *_conv_bn_relu_3d(c[3], c[4], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        *_conv_bn_relu_3d(c[4], c[5], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        nn.AdaptiveAvgPool3d(1),  # the official 6x6 convolution needs 224 px input; pooling takes any size
    )
    return cnn, _head(c[5], embed_dim)


def _head(cin: int, embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cin), nn.BatchNorm1d(cin), nn.ReLU(), nn.Linear(cin, embed_dim))


class ReducedSyncNet(nn.Module):
    """The joonson SyncNet layout at ``width`` x its channels, for small inputs; unit-length embeddings.

    ``forward_aud(mfcc (B, 1, 13, 20))`` and ``forward_lip(video (B, 3, 5, h, w))`` return ``(B, embed_dim)`` with
    L2 norm 1 (the interface :class:`~dreamhead_lit.metrics.sync.SyncNetExpert` calls).
    """

    def __init__(self, *, width: float = 0.25, embed_dim: int = 128) -> None:
        super().__init__()
        self.width, self.embed_dim = float(width), int(embed_dim)
        self.netcnnaud, self.netfcaud = _audio_stream(width, embed_dim)
        self.netcnnlip, self.netfclip = _video_stream(width, embed_dim)

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        if mfcc.ndim != 4 or mfcc.shape[1:] != (1, 13, MFCC_WINDOW_STEPS):
            raise ValueError(f"audio input must be (B, 1, 13, 20) MFCC windows, got {tuple(mfcc.shape)}")
        return F.normalize(self.netfcaud(self.netcnnaud(mfcc).flatten(1)), dim=-1)

    def forward_lip(self, video: Tensor) -> Tensor:
        if video.ndim != 5 or video.shape[1:3] != (3, SYNCNET_WINDOW_FRAMES):
            raise ValueError(f"video input must be (B, 3, 5, h, w) frame windows, got {tuple(video.shape)}")
        return F.normalize(self.netfclip(self.netcnnlip(video).flatten(1)), dim=-1)

    def forward(self, video: Tensor, mfcc: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_lip(video), self.forward_aud(mfcc)
