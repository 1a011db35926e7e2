"""The stage-1 audio-to-landmark denoiser: a sequence transformer over windows of landmark displacements.

DreamHead's A2L network is described as stacked *temporal units* and *mapping units* processing audio in temporal
chunks; the paper gives no layer detail, so this is our reading of it:

- a **mapping unit** maps each frame's audio window to the motion space (a per-frame MLP) and, inside every
  block, mixes each frame's features with an MLP;
- a **temporal unit** relates frames to each other: self-attention over the frames within ``attention_window`` of
  each frame (None: the whole window) plus a depthwise temporal convolution (local smoothness prior). The configs use
  +-1 frame and 3 taps: a whole-window reach was as smooth but less accurate (issue 19, README "Ablations"). With
  ``temporal_units=False`` attention is restricted to the frame itself and the convolution is removed: the same
  parameter budget, no temporal mixing. That is half of the ``temporal_smooth`` ablation; the other half is the
  velocity/acceleration loss in the LightningModule.

Global conditions (diffusion step, the speaker's reference landmarks, an optional emotion code) modulate every
block through adaptive LayerNorm (shift, scale, gate; DiT's adaLN-Zero, Peebles & Xie 2023). A *prefix* channel
carries known leading frames (the overlap with the previous window) so long audio is generated as windows that
continue each other.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import TimestepEmbedding, audio_window_mlp, sinusoidal_embedding


class _AdaLN(nn.Module):
    """LayerNorm whose shift/scale/gate come from the global condition; zero-initialised so blocks start as identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.mod = nn.Linear(dim, 3 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, h: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        shift, scale, gate = self.mod(cond)[:, None].chunk(3, -1)  # (B, 1, D) each
        return self.norm(h) * (1 + scale) + shift, gate


class A2LBlock(nn.Module):
    """Temporal unit (attention across frames + depthwise temporal conv) then mapping unit (per-frame MLP)."""

    def __init__(self, dim: int, *, heads: int, ff_mult: int, dropout: float, temporal_units: bool, kernel: int,
                 window: int | None = None):
        super().__init__()
        self.temporal_units = temporal_units
        self.window = window  # attention reach in frames (None: every frame of the window)
        self.norm_attn = _AdaLN(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim) if temporal_units else None
        self.norm_ff = _AdaLN(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim)
        )

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        # h: (B, T, D); cond: (B, D)
        x, gate = self.norm_attn(h, cond)
        mask = None
        reach = 0 if not self.temporal_units else self.window  # 0: each frame sees only itself, no temporal mixing
        if reach is not None:
            steps = torch.arange(h.shape[1], device=h.device)
            mask = (steps[:, None] - steps[None, :]).abs() > reach  # True = not attended
        a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        if self.conv is not None:
            a = a + self.conv(x.transpose(1, 2)).transpose(1, 2)
        h = h + gate * a
        x, gate = self.norm_ff(h, cond)
        return h + gate * self.ff(x)


class A2LDenoiser(nn.Module):
    """Denoise a window of landmark displacements given audio, reference landmarks and an emotion code.

    forward(x_t (B, T, P), t (B,), audio (B, T, K, F), ref (B, P), emotion (B,) long, prefix (B, T, P),
            prefix_mask (B, T, 1), drop (B,) bool) -> (B, T, P) in the diffusion target's parametrisation.
    P = 2 × number of landmarks. ``drop`` replaces the audio and emotion conditions with learned null embeddings
    (classifier-free guidance); the reference landmarks are always given.
    """

    def __init__(
        self,
        *,
        num_points: int,
        audio_steps: int,
        audio_dim: int,
        dim: int = 256,
        depth: int = 4,
        heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
        temporal_units: bool = True,
        temporal_kernel: int = 5,
        attention_window: int | None = None,
        num_emotions: int = 8,
        use_emotion: bool = True,
    ):
        super().__init__()
        p = 2 * num_points
        self.num_points = num_points
        self.dim = dim
        self.use_emotion = use_emotion
        # mapping unit for audio: each frame's (K, F) window -> D
        self.audio_map = audio_window_mlp(audio_steps, audio_dim, dim)
        self.null_audio = nn.Parameter(torch.zeros(dim))
        self.x_in = nn.Linear(2 * p + 1, dim)  # noisy motion, prefix values, prefix mask
        self.ref_in = nn.Sequential(nn.Linear(p, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time = TimestepEmbedding(dim)
        self.emotion = nn.Embedding(num_emotions + 1, dim)  # last row: null / unknown
        self.blocks = nn.ModuleList(
            A2LBlock(dim, heads=heads, ff_mult=ff_mult, dropout=dropout, temporal_units=temporal_units,
                     kernel=temporal_kernel, window=attention_window)
            for _ in range(depth)
        )
        self.out_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, p)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        *,
        audio: Tensor,
        ref: Tensor,
        emotion: Tensor,
        prefix: Tensor,
        prefix_mask: Tensor,
        drop: Tensor,
    ) -> Tensor:
        b, n, _ = x_t.shape
        a = self.audio_map(audio.flatten(2))  # (B, T, D)
        a = torch.where(drop[:, None, None], self.null_audio.expand_as(a), a)
        positions = sinusoidal_embedding(torch.arange(n, device=x_t.device), self.dim)  # (T, D)
        h = self.x_in(torch.cat([x_t, prefix * prefix_mask, prefix_mask], -1)) + a + positions  # (B, T, D)
        null_emotion = torch.full_like(emotion, self.emotion.num_embeddings - 1)
        emo = torch.where(drop | ~torch.tensor(self.use_emotion, device=x_t.device), null_emotion, emotion)
        cond = self.time(t) + self.ref_in(ref) + self.emotion(emo)  # (B, D)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(self.out_norm(h))  # (B, T, P)
