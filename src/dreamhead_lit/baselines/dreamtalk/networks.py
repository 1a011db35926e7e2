"""DreamTalk's networks as plain ``nn.Module``s: the style encoder and the frame-wise denoiser (Ma et al., arXiv
2312.09767; the shapes follow the authors' inference code, ali-vilab/dreamtalk ``core/networks``).

- :class:`StyleEncoder`: a style reference clip's motion coefficients ``(B, S, C)`` -> a style code ``(B, D)``:
  a transformer encoder over the clip's frames, then attention pooling (a learned score per frame, softmax over the
  clip's real frames).
- :class:`FrameDenoiser`: one frame's noisy motion, its audio window, the diffusion step and the style code -> that
  frame's clean motion. The audio window's tokens are encoded by a transformer (attention *inside* the window), every
  token is fused with the frame's noisy motion and the step, and two separate decoders (upper face, lower face) each
  read the tokens with a query made from the style code. There is no attention or convolution across video frames:
  frames are a batch axis, and smoothness comes only from neighbouring frames' overlapping audio windows.
- :class:`DreamTalkNet`: both, plus the learned null style code of classifier-free guidance; the diffusion core calls
  ``net(x_t, t, audio=..., style=..., drop=...)`` on ``(B, T, C)`` groups of frames.

Substitutes (BASELINES.md): log-mel windows for wav2vec2 tokens (``token_steps`` feature steps per token: 2 gives 50
tokens a second, the rate of the authors' 11 wav2vec2 tokens), PCA landmark coefficients for 3DMM expression, one
query per face part (the authors' decoders, transformer decoders whose queries carry the style code, decode a query
per audio token and keep the centre one; their optional style-modulated "dynamic FC" decoder is not reproduced).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...models.layers import TimestepEmbedding, sinusoidal_embedding


def _encoder(dim: int, heads: int, layers: int, ff_mult: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, ff_mult * dim, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers)


class StyleEncoder(nn.Module):
    """Style clip coefficients ``(B, S, C)`` (+ ``mask (B, S)``, True on real frames) -> style code ``(B, dim)``."""

    def __init__(self, *, coeff_dim: int, dim: int, heads: int, layers: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.inp = nn.Linear(coeff_dim, dim)
        self.encoder = _encoder(dim, heads, layers, ff_mult, dropout)
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)  # attention pooling: one weight per frame
        self.out = nn.Linear(dim, dim)

    def forward(self, coeffs: Tensor, mask: Tensor | None = None) -> Tensor:
        b, s, _ = coeffs.shape
        mask = torch.ones(b, s, dtype=torch.bool, device=coeffs.device) if mask is None else mask
        positions = sinusoidal_embedding(torch.arange(s, device=coeffs.device), self.dim)  # (S, D): any clip length
        h = self.norm(self.encoder(self.inp(coeffs) + positions, src_key_padding_mask=~mask))  # (B, S, D)
        weights = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(-1)  # (B, S)
        return self.out((weights[..., None] * h).sum(1))  # (B, D)


class PartDecoder(nn.Module):
    """One face part's decoder: a query made from the style code attends to the frame's tokens (transformer decoder
    layers), then an MLP gives the part's coefficients."""

    def __init__(self, *, out_dim: int, dim: int, heads: int, layers: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        layer = nn.TransformerDecoderLayer(dim, heads, ff_mult * dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.part_query = nn.Parameter(torch.randn(dim) * 0.02)  # which part this decoder is
        self.norm = nn.LayerNorm(dim)
        self.head = _mlp([dim, dim // 2, out_dim])

    def forward(self, tokens: Tensor, style: Tensor) -> Tensor:
        query = (style + self.part_query)[:, None]  # (F, 1, D)
        return self.head(self.norm(self.decoder(query, tokens)[:, 0]))  # (F, out_dim)


class FrameDenoiser(nn.Module):
    """``x_t (F, C)``, ``t (F,)``, ``audio (F, K, A)``, ``style (F, D)`` -> ``(F, C)`` for F independent frames;
    C = ``lower_dim + upper_dim``, the lower face's coefficients first."""

    def __init__(self, *, lower_dim: int, upper_dim: int, audio_steps: int, audio_dim: int, dim: int, heads: int,
                 audio_layers: int, decoder_layers: int, ff_mult: int, dropout: float, token_steps: int) -> None:
        super().__init__()
        if audio_steps % token_steps:
            raise ValueError(f"token_steps={token_steps} must divide the {audio_steps} feature steps of a window")
        self.token_steps = token_steps
        tokens = audio_steps // token_steps
        self.audio_in = nn.Sequential(nn.LayerNorm(token_steps * audio_dim), nn.Linear(token_steps * audio_dim, dim))
        self.audio_pos = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.audio_encoder = _encoder(dim, heads, audio_layers, ff_mult, dropout)
        # every audio token with the frame's noisy motion (as the authors concatenate x_t to each token)
        self.fuse = _mlp([dim + lower_dim + upper_dim, dim, dim])
        self.time = TimestepEmbedding(dim)
        part = dict(dim=dim, heads=heads, layers=decoder_layers, ff_mult=ff_mult, dropout=dropout)
        self.lower = PartDecoder(out_dim=lower_dim, **part)
        self.upper = PartDecoder(out_dim=upper_dim, **part)

    def forward(self, x_t: Tensor, t: Tensor, audio: Tensor, style: Tensor) -> Tensor:
        f, k, a = audio.shape
        tokens = self.audio_in(audio.reshape(f, k // self.token_steps, self.token_steps * a)) + self.audio_pos
        tokens = self.audio_encoder(tokens)  # (F, K', D): attention within the frame's window only
        motion = x_t[:, None].expand(-1, tokens.shape[1], -1)  # (F, K', C)
        tokens = self.fuse(torch.cat([tokens, motion], -1)) + self.time(t)[:, None]
        return torch.cat([self.lower(tokens, style), self.upper(tokens, style)], -1)  # (F, C)


class DreamTalkNet(nn.Module):
    """The style encoder and the frame-wise denoiser, with the null style of classifier-free guidance.

    ``forward(x_t (B, T, C), t (B,), audio (B, T, K, A), style (B, D), drop (B,) bool) -> (B, T, C)``: the T frames
    of a group share the step and the style code and are denoised independently; ``drop`` replaces the style code by
    the learned null code (guidance drops the *style*, never the audio).
    """

    def __init__(self, *, lower_dim: int, upper_dim: int, audio_steps: int, audio_dim: int, dim: int = 128,
                 heads: int = 4, audio_layers: int = 2, decoder_layers: int = 2, style_layers: int = 2,
                 ff_mult: int = 4, dropout: float = 0.1, token_steps: int = 2) -> None:
        super().__init__()
        common = dict(dim=dim, heads=heads, ff_mult=ff_mult, dropout=dropout)
        self.style_encoder = StyleEncoder(coeff_dim=lower_dim + upper_dim, layers=style_layers, **common)
        self.denoiser = FrameDenoiser(lower_dim=lower_dim, upper_dim=upper_dim, audio_steps=audio_steps,
                                      audio_dim=audio_dim, audio_layers=audio_layers, decoder_layers=decoder_layers,
                                      token_steps=token_steps, **common)
        self.null_style = nn.Parameter(torch.zeros(dim))

    def encode_style(self, coeffs: Tensor, mask: Tensor | None = None) -> Tensor:
        """A style clip's coefficients ``(B, S, C)`` -> style code ``(B, D)``."""
        return self.style_encoder(coeffs, mask)

    def forward(self, x_t: Tensor, t: Tensor, *, audio: Tensor, style: Tensor, drop: Tensor) -> Tensor:
        b, n = x_t.shape[:2]
        style = torch.where(drop[:, None], self.null_style.expand_as(style), style)  # (B, D)
        out = self.denoiser(x_t.flatten(0, 1), t.repeat_interleave(n), audio.flatten(0, 1),
                            style.repeat_interleave(n, 0))  # frames as a batch axis: (B * T, C)
        return out.unflatten(0, (b, n))


__all__ = ["DreamTalkNet", "FrameDenoiser", "PartDecoder", "StyleEncoder"]
