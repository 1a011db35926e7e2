"""DAE-Talker (Du et al., arXiv 2303.17550, ACM MM 2023), re-implemented in this framework (a † row; BASELINES.md lists
what makes it DAE-Talker and what is substituted here).

- ``encoder.py``: the semantic encoder (frame -> latent vector);
- ``autoencoder.py``: the diffusion autoencoder (that encoder + the stage-2 UNet conditioned on the latent);
- ``lit.py``: its LightningModule on the shared diffusion core (end-to-end diffusion loss; ``decode`` from one shared
  noise image, ``encode_clip``);
- ``latents.py``: the per-clip latent cache written after training (``<run>/latents/``), speech2latent's targets;
- ``pose.py``: per-frame head pose from each frame's canonical->image affine, the pose predictor and projector;
- ``speech2latent.py``: the Conformer from audio features to the latent sequence, with pose modelling.
- ``bench.py``: the bench's ``daetalker`` (DAE-Talker†) and ``daetalker_reconstruction`` (its bound) method kinds.

Registered here: ``daetalker_autoencoder`` and ``daetalker_speech2latent`` (its ``autoencoder:`` section names the
autoencoder run whose latent cache it learns), configured by ``experiments/<name>/{demo,paper}.yaml``, and the recipe
``daetalker`` that trains both in order: ``python -m dreamhead_lit.train --method daetalker --size demo`` (``make
train-daetalker``). Protocols: the demo's speech2latent is the multi-speaker adaptation (``model.reference:
first_frame``); the paper's person-specific one is both parts on one identity (``data.identities=[id]``,
``model.reference=none``: ``make train-daetalker-person IDENTITY=synth000``). Ablation components:
``experiments/ablations/daetalker.yaml``; orderings: ``bench/reported/daetalker.yaml``.
"""
from ...registry import ModelSpec, Recipe, register, register_recipe, talking_head_data

_PACKAGE = __name__

register(ModelSpec(
    "daetalker_autoencoder", f"{_PACKAGE}.lit:DAEConfig", f"{_PACKAGE}.lit:DAETalkerAutoencoder",
    talking_head_data("l2i"), monitor="val/ssim_mouth", mode="max", export=f"{_PACKAGE}.latents:export_latents",
    description="DAE-Talker†: diffusion autoencoder (semantic encoder + latent-conditioned DDIM decoder)"))
register(ModelSpec(
    "daetalker_speech2latent", f"{_PACKAGE}.speech2latent:Speech2LatentConfig",
    f"{_PACKAGE}.speech2latent:Speech2LatentModule", f"{_PACKAGE}.speech2latent:speech2latent_datamodule",
    monitor="val/latent_err", mode="min", sections=("model", "loss", "optim"),  # autoencoder: read by the datamodule
    description="DAE-Talker†: speech2latent (Conformer: audio -> autoencoder latents, pose predictor + projector)"))
register_recipe(Recipe(
    "daetalker", parts=(("daetalker_autoencoder", ()), ("daetalker_speech2latent", ("autoencoder.run={run}",))),
    description="DAE-Talker†: the diffusion autoencoder, then speech2latent on its cached latents"))

from . import bench as _bench  # noqa: E402,F401  registers the bench's "daetalker" and "daetalker_reconstruction" kinds
