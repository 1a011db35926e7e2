"""DreamTalk (Ma et al., arXiv 2312.09767), re-implemented in this framework (a † row; BASELINES.md lists what makes
it DreamTalk and what is substituted here).

- ``motion.py``: the motion space, a PCA basis of canonical landmark displacements (upper and lower face) standing
  in for 3DMM expression;
- ``networks.py``: the style encoder and the frame-wise denoiser (plain ``nn.Module``s);
- ``lit.py``: the LightningModule on the shared diffusion core (x0 target, guidance on the style, DDIM 10 steps);
- ``data.py``: the DataModule (groups of frames, the speaker's neutral reference, a style clip).

- ``bench.py``: the bench's ``dreamtalk`` method kind (DreamTalk† motion rendered by DreamHead's stage 2);
- ``lip_expert.py``: the lip expert (lower-face motion + audio (+ style clip) -> sync probability), frozen as the
  denoiser's sync loss.
- ``style_predictor.py``: the diffusion style predictor (audio + the portrait's landmarks -> a trained denoiser's
  style code, no style clip), for the bench's "predicted style" rows.

Registered here: ``dreamtalk`` (the denoising network with its style encoder; its ``lip_expert:`` section names a
trained expert for the sync loss), ``dreamtalk_lip_expert`` and ``dreamtalk_style_predictor`` (its ``denoiser:``
section names the trained denoiser whose codes it learns), configured by ``experiments/<name>/{demo,paper}.yaml``:
``python -m dreamhead_lit.train dreamtalk_lip_expert --size demo``, then ``dreamtalk lip_expert.checkpoint=demo``,
then ``dreamtalk_style_predictor denoiser.checkpoint=demo``.
"""
from ...registry import ModelSpec, Recipe, register, register_recipe

_PACKAGE = __name__


def _build_denoiser(spec, cfg, dm):
    """Imported when first used, so listing the registry imports no model code."""
    from .lip_expert import build_denoiser

    return build_denoiser(spec, cfg, dm)


def _build_style_predictor(spec, cfg, dm):
    from .style_predictor import build_style_predictor

    return build_style_predictor(spec, cfg, dm)


register(ModelSpec(
    "dreamtalk", f"{_PACKAGE}.lit:DreamTalkConfig", f"{_PACKAGE}.lit:DreamTalkDiffusion",
    f"{_PACKAGE}.data:dreamtalk_datamodule", monitor="val/lmd_mouth", mode="min",
    export=f"{_PACKAGE}.lit:motion_figures", build=_build_denoiser,
    sections=("model", "motion", "diffusion", "optim", "validation"),  # lip_expert: attached by _build_denoiser
    description="DreamTalk†: frame-wise denoiser + style encoder on a PCA landmark motion space"))
register(ModelSpec(
    "dreamtalk_lip_expert", f"{_PACKAGE}.lip_expert:LipExpertConfig", f"{_PACKAGE}.lip_expert:LipExpertModule",
    f"{_PACKAGE}.data:dreamtalk_datamodule", monitor="val/sync_acc", mode="max",
    description="DreamTalk†: lip expert (lower-face motion + audio (+ style clip) -> sync probability)"))
register(ModelSpec(
    "dreamtalk_style_predictor", f"{_PACKAGE}.style_predictor:StylePredictorConfig",
    f"{_PACKAGE}.style_predictor:DreamTalkStylePredictor", f"{_PACKAGE}.style_predictor:style_predictor_datamodule",
    monitor="val/style_dist", mode="min", build=_build_style_predictor,
    export=f"{_PACKAGE}.style_predictor:predictor_figures",
    description="DreamTalk†: diffusion style predictor (audio + portrait landmarks -> the denoiser's style code)"))
register_recipe(Recipe(
    "dreamtalk", parts=(("dreamtalk_lip_expert", ()), ("dreamtalk", ("lip_expert.checkpoint={run}",)),
                        ("dreamtalk_style_predictor", ("denoiser.checkpoint={run}",))),
    description="DreamTalk†: the lip expert, the denoiser trained with it, the style predictor of that denoiser"))

from . import bench as _bench  # noqa: E402,F401  registers the bench's "dreamtalk" method kind
