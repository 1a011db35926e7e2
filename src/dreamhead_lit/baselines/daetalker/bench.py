"""The bench's DAE-Talker† method kinds: ``daetalker`` (the table's DAE-Talker† row: the whole frame from the clip's
audio, no landmarks, no renderer) and ``daetalker_reconstruction`` (the clip's true frames encoded and decoded: the
upper bound of DAE-Talker†, as the stage-2 bound is DreamHead's).

Settings (a bench config's ``methods.<name>``)::

    kind: daetalker
    checkpoints:
      daetalker_speech2latent: demo   # runs/daetalker_speech2latent/<run>, a run folder or a .ckpt (null: the latest)
      daetalker_autoencoder: null     # null: the autoencoder whose latents the speech2latent run learned (its
                                      # hparams.autoencoder: <latents>/../checkpoints/<checkpoint>)
    options:
      pose_source: clip               # clip | predicted (see POSE_SOURCES); ignored by a model without pose modelling
      shared_noise: true              # false: fresh noise for every frame (the ablation)
      noise_seed: null                # null: the method's seed
    steps: 20                         # the decoder's DDIM steps (null: its configured)

    kind: daetalker_reconstruction
    checkpoints: {daetalker_autoencoder: demo}
    options: {shared_noise: true, noise_seed: null}
    steps: 20

``sampler`` and ``batch_size`` (frames decoded together) are the method's as for the other kinds; the noise of a
frame does not depend on the batching. Frames are decoded at the autoencoder's working resolution and resized to the
clip's (``data.datamodule.resize_frames``), then written with the clip's audio by the bench's mp4 writer.

Protocols, from the speech2latent checkpoint: trained on some identities (its data description's ``identities``) it
is the paper's person-specific model, and clips of other identities get no video (the table's clips column says how
many were scored); trained on all identities it is the multi-speaker adaptation, conditioned on the latent of the
clip's first frame when its ``net.reference`` is ``first_frame``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...bench.clips import TestClip
from ...bench.config import MethodConfig, MethodUnavailable
from ...bench.methods.base import BenchContext, find_checkpoint, register_method
from ...bench.methods.checkpointed import AutoencoderMethod, source_key, trained_identities

SPEECH2LATENT = "daetalker_speech2latent"
AUTOENCODER = "daetalker_autoencoder"

# pose_source -> how the table's protocol notes describe it
POSE_SOURCES = {
    "clip": "the test clip's own per-frame head pose (numbers read from its landmarks, never its pixels) into the "
            "pose projector (pose control)",
    "predicted": "the pose predictor's, from the audio and the clip's first-frame pose",
}
SUBSTITUTES = ("log-mel windows for the paper's speech features",
               "head pose = the similarity of the canonical landmarks to the crop (landmark-similarity pose)",
               "DreamHead's stage-2 UNet as the DDIM decoder (DiffAE's AdaGN on the latent)",
               "a convolutional semantic encoder",
               "a clipped learned relative-position bias for the Conformer's Transformer-XL relative encoding",
               "layer norm for batch norm in the Conformer's convolution module")


class _DAEMethod(AutoencoderMethod):
    """Shared by both kinds: the diffusion autoencoder (a checkpoint, or injected), its settings read once from the
    checkpoint, and latents -> frames at the clip's resolution -> mp4 with the clip's audio."""

    OPTIONS: ClassVar[tuple[str, ...]] = ("shared_noise", "noise_seed")
    CHECKPOINTS: ClassVar[tuple[str, ...]] = (AUTOENCODER,)
    AUTOENCODER = AUTOENCODER

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, autoencoder: Any = None) -> None:
        super().__init__(name, cfg, ctx, autoencoder=autoencoder)
        self.shared_noise = self.bool_option("shared_noise", True)
        seed = self.options.get("noise_seed")
        self.noise_seed = int(cfg.seed if seed is None else seed)

    # -- models --------------------------------------------------------------------------------------------------

    def _ae_latent_dim(self) -> int:
        if self._autoencoder is not None:
            return int(self._autoencoder.latent_dim)
        from .lit import DAENetConfig

        return int((self._ae()["hparams"].get("net") or {}).get("latent_dim", DAENetConfig.latent_dim))

    def _decoding(self) -> tuple[str, int]:
        """(sampler, steps) the decoder runs with: the method's, else the autoencoder's configured ones."""
        from ...lit.base import DiffusionConfig

        if self._autoencoder is not None:
            d = self._autoencoder.diffusion_cfg
            sampler, steps = d.sampler, d.sample_steps
        else:
            d = self._ae()["hparams"].get("diffusion") or {}
            sampler = d.get("sampler", DiffusionConfig.sampler)
            steps = d.get("sample_steps", DiffusionConfig.sample_steps)
        return str(self.cfg.sampler or sampler), int(self.cfg.steps or steps)

    # -- the bench's view ----------------------------------------------------------------------------------------

    @property
    def latent_conditioning(self) -> str:
        """How the decoder takes the latent: ``adagn`` (DiffAE's) or ``add`` (the ablation; older checkpoints)."""
        return str((self._ae()["hparams"].get("net") or {}).get("latent_conditioning", "add"))

    @property
    def protocol_fact(self) -> str:
        return "person_specific" if self.identities is not None else "multi_speaker"

    def _decode_note(self) -> str:
        sampler, steps = self._decoding()
        noise = (f"every frame from ONE shared noise image (seed {self.noise_seed})" if self.shared_noise else
                 f"fresh noise for every frame (seed {self.noise_seed}; the shared-noise ablation)")
        note = f"the diffusion autoencoder's decoder ({sampler}, {steps} step{'s' if steps != 1 else ''}), {noise}"
        if self.latent_conditioning != "adagn":
            note += " (its latent added to the step embedding, not DiffAE's AdaGN)"
        return note + self.resize_note(self.working_resolution, "decoded")

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind, "autoencoder": source_key(self._autoencoder, self.ckpt_autoencoder),
                "shared_noise": self.shared_noise, "noise_seed": self.noise_seed, "steps": self.cfg.steps,
                "sampler": self.cfg.sampler}

    # -- generation ----------------------------------------------------------------------------------------------

    def _write(self, latents: torch.Tensor, clip: TestClip, out: Path) -> None:
        """Decode ``latents`` (F, D) to frames, resize them to the clip's resolution, write the mp4 with its audio."""
        x = self.autoencoder.decode(latents, noise_seed=self.noise_seed, steps=self.cfg.steps, sampler=self.cfg.sampler,
                                    shared_noise=self.shared_noise, batch_size=self.cfg.batch_size,
                                    progress=sys.stderr.isatty())
        self.write_frames(x, clip, out, who=f"the autoencoder {self.ckpt_autoencoder or '(injected)'}")


