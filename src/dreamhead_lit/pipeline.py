"""Generation end to end: audio + reference (image, video or processed clip) -> landmarks -> frames -> mp4.

    stage 1 (A2L): audio -> canonical landmarks, starting from the reference's canonical landmarks
    pose:          canonical -> crop pixels with the reference's head pose (per frame for a reference video)
    stage 2 (L2I): landmark images + reference appearance (+ the masked reference frame in dubbing mode) -> frames
    video:         frames + the input audio -> H.264/AAC mp4 at 25 fps, written atomically

A stage-2 model trained with ``model.condition=audio`` (the ``landmark_hierarchy`` ablation) skips the first two
steps: each frame's audio window drives it directly, with the same reference handling and video writing.

Everything a model needs to know about its training data (landmark topology, canonical template, resolution,
landmark-image blur) comes from the checkpoint (``checkpoint["dreamhead"]``), so generation needs only the two
checkpoints and the inputs.

Nothing is written unless it is whole and finite: the inputs, the models' weights and their landmark sets are checked
before any sampling, each stage's output before it is used, and the mp4 appears at ``out`` only when complete.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints import CheckpointError, header_model, safe_load
from .data.audio import AudioError, load_audio
from .data.clip import SAMPLES_PER_FRAME, ClipReader, ClipRecord, atomic_save_npy, read_dataset_info, validate_clip
from .data.landmarks import LandmarkTopology, apply_affine, canonicalize, lower_face_mask, rasterize_landmarks

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}


class GenerationError(ValueError):
    """A problem with the user's inputs that stops generation, with what to do about it."""


@dataclass
class Reference:
    """The reference face at the model's resolution: one frame for a portrait, every frame for a video."""

    frames: np.ndarray  # (T, H, W, 3) uint8 crops
    landmarks: np.ndarray  # (T, N, 2) crop pixels, the model topology's full point set
    landmarks68: np.ndarray  # (T, 68, 2)
    source: str  # "image", "video" or "clip"
    topology: str | None = None  # name of the landmark set (a clip's dataset's); None: built in the model's own


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def load_stage(path: str | Path, stage: str):
    """Load a checkpoint safely (weights only) by its registry entry and check that it is the expected model (a
    stage, or any registered name); returns the module in eval mode."""
    from . import registry

    path = Path(path)
    if not path.is_file():
        raise GenerationError(f"checkpoint {path} not found")
    try:
        ckpt = safe_load(path)
    except CheckpointError as err:
        raise GenerationError(str(err)) from err
    found = header_model(ckpt.get("dreamhead") or {}) if isinstance(ckpt, dict) else None
    if found is None and isinstance(ckpt, dict):
        found = _infer_stage(ckpt)
    serves = found in registry.names() and registry.get(found).serves == stage  # e.g. a distilled stage 2
    if found != stage and not serves:
        what = f"a {found} checkpoint" if found else "not a dreamhead-lit checkpoint"
        raise GenerationError(f"{path} is {what}, but a {stage} checkpoint is needed here "
                              f"(--{stage} takes runs/{stage}/<name>/checkpoints/*.ckpt)")
    module = registry.get(found if serves else stage).load_checkpoint(path)
    if not getattr(module, "data_info", True):
        module.data_info = _describe_from_run(path, stage)
    return module


def _infer_stage(ckpt: dict) -> str | None:
    """The stage of a checkpoint written before checkpoints carried it, from its hyper-parameters."""
    hp = ckpt.get("hyper_parameters", {})
    if "audio_steps" in hp:
        return "stage1"
    if "landmark_channels" in hp:
        return "stage2"
    return None


