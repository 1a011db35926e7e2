"""DreamTalk (Ma et al., arXiv 2312.09767), re-implemented in this framework (a † row; BASELINES.md lists what makes
it DreamTalk and what is substituted here).

- ``motion.py``: the motion space, a PCA basis of canonical landmark displacements (upper and lower face) standing
  in for 3DMM expression;
- ``networks.py``: the style encoder and the frame-wise denoiser (plain ``nn.Module``s);
- ``lit.py``: the LightningModule on the shared diffusion core (x0 target, guidance on the style, DDIM 10 steps);
- ``data.py``: the DataModule (groups of frames, the speaker's neutral reference, a style clip).

Registered here: ``dreamtalk`` (the denoising network with its style encoder), configured by
``experiments/dreamtalk/{demo,paper}.yaml``: ``python -m dreamhead_lit.train dreamtalk --size demo``.
"""
from ...registry import ModelSpec, register

_PACKAGE = __name__

register(ModelSpec(
    "dreamtalk", f"{_PACKAGE}.lit:DreamTalkConfig", f"{_PACKAGE}.lit:DreamTalkDiffusion",
    f"{_PACKAGE}.data:dreamtalk_datamodule", monitor="val/lmd_mouth", mode="min",
    export=f"{_PACKAGE}.lit:motion_figures",
    description="DreamTalk†: frame-wise denoiser + style encoder on a PCA landmark motion space"))
