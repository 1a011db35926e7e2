"""StyleTalker (Min et al., arXiv 2208.10922; no public code), re-implemented in this framework (a † row;
BASELINES.md lists what makes it StyleTalker and what is substituted here). Not a diffusion model: the video is a
sequence of edits of the reference image's latent code, ``w_t = w_ref + lip(audio_t, w_ref) + motion(z_t, w_ref)``.

- ``autoencoder.py``: the image side's stand-in, a frame autoencoder trained on the dataset (encoder -> latent code,
  decoder -> frame; L1 + SSIM, LPIPS only where its weights exist) for the paper's pretrained style-based generator
  and its inversion encoder; after training it caches every frame's code (``latents/``) and the code of every frame
  with its mouth masked (``motion_latents/``), the motion encoder's input;
- ``masking.py``: the mouth mask;
- ``sync_discriminator.py``: the contrastive lip-sync discriminator (audio windows vs lower faces decoded by the
  autoencoder), a training loss of the motion model: a separate run from the bench's sync scorer, which it refuses;
- ``flow.py``: conditional affine-coupling normalizing flow (written here);
- ``motion.py`` + ``lit.py``: the lip branch, the conditional sequential VAE (motion latent z_t from mouth-masked
  codes, disentangled from the lips) and its autoregressive flow prior, as the ``styletalker`` LightningModule;
- ``bench.py``: the bench's ``styletalker`` kind (motion sampled from audio, or taken from the clip).

Registered here: ``styletalker_autoencoder``, ``styletalker_sync`` and ``styletalker`` (configured by
``experiments/<name>/{demo,paper}.yaml``), and the recipe ``styletalker`` that trains them in order: ``python -m
dreamhead_lit.train --method styletalker --size demo`` (``make train-styletalker``).
"""
from ...registry import ModelSpec, Recipe, register, register_recipe, talking_head_data

_PACKAGE = __name__

register(ModelSpec(
    "styletalker_autoencoder", f"{_PACKAGE}.autoencoder:FrameAEConfig", f"{_PACKAGE}.autoencoder:FrameAutoencoder",
    talking_head_data("l2i"), monitor="val/ssim_mouth", mode="max", export=f"{_PACKAGE}.autoencoder:export_codes",
    description="StyleTalker†: frame autoencoder (stand-in for the pretrained style-based generator + inversion)"))
register(ModelSpec(
    "styletalker_sync", f"{_PACKAGE}.sync_discriminator:SyncDiscriminatorConfig",
    f"{_PACKAGE}.sync_discriminator:SyncDiscriminator", f"{_PACKAGE}.sync_discriminator:sync_datamodule",
    monitor="val/sync_acc", mode="max",
    description="StyleTalker†: contrastive lip-sync discriminator (audio vs decoded lower faces), a training loss"))
register(ModelSpec(
    "styletalker", f"{_PACKAGE}.lit:StyleTalkerConfig", f"{_PACKAGE}.lit:StyleTalker",
    f"{_PACKAGE}.lit:styletalker_datamodule", monitor="val/latent_err", mode="min",
    description="StyleTalker†: lip branch + conditional sequential VAE with an autoregressive flow prior"))
register_recipe(Recipe(
    "styletalker", parts=(("styletalker_autoencoder", ()),
                          ("styletalker_sync", ("autoencoder.run={run}",)),
                          ("styletalker", ("autoencoder.run={run}", "sync_discriminator.run={run}"))),
    description="StyleTalker†: the frame autoencoder, its lip-sync discriminator, then the motion model"))

from . import bench as _bench  # noqa: E402,F401  registers the bench's "styletalker" and "styletalker_reconstruction"