@register_method("daetalker")
class DAETalkerMethod(_DAEMethod):
    """Audio -> speech2latent -> latents -> the diffusion autoencoder's decoder -> mp4 (the DAE-Talker† row)."""

    default_uses_source_video = False  # the whole frame is generated; the clip gives pose numbers, not pixels
    OPTIONS = ("pose_source", "shared_noise", "noise_seed")
    CHECKPOINTS = (SPEECH2LATENT, AUTOENCODER)

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, speech2latent: Any = None,
                 autoencoder: Any = None) -> None:
        super().__init__(name, cfg, ctx, autoencoder=autoencoder)
        self.pose_source = self.choice_option("pose_source", POSE_SOURCES, "clip")
        checkpoints = dict(cfg.checkpoints or {})
        self._speech2latent = speech2latent
        self.ckpt_speech2latent = None if speech2latent is not None else find_checkpoint(
            checkpoints.get(SPEECH2LATENT), SPEECH2LATENT, ctx.runs_root)
        if autoencoder is None:
            self.ckpt_autoencoder = self.learned_autoencoder_checkpoint(
                self._s2l()["hparams"].get("autoencoder"), AUTOENCODER, checkpoints.get(AUTOENCODER),
                f"the speech2latent model {self._where(SPEECH2LATENT)}")
        self._check_pair()
        self.check_dataset(self._s2l()["data"], f"the speech2latent model {self._where(SPEECH2LATENT)}")
        self.check_dataset(self._ae()["data"], f"the autoencoder {self._where(AUTOENCODER)}")
        self.check_identities(self.identities, f"the speech2latent model {self._where(SPEECH2LATENT)}")
        self._pose_ctx = None  # the bench dataset's DatasetContext, for the clip's pose

    # -- models --------------------------------------------------------------------------------------------------

    @property
    def speech2latent(self) -> Any:
        if self._speech2latent is None:
            self._speech2latent = self.load_model(self.ckpt_speech2latent, SPEECH2LATENT)
        return self._speech2latent

    def _s2l(self) -> dict:
        return self.header(SPEECH2LATENT, self._speech2latent, self.ckpt_speech2latent)

    def _where(self, model: str) -> str:
        path = self.ckpt_speech2latent if model == SPEECH2LATENT else self.ckpt_autoencoder
        return str(path) if path is not None else "(injected)"

    def _check_pair(self) -> None:
        """The speech2latent model's latents must be of the autoencoder's size."""
        hp = self._s2l()["hparams"]
        theirs = hp.get("latent_dim") or (hp.get("autoencoder") or {}).get("dim")
        mine = self._ae_latent_dim()
        if theirs is not None and int(theirs) != mine:
            raise MethodUnavailable(f"the speech2latent model {self._where(SPEECH2LATENT)} predicts {theirs}-d "
                                    f"latents, the autoencoder {self._where(AUTOENCODER)} decodes {mine}-d ones: "
                                    f"name the autoencoder it learned from in checkpoints.{AUTOENCODER} (or null for "
                                    "the one it records)")

    @property
    def reference(self) -> str:
        """speech2latent's reference: ``none`` or ``first_frame`` (the multi-speaker variant's reference latent)."""
        return str((self._s2l()["hparams"].get("net") or {}).get("reference", "none"))

    @property
    def pose_modelling(self) -> bool:
        """Whether speech2latent has the pose predictor and projector (False: no pose goes in)."""
        return bool((self._s2l()["hparams"].get("net") or {}).get("pose_modelling", True))

    @property
    def identities(self) -> list[str] | None:
        return trained_identities(self._s2l()["data"], self._ae()["data"])

    # -- the bench's view ----------------------------------------------------------------------------------------

    @property
    def protocol(self) -> str:
        if self.identities is not None:
            return "person-specific"
        return "one-shot (first frame)" if self.reference == "first_frame" else "multi-speaker"

    @property
    def effective_pose_source(self) -> str:
        return self.pose_source if self.pose_modelling else "none"

    def facts(self) -> dict[str, Any]:
        return {"kind": self.kind, "pose_source": self.effective_pose_source, "shared_noise": self.shared_noise,
                "protocol": self.protocol_fact, "pose_modelling": self.pose_modelling}

    def describe(self) -> str:
        if self.identities is not None:
            who = (f"person-specific (the paper's protocol): trained on {', '.join(self.identities)}; clips of other "
                   "identities have no video")
        elif self.reference == "first_frame":
            who = ("multi-speaker adaptation: speech2latent conditioned on the latent of the clip's first frame (its "
                   "only use of the clip's pixels)")
        else:
            who = "multi-speaker, without a reference: one model of every training identity"
        pose = (POSE_SOURCES[self.pose_source] if self.pose_modelling else
                "none (a speech2latent model without pose modelling)")
        return (f"DAE-Talker† (re-implemented: {'; '.join(SUBSTITUTES)}): the whole frame from the clip's audio, "
                f"speech2latent -> latents -> {self._decode_note()}; pose: {pose}; {who}. No landmarks are drawn and "
                "no source frame is rendered over: the clip's pose numbers drive it, not its pixels")

    def key(self) -> dict[str, Any]:
        return {**super().key(), "speech2latent": source_key(self._speech2latent, self.ckpt_speech2latent),
                "pose_source": self.effective_pose_source}

    # -- generation ----------------------------------------------------------------------------------------------

    def clip_pose(self, clip: TestClip, frames: int | None = None) -> np.ndarray:
        """``(T, 4)`` raw head pose of the clip's first ``frames`` frames (all: None) from its ground-truth landmarks,
        by training's code (``pose.landmark_pose``, on the bench dataset's context)."""
        from ...data.clip import read_index
        from ...data.datamodule import load_context
        from .pose import landmark_pose

        if self._pose_ctx is None:
            self._pose_ctx = load_context(self.ctx.data_root, "dense", read_index(self.ctx.data_root))
        n = clip.record.num_frames if frames is None else frames
        return landmark_pose(self._pose_ctx, np.asarray(clip.reader.landmarks[:n]))

    def generate(self, clip: TestClip, out: Path) -> None:
        num = clip.record.num_frames
        kwargs: dict[str, Any] = {"num_frames": num}
        if self.pose_modelling:
            if self.pose_source == "clip":
                kwargs["pose"] = self.clip_pose(clip)
            else:
                kwargs["first_pose"] = self.clip_pose(clip, 1)[0]
        with torch.no_grad():
            if self.reference == "first_frame":
                kwargs["reference_latent"] = self.autoencoder.encode_clip(clip.frames[:1])[0].numpy()
            latents, _ = self.speech2latent.generate(clip.audio, **kwargs)
            latents = np.asarray(latents, dtype=np.float32)
            want = (num, self._ae_latent_dim())
            if latents.shape != want or not np.isfinite(latents).all():
                raise RuntimeError(f"speech2latent {self._where(SPEECH2LATENT)} gave latents {latents.shape} "
                                   f"{'(non-finite)' if latents.shape == want else ''}, {want} needed")
            self._write(torch.from_numpy(latents), clip, out)


