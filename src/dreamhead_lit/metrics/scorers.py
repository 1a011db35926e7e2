"""The dataset-trained scorers as the bench uses them: a landmarker for LMD, a sync expert for LSE-C / LSE-D and an
emotion classifier for the emotion accuracy.

They serve data the pretrained instruments cannot score (dlib's 68-point model does not apply to rendered faces; the
official ``syncnet_v2.model`` may be absent; no pretrained landmark emotion classifier exists).
``python -m dreamhead_lit.train landmarker`` / ``... train syncnet`` / ``... train emotion`` (registry entries;
:mod:`dreamhead_lit.lit.landmarker`, :mod:`dreamhead_lit.lit.sync_expert`, :mod:`dreamhead_lit.lit.emotion`) write
``runs/scorers/<kind>-<dataset folder>/`` with a final ``landmarker.pt`` / ``expert.pt`` / ``emotion.pt`` (weights +
what the bench needs to use and name them); the bench finds them there by the dataset folder's name
(:func:`scorer_run_dir`).

- :class:`TrainedLandmarker` has the ``Landmarker`` interface of :mod:`dreamhead_lit.metrics.lmd` (one RGB uint8 frame
  ``(H, W, 3)`` -> ``(68, 2)``); any frame size is resized to the network's input and the points scaled back.
- :class:`TrainedSyncExpert` is a :class:`~dreamhead_lit.metrics.sync.SyncNetExpert` with the reduced network and its
  small video input, so :class:`~dreamhead_lit.metrics.sync.SyncMetric` scores with it unchanged. Its quality is the
  :func:`offset_accuracy`: how often the LSE procedure recovers AV offsets constructed with :func:`shift_audio`.
- :class:`TrainedEmotionClassifier` maps a landmark sequence ``(T, 68, 2)`` (any pixel frame: the input is put in the
  canonical pose first) to probabilities over :data:`~dreamhead_lit.data.clip.EMOTIONS`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoints import CheckpointError, safe_load
from ..config import ConfigError, resolve_path, run_dir
from ..data.audio import SAMPLES_PER_FRAME
from ..data.clip import EMOTIONS
from ..metrics.sync import SyncNetExpert, sync_scores_from_embeddings
from ..models.emotion import EmotionNet, emotion_input
from ..models.landmarker import LandmarkNet, resize_points
from ..models.layers import resize_images
from ..models.sync_expert import ReducedSyncNet, SyncCrop, check_crop, sync_video_input

__all__ = ["DEFAULT_EVAL_SHIFTS", "EMOTION_FILE", "EXPERT_FILE", "LANDMARKER_FILE", "PAD_GUARD", "SCORERS_DIR",
           "TrainedEmotionClassifier", "TrainedLandmarker", "TrainedSyncExpert", "is_scorer_path", "near_chance",
           "offset_accuracy", "refuse_scorer", "save_final", "scorer_run_dir", "scorer_run_name", "shift_audio"]

SCORERS_DIR = "scorers"  # runs/<this>/<kind>-<dataset>/ (the registry's run group of the scorers)
LANDMARKER_FILE = "landmarker.pt"
EXPERT_FILE = "expert.pt"
EMOTION_FILE = "emotion.pt"
PAD_GUARD = 2.0  # constant coordinate appended to the trained expert's unit embeddings (TrainedSyncExpert.embed)
DEFAULT_EVAL_SHIFTS = (-10, -5, -2, 0, 2, 5, 10)  # constructed AV offsets (frames) the offset accuracy is measured on


def scorer_run_name(kind: str, data_root: str | Path) -> str:
    """``<kind>-<dataset folder name>``: a scorer run's default name, so each dataset has its own."""
    return f"{kind}-{resolve_path(data_root).name}"


def scorer_run_dir(kind: str, data_root: str | Path, *, runs_root: str | Path = "runs",
                   name: str | None = None) -> Path:
    """``runs/scorers/<kind>-<dataset folder name>`` (or ``.../<name>``): where training writes and the bench looks."""
    return run_dir(SCORERS_DIR, name or scorer_run_name(kind, data_root), runs_root=runs_root)