def _describe_from_run(path: Path, stage: str) -> dict:
    """Rebuild the data description of an older checkpoint from its run's config.yaml and dataset."""
    from omegaconf import OmegaConf

    from .config import to_container
    from .data.datamodule import TalkingHeadDataModule

    cfg_path = path.parent.parent / "config.yaml"
    if not cfg_path.is_file():
        raise GenerationError(f"{path} carries no data description and has no config.yaml beside its run: retrain it")
    data = to_container(OmegaConf.load(cfg_path).data)
    dm = TalkingHeadDataModule(stage="a2l" if stage == "stage1" else "l2i", **data)
    try:
        dm.setup()
    except (FileNotFoundError, ValueError) as err:
        raise GenerationError(f"{path} carries no data description and its dataset is unavailable ({err})") from err
    return dm.describe()


def _topology(info: dict) -> LandmarkTopology:
    return LandmarkTopology.from_json(info["landmark_topology"])


def _tensors(value, name: str):
    """(name, tensor) pairs of a state-dict entry; EMA shadows sit in nested dicts of its extra state."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{name}.{key}")


def check_finite_weights(module, path: str | Path) -> None:
    """Refuse a model with NaN/inf weights (a diverged run), EMA weights included: it would only produce garbage."""
    if not isinstance(module, torch.nn.Module):  # a stand-in such as the bench's ground-truth stage 1
        return
    bad = [name for key, value in module.state_dict().items() for name, t in _tensors(value, key)
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise GenerationError(f"{path} has non-finite weights ({bad[0]}{more}): its training diverged or the file is "
                              "damaged; retrain it or use an earlier checkpoint")


def takes_stage1(stage2) -> bool:
    """Whether a stage-2 model needs stage 1: one conditioned on landmarks does; one conditioned on audio
    (``model.condition=audio``, the landmark_hierarchy ablation) makes frames from the audio and takes none."""
    return stage2.net.condition != "audio"


def check_stage1_given(stage2, given: bool, name: str) -> None:
    """Refuse a stage 1 given to an audio-conditioned stage 2, or missing for a landmark-conditioned one."""
    if not takes_stage1(stage2) and given:
        raise GenerationError(f"{name} is conditioned on audio (model.condition=audio): it makes the frames from the "
                              "audio itself and takes no stage-1 model; leave --stage1 out")
    if takes_stage1(stage2) and not given:
        raise GenerationError(f"{name} is conditioned on landmarks: give a stage-1 checkpoint (--stage1) to make them "
                              "from the audio")


def load_checked(path: str | Path, stage: str):
    """:func:`load_stage`, then :func:`check_finite_weights`; the module remembers its file for later messages."""
    module = load_stage(path, stage)
    check_finite_weights(module, path)
    module.checkpoint_file = str(path)
    return module


def _model_name(module, stage: str) -> str:
    """How messages name a model: ``the stage-1 model runs/.../last.ckpt``, the file when known."""
    path = getattr(module, "checkpoint_file", None)
    return f"the {stage} model {path}" if path else f"the {stage} model"


def _landmark_set(name: str | None, num_points: int) -> str:
    if name is None:
        return f"{num_points} landmarks"
    if name == "dlib68":
        return "dlib's 68 points"
    if name.startswith("synthtalk"):
        return f"{num_points}-point SynthTalk dense landmarks"
    if name.startswith("mediapipe"):
        return f"MediaPipe's {num_points} points"
    return f"{num_points} {name!r} landmarks"


def _model_for(name: str | None, num_points: int) -> str:
    """The kind of model that fits landmarks of this set."""
    if name == "dlib68":
        return "a model trained on data preprocessed with --landmarks dlib68"
    if name and name.startswith("mediapipe"):
        return "a model trained on data preprocessed with --landmarks mediapipe"
    if name and name.startswith("synthtalk"):
        return f"a model trained on SynthTalk generated with {num_points} landmarks"
    return f"a model trained on {num_points} landmarks"


def check_landmark_contract(module, num_points: int, where: str, *, points_name: str | None = None,
                            remedy: str | None = None) -> None:
    """Refuse landmarks of another set than the one ``module`` was trained on (its ``data_info``), before sampling.

    ``num_points``: how many points ``where`` (e.g. "the clip 'abc'") has; ``points_name``: their topology's name
    when known (``dataset.json``), for the message. The model indexes its points by position, so only the same set
    works: a 68-point clip on a 131-point model would otherwise fail deep inside with an IndexError. ``remedy``
    replaces the default advice (a matching model, or a portrait/video reference, landmarked in the model's set).
    """
    stage = "stage-2" if hasattr(module, "generate_frames") else "stage-1"
    check_landmark_set(getattr(module, "data_info", None) or {}, num_points, where, model=_model_name(module, stage),
                       points_name=points_name, remedy=remedy)


def check_landmark_set(info: dict, num_points: int, where: str, *, model: str, points_name: str | None = None,
                       remedy: str | None = None) -> None:
    """:func:`check_landmark_contract` on a model's data description alone (a checkpoint's header), so a caller can
    check before building the model; ``model`` names it in the message."""
    if "landmark_topology" not in info:  # a stand-in without a data description has no contract to check
        return
    topo = _topology(info)
    if num_points == topo.num_points:
        return
    remedy = remedy or (f"use {_model_for(points_name, num_points)}, or a portrait/video reference, which is "
                        "landmarked with the model's own set")
    raise GenerationError(f"{model} was trained on {_landmark_set(topo.name, topo.num_points)}; {where} has "
                          f"{_landmark_set(points_name, num_points)}: {remedy}")


# ---------------------------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------------------------


def dense_from_68(points68: np.ndarray, info: dict, frames: np.ndarray | None = None) -> np.ndarray:
    """The model topology's full point set from dlib's 68 points: (T, 68, 2) -> (T, N, 2).

    SynthTalk's dense points are fixed interpolations of the 68 (the generator adds a lip curvature that a
    photo's landmarks cannot give); a MediaPipe-dense model needs MediaPipe run on the frames.
    """
    topo = _topology(info)
    if topo.num_points == 68:
        return points68
    if topo.name.startswith("synthtalk"):
        from .data.landmarks import build_dense_layout
        from .data.synth import neutral_template

        layout = build_dense_layout(topo.num_points, template68=neutral_template())
        return np.einsum("nk,tkd->tnd", layout.weights, points68).astype(np.float32)
    if topo.name.startswith("mediapipe"):
        from .data.detectors import MediaPipeDense, mediapipe_available

        if not mediapipe_available() or frames is None:
            raise GenerationError("this model was trained on MediaPipe dense landmarks: `make install-dense` first")
        with MediaPipeDense(static_image_mode=len(frames) == 1) as mesh:
            dense = [mesh(f) for f in frames]
        if any(d is None for d in dense):
            raise GenerationError("MediaPipe found no face in the reference")
        return np.stack(dense).astype(np.float32)[:, : topo.num_points]
    raise GenerationError(f"cannot build the {topo.name!r} landmark set from a photo")


def reference_from_image(path: Path, *, size: int, info: dict) -> Reference:
    """A portrait: dlib finds the face, crops it as preprocessing does (``data/tracking.py``), and landmarks it."""
    from PIL import Image, UnidentifiedImageError

    from .data.detectors import FaceDetector
    from .data.tracking import FaceCropper, crop_piece, still_piece

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise GenerationError(f"cannot read the reference image {path} ({err})") from err
    boxes = FaceDetector(min_size=40, max_side=1024).detect(rgb)
    if not boxes:
        raise GenerationError(f"no face found in the reference image {path}: use a frontal portrait "
                              "with the face at least 40 px wide")
    box = max(boxes, key=lambda b: b.size)  # the portrait's subject; a bystander or a picture on a wall is smaller
    if len(boxes) > 1:
        print(f"warning: {len(boxes)} faces in {path.name}; using the largest (at {box.x0:.0f},{box.y0:.0f}, "
              f"{box.width:.0f}×{box.height:.0f} px)", file=sys.stderr)
    crops, lm68 = crop_piece([rgb], still_piece(box.as_array()), FaceCropper(size))
    return Reference(crops, dense_from_68(lm68, info, crops), lm68, "image")


def reference_from_video(path: Path, *, size: int, info: dict, max_frames: int | None) -> Reference:
    """A talking video (dubbing mode): the face is tracked and cropped per frame as preprocessing does
    (``data/tracking.py`` with its default settings); its pose and background stay. Where the face is lost for more
    than the tracker's ``max_gap``, the longest stretch with a face is used."""
    from .data.tracking import FaceCropper, FaceTracker, TrackSettings, crop_piece, track_pieces
    from .video import VideoError, read_video

    try:
        video = read_video(path, with_audio=False, target_fps=25)
    except VideoError as err:
        raise GenerationError(f"cannot read the reference video: {err}") from err
    frames = list(video.frames[:max_frames] if max_frames else video.frames)
    if not frames:
        raise GenerationError(f"the reference video {path} has no frames")
    settings = TrackSettings()
    tracker = FaceTracker(settings)
    for t, frame in enumerate(frames):
        tracker.update(t, frame)
    # any stretch with a face serves as a reference (preprocessing's --min-seconds is about training clips)
    pieces, _ = track_pieces(tracker.boxes, len(frames), settings, min_frames=1)
    if not pieces:
        raise GenerationError(f"no face found in the reference video {path} (dlib HOG, faces of at least "
                              f"{settings.min_face:g} px)")
    piece = max(pieces, key=lambda p: p.num_frames)
    if piece.num_frames < len(frames):
        print(f"warning: the face is missing or lost in {len(frames) - piece.num_frames} of {len(frames)} frames of "
              f"{path.name}; using frames {piece.start}-{piece.stop - 1}, the longest stretch with it", file=sys.stderr)
    crops, lm68 = crop_piece(frames, piece, FaceCropper(size, settings))
    return Reference(crops, dense_from_68(lm68, info, crops), lm68, "video")


