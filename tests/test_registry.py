"""The model registry: a model registered from a test, touching no module of the package, trains through
``python -m dreamhead_lit.train NAME``, loads by the header its checkpoint carries, and benches as a method kind."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from dreamhead_lit import bench, registry, train
from dreamhead_lit.checkpoints import CheckpointError, read_header
from dreamhead_lit.config import RunConfig

from test_bench import backends, make_cfg, read_csv, structured

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class TinyNetConfig:
    init_gain: float = 0.5  # the 1x1 convolution starts as gain x identity


@dataclass
class DummyConfig(RunConfig):
    model: TinyNetConfig = field(default_factory=TinyNetConfig)


class ReferenceToFrame(L.LightningModule):
    """A 1x1 convolution from the reference frame to the target frame: the smallest model that learns something
    from the dataset's samples (the colours of each identity's face carry over)."""

    def __init__(self, init_gain: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.net.weight.copy_(init_gain * torch.eye(3).view(3, 3, 1, 1))
            self.net.bias.zero_()

    @classmethod
    def from_datamodule(cls, dm, *, net: dict) -> ReferenceToFrame:
        return cls(**net)

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        return self.net(ref)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self(batch["ref_frame"]), batch["frame"])
        self.log("train/mse", loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/mse", F.mse_loss(self(batch["ref_frame"]), batch["frame"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


SPEC = registry.ModelSpec("test_dummy", DummyConfig, ReferenceToFrame, registry.talking_head_data("l2i"),
                          monitor="val/mse", mode="min", description="a test's 1x1 convolution")


@bench.register_method("test_dummy_model")
class DummyModelMethod(bench.Method):
    """Every frame of the clip is the model applied to the clip's first frame."""

    default_uses_source_video = False

    def __init__(self, name, cfg, ctx) -> None:
        super().__init__(name, cfg, ctx)
        self.ckpt = bench.find_checkpoint(cfg.checkpoints.get("test_dummy"), "test_dummy", ctx.runs_root)

    def key(self) -> dict:
        return {"kind": self.kind, "checkpoint": bench.file_fingerprint(self.ckpt)}

    def generate(self, clip, out: Path) -> None:
        from dreamhead_lit.video import write_video

        model = registry.load_checkpoint(self.ckpt, expected="test_dummy")
        ref = torch.from_numpy(clip.frames[:1]).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            frame = ((model(ref).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        write_video(out, np.repeat(frame, clip.record.num_frames, axis=0), fps=clip.fps, audio=clip.audio)


@pytest.fixture
def dummy_registered():
    registry.register(SPEC, replace=True)
    yield SPEC
    registry.unregister(SPEC.name)


def _config_file(tmp_path: Path, root: Path) -> Path:
    cfg = {"name": "tiny", "runs_root": str(tmp_path / "runs"),
           "data": {"root": str(root), "batch_size": 4, "num_workers": 0, "frames_per_clip": 2},
           "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 12, "val_check_interval": 6,
                       "check_val_every_n_epoch": None, "limit_val_batches": 2, "enable_progress_bar": False,
                       "log_every_n_steps": 1}}
    path = tmp_path / "dummy.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    return path


def test_a_registered_model_trains_loads_and_benches(dummy_registered, tiny_synth, tmp_path, capsys):
    assert "test_dummy" in registry.names()
    assert train.main(["--list"]) == 0 and "a test's 1x1 convolution" in capsys.readouterr().out

    assert train.main(["test_dummy", "--config", str(_config_file(tmp_path, tiny_synth))]) == 0
    run = tmp_path / "runs" / "test_dummy" / "tiny"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert (run / "done.json").is_file() and read_header(ckpt)["model"] == "test_dummy"
    assert any((run / "checkpoints").glob("best-*.ckpt"))  # picked by the spec's monitor

    model = registry.load_checkpoint(ckpt)
    assert isinstance(model, ReferenceToFrame) and not model.training
    untrained = 0.5 * torch.eye(3)
    assert not torch.allclose(model.net.weight.view(3, 3), untrained)  # it learned
    with pytest.raises(CheckpointError, match="test_dummy checkpoint, but a stage1"):
        registry.load_checkpoint(ckpt, expected="stage1")

    # --if-needed finds the finished run by the spec's run group
    assert train.main(["test_dummy", "--config", str(_config_file(tmp_path, tiny_synth)), "--if-needed"]) == 0
    assert "is complete" in capsys.readouterr().out

    methods = {"dummy": {"kind": "test_dummy_model", "checkpoints": {"test_dummy": "tiny"}},  # a run name
               "static": {"kind": "static_reference"}}
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim", "psnr"], methods=methods, max_clips=1))
    result = bench.run_bench(cfg, backends=backends())
    rows = {r["method"]: r for r in result.table}
    assert float(rows["dummy"]["ssim"]) > 0 and rows["dummy"]["clips"] == rows["static"]["clips"] >= 1
    header, csv_rows = read_csv(result.out_dir / "table.csv")
    assert {"dummy", "static"} <= {r["method"] for r in csv_rows}


def test_unknown_and_duplicate_names_are_clear_errors(dummy_registered, capsys):
    assert train.main(["no_such_model"]) == 2
    assert "no model named 'no_such_model'; registered:" in capsys.readouterr().err
    other = registry.ModelSpec("test_dummy", DummyConfig, ReferenceToFrame, registry.talking_head_data("a2l"),
                               monitor="val/mse", mode="min")
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register(other)


def test_checkpoints_name_their_model_and_older_ones_their_stage(tmp_path):
    from dreamhead_lit.checkpoints import header_model

    assert header_model({"model": "stage2", "stage": "stage2"}) == "stage2"
    assert header_model({"stage": "stage1"}) == "stage1"  # written before the registry
    assert header_model({}) is None
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="no dreamhead-lit header"):
        registry.load_checkpoint(plain)


def test_a_run_that_trains_no_step_is_an_error_not_a_done_run(dummy_registered, tiny_synth, tmp_path, capsys,
                                                              monkeypatch):
    # as a DDP rank whose share of the data is smaller than one batch (drop_last): Lightning returns without a step
    import lightning as L

    monkeypatch.setattr(L.Trainer, "fit", lambda self, *a, **k: None)
    assert train.main(["test_dummy", "--config", str(_config_file(tmp_path, tiny_synth))]) == 2
    err = capsys.readouterr().err
    assert "ran 0 steps" in err and "data.batch_size=4" in err
    assert not (tmp_path / "runs" / "test_dummy" / "tiny" / "done.json").exists()
