"""Methods that run trained DreamHead stages through :func:`dreamhead_lit.pipeline.generate`: the full model
(audio -> stage 1 -> stage 2), stage 2 on the ground-truth landmarks (its upper bound), and one audio-conditioned
stage-2 model (audio -> frames)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, get_args

import numpy as np
import torch
from torch import Tensor

from ...checkpoints import safe_load
from ...config import ConfigError
from ...data.clip import ClipError
from ...lit.distill import MODEL_NAME as DISTILLED
from ..cache import file_fingerprint
from ..clips import TestClip
from ..config import MethodConfig, MethodUnavailable, Protocol
from .base import BenchContext, Method, find_checkpoint, motion_landmarks_file, register_method


class StageMethod(Method):
    """Shared by the methods that run trained stages: checkpoint resolution, lazy loading, the pipeline call."""

    needs_stage1: ClassVar[bool] = True
    stage2_condition: ClassVar[str] = "landmarks"  # the stage-2 model.condition the method drives

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, stage1: Any = None, stage2: Any = None) -> None:
        super().__init__(name, cfg, ctx)
        self._stage1, self._stage2 = stage1, stage2  # loaded modules may be injected (tests)
        self.ckpt1 = None if stage1 is not None or not self.needs_stage1 else find_checkpoint(cfg.stage1, "stage1", ctx.runs_root)
        self.ckpt2 = None if stage2 is not None else self._stage2_checkpoint()
        self._ckpt_facts: dict[str, dict] = {}  # stage -> {"net": settings, "data": description}, read once
        condition = self._stage2_setting("condition")
        if condition != self.stage2_condition:
            use = "audio_to_image" if condition == "audio" else "dreamhead or stage2_gt_landmarks"
            raise MethodUnavailable(f"the stage-2 model {self.ckpt2 or '(injected)'} is conditioned on {condition} "
                                    f"(model.condition={condition}), kind {self.kind} needs one conditioned on "
                                    f"{self.stage2_condition}: score it with kind {use}")
        self._check_landmark_sets()

    def _stage2_checkpoint(self) -> Path:
        """``stage2`` (a run under runs/stage2), or a distilled stage 2 named under ``checkpoints.stage2_distilled``
        (a run under runs/stage2_distilled: ``make distill-stage2``), which then takes the place of ``stage2``."""
        distilled = DISTILLED in self.cfg.checkpoints
        if distilled and self.cfg.stage2:
            raise ConfigError(f"methods.{self.name}: give stage2 or checkpoints.{DISTILLED}, not both (the distilled "
                              "model is the row's stage 2)")
        if distilled:
            return find_checkpoint(self.cfg.checkpoints[DISTILLED], DISTILLED, self.ctx.runs_root)
        return find_checkpoint(self.cfg.stage2, "stage2", self.ctx.runs_root)

    def _check_landmark_sets(self) -> None:
        """The models must use the dataset's landmark set (a 131-point model cannot read dlib's 68 points): checked
        before any clip, from the checkpoints' headers (no model is built), so a mismatch is the row's one reason
        instead of an error on every clip."""
        remedy = (f"train it on this dataset (make train-stage1 / train-stage2 DATA={self.ctx.data_root}) or bench it "
                  "on data with its landmark set")
        for stage in ("stage1", "stage2") if self.needs_stage1 else ("stage2",):
            ckpt = self.ckpt1 if stage == "stage1" else self.ckpt2
            self._check_landmark_set(self._facts(stage)["data"],
                                     f"the {stage.replace('stage', 'stage-')} model {ckpt or '(injected)'}", remedy)

    def _check_landmark_set(self, info: dict, model: str, remedy: str) -> None:
        """One model's data description (``data_info``) against the bench dataset's landmark set; a mismatch is
        :class:`MethodUnavailable`."""
        from ...data.landmarks import LandmarkTopology
        from ...pipeline import GenerationError, check_landmark_set

        topo = self.ctx.dataset_info.get("landmark_topology")
        if not topo:
            return
        data = LandmarkTopology.from_json(topo)
        try:
            check_landmark_set(info, data.num_points, f"the dataset {self.ctx.data_root}", model=model,
                               points_name=data.name, remedy=remedy)
        except GenerationError as err:
            raise MethodUnavailable(str(err)) from err

    def _facts(self, stage: str) -> dict:
        """``{"net": model settings, "data": data description}`` of a stage: from its module when loaded or injected,
        else read once from its checkpoint (the file is opened once, whatever is asked of it)."""
        module = self._stage1 if stage == "stage1" else self._stage2
        if module is not None:
            return {"net": None, "data": getattr(module, "data_info", None) or {}}
        if stage not in self._ckpt_facts:
            blob = safe_load(self.ckpt1 if stage == "stage1" else self.ckpt2)
            hp = blob.get("hyper_parameters", {})
            self._ckpt_facts[stage] = {"net": hp.get("net", {}) or {}, "generation": hp.get("generation", {}) or {},
                                       "data": (blob.get("dreamhead") or {}).get("data") or {}}
        return self._ckpt_facts[stage]

    def _source(self, module: Any, ckpt: Path | None) -> Any:
        return file_fingerprint(ckpt) if ckpt is not None else f"injected {type(module).__name__} {id(module)}"

    def key(self) -> dict[str, Any]:
        c = self.cfg
        key = {"kind": self.kind, "stage2": self._source(self._stage2, self.ckpt2), "sampler": c.sampler,
               "steps": c.steps, "seed": c.seed, "landmarks68": 1}  # videos since the landmarks file came with them
        if c.stage2_steps is not None:  # keys of rows without it stay as they were: their cached videos stay valid
            key["stage2_steps"] = c.stage2_steps
        if self.needs_stage1:
            key["stage1"] = self._source(self._stage1, self.ckpt1)
            key["stage1_plan"] = self._stage1_plan()
        return key

    def _stage1_plan(self) -> dict[str, Any]:
        """How stage 1 samples long audio (``A2LGenerationConfig``: the checkpoint's settings over this code's
        defaults), part of the key: a new default plan (issue 17's lanes) makes new videos, not stale cached ones."""
        from dataclasses import asdict

        from ...lit.a2l import A2LGenerationConfig

        if self._stage1 is not None:
            plan = getattr(self._stage1, "gen_cfg", None)  # a stand-in has none
            return asdict(plan) if plan is not None else {}
        return asdict(A2LGenerationConfig(**self._facts("stage1")["generation"]))

    @property
    def stage2(self) -> Any:
        from ...pipeline import load_checked

        if self._stage2 is None:
            self._stage2 = load_checked(self.ckpt2, "stage2").to(self.ctx.device)
        return self._stage2

    @property
    def stage1(self) -> Any:
        from ...pipeline import load_checked

        if self._stage1 is None:
            self._stage1 = load_checked(self.ckpt1, "stage1").to(self.ctx.device)
        return self._stage1

    def _stage2_setting(self, name: str) -> str:
        """A setting of the stage-2 network (``mode``, ``condition``), read without building the network when it is
        not loaded yet; checkpoints written before a setting existed have its default."""
        from ...lit.l2i import L2INetConfig

        if self._stage2 is None:
            return str(self._facts("stage2")["net"].get(name, getattr(L2INetConfig, name)))
        return str(getattr(self.stage2.net, name))

    def _stage2_mode(self) -> str:
        return self._stage2_setting("mode")

    def _run_pipeline(self, clip: TestClip, out: Path, *, ref: Any, stage1: Any) -> None:
        """``pipeline.generate`` for the clip; with a stage 1 (or a stand-in) the landmarks it drew are kept beside
        the video (``motion_landmarks_file``) for the emotion column's motion reading."""
        from ...pipeline import generate

        c = self.cfg
        generate(audio=clip.audio, ref=ref, out=out, stage1=stage1, stage2=self.stage2, sampler=c.sampler,
                 steps=c.steps, stage2_steps=c.stage2_steps, seed=c.seed, batch_size=c.batch_size, progress=False,
                 emotion=self.emotion_of(clip) if stage1 is not None else None,
                 landmarks_out=motion_landmarks_file(out) if stage1 is not None else None)

    def emotion_of(self, clip: TestClip) -> str | None:
        """The clip's emotion label for stage 1 (``emotion_label``), or None ("unknown")."""
        from ...data.clip import EMOTIONS

        return clip.record.emotion if self.cfg.emotion_label and clip.record.emotion in EMOTIONS else None


@register_method("dreamhead")
class DreamHeadMethod(StageMethod):
    """Audio -> stage 1 -> stage 2 -> mp4, by :func:`dreamhead_lit.pipeline.generate`."""

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, **modules: Any) -> None:
        if cfg.protocol not in get_args(Protocol):
            raise ConfigError(f"methods.{name}.protocol must be one of {get_args(Protocol)}, got {cfg.protocol!r}")
        super().__init__(name, cfg, ctx, **modules)

    @classmethod
    def source_video(cls, cfg: MethodConfig) -> bool:
        return cfg.protocol == "dubbing" if cfg.uses_source_video is None else bool(cfg.uses_source_video)

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "dubbing" if cfg.protocol == "dubbing" else "one-shot"

    def describe(self) -> str:
        mode = self._stage2_mode()
        if self.cfg.protocol == "dubbing":
            given = ("the clip's frames with the lower face masked" if mode == "dubbing"
                     else "the clip's first frame as appearance")
            return (f"dubbing (the paper's protocol): pose and background from the test clip, speech from its audio; "
                    f"stage 2 (mode={mode}) is given {given}; {self._emotion_note()}")
        return (f"one-shot: the clip's first frame only (pose frozen), speech from its audio; stage 2 mode={mode}; "
                f"{self._emotion_note()}")

    def _emotion_note(self) -> str:
        return ("stage 1 is given the clip's emotion label where the dataset has one" if self.cfg.emotion_label
                else "stage 1 speaks with the emotion 'unknown'")

    def key(self) -> dict[str, Any]:
        return {**super().key(), "protocol": self.cfg.protocol, "emotion_label": self.cfg.emotion_label}

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "protocol": self.cfg.protocol, "emotion_label": bool(self.cfg.emotion_label),
                "distilled": DISTILLED in self.cfg.checkpoints}

    def generate(self, clip: TestClip, out: Path) -> None:
        from ...pipeline import Reference

        if self.cfg.protocol == "dubbing":
            ref: Any = clip.folder  # the processed clip folder: exact landmarks, every frame
        else:
            dense = np.asarray(clip.reader.landmarks[:1], dtype=np.float32)
            ref = Reference(clip.frames[:1], dense, clip.topology.sparse(dense), "clip")
        self._run_pipeline(clip, out, ref=ref, stage1=self.stage1)