def reference_from_clip(clip: Path, *, max_frames: int | None) -> Reference:
    """A processed clip (``<dataset>/clips/<id>``): exact landmarks, e.g. a held-out SynthTalk identity."""
    root = clip.parent.parent
    import json

    meta = json.loads((clip / "meta.json").read_text())
    try:  # the folder names the clip (a meta.json naming another one is refused by the validator)
        record = ClipRecord.from_json({**meta, "id": clip.name}, where=str(clip / "meta.json"))
        validate_clip(root, record)  # a truncated, inconsistent or non-finite clip: one message naming it
    except ValueError as err:
        raise GenerationError(f"the reference {err}: re-run preprocessing for it or pick another clip") from err
    reader = ClipReader(root, record, meta)
    n = min(reader.num_frames, max_frames or reader.num_frames)
    topo = LandmarkTopology.from_json(read_dataset_info(root)["landmark_topology"])
    dense = np.asarray(reader.landmarks[:n], dtype=np.float32)
    return Reference(reader.frames(0, n), dense, topo.sparse(dense), "clip", topology=topo.name)


def reference_at_size(reference: Reference, size: int) -> Reference:
    """The reference's frames resized to ``size`` (antialiased) with its landmarks scaled to match: a model's working
    resolution need not be the dataset's (``data.working_resolution``)."""
    from dataclasses import replace

    from .data.datamodule import resize_frames

    have = reference.frames.shape[1]
    if have == size:
        return reference
    frames = resize_frames(np.asarray(reference.frames), size)
    scale = np.float32(size / have)
    return replace(reference, frames=frames, landmarks=reference.landmarks * scale,
                   landmarks68=reference.landmarks68 * scale)


