"""DAE-Talker (Du et al., arXiv 2303.17550, ACM MM 2023), re-implemented in this framework (a † row; BASELINES.md lists
what makes it DAE-Talker and what is substituted here).

- ``encoder.py``: the semantic encoder (frame -> latent vector);
- ``autoencoder.py``: the diffusion autoencoder (that encoder + the stage-2 UNet conditioned on the latent);
- ``lit.py``: its LightningModule on the shared diffusion core (end-to-end diffusion loss; ``decode`` from one shared
  noise image, ``encode_clip``);
- ``latents.py``: the per-clip latent cache written after training (``<run>/latents/``), speech2latent's targets.

Registered here: ``daetalker_autoencoder``, configured by ``experiments/daetalker_autoencoder/{demo,paper}.yaml``
(``python -m dreamhead_lit.train daetalker_autoencoder --size demo``).
"""
from ...registry import ModelSpec, register, talking_head_data

_PACKAGE = __name__

register(ModelSpec(
    "daetalker_autoencoder", f"{_PACKAGE}.lit:DAEConfig", f"{_PACKAGE}.lit:DAETalkerAutoencoder",
    talking_head_data("l2i"), monitor="val/ssim_mouth", mode="max", export=f"{_PACKAGE}.latents:export_latents",
    description="DAE-Talker†: diffusion autoencoder (semantic encoder + latent-conditioned DDIM decoder)"))
