"""One safe way to open any file of tensors a user names: checkpoints, trained scorers, resumed runs.

A ``.ckpt`` / ``.pt`` file is a pickle, and unpickling an arbitrary pickle runs whatever code its author put in it.
Every load here uses ``torch.load(weights_only=True)``: tensors, plain containers and numbers only, with the
project's own types allow-listed in :data:`SAFE_GLOBALS` (none are needed today: the project writes plain data).
A file that needs more is refused before any of it runs, with the file named. Lightning's own loads (``fit`` resume,
``load_from_checkpoint``) go through :func:`load_module` / :data:`SAFE_LOAD` so they take the same path.

What is *not* data and therefore not covered: a TorchScript latent codec (``model.vae_checkpoint``) is a program and
runs when loaded; give only files you trust there (README, "Trust and safety").
"""
from __future__ import annotations

import contextlib
import pickle
from pathlib import Path
from typing import Any, Iterator, TypeVar

import torch

# Types beyond tensors and plain data that a dreamhead-lit file may hold. Add a project class here (never a general
# one such as a function or `os.system`) if it is ever saved inside a checkpoint.
SAFE_GLOBALS: list[Any] = []

# Keyword arguments for Lightning's loading entry points (Trainer.fit(ckpt_path=...), load_from_checkpoint).
SAFE_LOAD = {"weights_only": True}

M = TypeVar("M")


class CheckpointError(ValueError):
    """A file that cannot be opened as a checkpoint, safely or at all; the message names it."""


@contextlib.contextmanager
def _allow_project_types() -> Iterator[None]:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def safe_load(path: str | Path, *, what: str = "checkpoint") -> Any:
    """The contents of ``path`` (tensors on the CPU, plain containers), never running code from it.

    Raises:
        CheckpointError: missing, unreadable, or holding objects beyond plain data (refused without executing them).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    try:
        with _allow_project_types():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refused(path, what, err) from err
    except Exception as err:  # truncated, not a torch file, a directory ...: say which file, keep the cause
        raise CheckpointError(f"{path} is not a readable {what} ({type(err).__name__}: {_first_line(err)})") from err


def read_header(path: str | Path) -> dict:
    """``checkpoint["dreamhead"]`` (``model``, ``stage``, ``data``) of a dreamhead-lit checkpoint, or ``{}`` for
    another file."""
    ckpt = safe_load(path)
    return (ckpt.get("dreamhead") or {}) if isinstance(ckpt, dict) else {}


def header_model(header: dict) -> str | None:
    """The registered model a checkpoint header names: ``model`` (written by every training run), or ``stage`` in
    checkpoints written before the registry."""
    return header.get("model") or header.get("stage")


def load_module(cls: type[M], path: str | Path, **kwargs: Any) -> M:
    """``cls.load_from_checkpoint(path)`` on the CPU with the same weights-only rules and messages as
    :func:`safe_load`. The file is read once; only when Lightning's load fails is it opened again, to tell a bad file
    (a CheckpointError naming it) from an error of the module itself (raised as it is)."""
    try:
        with _allow_project_types():
            return cls.load_from_checkpoint(path, map_location="cpu", **SAFE_LOAD, **kwargs)  # type: ignore[attr-defined]
    except Exception:
        safe_load(path)
        raise


def _refused(path: Path, what: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a plain {what}: it holds Python objects beyond tensors and plain data ({_first_line(err)}). "
        "It was not loaded, since unpickling it could run code; dreamhead-lit files never need that. Use a "
        "checkpoint written by dreamhead-lit.")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


__all__ = ["CheckpointError", "SAFE_GLOBALS", "SAFE_LOAD", "load_module", "read_header", "safe_load"]