def load_reference(ref: str | Path, *, size: int, info: dict, num_frames: int) -> Reference:
    path = Path(ref)
    if path.is_dir() and (path / "meta.json").is_file():
        return reference_from_clip(path, max_frames=num_frames)
    if not path.exists():
        raise GenerationError(f"reference {path} not found")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return reference_from_image(path, size=size, info=info)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return reference_from_video(path, size=size, info=info, max_frames=num_frames)
    raise GenerationError(f"reference {path}: expected an image ({sorted(IMAGE_SUFFIXES)}), a video "
                          f"({sorted(VIDEO_SUFFIXES)}) or a processed clip folder")


def _loop(n: int, length: int) -> np.ndarray:
    """Indices 0..n-1 played forwards then backwards, as many times as needed to cover ``length`` frames."""
    if n == 1:
        return np.zeros(length, dtype=np.int64)
    cycle = np.concatenate([np.arange(n), np.arange(n - 2, 0, -1)])
    return np.resize(cycle, length)


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------


def _rasterizer(info: dict, size: int):
    """Pixel landmarks (..., N, 2) of the stage-2 topology -> landmark images (..., L, size, size), as stage 2 was
    trained on them (its point subset, regions and blur)."""
    idx = np.asarray(info["point_index"])
    regions = torch.as_tensor(np.asarray(_topology(info).regions)[idx])
    sigma = float(info["landmark_sigma"]) * size / 64.0
    return lambda pts: rasterize_landmarks(torch.from_numpy(np.ascontiguousarray(pts[..., idx, :])).float(),
                                           regions=regions, size=size, sigma=sigma)


