"""Scoring one generated clip against its ground truth with every requested metric (:class:`Scorer`), and the
networks a test injects in place of the pretrained ones (:class:`Backends`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints import CheckpointError
from ..config import ConfigError, resolve_path, to_container
from ..metrics import (
    CSIMMetric,
    DlibFaceEmbedder,
    FIDMetric,
    LMDMetric,
    LPIPSMetric,
    MissingWeightsError,
    PSNRMetric,
    SSIMMetric,
    SyncMetric,
    SyncNetExpert,
    landmarks_from_frames,
    sync_scores_from_embeddings,
)
from ..metrics._common import unit_float_images
from ..metrics.emotion import EmotionMetric
from ..metrics.lmd import DlibLandmarker, LMDNormalisation, motion_spread
from .cache import CACHE_VERSION, file_fingerprint
from .clips import TestClip
from .config import METRICS, BenchConfig, LMDTarget, MethodUnavailable, MetricNotApplicable, SyncAudio


@dataclass
class Backends:
    """Networks injected in place of the ones the bench would resolve (tests). Each is labelled as given in the table;
    ``None`` resolves the real one."""

    fid_features: tuple[nn.Module, str] | None = None  # (module (B, 3, H, W) [0, 1] -> (B, D), label)
    lpips_random_backbone_for_tests: bool = False  # LPIPS with a random AlexNet trunk, labelled as such
    sync_expert: Any | None = None  # a metrics.sync.SyncExpert (name + embed)
    landmarker: tuple[Callable[[np.ndarray], np.ndarray | None], str] | None = None  # (landmarker, label)
    csim_embedder: Any | None = None  # anything with DlibFaceEmbedder's embed(image) -> (descriptor, fallback)
    emotion_classifier: Any | None = None  # a metrics.emotion.EmotionClassifier (name + predict(landmarks68))


class _RecordingExpert:
    """Passes a sync expert through and keeps the last embeddings, for the per-clip signed AV offset."""

    def __init__(self, expert: Any) -> None:
        self.expert = expert
        self.name = expert.name
        self.last: tuple[Tensor, Tensor] | None = None

    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[Tensor, Tensor]:
        self.last = self.expert.embed(frames, audio)
        return self.last


class _FeatureFID(FIDMetric):
    """FIDMetric fed with features computed (and cached) per clip: the running sums are the same."""

    def features(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` uint8 or [0, 1] -> ``(B, D)`` float32, as ``update`` computes them."""
        with torch.no_grad():
            return self._features(unit_float_images(images, name="FID images")).float().cpu()

    def add_features(self, features: Tensor, *, real: bool) -> None:
        from ..metrics import fid_sums_update

        s, ss, n = fid_sums_update(features)
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + s.to(self.real_sum))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + ss.to(self.real_outer))
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + n)


@dataclass
class MetricSetup:
    """Whether one requested metric runs here, the network that computes it, or why it is n/a (``applicable``: False
    when the data cannot ask its question, which ``strict`` accepts, rather than an instrument being missing)."""

    name: str
    available: bool
    label: str = ""
    reason: str = ""
    applicable: bool = True


def _state_to_json(metric: Any) -> dict[str, Any]:
    return {k: (v.item() if v.numel() == 1 else v.tolist()) for k, v in metric.metric_state.items()}