class GroundTruthLandmarks:
    """A stand-in for stage 1 that "predicts" a clip's true landmarks, so ``pipeline.generate`` renders them.

    ``pipeline.generate`` canonicalises the reference (the processed clip itself) and maps the stage-1 output back
    with the reference's per-frame pose; returning the clip's own canonical landmarks therefore reproduces the true
    pixel landmarks exactly (up to float rounding), and stage 2 receives them rasterised by the pipeline's own code.
    """

    def __init__(self, clip: TestClip, data_info: dict) -> None:
        from ...data.landmarks import canonicalize

        template = np.asarray(data_info["canonical_template68"], dtype=np.float32)
        dense = np.asarray(clip.reader.landmarks, dtype=np.float32)
        if dense.shape[1] != clip.topology.num_points:
            raise ClipError(clip.id, f"{dense.shape[1]} landmarks, the dataset's topology has {clip.topology.num_points}")
        self.canonical, _ = canonicalize(dense, clip.topology.sparse(dense), template68=template)  # (T, N, 2)
        n = self.canonical.shape[1]
        self.data_info = {"canonical_template68": data_info["canonical_template68"], "point_index": list(range(n)),
                          "landmark_set": "dense"}

    def generate(self, audio: Any, *, num_frames: int, **_: Any) -> Tensor:
        idx = np.minimum(np.arange(num_frames), len(self.canonical) - 1)
        return torch.from_numpy(self.canonical[idx])  # (F, N, 2)


