"""The bench's StyleTalker† method kinds: ``styletalker`` (the table's StyleTalker† rows: one-shot from the clip's
first frame, its motion sampled from the audio or taken from the clip) and ``styletalker_reconstruction`` (the clip's
true frames through the frame autoencoder: what the stand-in generator can show at best).

Settings (a bench config's ``methods.<name>``)::

    kind: styletalker
    checkpoints:
      styletalker: demo               # runs/styletalker/<run>, a run folder or a .ckpt (null: the latest)
      styletalker_autoencoder: null   # null: the autoencoder whose codes the motion model learned (its hparams)
    options:
      motion_source: audio            # audio (sampled from the flow prior: the headline) | clip (the driving clip's)
      seed: null                      # the prior's sampling seed (null: the method's seed)
      temperature: 1.0                # the prior's sampling temperature
      samples: 1                      # > 1: also writes <clip>.sample<k>.mp4 with seeds seed+k (Motion spread)

    kind: styletalker_reconstruction
    checkpoints: {styletalker_autoencoder: demo}

The reference is the clip's first frame (StyleTalker is one-shot): its code w_ref, and the code of the same frame with
its mouth masked (the motion encoder's reference). With ``motion_source: clip`` the clip is the driving video: the
motion encoder reads its mouth-masked frames, so the clip gives pose and blinks and the audio still gives the lips.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...bench.clips import TestClip
from ...bench.config import MethodConfig, MethodUnavailable
from ...bench.methods.base import BenchContext, find_checkpoint, register_method
from ...bench.methods.checkpointed import AutoencoderMethod, source_key, trained_identities

MOTION = "styletalker"
AUTOENCODER = "styletalker_autoencoder"

MOTION_SOURCES = {
    "audio": "motion (pose, blinks) sampled from the audio by the autoregressive flow prior",
    "clip": "motion (pose, blinks) taken from the test clip as the driving video (its mouth-masked frames through the "
            "motion encoder), lips from the audio",
}
SUBSTITUTES = ("a frame autoencoder trained on the dataset for the pretrained style-based generator (StyleGAN) and its "
               "inversion encoder: the image columns describe the stand-in, not the paper",
               "log-mel windows for the paper's speech features",
               "the motion encoder reads mouth-masked frames (its disentanglement from the lips)")


class _StyleTalkerBase(AutoencoderMethod):
    """Shared by both kinds: the frame autoencoder (a checkpoint, or injected) and codes -> frames -> mp4."""

    CHECKPOINTS: ClassVar[tuple[str, ...]] = (AUTOENCODER,)
    AUTOENCODER = AUTOENCODER

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind, "autoencoder": source_key(self._autoencoder, self.ckpt_autoencoder)}

    def codes(self, clip: TestClip, *, masked: bool, frames: int | None = None) -> np.ndarray:
        """``(T, D)`` codes of the clip's first ``frames`` frames (all: None), with their mouths masked or not."""
        n = clip.record.num_frames if frames is None else frames
        landmarks = clip.landmarks68[:n] if masked else None  # pixels of the clip's frames: encode_clip rescales
        return self.autoencoder.encode_clip(clip.frames[:n], landmarks=landmarks).numpy()

    def write(self, codes: np.ndarray | torch.Tensor, clip: TestClip, out: Path) -> None:
        with torch.no_grad():
            x = self.autoencoder.decode(torch.as_tensor(np.asarray(codes, np.float32), device=self.ctx.device))
        self.write_frames(x, clip, out, who=f"the frame autoencoder {self.ckpt_autoencoder or '(injected)'}")


