"""Hostile files and bad input against training and every checkpoint loader: nothing runs, nothing escapes, one line."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamhead_lit.checkpoints import CheckpointError, read_header, safe_load
from dreamhead_lit.runs import DONE_FILE
from dreamhead_lit.train import main
from dreamhead_lit.training import fit

from test_a2l import TINY, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """What an attacker pickles: unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(path: Path, marker: Path, stage: str = "stage2") -> Path:
    """A file that looks like a checkpoint of ``stage`` but carries the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dreamhead": {"stage": stage}, "state_dict": {}, "hyper_parameters": {"x": _Payload(marker)}}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "pwned"
    yield tmp_path, marker
    assert not marker.exists(), "a loader ran code from a checkpoint"


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The fixture is a real attack: loading it the unsafe way creates the marker."""
    marker = tmp_path / "pwned"
    torch.load(_malicious(tmp_path / "m.ckpt", marker), weights_only=False)
    assert marker.exists()


def test_safe_load_refuses_a_malicious_pickle_and_names_the_file(evil):
    tmp, _ = evil
    path = _malicious(tmp / "model.ckpt", tmp / "pwned")
    with pytest.raises(CheckpointError, match="model.ckpt.*not loaded"):
        safe_load(path)
    with pytest.raises(CheckpointError):
        read_header(path)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_generation_loader_refuses_a_malicious_checkpoint(evil, stage):
    from dreamhead_lit.pipeline import GenerationError, load_stage

    tmp, marker = evil
    with pytest.raises(GenerationError, match="could run code"):
        load_stage(_malicious(tmp / "m.ckpt", marker, stage), stage)


def test_generate_cli_refuses_a_malicious_stage2(evil, capsys):
    from dreamhead_lit.generate import main as generate_main

    tmp, marker = evil
    ckpt = _malicious(tmp / "m.ckpt", marker)
    code = generate_main(["--audio", str(tmp / "a.wav"), "--ref", str(tmp / "face.png"), "--out", str(tmp / "o.mp4"),
                          "--stage2", str(ckpt), "--stage1", str(ckpt)])
    assert code == 2
    assert not (tmp / "o.mp4").exists()


def test_scorer_loaders_refuse_malicious_files(evil):
    from dreamhead_lit.metrics.scorers import EXPERT_FILE, LANDMARKER_FILE, TrainedLandmarker, TrainedSyncExpert

    tmp, marker = evil
    for cls, name in ((TrainedLandmarker, LANDMARKER_FILE), (TrainedSyncExpert, EXPERT_FILE)):
        _malicious(tmp / "run" / name, marker)
        with pytest.raises(CheckpointError):
            cls.load(tmp / "run")


def test_lightning_loaders_refuse_malicious_files(evil):
    from dreamhead_lit.checkpoints import load_module
    from dreamhead_lit.lit.a2l import A2LDiffusion

    tmp, marker = evil
    with pytest.raises(CheckpointError):
        load_module(A2LDiffusion, _malicious(tmp / "m.ckpt", marker, "stage1"))


def test_bench_stage2_settings_are_read_safely(evil):
    from dreamhead_lit.bench.methods.dreamhead import StageMethod

    tmp, marker = evil
    method = StageMethod.__new__(StageMethod)
    method._stage1 = method._stage2 = None
    method.ckpt2, method._ckpt_facts = _malicious(tmp / "m.ckpt", marker), {}
    with pytest.raises(CheckpointError):
        method._stage2_setting("mode")


def test_training_resume_from_a_malicious_file_stops_before_any_write(evil, tiny_synth, capsys):
    tmp, marker = evil
    ckpt = _malicious(tmp / "Downloads" / "model.ckpt", marker, "stage1")
    runs = tmp / "runs"
    assert main(["stage1", f"data.root={tiny_synth}", f"runs_root={runs}", f"ckpt_path={ckpt}", *TINY]) == 2
    assert "could run code" in capsys.readouterr().err
    assert not runs.exists() and sorted(p.name for p in ckpt.parent.iterdir()) == ["model.ckpt"]