class Scorer:
    """Builds every requested metric once (or records why it is n/a) and scores one clip at a time.

    Per clip each metric is reset, updated with the clip, and its report (the per-clip row) and state (for the table)
    taken; :meth:`aggregate` merges the states of many clips with each metric's own reduction. The metrics never
    synchronise across processes themselves (``sync_on_compute=False``): the bench gathers per-clip states instead.
    FID is kept per method in running sums (:meth:`fid_metric`) that do synchronise.
    """

    def __init__(self, cfg: BenchConfig, *, data_root: Path, dataset_info: dict, device: torch.device,
                 backends: Backends | None = None) -> None:
        b = backends or Backends()
        self.cfg = cfg
        self.device = device
        self.resolution = int(dataset_info.get("resolution", 0)) or None
        self.synthetic = str(dataset_info.get("source", dataset_info.get("name", ""))).startswith("synth")
        unknown = sorted(set(cfg.metrics) - set(METRICS))
        if unknown:
            raise ConfigError(f"metrics: unknown {unknown}; choose from {list(METRICS)}")
        self.requested = [m for m in METRICS if m in cfg.metrics]
        self.setup: dict[str, MetricSetup] = {}
        self.metrics: dict[str, Any] = {}
        self.landmarker: Callable | None = None
        self.landmarker_label = ""
        self.expert: _RecordingExpert | None = None
        self._fid_proto: nn.Module | None = None
        self.fid_label = ""
        self._gt_read: dict[str, np.ndarray] = {}  # the landmarker on the current clip's ground-truth frames
        self.key_files: dict[str, Any] = {}  # evaluator files whose change must invalidate cached rows
        for name in self.requested:
            try:
                label = getattr(self, f"_build_{name}")(b, data_root)
                self.setup[name] = MetricSetup(name, True, label)
            except (MissingWeightsError, FileNotFoundError, MethodUnavailable, CheckpointError) as err:
                self.setup[name] = MetricSetup(name, False, reason=str(err))
            except MetricNotApplicable as err:
                self.setup[name] = MetricSetup(name, False, reason=str(err), applicable=False)

    # -- construction ---------------------------------------------------------------------------------------------

    def _build_ssim(self, b: Backends, root: Path) -> str:
        self.metrics["ssim"] = SSIMMetric(region="frame", sync_on_compute=False)
        return "Gaussian 11x11, sigma 1.5 (Wang et al. 2004), per frame"

    def _build_psnr(self, b: Backends, root: Path) -> str:
        self.metrics["psnr"] = PSNRMetric(region="frame", sync_on_compute=False)
        return "per frame, [0, 1] range"

    def _build_ssim_mouth(self, b: Backends, root: Path) -> str:
        self.metrics["ssim_mouth"] = SSIMMetric(region="mouth", sync_on_compute=False)
        return "96x96 crop around the ground-truth mouth points 48-67"

    def _build_psnr_mouth(self, b: Backends, root: Path) -> str:
        self.metrics["psnr_mouth"] = PSNRMetric(region="mouth", sync_on_compute=False)
        return "96x96 crop around the ground-truth mouth points 48-67"

    def _build_lpips(self, b: Backends, root: Path) -> str:
        m = LPIPSMetric(allow_random_backbone_for_tests=b.lpips_random_backbone_for_tests, sync_on_compute=False)
        self.metrics["lpips"] = m.to(self.device)
        return m.backbone

    def _resolve_landmarker(self, b: Backends, root: Path) -> str:
        """The landmarker of ``lmd.landmarker`` (LMD's, also the emotion accuracy's), built once; returns its label."""
        if self.landmarker is not None:
            return self.landmarker_label
        s = self.cfg.lmd
        if b.landmarker is not None:
            landmarker, name = b.landmarker
        else:
            choice = s.landmarker
            if choice == "auto":
                choice = "trained" if self.synthetic else "dlib"
            if choice == "dlib":
                landmarker = DlibLandmarker(upsample_num_times=s.dlib_upsample)
                name = "dlib 68 (shape_predictor_68_face_landmarks.dat)"
                self.key_files["landmarker"] = file_fingerprint(Path(landmarker.predictor_path))
            else:
                landmarker, self.key_files["landmarker"] = _trained_scorer("landmarker", choice, root,
                                                                           self.cfg.runs_root)
                name = landmarker.name
        self.landmarker, self.landmarker_label = landmarker, name
        return name

    def _build_lmd(self, b: Backends, root: Path) -> str:
        s = self.cfg.lmd
        if s.target not in get_args(LMDTarget):
            raise ConfigError(f"lmd.target must be one of {get_args(LMDTarget)}, got {s.target!r}")
        name = self._resolve_landmarker(b, root)
        norm: LMDNormalisation = s.normalisation  # type: ignore[assignment]
        res = s.report_resolution or self.resolution
        self.metrics["lmd"] = LMDMetric(normalisation=norm, resolution=res if norm == "pixels" else None,
                                        sync_on_compute=False)
        return name

    def _build_sync(self, b: Backends, root: Path) -> str:
        s = self.cfg.sync
        if s.audio not in get_args(SyncAudio):
            raise ConfigError(f"sync.audio must be one of {get_args(SyncAudio)}, got {s.audio!r}")
        if b.sync_expert is not None:
            expert = b.sync_expert
        elif s.expert in ("auto", "official"):
            try:
                expert = SyncNetExpert.official(device=self.device)
            except MissingWeightsError as official_missing:
                if s.expert == "official":
                    raise
                try:
                    expert, self.key_files["sync_expert"] = _trained_scorer("syncnet", "trained", root,
                                                                            self.cfg.runs_root, device=self.device)
                except FileNotFoundError as no_trained:
                    raise FileNotFoundError(
                        f"neither the official SyncNet nor a trained expert is available.\n{official_missing}\n"
                        f"Or: {no_trained}"
                    ) from no_trained
        else:
            expert, self.key_files["sync_expert"] = _trained_scorer("syncnet", s.expert, root, self.cfg.runs_root,
                                                                    device=self.device)
        self.expert = _RecordingExpert(expert)
        self.metrics["sync"] = SyncMetric(self.expert, vshift=s.vshift, sync_on_compute=False)
        return expert.name

    def _build_csim(self, b: Backends, root: Path) -> str:
        from ..metrics import IDENTITY_NETWORK

        embedder = b.csim_embedder if b.csim_embedder is not None else DlibFaceEmbedder()
        self.metrics["csim"] = CSIMMetric(embedder=embedder, sync_on_compute=False)
        label = getattr(embedder, "name", IDENTITY_NETWORK)
        k = max(1, self.cfg.csim.frame_stride)
        every = "every frame" if k == 1 else f"1 frame in {k}"
        return f"{label}; {every} against the clip's first frame (the reference)"

    def _build_emotion(self, b: Backends, root: Path) -> str:
        from ..data.clip import read_index
        from ..data.scorer_data import emotion_problem

        problem = emotion_problem(read_index(root), f"dataset {root}")
        if problem:  # checked first: without labels there is nothing to train a classifier for either
            raise MetricNotApplicable(problem)
        if b.emotion_classifier is not None:
            classifier = b.emotion_classifier
        else:
            classifier, self.key_files["emotion"] = _trained_scorer("emotion", self.cfg.emotion.classifier, root,
                                                                    self.cfg.runs_root)
        landmarks = self._resolve_landmarker(b, root)
        self.metrics["emotion"] = EmotionMetric(classifier, sync_on_compute=False)
        return f"{classifier.name}; landmarks by {landmarks}"

    def _build_fid(self, b: Backends, root: Path) -> str:
        if b.fid_features is not None:
            net, label = b.fid_features
            self._fid_proto = _FeatureFID(feature_extractor=net, feature_extractor_name=label).to(self.device)
        else:
            self._fid_proto = _FeatureFID().to(self.device)
        self.fid_label = self._fid_proto.feature_extractor_name
        return self.fid_label

    # -- use ----------------------------------------------------------------------------------------------------------

    @property
    def available(self) -> list[str]:
        return [m for m in self.requested if self.setup[m].available]

    def unavailable(self) -> dict[str, str]:
        return {m: s.reason for m, s in self.setup.items() if not s.available}

    def missing(self) -> dict[str, str]:
        """The n/a metrics whose instrument is missing (what ``strict`` refuses), without the inapplicable ones."""
        return {m: s.reason for m, s in self.setup.items() if not s.available and s.applicable}

    def key(self) -> dict[str, Any]:
        """Everything about the scoring that a cached per-clip row depends on."""
        c = self.cfg
        return {"version": CACHE_VERSION, "metrics": [m for m in self.available if m != "fid"],
                "labels": {m: self.setup[m].label for m in self.available if m != "fid"},
                "files": self.key_files, "lmd": to_container(c.lmd) if "lmd" in self.available else None,
                "sync": to_container(c.sync) if "sync" in self.available else None,
                "csim": to_container(c.csim) if "csim" in self.available else None}

    def fid_metric(self) -> _FeatureFID | None:
        """A fresh running-sum FID for one method (shares the feature network)."""
        if self._fid_proto is None:
            return None
        return _FeatureFID(feature_extractor=self._fid_proto.feature_extractor, feature_extractor_name=self.fid_label,
                           num_features=self._fid_proto.num_features).to(self.device)

    def fid_features(self, frames: np.ndarray) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 -> ``(T, D)`` float32 FID features."""
        assert self._fid_proto is not None
        out = []
        for start in range(0, len(frames), 32):
            x = torch.from_numpy(np.ascontiguousarray(frames[start : start + 32])).permute(0, 3, 1, 2).to(self.device)
            out.append(self._fid_proto.features(x))
        return torch.cat(out).numpy()

    def _landmarks(self, frames: np.ndarray) -> np.ndarray:
        predict = getattr(self.landmarker, "predict", None)
        if callable(predict):
            return np.asarray(predict(frames), dtype=np.float64)
        return landmarks_from_frames(frames, landmarker=self.landmarker)

    def _gt_frame_landmarks(self, clip: TestClip) -> np.ndarray:
        """The landmarker on the clip's ground-truth frames, computed once per clip and shared by the methods."""
        if clip.id not in self._gt_read:
            self._gt_read = {clip.id: self._landmarks(clip.frames)}  # one clip at a time
        return self._gt_read[clip.id]

    def score(self, generated: np.ndarray, clip: TestClip, *, audio: np.ndarray | None = None,
              motion: np.ndarray | None = None, samples: list[np.ndarray] | None = None) -> tuple[dict, dict]:
        """Score one generated clip against the ground truth: (row values, metric states).

        ``generated`` ``(T', H', W', 3)`` uint8; compared over ``min(T', T)`` frames, resized to the ground-truth size
        first when it differs. ``audio``: the track for the sync metrics (default: the clip's source audio).
        ``motion``: the 68 landmarks ``(T', 68, 2)`` the method generated and rendered, in the video's pixels (the
        emotion column's ``emotion_acc_lm``); None for methods that make none. ``samples``: more videos of the clip
        from the same method with other seeds (a stochastic method's diversity): with the landmarker, the row gets
        ``motion_spread`` over the video and them (``metrics.lmd.motion_spread``).
        """
        gt = clip.frames
        t = min(len(generated), len(gt))
        if t == 0:
            raise ValueError(f"clip {clip.id}: the generated video has no frames")
        row: dict[str, Any] = {"frames": t, "frames_generated": len(generated), "resized_from": ""}
        gen = generated[:t]
        if gen.shape[1:3] != gt.shape[1:3]:
            row["resized_from"] = f"{gen.shape[1]}x{gen.shape[2]}"
            gen = _resized(gen, gt.shape[1:3])
        real = gt[:t]
        g = torch.from_numpy(np.ascontiguousarray(gen)).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        r = torch.from_numpy(np.ascontiguousarray(real)).permute(0, 3, 1, 2)
        lm68 = clip.landmarks68[:t]
        # the landmarker on the generated frames: once, for LMD and the emotion accuracy
        gen_landmarks = self._landmarks(gen) if {"lmd", "emotion"} & set(self.available) else None
        states: dict[str, Any] = {}
        for name in self.available:
            if name == "fid":
                continue
            m = self.metrics[name]
            m.reset()
            if name in ("ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips"):
                for s in range(0, t, 16):  # chunks bound the float64 SSIM buffers at large resolutions
                    if name == "lpips":
                        m.update((g[s : s + 16].float() / 127.5 - 1).to(self.device), (r[s : s + 16].float() / 127.5 - 1).to(self.device))
                    elif name.endswith("_mouth"):
                        m.update(g[s : s + 16], r[s : s + 16], mouth_landmarks=lm68[s : s + 16])
                    else:
                        m.update(g[s : s + 16], r[s : s + 16])
            elif name == "lmd":
                target = self._gt_frame_landmarks(clip) if self.cfg.lmd.target == "frames" else clip.landmarks68
                m.update(gen_landmarks, target[:t], source_resolution=int(gt.shape[1]))
                if samples:
                    read = [gen_landmarks] + [self._landmarks(aligned(v, clip)[:t]) for v in samples]
                    row["motion_spread"] = motion_spread(read)
                    states["motion_spread"] = {"total": row["motion_spread"] * t, "frames": t}
            elif name == "emotion":
                m.update(gen_landmarks, clip.record.emotion, truth=lm68, truth_read=self._gt_frame_landmarks(clip)[:t],
                         motion=None if motion is None else motion[:t])
                row["emotion_pred"] = m.last_prediction
            elif name == "sync":
                sound = clip.audio if audio is None else audio
                m.update(gen, sound)
                v, a = self.expert.last  # type: ignore[union-attr]
                row["sync_offset"] = sync_scores_from_embeddings(v, a, vshift=self.cfg.sync.vshift).offset
            elif name == "csim":
                m.update(gen[:: max(1, self.cfg.csim.frame_stride)], gt[0])
            states[name] = _state_to_json(m)
            row.update(self._values(name, m))
        return row, states

    def _values(self, name: str, m: Any) -> dict[str, Any]:
        """The stable columns of one metric from its report (NaN when it has nothing to report)."""
        try:
            rep = m.report()
        except ValueError:  # e.g. LMD with no detected face in any frame
            rep = {}
        if name == "lmd":
            mouth, face = m.names
            return {"lmd_mouth": rep.get(mouth, float("nan")), "lmd_face": rep.get(face, float("nan")),
                    "jitter_ratio": rep.get("lmd_jitter_ratio", float("nan")),
                    "lmd_missing_frames": rep.get("lmd_missing_frames", 0)}
        if name == "lpips":
            return {"lpips": rep.get("lpips", rep.get("lpips_random_backbone", float("nan")))}
        if name == "sync":
            return {k: rep.get(k, float("nan")) for k in ("lse_c", "lse_d", "sync_abs_offset")}
        if name == "emotion":
            return {k: rep.get(k, float("nan")) for k in ("emotion_acc", "emotion_acc_lm", "emotion_acc_gt",
                                                          "emotion_acc_gt_frames")}
        return {name: rep.get(name, float("nan"))}

    def aggregate(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """Table values of one method from its clips' states (merged in the given order); plus the report extras."""
        out: dict[str, Any] = {}
        for name in self.available:
            if name == "fid":
                continue
            m = self.metrics[name]
            m.reset()
            for st in states:
                if name in st:
                    m.merge_state({k: torch.tensor(v, dtype=getattr(m, k).dtype) for k, v in st[name].items()})
            values = self._values(name, m)
            values.pop("lmd_missing_frames", None)
            out.update(values)
        spread = [st["motion_spread"] for st in states if "motion_spread" in st]
        if "lmd" in self.available and spread:  # frame-weighted over the clips that had samples
            out["motion_spread"] = sum(s["total"] for s in spread) / max(1, sum(s["frames"] for s in spread))
        return out

    @property
    def lmd_unit(self) -> str:
        if "lmd" not in self.available:
            return ""
        mouth, _ = self.metrics["lmd"].names
        return mouth.removeprefix("lmd_mouth_")


def aligned(frames: np.ndarray, clip: TestClip) -> np.ndarray:
    """The generated frames the metrics compared: the first min(T', T), at the ground-truth size."""
    gen = frames[: min(len(frames), clip.record.num_frames)]
    size = clip.frames.shape[1:3]
    return gen if gen.shape[1:3] == size else _resized(gen, size)


def _resized(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(T, H', W', 3)`` uint8 -> ``(T, *size, 3)`` uint8 (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


# -- the dataset-trained scorers (metrics/scorers.py) ------------------------------------------------------------------


def _trained_scorer(kind: str, choice: str, data_root: Path, runs_root: str, **load: Any) -> tuple[Any, dict[str, Any]]:
    """(scorer, fingerprint of its file) of a registered scorer ``kind`` (landmarker | syncnet | emotion): the
    dataset's (``choice="trained"``: runs/scorers/<kind>-<dataset>), or a run folder or file's. ``load``: passed on
    to the scorer's ``load`` (the sync expert's device)."""
    from ..metrics import scorers

    cls, filename = {"landmarker": (scorers.TrainedLandmarker, scorers.LANDMARKER_FILE),
                     "syncnet": (scorers.TrainedSyncExpert, scorers.EXPERT_FILE),
                     "emotion": (scorers.TrainedEmotionClassifier, scorers.EMOTION_FILE)}[kind]
    run = (scorers.scorer_run_dir(kind, data_root, runs_root=runs_root) if choice == "trained"
           else resolve_path(choice))
    return cls.load(run, **load), file_fingerprint(run / filename if run.is_dir() else run)
