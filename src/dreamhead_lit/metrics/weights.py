"""Where the metrics' pretrained files are looked up, and which metrics can run here.

Search order for a file name (the first existing file wins):

1. ``$DREAMHEAD_WEIGHTS`` (default ``~/.cache/dreamhead_lit/weights``): the project's own folder;
2. ``torch.hub.get_dir()/checkpoints``: where torchvision / pytorch-fid put their downloads, so a machine that
   already ran them needs nothing more;
3. the ``models/`` folder of the ``face_recognition_models`` package (the dlib files ship there).

Nothing is downloaded: a missing file raises :class:`MissingWeightsError`, whose message names the file, every
folder searched and the official URL to fetch it from on a machine with internet access. :func:`check_weights`
tells which metric can run (the benchmark prints ``n/a`` with that message for the others).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "WEIGHTS_ENV",
    "DEFAULT_WEIGHTS_DIR",
    "MissingWeightsError",
    "WeightsFile",
    "WeightsStatus",
    "METRIC_WEIGHTS",
    "weights_dirs",
    "resolve_weights",
    "check_weights",
    "format_weights_status",
    "face_recognition_models_dir",
    "lpips_linear_weights",
]

WEIGHTS_ENV = "DREAMHEAD_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/dreamhead_lit/weights")


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file a metric needs: its exact name and where it is officially published."""

    filename: str
    url: str | None
    note: str = ""


FID_INCEPTION = WeightsFile(
    "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "pytorch-fid's port of the TensorFlow FID Inception",
)
LPIPS_ALEXNET = WeightsFile(
    "alexnet-owt-7be5be79.pth",
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "torchvision's ImageNet AlexNet (the LPIPS linear layers ship inside the lpips package)",
)
SYNCNET_V2 = WeightsFile(
    "syncnet_v2.model",
    "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
    "joonson/syncnet_python (download_model.sh)",
)
DLIB_68 = WeightsFile(
    "shape_predictor_68_face_landmarks.dat",
    "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2",
    "ships with the face_recognition_models package",
)
DLIB_5 = WeightsFile(
    "shape_predictor_5_face_landmarks.dat",
    "http://dlib.net/files/shape_predictor_5_face_landmarks.dat.bz2",
    "ships with the face_recognition_models package",
)
DLIB_FACE_RECOGNITION = WeightsFile(
    "dlib_face_recognition_resnet_model_v1.dat",
    "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
    "ships with the face_recognition_models package",
)

# metric -> the files it needs (all of them).
METRIC_WEIGHTS: dict[str, tuple[WeightsFile, ...]] = {
    "fid": (FID_INCEPTION,),
    "lpips": (LPIPS_ALEXNET,),
    "lse": (SYNCNET_V2,),
    "lmd": (DLIB_68,),
    "csim": (DLIB_5, DLIB_FACE_RECOGNITION),
}
_KNOWN: dict[str, WeightsFile] = {f.filename: f for files in METRIC_WEIGHTS.values() for f in files}


def face_recognition_models_dir() -> Path | None:
    """The ``models/`` folder of the installed ``face_recognition_models`` package, or None.

    Found with ``importlib.util.find_spec`` on purpose: importing the package needs ``pkg_resources``, which recent
    setuptools no longer provide.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def lpips_linear_weights(version: str = "0.1", net: str = "alex") -> Path | None:
    """The LPIPS linear-layer file shipped inside the ``lpips`` package (``weights/v0.1/alex.pth``), or None."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / f"v{version}" / f"{net}.pth"
    return path if path.is_file() else None


def weights_dirs() -> list[tuple[Path, str]]:
    """The folders searched, in order, each with a label saying where it comes from."""
    env = os.environ.get(WEIGHTS_ENV)
    own = Path(env).expanduser() if env else DEFAULT_WEIGHTS_DIR.expanduser()
    own_label = f"${WEIGHTS_ENV}" if env else f"default of ${WEIGHTS_ENV}"
    dirs = [(own, own_label), (Path(torch.hub.get_dir()) / "checkpoints", "torch hub cache")]
    frm = face_recognition_models_dir()
    if frm is not None:
        dirs.append((frm, "face_recognition_models package"))
    return dirs


