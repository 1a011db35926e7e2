"""Identity-disjoint train/val/test splits of a preprocessed dataset, stable when the dataset grows.

A clip's split never changes once it is written: adding videos (a second ``--src``, new files in the first) must not
move a test identity into training, or a model trained before and after the addition would be scored on clips it
has seen. So an identity's split is a function of the identity alone, never of the others present:

1. ``--splits FILE`` (``fixed``) names it: that wins, also over a recorded split (the user asked for it);
2. MEAD's customary held-out actors (``held_out_test``) are "test";
3. an identity that already has clips in the dataset keeps the split recorded for it (``recorded``);
4. a new identity draws ``u = draw(seed, identity)`` in [0, 1) from a seeded hash of its name: "test" below
   ``test_fraction``, "val" below ``test_fraction + val_fraction``, else "train". Where the held-out actors are
   present, or the dataset has fewer than three identities, the test band goes to "train" instead.

The draw gives the fractions only on average; a tiny dataset could come out without a val or test identity. Where
the old rank-based split guaranteed them (one val identity from two identities up, one test identity from three up,
always one train identity), the missing one is taken from the NEW identities by their rank in ``u`` (lowest first,
the rank order the old split used), never from identities that already have clips.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Iterable

SPLIT_SEED = 0
SPLIT_NAMES = ("train", "val", "test")


def draw(identity: str, seed: int = SPLIT_SEED) -> float:
    """A number in [0, 1) fixed by the seed and the identity's name (sha256; PYTHONHASHSEED plays no part)."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def read_split_file(path: Path) -> dict[str, str]:
    """``{identity: split}`` from JSON or from lines ``identity split`` (``#`` comments allowed)."""
    try:
        text = Path(path).read_text()
    except OSError as err:  # a folder, no permission: one line, not a traceback
        raise ValueError(f"--splits {path}: cannot read it ({err.strerror or err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    mapping = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected `identity split`, got {line!r}")
        mapping[parts[0]] = parts[1]
    return mapping


def recorded_splits(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``{identity: split}`` from (identity, split) of the clips on disk; an identity found in several splits (it
    should not be) keeps its most frequent one, ties broken by name, so the result is deterministic."""
    counts: dict[str, Counter] = {}
    for identity, split in pairs:
        counts.setdefault(identity, Counter())[split] += 1
    return {i: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for i, c in counts.items()}


def assign_splits(identities: Iterable[str], *, seed: int = SPLIT_SEED, val_fraction: float = 0.1,
                  test_fraction: float = 0.1, fixed: dict[str, str] | None = None,
                  held_out_test: tuple[str, ...] = (), recorded: dict[str, str] | None = None) -> dict[str, str]:
    """``{identity: split}`` for ``identities`` (and those of ``recorded``), by the rules of the module docstring."""
    fixed, recorded = dict(fixed or {}), dict(recorded or {})
    everyone = sorted(set(identities) | set(recorded))
    held = [i for i in everyone if i in held_out_test and i not in fixed]
    splits = {i: fixed[i] for i in everyone if i in fixed}
    splits.update({i: "test" for i in held})
    splits.update({i: recorded[i] for i in everyone if i not in splits and i in recorded})
    new = sorted((i for i in everyone if i not in splits), key=lambda i: (draw(i, seed), i))
    test_band = test_fraction if not held and len(everyone) >= 3 else 0.0
    for i in new:
        u = draw(i, seed)
        if u < test_fraction:
            splits[i] = "test" if test_band else "train"
        elif u < test_fraction + val_fraction:
            splits[i] = "val"
        else:
            splits[i] = "train"
    _guarantee(splits, new, test=bool(test_band))
    return splits


def _guarantee(splits: dict[str, str], new: list[str], *, test: bool) -> None:
    """One train identity always, one val from two identities up, one test from three up (``test``): moved from
    the new identities only, in ``new``'s order (ascending draw), in place."""
    counts = Counter(splits.values())
    if new and not counts["train"]:
        splits[new[-1]] = "train"  # the highest draw: the one furthest into the train band
    for name, wanted in (("test", test), ("val", len(splits) >= 2)):
        counts = Counter(splits.values())
        if not wanted or counts[name]:
            continue
        spare = [i for i in new if splits[i] == "train"]
        if spare and counts["train"] > 1:  # never the last train identity
            splits[spare[0]] = name