@register_method("styletalker")
class StyleTalkerMethod(_StyleTalkerBase):
    """The clip's first frame + audio -> the motion model's codes -> the frame autoencoder's decoder -> mp4."""

    default_uses_source_video = False  # one-shot: the first frame (and, with motion_source clip, its motion)
    OPTIONS = ("motion_source", "seed", "temperature", "samples")
    CHECKPOINTS = (MOTION, AUTOENCODER)

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, motion: Any = None,
                 autoencoder: Any = None) -> None:
        super().__init__(name, cfg, ctx, autoencoder=autoencoder)
        self.motion_source = self.choice_option("motion_source", MOTION_SOURCES, "audio")
        seed = self.options.get("seed")
        self.seed = int(cfg.seed if seed is None else seed)
        self.temperature = float(self.options.get("temperature", 1.0))
        self.samples = int(self.options.get("samples", 1))
        if self.samples < 1:
            raise MethodUnavailable(f"methods.{name}.options.samples={self.samples}: at least 1")
        checkpoints = dict(cfg.checkpoints or {})
        self._motion = motion
        self.ckpt_motion = None if motion is not None else find_checkpoint(checkpoints.get(MOTION), MOTION,
                                                                           ctx.runs_root)
        if autoencoder is None:
            self.ckpt_autoencoder = self.learned_autoencoder_checkpoint(
                self._m()["hparams"].get("autoencoder"), AUTOENCODER, checkpoints.get(AUTOENCODER),
                f"the motion model {self._where()}")
        self.check_dataset(self._m()["data"], f"the StyleTalker† motion model {self._where()}")
        self.check_dataset(self._ae()["data"], f"the frame autoencoder {self.ckpt_autoencoder or '(injected)'}")

    # -- models --------------------------------------------------------------------------------------------------

    @property
    def motion(self) -> Any:
        if self._motion is None:
            self._motion = self.load_model(self.ckpt_motion, MOTION)
        return self._motion

    def _m(self) -> dict:
        return self.header(MOTION, self._motion, self.ckpt_motion)

    def _where(self) -> str:
        return str(self.ckpt_motion) if self.ckpt_motion is not None else "(injected)"

    @property
    def prior(self) -> str:
        return str((self._m()["hparams"].get("net") or {}).get("prior", "flow"))

    @property
    def sync_loss(self) -> bool:
        """Whether the motion model trained with the lip-sync discriminator's loss (False: the ablation)."""
        hp = self._m()["hparams"]
        record = hp.get("sync_discriminator")
        weight = (hp.get("loss") or {}).get("sync_weight", 1.0)
        return bool(record) and bool(record.get("run") if isinstance(record, dict) else record) and weight > 0

    @property
    def identities(self) -> list[str] | None:
        return trained_identities(self._m()["data"], self._ae()["data"])

    # -- the bench's view ----------------------------------------------------------------------------------------

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "one-shot (first frame)" + (", motion from clip" if (cfg.options or {}).get("motion_source") == "clip"
                                            else "")

    def facts(self) -> dict[str, Any]:
        return {"kind": self.kind, "motion_source": self.motion_source, "prior": self.prior,
                "sync_discriminator": self.sync_loss}

    def describe(self) -> str:
        sync = ("trained with the contrastive lip-sync discriminator's loss (a separate run from the bench's scorer)"
                if self.sync_loss else "trained WITHOUT the lip-sync discriminator (the ablation)")
        prior = ("autoregressive flow prior" if self.prior == "flow" else
                 "autoregressive Gaussian prior (no flow: the ablation)")
        samples = (f"; {self.samples} samples per clip (seeds {self.seed}..{self.seed + self.samples - 1}) for the "
                   "Motion spread" if self.samples > 1 and self.motion_source == "audio" else "")
        return (f"StyleTalker† (re-implemented: {'; '.join(SUBSTITUTES)}): codes w_t = w_ref + lip(audio, w_ref) + "
                f"motion(z_t, w_ref) from the clip's first frame and audio, decoded by the frame autoencoder; "
                f"{MOTION_SOURCES[self.motion_source]} (seed {self.seed}, temperature {self.temperature:g}); {prior}; "
                f"{sync}{samples}{self.resize_note(self.working_resolution)}")

    def key(self) -> dict[str, Any]:
        return {**super().key(), "motion": source_key(self._motion, self.ckpt_motion),
                "motion_source": self.motion_source, "seed": self.seed, "temperature": self.temperature,
                "samples": self.samples if self.motion_source == "audio" else 1}

    # -- generation ----------------------------------------------------------------------------------------------

    def sample(self, clip: TestClip, seed: int, refs: tuple[np.ndarray, np.ndarray],
               driving: np.ndarray | None) -> np.ndarray:
        num = clip.record.num_frames
        codes = self.motion.generate(clip.audio, reference_code=refs[0], reference_motion_code=refs[1],
                                     num_frames=num, motion_codes=driving, seed=seed, temperature=self.temperature)
        codes = np.asarray(codes, dtype=np.float32)
        want = (num, int(self.autoencoder.latent_dim))
        if codes.shape != want or not np.isfinite(codes).all():
            raise RuntimeError(f"the motion model {self._where()} gave codes {codes.shape}"
                               f"{' (non-finite)' if codes.shape == want else ''}, {want} needed")
        return codes

    def generate(self, clip: TestClip, out: Path) -> None:
        with torch.no_grad():
            refs = (self.codes(clip, masked=False, frames=1)[0], self.codes(clip, masked=True, frames=1)[0])
            driving = self.codes(clip, masked=True) if self.motion_source == "clip" else None
            self.write(self.sample(clip, self.seed, refs, driving), clip, out)
            if self.motion_source == "audio":
                for k in range(1, self.samples):
                    self.write(self.sample(clip, self.seed + k, refs, None), clip,
                               out.with_name(f"{out.stem}.sample{k}.mp4"))


@register_method("styletalker_reconstruction")
class StyleTalkerReconstructionMethod(_StyleTalkerBase):
    """The clip's true frames -> the frame autoencoder -> mp4: the stand-in generator's bound."""

    default_uses_source_video = True

    def __init__(self, name: str, cfg: MethodConfig, ctx: BenchContext, *, autoencoder: Any = None) -> None:
        super().__init__(name, cfg, ctx, autoencoder=autoencoder)
        if autoencoder is None:
            self.ckpt_autoencoder = find_checkpoint((cfg.checkpoints or {}).get(AUTOENCODER), AUTOENCODER,
                                                    ctx.runs_root)
        self.check_dataset(self._ae()["data"], f"the frame autoencoder {self.ckpt_autoencoder or '(injected)'}")

    @classmethod
    def protocol_of(cls, cfg: MethodConfig) -> str:
        return "autoencoder bound"

    def describe(self) -> str:
        return ("the frame autoencoder's reconstruction, StyleTalker†'s image bound (the stand-in for the paper's "
                "StyleGAN inversion): every true frame of the clip encoded and decoded"
                f"{self.resize_note(self.working_resolution)}")

    def generate(self, clip: TestClip, out: Path) -> None:
        self.write(self.codes(clip, masked=False), clip, out)


__all__ = ["MOTION_SOURCES", "SUBSTITUTES", "StyleTalkerMethod", "StyleTalkerReconstructionMethod"]
