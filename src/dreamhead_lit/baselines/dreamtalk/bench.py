"""The bench's ``dreamtalk`` method kind: DreamTalk† motion (audio + a style -> landmarks), rendered by DreamHead's
stage 2 through :func:`dreamhead_lit.pipeline.generate`, so a DreamTalk† row and DreamHead's differ only in the
motion model.

Settings (a bench config's ``methods.<name>``)::

    kind: dreamtalk
    stage2: demo                      # the DreamHead stage-2 run that renders (as the dreamhead kind's)
    checkpoints:
      dreamtalk: demo                 # the denoiser run (runs/dreamtalk/<name>, a run folder or a .ckpt)
      dreamtalk_style_predictor: demo # only for style_source: predicted
    options:
      style_source: other_identity_same_emotion   # see STYLE_SOURCES
      guidance_scale: null            # null: the denoiser's configured scale (1.0, the authors' default)
      motion_steps: null              # DDIM steps of the motion model (null: its configured 10)
      style_frames: 64                # frames of the style clip
    steps: 10                         # stage 2's sampler steps (as the dreamhead kind's)

The lip expert variant is the denoiser run's (trained with a ``style`` or ``unconditional`` expert, or ``none``):
bench several denoiser runs for the lip-expert comparison. Each row's :meth:`DreamTalkMethod.facts` says which
variant, style source and guidance scale it is, so the orderings check can pair rows.

Reference landmarks: the denoiser was trained on displacements from each identity's neutral medoid frame
(``data.py``), so generation uses the same reference for the test clip's identity, chosen by the same code from the
same dataset (from the train split for seen identities, from the clip's own split for unseen ones). Pose and
background come from the test clip, as in DreamHead's dubbing protocol.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...bench.clips import TestClip
from ...bench.config import MethodConfig, MethodUnavailable
from ...bench.methods.base import BenchContext, find_checkpoint, register_method
from ...bench.methods.dreamhead import StageMethod
from ...config import ConfigError

# style_source -> how the table's protocol notes describe it
STYLE_SOURCES = {
    "same_clip": "the test clip's own first frames (LEAKS the clip's own expression: an upper bound, not a protocol)",
    "other_identity_same_emotion": "a clip of another identity with the same emotion (the paper's protocol for "
                                   "emotion transfer; any other identity's clip where the data has no emotion labels)",
    "predicted": "the diffusion style predictor, from the clip's audio and its first frame (no style clip)",
    "none": "no style (the null style code: guidance has nothing to amplify)",
}
SUBSTITUTES = ("a PCA basis of canonical landmark displacements for 3DMM expression", "log-mel for wav2vec2",
               "rendered by DreamHead stage 2 instead of PIRenderer, pose and background from the test clip")


class DreamTalkMotion:
    """DreamTalk† as the stand-in for stage 1 that :func:`pipeline.generate` calls: the clip's canonical landmarks
    from its audio and the chosen style (the pipeline maps them back with the clip's per-frame pose)."""

    def __init__(self, model: Any, *, reference: np.ndarray, style: dict[str, Any], guidance_scale: float | None,
                 steps: int | None) -> None:
        self.model, self.reference, self.style = model, reference, style
        self.guidance_scale, self.steps = guidance_scale, steps
        self.data_info = model.data_info

    def generate(self, audio: np.ndarray, *, num_frames: int, seed: int = 0, **_: Any) -> Tensor:
        extra = {"guidance_scale": self.guidance_scale} if self.guidance_scale is not None else {}
        if self.steps is not None:
            extra["steps"] = self.steps
        return self.model.generate(audio, ref_landmarks=self.reference, num_frames=num_frames, seed=seed,
                                   **self.style, **extra)


@register_method("dreamtalk")
class DreamTalkMethod(StageMethod):
    """Audio + style -> DreamTalk† landmarks -> DreamHead stage 2 -> mp4 (the table's DreamTalk† row)."""

    needs_stage1 = False
    default_uses_source_video = True  # pose and background from the test clip (dubbing), as DreamHead's row

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, stage2: Any = None,
                 denoiser: Any = None, style_predictor: Any = None) -> None:
        super().__init__(name, cfg, ctx, stage2=stage2)
        opts = dict(cfg.options or {})
        unknown = set(opts) - {"style_source", "guidance_scale", "motion_steps", "style_frames"}
        if unknown:
            raise ConfigError(f"methods.{name}.options: unknown {sorted(unknown)} (style_source, guidance_scale, "
                              "motion_steps, style_frames)")
        self.style_source = str(opts.get("style_source", "other_identity_same_emotion"))
        if self.style_source not in STYLE_SOURCES:
            raise ConfigError(f"methods.{name}.options.style_source={self.style_source!r}: one of "
                              f"{', '.join(STYLE_SOURCES)}")
        self.guidance = opts.get("guidance_scale")
        self.motion_steps = opts.get("motion_steps")
        self.style_frames = int(opts.get("style_frames", 64))
        checkpoints = dict(cfg.checkpoints or {})
        self._denoiser, self._predictor = denoiser, style_predictor
        self.ckpt_denoiser = None if denoiser is not None else find_checkpoint(
            checkpoints.get("dreamtalk"), "dreamtalk", ctx.runs_root)
        self.ckpt_predictor = None
        if self.style_source == "predicted" and style_predictor is None:
            self.ckpt_predictor = find_checkpoint(checkpoints.get("dreamtalk_style_predictor"),
                                                  "dreamtalk_style_predictor", ctx.runs_root)
        self._data = None  # the DreamTalk DataModule on the bench's dataset: references and style clips
        self._hparams: dict | None = None  # the denoiser checkpoint's hyper-parameters, read once

    # -- models --------------------------------------------------------------------------------------------------

    @property
    def denoiser(self) -> Any:
        if self._denoiser is None:
            self._denoiser = self._load(self.ckpt_denoiser, "dreamtalk")
            self._check_landmarks(self._denoiser)
        return self._denoiser

    @property
    def style_predictor(self) -> Any:
        if self._predictor is None:
            predictor = self._load(self.ckpt_predictor, "dreamtalk_style_predictor")
            try:  # its codes are those of the denoiser it learned from: refuse any other denoiser
                predictor.check_denoiser(self.denoiser)
            except ConfigError as err:
                raise MethodUnavailable(f"the style predictor {self.ckpt_predictor} does not belong to the denoiser "
                                        f"{self.ckpt_denoiser}: {err}") from err
            self._predictor = predictor
        return self._predictor

    def _load(self, path: Path, model: str) -> Any:
        from ... import registry
        from ...checkpoints import CheckpointError

        try:
            return registry.load_checkpoint(path, expected=model).eval().to(self.ctx.device)
        except CheckpointError as err:
            raise MethodUnavailable(f"{model} checkpoint {path}: {err}") from err

    def _check_landmarks(self, model: Any) -> None:
        """The denoiser must move the points stage 2 draws, of the bench dataset's landmark set."""
        self._check_landmark_set(model.data_info or {}, f"the dreamtalk model {self.ckpt_denoiser or '(injected)'}",
                                 f"train it on this dataset (make train-dreamtalk DATA={self.ctx.data_root})")

    def _denoiser_hparams(self) -> dict:
        """The denoiser's hyper-parameters: from the module when loaded or injected, else read once from its
        checkpoint (the row's facts and note need them before any clip loads the model)."""
        if self._denoiser is not None:
            return dict(getattr(self._denoiser, "hparams", {}))
        if self._hparams is None:
            from ...checkpoints import safe_load

            self._hparams = safe_load(self.ckpt_denoiser).get("hyper_parameters") or {}
        return self._hparams

    @property
    def lip_expert(self) -> str:
        """The lip-expert variant the denoiser was trained with: style | unconditional | none (unknown: not recorded)."""
        return str((self._denoiser_hparams().get("lip_expert") or {}).get("variant", "unknown"))

    # -- the bench's view ----------------------------------------------------------------------------------------

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "dubbing"

    def _effective_guidance(self) -> float:
        if self.guidance is not None:
            return float(self.guidance)
        if self._denoiser is not None:
            return float(self._denoiser.diffusion_cfg.guidance_scale)
        return float((self._denoiser_hparams().get("diffusion") or {}).get("guidance_scale", 1.0))

    def facts(self) -> dict[str, Any]:
        """What the orderings check pairs rows by (the lip expert, the style source, the guidance scale)."""
        return {"kind": self.kind, "lip_expert": self.lip_expert, "style_source": self.style_source,
                "guidance_scale": self._effective_guidance()}

    def describe(self) -> str:
        return (f"DreamTalk† (re-implemented: {'; '.join(SUBSTITUTES)}): motion from the clip's audio with the style "
                f"of {STYLE_SOURCES[self.style_source]}; lip expert {self.lip_expert}; guidance scale "
                f"{self._effective_guidance():g} on the style; the speaker's neutral reference frame; stage 2 "
                f"(mode={self._stage2_mode()}) renders")

    def key(self) -> dict[str, Any]:
        key = {**super().key(), "denoiser": self._source(self._denoiser, self.ckpt_denoiser),
               "style": self.style_source,
               "guidance_scale": self.guidance, "motion_steps": self.motion_steps, "style_frames": self.style_frames}
        if self.style_source == "predicted":
            key["style_predictor"] = self._source(self._predictor, self.ckpt_predictor)
        return key

    # -- generation ----------------------------------------------------------------------------------------------

    @property
    def data(self) -> Any:
        """The DreamTalk DataModule on the bench's dataset, set up once: its splits' clips, canonical landmarks and
        each identity's neutral reference (chosen as in training)."""
        if self._data is None:
            from .data import DreamTalkDataModule

            info = self.denoiser.data_info or {}
            hp = self.denoiser.hparams
            dm = DreamTalkDataModule(root=self.ctx.data_root, landmark_set=info.get("landmark_set", "dense"),
                                     audio_feature=hp.audio_feature, audio_context=hp.audio_context,
                                     style_frames=self.style_frames)
            try:
                dm.setup("fit")
            except ConfigError as err:
                raise MethodUnavailable(f"the dataset {self.ctx.data_root} cannot serve DreamTalk's references: "
                                        f"{err}") from err
            self._data = dm
        return self._data

    def _dataset_of(self, clip_id: str) -> tuple[Any, int]:
        """(the split dataset holding clip ``clip_id``, its index there)."""
        for dataset in self.data.datasets.values():
            for i, reader in enumerate(dataset.readers):
                if reader.record.id == clip_id:
                    return dataset, i
        raise MethodUnavailable(f"clip {clip_id} is not among the dataset's usable clips")

    def _style_clip(self, clip: TestClip) -> tuple[Any, int]:
        """The style clip of ``other_identity_same_emotion``: among the clips of other identities with the clip's
        emotion (any emotion where there are no labels), train split first, one chosen by a hash of the clip id (so
        every method, run and rank picks the same one)."""
        rec = clip.record
        from ...data.clip import EMOTIONS

        train = self.data.hparams.train_split
        labelled = rec.emotion in EMOTIONS
        for split in [train, *[s for s in self.data.datasets if s != train]]:
            dataset = self.data.datasets.get(split)
            if dataset is None:
                continue
            pool = [i for i, r in enumerate(dataset.readers) if r.record.identity != rec.identity
                    and (not labelled or r.record.emotion == rec.emotion)]
            if pool:
                pool.sort(key=lambda i: dataset.readers[i].record.id)
                return dataset, pool[zlib.crc32(clip.id.encode()) % len(pool)]
        raise MethodUnavailable(f"no clip of another identity with emotion {rec.emotion!r} for {clip.id}'s style: "
                                "this dataset has that emotion for one identity only (use style_source same_clip or "
                                "predicted for such data)")

    def _style(self, clip: TestClip, dataset: Any, index: int) -> dict[str, Any]:
        """The keyword arguments of :meth:`DreamTalkDiffusion.generate` that give the style."""
        if self.style_source == "none":
            return {"style": "none"}
        if self.style_source == "predicted":
            portrait = dataset.canonical(dataset.readers[index], 0, 1)[0][0]  # the clip's first frame
            return {"style": self.style_predictor.predict_style(clip.audio, portrait, seed=self.cfg.seed)}
        if self.style_source == "same_clip":
            style_set, s = dataset, index
        else:
            style_set, s = self._style_clip(clip)
        reader = style_set.readers[s]
        landmarks = style_set.canonical(reader, 0, min(reader.num_frames, self.style_frames))[0]
        return {"style_landmarks": landmarks, "style_ref_landmarks": style_set.references[reader.record.identity]}

    def generate(self, clip: TestClip, out: Path) -> None:
        dataset, index = self._dataset_of(clip.id)
        reference = dataset.references[clip.record.identity]
        motion = DreamTalkMotion(self.denoiser, reference=reference, style=self._style(clip, dataset, index),
                                 guidance_scale=self.guidance, steps=self.motion_steps)
        with torch.no_grad():
            self._run_pipeline(clip, out, ref=clip.folder, stage1=motion)


__all__ = ["DreamTalkMethod", "DreamTalkMotion", "STYLE_SOURCES", "SUBSTITUTES"]
