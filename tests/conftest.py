"""Shared fixtures: a tiny SynthTalk dataset generated once per test session, and the seed of the tests' training runs.

``DREAMHEAD_TEST_SEED=1 make test`` reruns the suite under another seed: every test starts from ``random``, NumPy and
torch seeded with it, and the tests that train something and compare the result with a threshold seed their training
with the ``test_seed`` fixture, so a verdict that holds only for one lucky seed (or one CPU's float rounding, which moves
a chaotic training run as much as a new seed does) shows up here rather than on someone else's machine."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")
TEST_SEED = int(os.environ.get("DREAMHEAD_TEST_SEED", "0"))
REAL_DATA = Path(os.environ.get("DREAMHEAD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def pytest_report_header(config) -> str:
    return f"DREAMHEAD_TEST_SEED={TEST_SEED} (training seed of the threshold tests; see tests/conftest.py)"


@pytest.fixture(scope="session")
def test_seed() -> int:
    """The seed for a test's training (weights, batches, noise): ``DREAMHEAD_TEST_SEED``, default 0. Tests whose verdict
    is a trained model against a threshold use it instead of a literal 0; the data they train on stays fixed."""
    return TEST_SEED


@pytest.fixture(autouse=True)
def _seed_everything(test_seed):
    """Every test starts from the same global random state, whatever ran before it (order, ``-k``, ``-x``)."""
    import random

    import numpy as np
    import torch

    random.seed(test_seed)
    np.random.seed(test_seed)
    torch.manual_seed(test_seed)


def tiny_synth_config(out: Path, **overrides):
    from dreamhead_lit.data.synth import SynthConfig

    settings = dict(
        out=str(out),
        seed=0,
        num_identities=4,
        test_identities=1,
        clips_per_identity=4,
        val_clips_per_identity=1,
        seen_test_clips_per_identity=1,
        clip_seconds=2.0,
        resolution=64,
        num_landmarks=100,
        workers=1,
    )
    settings.update(overrides)
    return SynthConfig(**settings)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A 16-clip SynthTalk (4 identities, 2 s clips, 64 px, 100 landmarks). Read-only for tests: copy to modify."""
    from dreamhead_lit.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synthtalk")
    generate_dataset(tiny_synth_config(out), progress=False)
    return out


@pytest.fixture
def synth_copy(tiny_synth, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    import shutil

    dst = tmp_path / "synth"
    shutil.copytree(tiny_synth, dst)
    return dst


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real clips not present at {REAL_DATA}")
    return REAL_DATA


def check_two_process_ddp_fit(stage: str, overrides: list[str], root: Path, runs: Path, *,
                              entry: list[str] | None = None) -> None:
    """Train `stage` for 3 steps through the CLI with 2 gloo processes; exactly one checkpoint and one log. ``entry``:
    what follows the interpreter instead of ``-m dreamhead_lit.train`` (a script that registers a test double first
    and then calls the train CLI's ``main``; Lightning starts the second process with the same command)."""
    import subprocess
    import sys

    import torch

    cmd = [sys.executable, *(entry or ["-m", "dreamhead_lit.train"]), stage, f"data.root={root}", f"runs_root={runs}", *overrides,
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=3",
           "trainer.val_check_interval=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs / stage / "demo"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3


def train_scorer_cli(kind: str, root: Path, runs: Path, *overrides: str) -> tuple[list[str], Path, dict]:
    """Train the dataset-trained scorer ``kind`` through ``python -m dreamhead_lit.train`` (one thread, no progress
    bar) on ``root`` into ``runs``; checks that the run is ``runs/scorers/<kind>-<dataset>/``, where the bench looks,
    and that its checkpoints' header names ``kind``. Returns (the CLI arguments, the run folder, its done.json)."""
    import json

    from dreamhead_lit.checkpoints import read_header
    from dreamhead_lit.metrics.scorers import scorer_run_dir
    from dreamhead_lit.train import main

    args = [kind, f"data.root={root}", f"runs_root={runs}", "trainer.enable_progress_bar=false", "threads=1", *overrides]
    assert main(args) == 0
    run = scorer_run_dir(kind, root, runs_root=runs)
    assert run == runs / "scorers" / f"{kind}-{root.name}"
    assert read_header(run / "checkpoints" / "last.ckpt")["model"] == kind
    return args, run, json.loads((run / "done.json").read_text())


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation, which on a shared, busy machine makes small
    ops 10x slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``; restored after them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_on_one_batch(loss_fn, params, *, lr: float, max_steps: int, factor: float) -> list[float]:
    """Adam on ``loss_fn()`` until the mean of the last 10 losses is below the first 10's divided by ``factor`` (or
    ``max_steps``); returns the losses, for the caller's assertion."""
    import numpy as np
    import torch

    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    for _ in range(max_steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if np.mean(losses[-10:]) < np.mean(losses[:10]) / factor:
            break
    return losses
