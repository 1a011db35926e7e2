"""StyleTalker's motion model (Min et al., arXiv 2208.10922; BASELINES.md, StyleTalker items 3-5) as plain modules:
every frame is an edit of the reference frame's code,

    w_t = w_ref + lip(audio_t, w_ref) + motion(z_t, w_ref)

- :class:`LipBranch`: audio windows + the reference code -> ``Δw_lip`` (the mouth, from audio alone);
- :class:`MotionPosterior`: the sequential VAE's encoder, ``q(z_t | m_t - m_ref, audio, past)`` from the codes of
  the *mouth-masked* frames ``m`` (so ``z`` can carry head pose and blinks but not the lips, which the lip branch
  explains: the disentanglement);
- :class:`MotionDecoder`: ``(z_t, w_ref) -> Δw_motion``;
- :class:`AutoregressivePrior`: ``p(z_t | z_<t, audio_<=t)``, a GRU over ``(z_{t-1}, audio_t)`` whose state is the
  context of a base Gaussian and a conditional normalizing flow (``flow.py``); with no couplings it is the plain
  Gaussian prior (the ablation);
- :func:`sample_prior`: ancestral sampling of ``z_1..z_T`` from the prior (audio-driven motion).

All codes are standardised with train statistics (the LightningModule's job); shapes are ``(B, T, ...)``.
Substitutes (the † row's footnote): the frame autoencoder's codes for StyleGAN's W space; the framework's log-mel
windows for the paper's audio features; GRUs and MLPs sized here (the paper gives few sizes).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ...config import ConfigError
from .flow import ConditionalFlow, gaussian_log_prob

PriorKind = Literal["flow", "gaussian"]
LOGSTD_MIN, LOGSTD_MAX = -7.0, 2.0  # posterior / base scales: e^-7 (a near-point mass) .. e^2 (far wider than N(0,1))


def _logstd(raw: Tensor) -> Tensor:
    return raw.clamp(LOGSTD_MIN, LOGSTD_MAX)


class AudioFrameEncoder(nn.Module):
    """Each frame's audio window ``(B, T, K, A)`` -> a feature ``(B, T, H)``, frame by frame (no look across frames:
    the window already holds ±``audio_context`` frames of audio, and the prior must not see later frames')."""

    def __init__(self, audio_steps: int, audio_dim: int, hidden: int) -> None:
        super().__init__()
        n = audio_steps * audio_dim
        self.net = nn.Sequential(nn.LayerNorm(n), nn.Linear(n, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, audio: Tensor) -> Tensor:
        return self.net(audio.flatten(2))  # (B, T, H)


class LipBranch(nn.Module):
    """``Δw_lip = lip(audio_t, w_ref)`` ``(B, T, D)``: its own audio encoder, the reference code added to every frame
    (how *this* mouth looks open), then a centred temporal convolution (``kernel`` frames: lips lead and lag the sound,
    coarticulation) and an MLP head. The head's last layer starts at zero: the model starts as ``w_ref`` held still."""

    def __init__(self, *, audio_steps: int, audio_dim: int, latent_dim: int, hidden: int, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"model.lip_kernel={kernel}: a centred temporal conv needs an odd kernel >= 1")
        self.audio = AudioFrameEncoder(audio_steps, audio_dim, hidden)
        self.reference = nn.Linear(latent_dim, hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, audio: Tensor, ref: Tensor) -> Tensor:
        h = self.audio(audio) + self.reference(ref)[:, None]  # (B, T, H)
        h = h + self.conv(torch.nn.functional.silu(h).transpose(1, 2)).transpose(1, 2)
        return self.head(h)  # (B, T, D)


class MotionPosterior(nn.Module):
    """``q(z_t | m_t - m_ref, audio, past)``: a unidirectional GRU over (the masked codes' motion relative to the
    reference's, the frame's audio feature) -> ``(mu_t, logstd_t)`` ``(B, T, Z)`` each. Relative codes: the latent
    should say how the head moved, not whose head it is (``w_ref`` gives that to the decoder). Audio in the posterior
    as the paper's conditional VAE has it (motion and speech are correlated: nods on stress)."""

    def __init__(self, *, latent_dim: int, audio_hidden: int, hidden: int, z_dim: int) -> None:
        super().__init__()
        self.motion_in = nn.Linear(latent_dim, hidden)
        self.gru = nn.GRU(hidden + audio_hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * z_dim)

    def forward(self, motion: Tensor, audio_feat: Tensor) -> tuple[Tensor, Tensor]:
        h, _ = self.gru(torch.cat([self.motion_in(motion), audio_feat], -1))  # (B, T, H)
        mu, raw = self.head(h).chunk(2, -1)
        return mu, _logstd(raw)


class MotionDecoder(nn.Module):
    """``Δw_motion = motion(z_t, w_ref)`` ``(B, T, D)``: an MLP per frame (the sequence lives in z). Last layer at
    zero, as the lip branch's."""

    def __init__(self, *, latent_dim: int, z_dim: int, hidden: int) -> None:
        super().__init__()
        self.z_in = nn.Linear(z_dim, hidden)
        self.reference = nn.Linear(latent_dim, hidden)
        self.net = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: Tensor, ref: Tensor) -> Tensor:
        return self.net(self.z_in(z) + self.reference(ref)[:, None])