class MissingWeightsError(FileNotFoundError):
    """A pretrained file a metric needs is in none of the searched folders.

    Attributes: ``filename``, ``purpose``, ``searched`` (the folders, in search order) and ``url`` (where to download
    it, or None).
    """

    def __init__(self, filename: str, *, purpose: str, searched: Sequence[Path], url: str | None) -> None:
        self.filename = filename
        self.purpose = purpose
        self.searched = list(searched)
        self.url = url
        lines = [f"{purpose} needs the pretrained file {filename!r}, which was not found. Searched:"]
        lines += [f"  - {d}" for d in self.searched]
        lines.append(
            f"Put {filename} in {self.searched[0]} (or point ${WEIGHTS_ENV} at the folder that holds it)."
        )
        if url:
            lines.append(f"On a machine with internet access, download it from {url}")
        self.message = "\n".join(lines)
        super().__init__(self.message)

    def __str__(self) -> str:  # OSError would otherwise format its args as "[Errno ...] ..."
        return self.message

    def __reduce__(self) -> tuple:  # picklable across processes despite the keyword-only constructor
        return (_rebuild_missing_weights, (self.filename, self.purpose, self.searched, self.url))


def _rebuild_missing_weights(filename: str, purpose: str, searched: list[Path], url: str | None) -> MissingWeightsError:
    return MissingWeightsError(filename, purpose=purpose, searched=searched, url=url)


def resolve_weights(filename: str, *, purpose: str, url_hint: str | None = None) -> Path:
    """Path of the pretrained file ``filename``, searched in :func:`weights_dirs` order.

    Args:
        filename: the exact file name (e.g. ``"syncnet_v2.model"``).
        purpose: what needs it, for the error message (e.g. ``"LSE-C/LSE-D (SyncNet)"``).
        url_hint: official download URL for the message; defaults to the known URL of a known file name.

    Raises:
        MissingWeightsError: the file is in none of the folders.
    """
    if not filename or Path(filename).name != filename:
        raise ValueError(f"resolve_weights expects a bare file name, got {filename!r}")
    dirs = [d for d, _ in weights_dirs()]
    for folder in dirs:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    known = _KNOWN.get(filename)
    url = url_hint if url_hint is not None else (known.url if known else None)
    raise MissingWeightsError(filename, purpose=purpose, searched=dirs, url=url)


@dataclass(frozen=True)
class WeightsStatus:
    """Whether one metric's pretrained files are all present."""

    metric: str
    available: bool
    paths: dict[str, Path | None] = field(default_factory=dict)  # file name -> resolved path (None: missing)
    message: str = ""  # the MissingWeightsError text of the first missing file; empty when available


def check_weights() -> list[WeightsStatus]:
    """One :class:`WeightsStatus` per metric of :data:`METRIC_WEIGHTS` (fid, lpips, lse, lmd, csim)."""
    statuses = []
    for metric, files in METRIC_WEIGHTS.items():
        paths: dict[str, Path | None] = {}
        message = ""
        for wf in files:
            try:
                paths[wf.filename] = resolve_weights(wf.filename, purpose=metric, url_hint=wf.url)
            except MissingWeightsError as exc:
                paths[wf.filename] = None
                message = message or str(exc)
        if metric == "lpips" and lpips_linear_weights() is None:
            message = message or "the lpips package has no weights/v0.1/alex.pth; reinstall lpips"
        statuses.append(WeightsStatus(metric=metric, available=not message, paths=paths, message=message))
    return statuses


def format_weights_status(statuses: Sequence[WeightsStatus] | None = None) -> str:
    """A short human-readable table of :func:`check_weights`."""
    statuses = check_weights() if statuses is None else statuses
    lines = []
    for st in statuses:
        files = ", ".join(f"{name} -> {path if path else 'MISSING'}" for name, path in st.paths.items())
        lines.append(f"{st.metric:<6} {'ok ' if st.available else 'n/a'}  {files}")
    return "\n".join(lines)