@register_method("daetalker_reconstruction")
class DAEReconstructionMethod(_DAEMethod):
    """The clip's true frames -> the semantic encoder -> the decoder -> mp4: DAE-Talker†'s upper bound."""

    default_uses_source_video = True  # it sees every true frame

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, autoencoder: Any = None) -> None:
        super().__init__(name, cfg, ctx, autoencoder=autoencoder)
        if autoencoder is None:
            self.ckpt_autoencoder = find_checkpoint((cfg.checkpoints or {}).get(AUTOENCODER), AUTOENCODER,
                                                    ctx.runs_root)
        self.check_dataset(self._ae()["data"], f"the autoencoder {self.ckpt_autoencoder or '(injected)'}")
        self.check_identities(self.identities, f"the autoencoder {self.ckpt_autoencoder or '(injected)'}")

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "DAE bound"

    def facts(self) -> dict[str, Any]:
        """The protocol is its autoencoder's (person-specific when trained on some identities): the orderings check
        pairs it with the DAE-Talker† rows of the same protocol (bench/reported/daetalker.yaml, ``same``)."""
        return {"kind": self.kind, "shared_noise": self.shared_noise, "protocol": self.protocol_fact}

    def describe(self) -> str:
        who = (f"; person-specific autoencoder of {', '.join(self.identities)}: clips of other identities have no video"
               if self.identities is not None else "")
        return ("DAE reconstruction, the upper bound of DAE-Talker† (as the stage-2 bound is DreamHead's): every "
                "true frame of the clip (it sees the whole source video) encoded by the semantic encoder and decoded "
                f"by {self._decode_note()}{who}")

    def generate(self, clip: TestClip, out: Path) -> None:
        with torch.no_grad():
            self._write(self.autoencoder.encode_clip(clip.frames, batch_size=self.cfg.batch_size), clip, out)


__all__ = ["DAEReconstructionMethod", "DAETalkerMethod", "POSE_SOURCES", "SUBSTITUTES"]