def is_scorer_path(path: str | Path, runs_root: str | Path = "runs") -> bool:
    """Whether ``path`` is (or lies in) a dataset-trained scorer's run: the sync scorer's file name, a folder holding
    it, anything under ``<runs_root>/scorers/``, or anything in a ``syncnet-*`` folder wherever it lies."""
    path = resolve_path(path).resolve()
    scorers = (resolve_path(runs_root) / SCORERS_DIR).resolve()
    chain = [path, *path.parents]
    return (path.name == EXPERT_FILE or (path / EXPERT_FILE).exists() or scorers in chain
            or any(p.name.startswith("syncnet-") for p in chain))


def refuse_scorer(path: str | Path, runs_root: str | Path = "runs", *, what: str, model: str,
                  given: str | None = None) -> None:
    """A ConfigError when ``path`` is the bench's sync scorer or another scorer's run (:func:`is_scorer_path`): a
    network that gives a generator its training loss must never be the network that scores the bench. ``what``: the
    config key that named it, ``given``: its value as written (default ``path``), ``model``: the registered model to
    train instead. Callers check the reference as given, then the checkpoint it resolves to, so a scorer's run folder
    is refused for what it is, not for lacking a checkpoint."""
    if is_scorer_path(path, runs_root):
        raise ConfigError(f"{what}={str(given if given is not None else path)!r} is the bench's sync scorer "
                          f"({path}): a training loss must come from a separate {model} run (python -m "
                          f"dreamhead_lit.train {model}), never from the network that scores the bench")


def save_final(path: Path, blob: dict) -> None:
    """A scorer's final file, written under a temporary name and renamed: never half a file under the real name."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def _load_final(path: str | Path, filename: str, *, what: str, kind: str) -> tuple[Path, dict]:
    """(file, contents) of a finished scorer run's ``filename``, from its run folder or the file itself.

    Raises:
        FileNotFoundError: no finished run there, with the command that trains one.
    """
    p = Path(path)
    file = p / filename if p.is_dir() or not p.suffix else p
    if not file.is_file():
        raise FileNotFoundError(f"no {what} at {file}: train one with `make train-{kind}` "
                                f"(python -m dreamhead_lit.train {kind} data.root=<dataset>)")
    return file, safe_load(file, what=what)


class TrainedLandmarker:
    """A trained :class:`LandmarkNet` with the ``Landmarker`` interface of ``metrics/lmd.py``.

    ``landmarker(frame)`` maps one RGB uint8 frame ``(H, W, 3)`` to ``(68, 2)`` float64 pixels (never None: the network
    always answers; it is meant for face crops of the dataset it was trained on). :meth:`predict` does a whole clip in
    batches. ``name`` says which run and its validation error, for the table.
    """

    def __init__(self, net: LandmarkNet, *, name: str, val_err_px: float | None = None, resolution: int | None = None,
                 batch_size: int = 64) -> None:
        self.net = net.eval()
        self.name = name
        self.val_err_px = val_err_px
        self.resolution = resolution
        self.batch_size = int(batch_size)

    @classmethod
    def load(cls, path: str | Path) -> TrainedLandmarker:
        """From a run folder (``runs/scorers/landmarker-<dataset>``) or its ``landmarker.pt``.

        Raises:
            FileNotFoundError: no finished run there, with the command that trains one.
        """
        file, blob = _load_final(path, LANDMARKER_FILE, what="trained landmarker", kind="landmarker")
        net = LandmarkNet(**blob["net"])
        net.load_state_dict(blob["state_dict"])
        err = blob.get("val_err_px")
        run = blob.get("run", file.parent.name)
        label = f"trained landmarker {run} (val err {err:.2f} px)" if err is not None else f"trained landmarker {run}"
        return cls(net, name=label, val_err_px=err, resolution=blob.get("resolution"))

    @torch.no_grad()
    def predict(self, frames: np.ndarray) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB -> ``(T, 68, 2)`` float64 pixels."""
        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {arr.shape}")
        h, w = arr.shape[1:3]
        s = self.net.input_size
        out = []
        for start in range(0, len(arr), self.batch_size):
            x = torch.from_numpy(np.array(arr[start : start + self.batch_size])).permute(0, 3, 1, 2).float() / 255.0
            out.append(resize_points(self.net(resize_images(x, s)), (s, s), (h, w)))
        return torch.cat(out).double().numpy() if out else np.zeros((0, 68, 2))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        img = np.asarray(frame)
        if img.ndim != 3:
            raise ValueError(f"the landmarker takes one frame (H, W, 3), got shape {img.shape}")
        return self.predict(img[None])[0]


