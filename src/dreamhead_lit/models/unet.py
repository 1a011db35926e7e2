"""The stage-2 landmark-to-image (L2I) denoiser: an ADM-style UNet with its conditions as input channels.

Architecture (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", App. B, as in guided-diffusion's ``unet.py``):
residual blocks of GroupNorm -> SiLU -> 3x3 conv, with the diffusion step injected by scale-shift normalisation
(FiLM: ``GroupNorm(h) * (1 + scale) + shift``, their "AdaGN"), multi-head self-attention at the configured low
feature resolutions, per-level channel multipliers, dropout before each block's second conv, and zero-initialised
last layers (each residual branch and the output conv), so the untrained network predicts 0 and every block starts
as the identity.

Image conditions are concatenated to the noisy input as channels, all at the diffusion resolution; the audio
condition is embedded instead. Which ones exist is fixed at construction:

==========================  =====================================================  =========================
condition                   what it is                                             present when
==========================  =====================================================  =========================
``landmarks``               the target frame's landmark image (one channel per     ``condition="landmarks"``
                            face region), the *motion* to render                   (the default: DreamHead)
``audio``                   the target frame's audio window (K log-mel steps of    ``condition="audio"``
                            the frame and its context frames, as stage 1 sees it)
``ref``, ``ref_landmarks``  a frame of the same identity and its landmark image:   ``use_reference``
                            the *appearance* and how it relates to landmarks
``masked``, ``mask``        the target frame with its lower face hidden, and the   ``mode="dubbing"``
                            mask (DreamHead's inputs: "a masked target frame, a
                            reference image and its landmark image")
==========================  =====================================================  =========================

``use_reference=False`` is the ``reference_image`` ablation: stage 2 without the reference appearance (in
reference mode the network then has only the landmark image and must invent the appearance; in dubbing mode the
masked target still shows the upper face).

``condition="audio"`` is the ``landmark_hierarchy`` ablation: one diffusion from audio to frames, with no landmark
intermediate, at the same UNet and budget as stage 2. A small MLP (the mapping unit stage 1 applies to each frame's
audio window, ``layers.audio_window_mlp``) embeds the window into a vector that is added to the timestep embedding,
as ADM adds its class embedding, so every residual block is conditioned on the audio through AdaGN.

Classifier-free guidance (Ho & Salimans 2022) drops the *target condition* (the ``drop`` rows) and keeps everything
else. The unconditional branch is then "this person, with some plausible expression", and guidance
``uncond + s * (cond - uncond)`` moves the sample towards what the target condition adds to that: the mouth shape and
expression. A dropped landmark image is replaced with zeros, a natural null: a real landmark image always has a face
in it, and zeros need no parameter whose shape would depend on the resolution. A dropped audio window is replaced by
a learned null embedding (as stage 1 does), since an all-zero log-mel window is a real sound, not "no audio".

``condition="latent"`` (not a stage-2 option; the DAE-Talker baseline's decoder) takes a free vector ``latent``
(B, latent_dim), embedded by a small MLP and added to the timestep embedding exactly as the audio window is.
"""
from __future__ import annotations

from typing import Literal, Sequence, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion import mask_condition
from .layers import audio_window_mlp, sinusoidal_embedding

L2IMode = Literal["reference", "dubbing"]
L2ICondition = Literal["landmarks", "audio"]  # what drives the target frame: its landmark image, or its audio window
# what the UNet itself accepts: stage 2's two, and a free latent vector (the DAE-Talker baseline's diffusion autoencoder
# decoder, conditioned on its semantic encoder's latent; not a stage-2 option)
UNetCondition = Literal["landmarks", "audio", "latent"]


def _groups(channels: int, groups: int) -> int:
    """The largest group count <= ``groups`` that divides ``channels`` (GroupNorm needs a divisor)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """ADM residual block: GN-SiLU-conv, then AdaGN scale-shift from the step embedding, SiLU, dropout, conv.
    ``cond_dim``: DiffAE's AdaGN (Preechakul et al. 2022, eq. 6), a second, multiplicative modulation by a
    condition embedding ``cond`` (B, cond_dim): ``h = (1 + z_s) * (GN(h) (1 + t_s) + t_b)`` (``1 +``: starts as the
    identity)."""

    def __init__(self, in_ch: int, out_ch: int, *, emb_dim: int, dropout: float, groups: int,
                 cond_dim: int | None = None):
        super().__init__()
        self.cond = nn.Linear(cond_dim, out_ch) if cond_dim else None
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))  # the block starts as the identity
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift  # ADM's AdaGN (use_scale_shift_norm)
        if self.cond is not None:
            h = h * (1 + self.cond(F.silu(cond))[:, :, None, None])  # DiffAE: the latent scales every channel
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, residual, zero-initialised projection."""

    def __init__(self, channels: int, *, head_channels: int, groups: int):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"attention: {channels} channels do not split into heads of {head_channels} channels")
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        # (B, heads, HW, d) for scaled_dot_product_attention
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One UNet stage: a residual block optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None):
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: Tensor, emb: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.res(x, emb, cond)
        return self.attn(x) if self.attn is not None else x