def emotion_index(emotion: str | None) -> int | None:
    """The emotion code of a MEAD emotion name (None stays None: "unknown")."""
    from .data.clip import EMOTIONS

    if emotion is None:
        return None
    if emotion not in EMOTIONS:
        raise GenerationError(f"unknown emotion {emotion!r}: one of {', '.join(EMOTIONS)}")
    return EMOTIONS.index(emotion)


def _landmark_targets(a2l, info2: dict, reference: Reference, samples: np.ndarray, order: np.ndarray, rast, *,
                      seed: int, sampler: str | None, steps: int | None, progress: bool, emotion: int | None,
                      landmarks_out: str | Path | None = None, timings: dict[str, float] | None = None):
    """Stage 1 on the audio, posed like the reference: a function from frame indices to their landmark images."""
    num_frames = len(order)
    info1 = a2l.data_info
    # stage 1, in the canonical frame of the reference
    template = np.asarray(info1["canonical_template68"], dtype=np.float32)
    canon_ref, to_image = canonicalize(reference.landmarks, reference.landmarks68, template68=template)
    idx1 = np.asarray(info1["point_index"])
    canon = a2l.generate(samples, ref_landmarks=canon_ref[0][idx1], emotion=emotion, num_frames=num_frames, seed=seed,
                         sampler=sampler, steps=steps, progress=progress, timings=timings)  # (F, N1, 2)
    if not torch.isfinite(canon).all():
        raise GenerationError(f"stage 1 produced non-finite landmarks: {_model_name(a2l, 'stage-1')} has non-finite "
                              "weights or diverged; retrain it")
    full = np.repeat(canon_ref[:1], num_frames, 0)  # points stage 1 does not produce keep the reference's
    full[:, idx1] = canon.cpu().numpy()
    # pose: the reference's, per frame when it moves
    pixels = apply_affine(full, to_image[order])  # (F, N, 2) crop pixels
    if landmarks_out is not None:  # the 68 points drawn, for scoring the motion itself (the bench's emotion_acc_lm)
        topo = info1.get("landmark_topology") or info2.get("landmark_topology")  # a stand-in may not carry one
        if pixels.shape[1] != 68 and not topo:
            raise GenerationError(f"landmarks_out: {pixels.shape[1]} landmarks and no topology to take the 68 from")
        points68 = pixels if pixels.shape[1] == 68 else LandmarkTopology.from_json(topo).sparse(pixels)
        atomic_save_npy(Path(landmarks_out), np.asarray(points68, dtype=np.float32))
    return lambda sel: rast(pixels[sel])  # rasterised a batch at a time: (F, L, H, W) for a long video is large


