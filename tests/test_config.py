"""Config composition, overrides and the errors a user sees."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from dreamhead_lit.config import ConfigError, DataConfig, TrainerConfig, load_config, save_resolved_config


@dataclass
class _Experiment:
    name: str = "default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@pytest.fixture
def experiments(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "trainer").mkdir()
    (tmp_path / "size").mkdir()
    (tmp_path / "data" / "synthtalk.yaml").write_text("root: data/synthtalk\nbatch_size: 8\n")
    (tmp_path / "data" / "hdtf.yaml").write_text("root: data/hdtf\n")
    (tmp_path / "trainer" / "default.yaml").write_text("max_steps: 100\n")
    (tmp_path / "size" / "demo.yaml").write_text("_global_: true\ntrainer:\n  max_steps: 50\ndata:\n  window: 16\n")
    (tmp_path / "stage.yaml").write_text(
        "defaults:\n  - data: synthtalk\n  - trainer: default\n  - size: demo\nname: exp\n"
    )
    return tmp_path / "stage.yaml"


def test_composition_order_and_overrides(experiments):
    cfg = load_config(experiments, schema=_Experiment)
    assert cfg.data.root == "data/synthtalk" and cfg.data.batch_size == 8
    assert cfg.trainer.max_steps == 50 and cfg.data.window == 16  # size part overrides the trainer part
    assert cfg.data.audio_context == DataConfig.audio_context  # schema default where no file says otherwise
    cfg = load_config(experiments, ["data=hdtf", "trainer.max_steps=7", "data.test_splits=[test]"], schema=_Experiment)
    assert cfg.data.root == "data/hdtf" and cfg.trainer.max_steps == 7 and list(cfg.data.test_splits) == ["test"]


def test_unknown_key_is_named(experiments):
    with pytest.raises(ConfigError, match=r"unknown config key 'data.batchsize'"):
        load_config(experiments, ["data.batchsize=4"], schema=_Experiment)
    (experiments.parent / "data" / "synthtalk.yaml").write_text("root: x\nwindw: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'data.windw'"):
        load_config(experiments, schema=_Experiment)


def test_wrong_type_is_named(experiments):
    with pytest.raises(ConfigError, match=r"wrong type for config key 'trainer.max_steps'"):
        load_config(experiments, ["trainer.max_steps=lots"], schema=_Experiment)


def test_bad_group_choice_lists_options(experiments):
    with pytest.raises(ConfigError, match=r"no 'data' config named 'mead'.*\['hdtf', 'synthtalk'\]"):
        load_config(experiments, ["data=mead"], schema=_Experiment)
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(experiments, ["data.root"], schema=_Experiment)


def test_resolved_config_is_saved(experiments, tmp_path):
    cfg = load_config(experiments, ["seed=3"], schema=_Experiment)
    path = save_resolved_config(cfg, tmp_path / "run")
    assert OmegaConf.load(path).seed == 3


def test_shipped_experiment_parts_match_the_schemas():
    from dreamhead_lit.config import experiments_dir

    for part in sorted((experiments_dir() / "data").glob("*.yaml")):
        OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(part))
    for part in sorted((experiments_dir() / "trainer").glob("*.yaml")):
        OmegaConf.merge(OmegaConf.structured(TrainerConfig), OmegaConf.load(part))