class L2IUNet(nn.Module):
    """ADM-style UNet denoiser for stage 2 (see the module docstring for the conditions and guidance).

    forward(x_t (B, C, H, W), t (B,), *, landmarks (B, L, H, W) | None, audio (B, K, D) | None,
            ref (B, C, H, W) | None, ref_landmarks (B, L, H, W) | None, masked (B, C, H, W) | None,
            mask (B, 1, H, W) | None, drop (B,) bool | None, latent (B, latent_dim) | None)
            -> (B, C, H, W) in the diffusion target's parametrisation.

    Args:
        mode: ``"reference"`` (target condition + reference) or ``"dubbing"`` (also the masked target frame and its
            mask).
        use_reference: give the network the reference frame and its landmark image (False: the ablation).
        condition: ``"landmarks"`` (the target landmark image, input channels) or ``"audio"`` (the target frame's
            audio window, embedded and added to the timestep embedding; the ``landmark_hierarchy`` ablation).
            ``"latent"``: a free vector, embedded like the audio (the DAE-Talker baseline's decoder).
        audio_steps, audio_dim: K and D of an audio window (``condition="audio"`` only).
        latent_dim: size of the ``latent`` vector (``condition="latent"`` only).
        image_channels: C, channels of ``x_t``, ``ref`` and ``masked`` (3 for pixels, the latent channels for LDM).
        landmark_channels: L, channels of a landmark image (one per face region).
        resolution: H = W of the input (the latent side in latent diffusion).
        base_channels: channels at the first level.
        channel_mult: channel multiplier per level; the map halves between levels (len - 1 times).
        num_res_blocks: residual blocks per level on the way down (one more on the way up, as in ADM).
        attention_resolutions: feature-map sides inside the UNet (after patching; e.g. 16, 8) at which blocks get
            self-attention; the middle block always has it.
        head_channels: channels per attention head (ADM's ``num_head_channels``).
        dropout: dropout inside residual blocks.
        norm_groups: GroupNorm groups (reduced to a divisor of the channel count where needed).
        patch_size: 1 is ADM. p > 1 folds p x p pixel patches into channels before the first conv and unfolds
            them after the last (space-to-depth, as in Hoogeboom et al. 2023's "simple diffusion"): the UNet runs
            at resolution / p, which is where a CPU-sized model spends its time.
        channels_last: run the convolutions in NHWC memory layout (1.5-2x faster on CPU with oneDNN; also the
            fast layout for tensor cores).
    """

    def __init__(
        self,
        *,
        mode: L2IMode = "reference",
        use_reference: bool = True,
        condition: UNetCondition = "landmarks",
        audio_steps: int | None = None,
        audio_dim: int | None = None,
        latent_dim: int | None = None,
        latent_conditioning: Literal["add", "adagn"] = "add",
        image_channels: int = 3,
        landmark_channels: int = 3,
        resolution: int = 64,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16, 8),
        head_channels: int = 32,
        dropout: float = 0.0,
        norm_groups: int = 32,
        patch_size: int = 1,
        channels_last: bool = False,
    ):
        super().__init__()
        if mode not in get_args(L2IMode):
            raise ValueError(f"L2IUNet: mode must be one of {get_args(L2IMode)}, got {mode!r}")
        if condition not in get_args(UNetCondition):
            raise ValueError(f"L2IUNet: condition must be one of {get_args(UNetCondition)}, got {condition!r}")
        if condition == "audio" and not (audio_steps and audio_dim):
            raise ValueError(f"L2IUNet: condition='audio' needs the window shape, got audio_steps={audio_steps}, "
                             f"audio_dim={audio_dim}")
        if condition == "latent" and not latent_dim:
            raise ValueError(f"L2IUNet: condition='latent' needs latent_dim, got {latent_dim}")
        if latent_conditioning not in ("add", "adagn"):
            raise ValueError(f"L2IUNet: latent_conditioning must be 'add' or 'adagn', got {latent_conditioning!r}")
        levels = len(channel_mult)
        if patch_size < 1 or resolution % (patch_size * 2 ** (levels - 1)):
            raise ValueError(f"L2IUNet: resolution {resolution} cannot be cut into {patch_size}x{patch_size} patches "
                             f"and then halved {levels - 1} times (channel_mult has {levels} levels)")
        sides = [resolution // patch_size // 2**i for i in range(levels)]
        unknown = sorted(set(attention_resolutions) - set(sides))
        if unknown:
            raise ValueError(f"L2IUNet: attention_resolutions {unknown} are not feature-map sides of this UNet "
                             f"({sides} at input resolution {resolution})")
        self.mode: L2IMode = mode
        self.use_reference = use_reference
        self.condition: UNetCondition = condition
        self.audio_shape = (audio_steps, audio_dim) if condition == "audio" else None
        self.image_channels = image_channels
        self.landmark_channels = landmark_channels
        self.resolution = resolution
        self.patch_size = patch_size
        self.channels_last = channels_last
        self.conditions = self.condition_names(mode, use_reference, condition)
        self.image_conditions = tuple(c for c in self.conditions if c not in ("audio", "latent"))  # input channels
        in_ch = self.input_channels(mode=mode, use_reference=use_reference, image_channels=image_channels,
                                    landmark_channels=landmark_channels, condition=condition)

        emb_dim = 4 * base_channels  # ADM: time_embed_dim = 4 * model_channels
        self.base_channels = base_channels
        self.time_embed = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.audio_embed = self.null_audio = None  # landmark models have neither (their checkpoints stay as they were)
        if condition == "audio":  # ADM's class embedding, with the audio window as the class
            self.audio_embed = audio_window_mlp(audio_steps, audio_dim, emb_dim)
            self.null_audio = nn.Parameter(torch.zeros(emb_dim))  # the dropped audio of classifier-free guidance
        self.latent_embed = self.null_latent = None  # only latent-conditioned UNets (the parameters above stay as they were)
        if condition == "latent":  # the same "class embedding" slot, for a free vector
            self.latent_embed = nn.Sequential(nn.Linear(latent_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.null_latent = nn.Parameter(torch.zeros(emb_dim))
        # "add": the latent's embedding joins the step embedding (as the audio's); "adagn": DiffAE's, a separate
        # multiplicative modulation of every residual block (ResBlock's cond_dim)
        self.latent_adagn = condition == "latent" and latent_conditioning == "adagn"
        cond_dim = emb_dim if self.latent_adagn else None
        self.input_conv = nn.Conv2d(in_ch * patch_size**2, base_channels, 3, padding=1)

        def level(cin: int, cout: int, side: int) -> _Level:
            attn = AttentionBlock(cout, head_channels=min(head_channels, cout), groups=norm_groups) \
                if side in attention_resolutions else None
            return _Level(ResBlock(cin, cout, emb_dim=emb_dim, dropout=dropout, groups=norm_groups, cond_dim=cond_dim),
                          attn)

        self.down = nn.ModuleList()
        skips = [base_channels]
        ch = base_channels
        for i, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(level(ch, base_channels * mult, sides[i]))
                ch = base_channels * mult
                skips.append(ch)
            if i < levels - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        self.middle = nn.ModuleList([
            _Level(ResBlock(ch, ch, emb_dim=emb_dim, dropout=dropout, groups=norm_groups, cond_dim=cond_dim),
                   AttentionBlock(ch, head_channels=min(head_channels, ch), groups=norm_groups)),
            _Level(ResBlock(ch, ch, emb_dim=emb_dim, dropout=dropout, groups=norm_groups, cond_dim=cond_dim), None),
        ])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            for j in range(num_res_blocks + 1):
                self.up.append(level(ch + skips.pop(), base_channels * mult, sides[i]))
                ch = base_channels * mult
                if i > 0 and j == num_res_blocks:
                    self.up.append(Upsample(ch))
        self.out_norm = nn.GroupNorm(_groups(ch, norm_groups), ch)
        # ADM: zero-initialised output
        self.out_conv = _zero(nn.Conv2d(ch, image_channels * patch_size**2, 3, padding=1))

    # -- the conditioning contract ----------------------------------------------------------------------------

    @staticmethod
    def condition_names(mode: L2IMode, use_reference: bool, condition: UNetCondition = "landmarks") -> tuple[str, ...]:
        """The keyword conditions a network of this mode takes, the target condition first, then the image
        conditions in the order they are concatenated."""
        names = [condition]
        if use_reference:
            names += ["ref", "ref_landmarks"]
        if mode == "dubbing":
            names += ["masked", "mask"]
        return tuple(names)

    @staticmethod
    def input_channels(*, mode: L2IMode, use_reference: bool, image_channels: int = 3,
                       landmark_channels: int = 3, condition: UNetCondition = "landmarks") -> int:
        """Channels of the first conv's input: x_t (C) [+ landmarks (L)] [+ ref (C) + ref_landmarks (L)]
        [+ masked (C) + mask (1)]; the audio (or latent) is not an input channel."""
        c, lc = image_channels, landmark_channels
        target = lc if condition == "landmarks" else 0
        return c + target + (c + lc if use_reference else 0) + (c + 1 if mode == "dubbing" else 0)

    def _condition_channels(self, name: str) -> int:
        return {"landmarks": self.landmark_channels, "ref": self.image_channels,
                "ref_landmarks": self.landmark_channels, "masked": self.image_channels, "mask": 1}[name]

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        *,
        landmarks: Tensor | None = None,
        audio: Tensor | None = None,
        ref: Tensor | None = None,
        ref_landmarks: Tensor | None = None,
        masked: Tensor | None = None,
        mask: Tensor | None = None,
        drop: Tensor | None = None,
        latent: Tensor | None = None,
    ) -> Tensor:
        given = {"landmarks": landmarks, "audio": audio, "ref": ref, "ref_landmarks": ref_landmarks, "masked": masked,
                 "mask": mask, "latent": latent}
        b, _, h, w = x_t.shape
        if (h, w) != (self.resolution, self.resolution):
            raise ValueError(f"L2IUNet was built for {self.resolution}x{self.resolution} inputs, got {h}x{w}")
        extra = sorted(k for k, v in given.items() if v is not None and k not in self.conditions)
        missing = [k for k in self.conditions if given[k] is None]
        if extra or missing:
            raise ValueError(f"L2IUNet(mode={self.mode!r}, use_reference={self.use_reference}, "
                             f"condition={self.condition!r}) takes conditions {list(self.conditions)}; "
                             f"missing {missing}, not accepted {extra}")
        if drop is not None and landmarks is not None:  # classifier-free guidance: the target landmark image is dropped
            given["landmarks"] = torch.where(drop[:, None, None, None], torch.zeros_like(landmarks), landmarks)
        parts = [x_t]
        for name in self.image_conditions:
            c = given[name]
            if c.shape != (b, self._condition_channels(name), h, w):
                raise ValueError(f"L2IUNet: condition {name!r} has shape {tuple(c.shape)}, expected "
                                 f"{(b, self._condition_channels(name), h, w)}")
            parts.append(c.to(x_t.dtype))
        x = torch.cat(parts, dim=1)  # (B, in_channels, H, W)
        if self.patch_size > 1:  # space-to-depth: (B, in_channels * p^2, H / p, W / p)
            x = F.pixel_unshuffle(x, self.patch_size)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        emb = self.time_embed(sinusoidal_embedding(t, self.base_channels))  # (B, 4 * base)
        if self.audio_embed is not None:
            if audio.shape != (b, *self.audio_shape):
                raise ValueError(f"L2IUNet: condition 'audio' has shape {tuple(audio.shape)}, expected "
                                 f"{(b, *self.audio_shape)} (batch, window steps, feature bins)")
            a = self.audio_embed(audio.flatten(1).to(x_t.dtype))  # (B, 4 * base)
            if drop is not None:  # classifier-free guidance: the audio is the dropped condition
                a = mask_condition(a, drop, null=self.null_audio)
            emb = emb + a  # ADM: emb = time_embed(t) + label_emb(y)
        cond = None  # DiffAE's multiplicative condition (latent_conditioning="adagn")
        if self.latent_embed is not None:
            if latent.shape != (b, self.latent_embed[0].in_features):
                raise ValueError(f"L2IUNet: condition 'latent' has shape {tuple(latent.shape)}, expected "
                                 f"{(b, self.latent_embed[0].in_features)}")
            z = self.latent_embed(latent.to(x_t.dtype))  # (B, 4 * base)
            if drop is not None:
                z = mask_condition(z, drop, null=self.null_latent)
            if self.latent_adagn:
                cond = z
            else:
                emb = emb + z
        h_ = self.input_conv(x)  # (B, base, H, W)
        skips = [h_]
        for block in self.down:
            h_ = block(h_, emb, cond) if isinstance(block, _Level) else block(h_)
            skips.append(h_)
        for block in self.middle:
            h_ = block(h_, emb, cond)
        for block in self.up:
            if isinstance(block, _Level):
                h_ = block(torch.cat([h_, skips.pop()], dim=1), emb, cond)
            else:
                h_ = block(h_)
        out = self.out_conv(F.silu(self.out_norm(h_)))  # (B, C * p^2, H / p, W / p)
        if self.patch_size > 1:
            out = F.pixel_shuffle(out, self.patch_size)
        return out.contiguous()  # (B, C, H, W)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["L2ICondition", "L2IMode", "L2IUNet", "UNetCondition", "ResBlock", "AttentionBlock", "count_parameters"]