class TrainedSyncExpert(SyncNetExpert):
    """A :class:`SyncNetExpert` whose network is a :class:`ReducedSyncNet` with its own (small) video input.

    The windowing, the MFCC front end and the batching are the official evaluation's (inherited); only the frame
    preparation differs (:func:`sync_video_input` instead of 224 px BGR).
    """

    def __init__(self, model: ReducedSyncNet, *, name: str, input_size: int, crop: SyncCrop, batch_size: int = 64,
                 device: str | torch.device | None = None, offset_accuracy: float | None = None) -> None:
        super().__init__(model, name=name, batch_size=batch_size, device=device)  # type: ignore[arg-type]
        self.input_size = int(input_size)
        self.crop = check_crop(crop)
        self.offset_accuracy = offset_accuracy

    def _video_tensor(self, frames: np.ndarray) -> Tensor:
        return sync_video_input(frames, input_size=self.input_size, crop=self.crop)

    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[Tensor, Tensor]:
        """The official windowing on unit embeddings, each with one constant coordinate ``PAD_GUARD`` appended.

        Distances between real windows are unchanged (the coordinate cancels: LSE-D stays in [0, 2]), but the zero
        vectors the LSE procedure pads with beyond the clip's ends are then ``sqrt(1 + PAD_GUARD^2)`` > 2 away from
        every window, so padding never matches better than real audio -- as with the official embeddings, whose norms
        are large. Without it a zero vector sits at distance 1 (cosine 0.5) from every unit embedding.
        """
        v, a = super().embed(frames, audio)
        guard = torch.full((len(v), 1), PAD_GUARD, dtype=v.dtype)
        return torch.cat([v, guard], dim=1), torch.cat([a, guard], dim=1)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> TrainedSyncExpert:
        """From a run folder (``runs/scorers/syncnet-<dataset>``) or its ``expert.pt``.

        Raises:
            FileNotFoundError: no finished run there, with the command that trains one.
        """
        file, blob = _load_final(path, EXPERT_FILE, what="trained sync expert", kind="syncnet")
        model = ReducedSyncNet(width=blob["model"]["width"], embed_dim=blob["model"]["embed_dim"])
        model.load_state_dict(blob["state_dict"])
        acc = blob.get("offset_accuracy")
        run = blob.get("run", file.parent.name)
        m = blob["model"]
        label = (f"trained expert {run} (joonson SyncNet x{m['width']:g} width, {m['input_size']} px "
                 f"{m['crop'].replace('_', ' ')}, InfoNCE"
                 + (f"; offset acc {100 * acc:.0f}% on held-out clips" if acc is not None else "")
                 + ("; NEAR CHANCE: too little training data, its LSE figures mean little)" if near_chance(acc)
                    else ")"))
        return cls(model, name=label, input_size=m["input_size"], crop=m["crop"], device=device, offset_accuracy=acc)