@register_method("stage2_gt_landmarks")
class Stage2GTLandmarksMethod(StageMethod):
    """Ground-truth landmarks -> stage 2: what stage 2 can do with perfect landmarks (the stage-2 upper bound)."""

    needs_stage1 = False
    default_uses_source_video = True

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "stage-2 bound"

    def describe(self) -> str:
        return (f"the clip's ground-truth landmarks rendered by stage 2 (mode={self._stage2_mode()}) with the test clip "
                "as reference, through pipeline.generate")

    def generate(self, clip: TestClip, out: Path) -> None:
        info = self.stage2.data_info or {}
        self._run_pipeline(clip, out, ref=clip.folder, stage1=GroundTruthLandmarks(clip, info))


@register_method("audio_to_image")
class AudioToImageMethod(DreamHeadMethod):
    """Audio -> frames by ONE stage-2 model conditioned on audio (``model.condition=audio``): the landmark_hierarchy
    ablation, scored like ``dreamhead`` (the same references, protocols and ``pipeline.generate``) without stage 1."""

    needs_stage1 = False
    stage2_condition = "audio"

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, **modules: Any) -> None:
        super().__init__(name, cfg, ctx, **modules)
        # Without landmarks nothing carries the clip's pose but the masked clip frames of a dubbing-mode model: a
        # reference-mode model under protocol dubbing sees only the clip's first frame, and its row says one-shot.
        self.dubbing = cfg.protocol == "dubbing" and self._stage2_mode() == "dubbing"
        if cfg.uses_source_video is None:
            self.uses_source_video = self.dubbing

    @property
    def protocol(self) -> str:
        return "dubbing" if self.dubbing else "one-shot"

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "protocol": "dubbing" if self.dubbing else "one_shot"}

    @property
    def stage1(self) -> None:
        return None  # the audio drives stage 2 directly

    def describe(self) -> str:
        if self.dubbing:
            how = "dubbing: the test clip's frames with the lower face masked give pose and background"
        else:
            how = "one-shot: the clip's first frame as appearance, pose frozen"
            if self.cfg.protocol == "dubbing":
                how += " (protocol dubbing: without landmarks a reference-mode model cannot follow the clip's pose)"
        return (f"audio -> frames by one stage-2 model conditioned on the audio (model.condition=audio, "
                f"mode={self._stage2_mode()}; no landmarks, no stage 1), speech from the clip's audio; {how}")