def _check_stage_pair(a2l, l2i) -> None:
    """Stage 2 draws stage 1's points: both must index the same landmark set, and stage 1 must make every point
    stage 2 uses. Checked before sampling."""
    info1, info2 = a2l.data_info, l2i.data_info
    if "landmark_topology" in info1:
        topo1 = _topology(info1)
        check_landmark_contract(l2i, topo1.num_points, f"{_model_name(a2l, 'stage-1')}'s output",
                                points_name=topo1.name,
                                remedy="use a stage-1 and a stage-2 model trained on the same landmark set")
    idx1, idx2 = np.asarray(info1["point_index"]), np.asarray(info2["point_index"])
    missing = set(idx2.tolist()) - set(idx1.tolist())
    if missing and info1["landmark_set"] != info2["landmark_set"]:
        raise GenerationError(f"the stage-2 model needs {len(idx2)} landmarks but stage 1 produces {len(idx1)}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links and symlinks included
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def check_output(out: str | Path, inputs: dict[str, object], *, overwrite: bool) -> Path:
    """Refuse an output path that would lose a user's file; checked before any work.

    ``inputs`` maps an option name (``--ref``) to what was given; only paths are compared. An input is never
    written over, not even with ``overwrite``; an existing file only with ``overwrite``; a directory never.
    """
    out = Path(out)
    if out.is_dir():
        raise GenerationError(f"--out {out} is a directory: give the path of the .mp4 file to write")
    for option, given in inputs.items():
        if isinstance(given, (str, Path)) and _same_file(out, Path(given)):
            raise GenerationError(f"refusing to write over an input: --out {out} is the {option} file")
    if out.exists() and not overwrite:
        raise GenerationError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    return out


def _describe_reference(ref, reference: Reference) -> str:
    """How messages name the reference: the clip id for a processed clip, else the file."""
    if isinstance(ref, Reference):
        return f"the reference {reference.source}"
    if reference.source == "clip":
        return f"the reference clip {Path(ref).name!r}"
    return f"the reference {reference.source} {Path(ref).name}"


@torch.no_grad()
def generate(
    *,
    audio: str | Path | np.ndarray,
    ref: str | Path | Reference,
    out: str | Path,
    stage1=None,
    stage2,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    emotion: str | None = None,
    landmarks_out: str | Path | None = None,
    timings: dict[str, float] | None = None,
    stage2_steps: int | None = None,
) -> Path:
    """Write a talking-head mp4 for ``audio`` in the reference's appearance. Returns the mp4 path.

    ``emotion``: one of MEAD's eight (``data.clip.EMOTIONS``) for a stage 1 trained with emotion codes; None speaks
    with the emotion "unknown". ``landmarks_out``: a ``.npy`` file that receives the 68 landmarks stage 1 made, as
    drawn for stage 2 (``(F, 68, 2)`` pixels of the video). ``sampler`` / ``steps`` apply to both stages (None: each
    model's own); ``stage2_steps`` to stage 2 alone (None: ``steps``), e.g. a distilled stage 2 at its 2 steps behind
    a stage 1 at 10.

    ``timings``: a dict that receives seconds per part, measured on this very call (``benchmarks/bench_generate.py``
    reads it): ``audio`` (reading the file), ``reference`` (face detection, tracking, landmarks), ``audio_features``,
    ``stage1`` (sampling and posing the landmarks), ``stage2`` (landmark images and frame sampling), ``encoding``
    (H.264 as frames arrive), ``muxing`` (flush, AAC, mp4), ``total``, and ``first_frame`` (from the start of stage
    2 to the first frame handed to the encoder); ``frames`` is the frame count. Frames go to the encoder batch by
    batch as they are made, so the first is written after one stage-2 batch, not after the whole video.

    ``stage1`` / ``stage2`` are checkpoint paths or loaded modules. A stage-2 model trained with
    ``model.condition=audio`` (the ``landmark_hierarchy`` ablation) makes the frames from the audio directly and takes
    no stage 1 (``stage1=None``); a landmark-conditioned one needs stage 1. With a reference video (or a processed
    clip of several frames) and a stage-2 model trained in dubbing mode, each output frame keeps that frame's pose and
    background and only the lower face is generated; a shorter video is played back and forth to cover the audio.

    An existing ``out`` is replaced (atomically, when the new video is complete); ``out`` is never one of the inputs.
    Raises :class:`GenerationError` before any sampling for unusable inputs or models (non-finite weights, another
    landmark set), and without writing anything when a stage produces non-finite values.
    """
    from tqdm.auto import tqdm

    from .video import VideoWriter

    clock = _Clock(timings)
    if batch_size < 1 or any(s is not None and s < 1 for s in (steps, stage2_steps)):
        raise GenerationError(f"batch_size and steps must be positive, got batch_size={batch_size}, steps={steps}, "
                              f"stage2_steps={stage2_steps}")
    out = check_output(out, {"--audio": audio, "--ref": ref, "--stage1": stage1, "--stage2": stage2}, overwrite=True)
    l2i = load_checked(stage2, "stage2") if isinstance(stage2, (str, Path)) else stage2
    check_stage1_given(l2i, stage1 is not None, _model_name(l2i, "stage-2"))
    a2l = load_checked(stage1, "stage1") if isinstance(stage1, (str, Path)) else stage1  # None for an audio model
    for module, stage in ((l2i, "stage-2"), (a2l, "stage-1")):
        if module is not None and not getattr(module, "checkpoint_file", None):  # given in memory: not checked yet
            check_finite_weights(module, _model_name(module, stage))
    if a2l is not None:
        _check_stage_pair(a2l, l2i)
    with clock("audio"):
        samples = load_audio(audio) if isinstance(audio, (str, Path)) else np.asarray(audio, dtype=np.float32)
    audio_name = audio if isinstance(audio, (str, Path)) else "the audio array"
    if len(samples) == 0:
        raise AudioError(audio_name, "audio is empty (0 samples)")
    if not np.isfinite(samples).all():  # a float wav can hold NaN; it would reach stage 1 and be blamed on the model
        raise AudioError(audio_name, "audio has non-finite samples (NaN or inf)")
    num_frames = int(np.ceil(len(samples) / SAMPLES_PER_FRAME))
    info2 = l2i.data_info
    size = int(info2["resolution"])
    # the reference's landmarks in the topology of the model that moves them: stage 1's, or stage 2's own
    info_ref = info2 if a2l is None else a2l.data_info
    with clock("reference"):
        reference = ref if isinstance(ref, Reference) else load_reference(ref, size=size, info=info_ref,
                                                                          num_frames=num_frames)
        reference = reference_at_size(reference, size)  # a processed clip of another resolution than the model's
    where = _describe_reference(ref, reference)
    for module in (a2l, l2i):  # stage 2 draws the reference's points too (rasterised reference landmarks)
        if module is not None:
            check_landmark_contract(module, reference.landmarks.shape[1], where, points_name=reference.topology)
    if not (np.isfinite(reference.landmarks).all() and np.isfinite(reference.landmarks68).all()):
        raise GenerationError(f"{where} has non-finite landmarks (NaN or inf): re-run preprocessing for it or pick "
                              "another reference")
    order = _loop(len(reference.frames), num_frames)  # the reference frame behind each output frame
    rast = _rasterizer(info2, size)
    if a2l is None:
        with clock("audio_features"):
            windows = l2i.audio_windows(samples, num_frames)  # (F, K, D)
        targets = lambda sel: windows[sel]  # noqa: E731
    else:
        with clock("stage1"):  # less its audio features, which stage 1 reports itself
            targets = _landmark_targets(a2l, info2, reference, samples, order, rast, seed=seed, sampler=sampler,
                                        steps=steps, progress=progress, emotion=emotion_index(emotion),
                                        landmarks_out=landmarks_out, timings=clock.inner)
        clock.take("stage1", "audio_features")
    to_tensor = lambda f: torch.from_numpy(np.array(f)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # noqa: E731 (a copy)
    dubbing = l2i.net.mode == "dubbing"
    if dubbing:  # what the reference frames give stage 2, once per reference frame (a short video loops)
        used = np.unique(order)
        ref_frames = torch.zeros(len(reference.frames), 3, size, size)
        ref_frames[used] = to_tensor(reference.frames[used])
        ref_masks = torch.zeros(len(reference.frames), 1, size, size)
        ref_masks[used] = lower_face_mask(torch.from_numpy(reference.landmarks68[used]), size=size)
        ref_masked = ref_frames * (1 - ref_masks)

    # the first batch is a quarter batch, so the first frames reach the file sooner; a deterministic sampler makes
    # the same frames whatever the batching (every batch starts from the same noise)
    bounds = [0, *range(max(1, batch_size // 4), num_frames, batch_size), num_frames]

    def batches():  # the stage-2 inputs a batch at a time: a long video's landmark images are large
        for start, stop in zip(bounds[:-1], bounds[1:]):
            sel = np.arange(start, stop)
            batch = {"targets": targets(sel)}
            if dubbing:
                batch.update(masked=ref_masked[order[sel]], mask=ref_masks[order[sel]])
            yield batch

    # the reference frame and its landmark image, converted once for the whole video; every batch starts from the
    # same noise (noise_seed): frames of one video share their starting noise
    made = l2i.frame_batches(batches(), ref=to_tensor(reference.frames[:1])[0],
                             ref_landmarks=rast(reference.landmarks[:1])[0], noise_seed=seed, sampler=sampler,
                             steps=stage2_steps or steps)
    # the bar is closed on any exit, so an error or "interrupted" line starts on a line of its own
    with VideoWriter(out, fps=25, width=size, height=size, audio=samples) as writer, \
            tqdm(total=num_frames, desc="frames", unit="frame", disable=not progress) as bar:
        stage2_start = time.perf_counter()
        while True:
            with clock("stage2"):
                frames = next(made, None)
            if frames is None:
                break
            if not torch.isfinite(frames).all():  # the writer would round NaN to black: leave nothing instead
                raise GenerationError(f"stage 2 produced non-finite pixels: {_model_name(l2i, 'stage-2')} has "
                                      "non-finite weights or diverged; retrain it")
            with clock("encoding"):  # the writer encodes as it is given frames: they stream to the file
                writer.write(((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
            clock.once("first_frame", time.perf_counter() - stage2_start)
            bar.update(len(frames))
        clock.start("muxing")
    clock.stop("muxing")  # the writer's close: encoder flush, AAC, mp4 container, rename
    clock.finish(frames=num_frames)
    return out


class _Clock:
    """Seconds per part of :func:`generate` into a caller's dict (nothing is kept without one)."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings
        self.inner: dict[str, float] | None = {} if timings is not None else None  # what a stage reports itself
        self.began = time.perf_counter()
        self._open: dict[str, float] = {}

    def start(self, part: str) -> None:
        self._open[part] = time.perf_counter()

    def stop(self, part: str) -> None:
        if self.timings is not None and part in self._open:
            self.timings[part] = self.timings.get(part, 0.0) + time.perf_counter() - self._open.pop(part)

    def __call__(self, part: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            self.start(part)
            try:
                yield
            finally:
                self.stop(part)

        return timed()

    def take(self, part: str, inner: str) -> None:
        """Move what a stage reported as ``inner`` out of ``part``'s time into its own entry."""
        if self.timings is not None and self.inner and inner in self.inner:
            self.timings[part] -= self.inner[inner]
            self.timings[inner] = self.timings.get(inner, 0.0) + self.inner[inner]

    def once(self, part: str, seconds: float) -> None:
        if self.timings is not None and part not in self.timings:
            self.timings[part] = seconds

    def finish(self, **extra: float) -> None:
        if self.timings is not None:
            self.timings.update(extra, total=time.perf_counter() - self.began)