class AutoregressivePrior(nn.Module):
    """``p(z_t | z_<t, audio_<=t)``: a GRU over ``(z_{t-1}, audio_t)`` (``z_0 = 0``) gives the context ``c_t``; a linear
    head the base Gaussian ``(mu_t, logstd_t)``; the flow (``flow_layers`` couplings conditioned on ``c_t``) maps it to
    the density of ``z_t``. ``kind="gaussian"``: the same context net and base, no couplings (the ablation)."""

    def __init__(self, *, z_dim: int, audio_hidden: int, hidden: int, kind: PriorKind = "flow", flow_layers: int = 4,
                 flow_hidden: int = 64, flow_scale_bound: float = 2.0) -> None:
        super().__init__()
        if kind not in ("flow", "gaussian"):
            raise ConfigError(f"model.prior={kind!r}: 'flow' (the paper's) or 'gaussian' (the ablation)")
        if kind == "flow" and flow_layers < 1:
            raise ConfigError(f"model.prior=flow with model.flow_layers={flow_layers}: a flow needs >= 1 coupling "
                              "(model.prior=gaussian is the prior without couplings)")
        self.kind, self.z_dim = kind, z_dim
        self.gru = nn.GRU(z_dim + audio_hidden, hidden, batch_first=True)
        self.base = nn.Linear(hidden, 2 * z_dim)
        self.flow = ConditionalFlow(z_dim, hidden, flow_layers if kind == "flow" else 0, hidden=flow_hidden,
                                    scale_bound=flow_scale_bound)

    def context(self, z_prev: Tensor, audio_feat: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(c (B, T, H), GRU state)`` from the previous latents ``(B, T, Z)`` and the frames' audio features."""
        return self.gru(torch.cat([z_prev, audio_feat], -1), state)

    def base_params(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = self.base(ctx).chunk(2, -1)
        return mu, _logstd(raw)

    def log_prob(self, z: Tensor, audio_feat: Tensor) -> Tensor:
        """``log p(z_t | z_<t, audio_<=t)`` ``(B, T)`` of a whole latent sequence (teacher forcing: one GRU pass)."""
        z_prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
        ctx, _ = self.context(z_prev, audio_feat)
        mu, logstd = self.base_params(ctx)
        return self.flow.log_prob(z, ctx, mu, logstd)


def sample_prior(prior: AutoregressivePrior, audio_feat: Tensor, noise: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Ancestral sampling ``z (B, T, Z)`` from the prior, frame by frame: ``eps_t = mu_t + temperature * sigma_t *
    noise_t`` under the base, ``z_t = flow^-1(eps_t; c_t)``, fed back as the next step's input. ``noise (B, T, Z)``
    standard normal, drawn by the caller (a seeded generator makes the motion reproducible)."""
    b, t, _ = audio_feat.shape
    if noise.shape != (b, t, prior.z_dim):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, ({b}, {t}, {prior.z_dim}) is needed")
    z_prev = audio_feat.new_zeros(b, 1, prior.z_dim)
    state, out = None, []
    for i in range(t):
        ctx, state = prior.context(z_prev, audio_feat[:, i:i + 1], state)  # (B, 1, H)
        mu, logstd = prior.base_params(ctx)
        z_prev = prior.flow.inverse(mu + temperature * torch.exp(logstd) * noise[:, i:i + 1], ctx)
        out.append(z_prev)
    return torch.cat(out, 1)


class StyleTalkerNet(nn.Module):
    """The whole motion model on standardised codes. :meth:`posterior` / :meth:`decode` / ``prior`` are its parts;
    :meth:`reconstruct` is the training pass (motion from the posterior)."""

    def __init__(self, *, audio_steps: int, audio_dim: int, latent_dim: int, hidden: int = 256, audio_hidden: int = 128,
                 z_dim: int = 16, lip_kernel: int = 5, prior: PriorKind = "flow", flow_layers: int = 4,
                 flow_hidden: int = 64, flow_scale_bound: float = 2.0) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.lip = LipBranch(audio_steps=audio_steps, audio_dim=audio_dim, latent_dim=latent_dim, hidden=hidden,
                             kernel=lip_kernel)
        # one audio encoder for the posterior and the prior: the condition of a conditional VAE is encoded once and
        # seen the same way by both sides of the KL (the lip branch keeps its own: its features serve the mouth)
        self.audio = AudioFrameEncoder(audio_steps, audio_dim, audio_hidden)
        self.posterior_net = MotionPosterior(latent_dim=latent_dim, audio_hidden=audio_hidden, hidden=hidden,
                                             z_dim=z_dim)
        self.motion = MotionDecoder(latent_dim=latent_dim, z_dim=z_dim, hidden=hidden)
        self.prior = AutoregressivePrior(z_dim=z_dim, audio_hidden=audio_hidden, hidden=hidden, kind=prior,
                                         flow_layers=flow_layers, flow_hidden=flow_hidden,
                                         flow_scale_bound=flow_scale_bound)

    def posterior(self, masked: Tensor, masked_ref: Tensor, audio_feat: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logstd)`` ``(B, T, Z)`` of ``q(z | masked codes (B, T, D), masked reference (B, D), audio)``."""
        return self.posterior_net(masked - masked_ref[:, None], audio_feat)

    def decode(self, audio: Tensor, ref: Tensor, z: Tensor) -> dict[str, Tensor]:
        """``w = w_ref + Δw_lip + Δw_motion`` ``(B, T, D)`` and its two parts, from audio windows, ``w_ref (B, D)``
        and ``z (B, T, Z)``."""
        lip, motion = self.lip(audio, ref), self.motion(z, ref)
        return {"codes": ref[:, None] + lip + motion, "lip": lip, "motion": motion}

    def kl(self, z: Tensor, mu: Tensor, logstd: Tensor, audio_feat: Tensor) -> Tensor:
        """One-sample Monte Carlo ``log q(z) - log p(z)`` ``(B, T)`` at the posterior sample ``z``: the flow prior has
        no closed-form KL, so the ELBO's KL term is estimated at the reparameterised sample, as in VAEs with flow
        priors."""
        return gaussian_log_prob(z, mu, logstd) - self.prior.log_prob(z, audio_feat)


__all__ = ["AudioFrameEncoder", "AutoregressivePrior", "LipBranch", "MotionDecoder", "MotionPosterior", "PriorKind",
           "StyleTalkerNet", "sample_prior"]