def test_a_checkpoint_outside_runs_starts_a_run_under_the_runs_root(tiny_synth, tmp_path):
    runs = tmp_path / "runs"
    first = fit("stage1", tiny_cfg(tiny_synth, runs, "trainer.max_steps=1", "trainer.val_check_interval=1"))
    downloads = tmp_path / "somewhere" / "Downloads"
    downloads.mkdir(parents=True)
    user_file = downloads / "model.ckpt"
    user_file.write_bytes((first / "checkpoints" / "last.ckpt").read_bytes())
    (downloads / "config.yaml").write_text("mine: true\n")  # a user's file that used to be overwritten
    out = fit("stage1", tiny_cfg(tiny_synth, runs, f"ckpt_path={user_file}", "trainer.max_steps=2",
                                 "trainer.val_check_interval=1"))
    assert out.parent == runs / "stage1" and out != first  # a new run beside the first, not over it
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2  # resumed from step 1
    assert sorted(p.name for p in downloads.iterdir()) == ["config.yaml", "model.ckpt"]
    assert (downloads / "config.yaml").read_text() == "mine: true\n"
    assert not (tmp_path / "somewhere" / "checkpoints").exists()


def test_a_stage2_checkpoint_given_to_stage1_training_is_refused(tiny_synth, tmp_path, capsys):
    ckpt = tmp_path / "s2.ckpt"
    torch.save({"dreamhead": {"stage": "stage2"}}, ckpt)
    assert main(["stage1", f"data.root={tiny_synth}", f"runs_root={tmp_path}/runs", f"ckpt_path={ckpt}"]) == 2
    assert "stage2 checkpoint" in capsys.readouterr().err


def test_non_finite_loss_stops_training_naming_the_step_and_clips(tiny_synth, tmp_path, monkeypatch, capsys):
    """A clip whose landmarks slipped past validation as NaN: stop at once, no done.json, no NaN checkpoint."""
    from dreamhead_lit.data.clip import read_index
    from dreamhead_lit.data.datamodule import LandmarkWindowDataset

    bad = next(r.id for r in read_index(tiny_synth) if r.split == "train")
    canonical = LandmarkWindowDataset.canonical

    def poisoned(self, reader, start, stop):
        canon, to_image = canonical(self, reader, start, stop)
        if reader.record.id == bad:
            canon = np.full_like(canon, np.nan)
        return canon, to_image

    monkeypatch.setattr(LandmarkWindowDataset, "canonical", poisoned)
    runs = tmp_path / "runs"
    code = main(["stage1", f"data.root={tiny_synth}", f"runs_root={runs}", *TINY, "trainer.max_steps=20",
                 "trainer.val_check_interval=1"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "training stopped at step" in err and bad in err
    run = runs / "stage1" / "demo"
    assert not (run / DONE_FILE).exists()
    for ckpt in run.glob("checkpoints/*.ckpt"):  # whatever was saved holds finite weights only
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=-3", "data.batch_size=-3: must be positive"),
    ("optim.lr=nan", "optim.lr=nan: must be a finite number"),
    ("optim.lr=0", "must be positive"),
    ("diffusion.cond_drop_prob=1.5", "must be between 0 and 1"),
    ("name=../../elsewhere", "a run name is a folder name"),
    ("diffusion.sampler=dpmpp", "expected one of ['ddpm', 'ddim', 'dpmpp_2m']"),  # closed choices: Literal types
    ("diffusion.target=noise", "expected one of ['eps', 'x0', 'v']"),
    ("data.landmark_set=478", "choose one of ['dense', '68']"),
])
def test_bad_values_are_one_line_before_any_work(tiny_synth, tmp_path, capsys, override, message):
    runs = tmp_path / "runs"
    assert main(["stage1", f"data.root={tiny_synth}", f"runs_root={runs}", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not runs.exists()


def test_empty_dataset_is_one_line_and_leaves_no_run_folder(tiny_synth, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset.json").write_text((tiny_synth / "dataset.json").read_text())
    (empty / "index.jsonl").write_text("")
    runs = tmp_path / "runs"
    assert main(["stage1", f"data.root={empty}", f"runs_root={runs}", *TINY]) == 2
    assert "split 'train' has no usable clips" in capsys.readouterr().err
    assert not (runs / "stage1" / "demo").exists()


def test_pretrained_weight_loaders_refuse_malicious_files(evil):
    """SyncNet, LPIPS's AlexNet trunk and FID's Inception: a weights file that would run code is refused."""
    import lpips

    from dreamhead_lit.metrics.fid import fid_inception
    from dreamhead_lit.metrics.lpips import _load_alexnet_trunk
    from dreamhead_lit.models.syncnet import load_syncnet

    tmp, marker = evil
    path = _malicious(tmp / "weights.pth", marker)
    with pytest.raises(CheckpointError):
        load_syncnet(path)
    with pytest.raises(CheckpointError):
        _load_alexnet_trunk(lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False), path)
    with pytest.raises(CheckpointError):
        fid_inception(weights_path=path)