class TrainedEmotionClassifier:
    """A trained :class:`EmotionNet`: :meth:`predict` maps one clip's landmarks to probabilities over ``EMOTIONS``.

    ``name`` says which run and its accuracy on held-out clips, for the table.
    """

    def __init__(self, net: EmotionNet, *, name: str, val_acc: float | None = None) -> None:
        self.net = net.eval()
        self.name = name
        self.val_acc = val_acc

    @classmethod
    def load(cls, path: str | Path) -> TrainedEmotionClassifier:
        """From a run folder (``runs/scorers/emotion-<dataset>``) or its ``emotion.pt``.

        Raises:
            FileNotFoundError: no finished run there, with the command that trains one.
            CheckpointError: a file written for another list of emotions.
        """
        file, blob = _load_final(path, EMOTION_FILE, what="trained emotion classifier", kind="emotion")
        if list(blob.get("emotions", [])) != list(EMOTIONS):
            raise CheckpointError(f"{file} classifies {blob.get('emotions')}, not {list(EMOTIONS)}: retrain it "
                                  "(make train-emotion)")
        net = EmotionNet(**blob["net"])
        net.load_state_dict(blob["state_dict"])
        acc = blob.get("val_acc")
        run = blob.get("run", file.parent.name)
        label = f"trained emotion classifier {run}" + (f" (acc {acc:.0%} on held-out clips)" if acc is not None else "")
        return cls(net, name=label, val_acc=acc)

    @torch.no_grad()
    def predict(self, landmarks68: np.ndarray) -> np.ndarray:
        """``(T, 68, 2)`` landmarks of one clip, in any pixel frame -> ``(len(EMOTIONS),)`` float64 probabilities.

        Frames without landmarks (NaN rows, where a landmarker found no face) are left out.

        Raises:
            ValueError: no frame has landmarks, or the shape is not ``(T, 68, 2)``.
        """
        pts = np.asarray(landmarks68, dtype=np.float64)
        if pts.ndim != 3 or pts.shape[1:] != (68, 2):
            raise ValueError(f"landmarks must be (T, 68, 2), got shape {pts.shape}")
        pts = pts[np.isfinite(pts).all(axis=(1, 2))]
        if not len(pts):
            raise ValueError("no frame with landmarks to classify")
        x = emotion_input(pts)[None].to(next(self.net.parameters()).device)  # (1, T, 68, 2)
        return self.net(x)[0].softmax(-1).double().cpu().numpy()


def near_chance(offset_accuracy: float | None) -> bool:
    """Below 0.3: an expert that answers offset 0 for every shift already scores 1/7 on the default shifts."""
    return offset_accuracy is not None and offset_accuracy < 0.3


def shift_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """Audio moved by ``frames`` video frames, same length (zeros fill): ``+k`` = the audio comes ``k`` frames early,
    i.e. the video lags by ``k`` -- the AV offset :func:`~dreamhead_lit.metrics.sync.sync_scores_from_embeddings`
    reports as ``+k``."""
    n = abs(int(frames)) * SAMPLES_PER_FRAME
    out = np.zeros_like(audio)
    if n >= len(audio):
        return out
    if frames > 0:
        out[: len(audio) - n] = audio[n:]
    elif frames < 0:
        out[n:] = audio[: len(audio) - n]
    else:
        out[:] = audio
    return out


def offset_accuracy(expert: SyncNetExpert, clips: list[tuple[np.ndarray, np.ndarray]], shifts: list[int], *,
                    tolerance: int = 1) -> dict[str, float]:
    """How often the LSE procedure recovers a constructed AV offset: each clip's audio is shifted by each of
    ``shifts`` frames and the offset found (argmin over -15..15 of the mean embedding distance) compared with it.

    Returns ``offset_acc`` (within ``tolerance`` frames), ``offset_exact``, ``offset_mae`` (frames) and ``trials``.
    """
    hits = exact = 0
    errors = []
    for frames, audio in clips:
        for k in shifts:
            v, a = expert.embed(frames, shift_audio(audio, k))
            found = sync_scores_from_embeddings(v, a).offset
            errors.append(abs(found - k))
            hits += abs(found - k) <= tolerance
            exact += found == k
    n = max(1, len(errors))
    return {"offset_acc": hits / n, "offset_exact": exact / n,
            "offset_mae": float(np.mean(errors)) if errors else float("nan"), "trials": len(errors)}
