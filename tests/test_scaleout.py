"""Scale-out (issue 18): training of both stages and the bench as 2 nodes x 1 process on localhost, the way a cluster
launches them (``torchrun --nnodes 2``, one launcher per node, a shared rendezvous; gloo on CPU), and the cluster
launch scripts under ``experiments/cluster/``."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_a2l import TINY as TINY_STAGE1
from test_l2i import TINY as TINY_STAGE2

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "experiments" / "cluster"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, from this interpreter's torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two_nodes(args: list[str], *, timeout: float = 240) -> str:
    """``python <args>`` as 2 nodes x 1 process: two torchrun launchers (node ranks 0 and 1) started together,
    meeting at a local rendezvous, exactly as two machines of a cluster would; returns both nodes' output."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("DREAMHEAD_RUN_DIR", None)  # each node chooses its run folder itself, as on a cluster
    procs = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                               "--master-addr", "127.0.0.1", "--master-port", str(port), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
             for rank in (0, 1)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {rank}:\n{out[-3000:]}"
    return "".join(outputs)


def _cluster_overrides(root: Path, runs: Path) -> list[str]:
    return [f"data.root={root}", f"runs_root={runs}", "trainer.accelerator=cpu", "trainer.strategy=ddp",
            "trainer.devices=1", "trainer.num_nodes=2", "trainer.max_steps=3", "trainer.val_check_interval=100"]


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("stage,tiny", [("stage1", TINY_STAGE1), ("stage2", TINY_STAGE2)])
def test_two_nodes_train_one_run_with_one_checkpoint_and_one_log(stage, tiny, tiny_synth, tmp_path):
    runs = tmp_path / "runs"
    out = torchrun_two_nodes(["-m", "dreamhead_lit.train", stage, *tiny, *_cluster_overrides(tiny_synth, runs)])
    assert "MEMBER: 2/2" in out  # Lightning saw one job of world size 2, not two jobs of 1
    assert [p.name for p in (runs / stage).iterdir()] == ["demo"]  # one run folder, not one per node
    run = runs / stage / "demo"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    assert json.loads((run / "done.json").read_text())["steps"] == 3


BENCH_YAML = """\
name: t
seed: 0
threads: 1
max_clips: null
progress: false
metrics: [ssim, psnr, ssim_mouth, psnr_mouth]
data:
  root: {root}
  test_splits: [test, test_seen]
methods:
  ground_truth: {{kind: ground_truth, label: ground truth}}
  static_reference: {{kind: static_reference, label: static first frame}}
"""


@pytest.mark.slow
@pytest.mark.ddp
def test_two_node_bench_table_equals_the_one_process_table(tiny_synth, tmp_path):
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(BENCH_YAML.format(root=tiny_synth))
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "dreamhead_lit.bench", "--config", str(cfg), f"out_root={one}",
                           f"runs_root={tmp_path / 'runs'}"], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torchrun_two_nodes(["-m", "dreamhead_lit.bench", "--config", str(cfg), f"out_root={two}",
                        f"runs_root={tmp_path / 'runs'}"])
    out1, out2 = one / tiny_synth.name / "t", two / tiny_synth.name / "t"
    assert (out2 / "table.csv").read_text() == (out1 / "table.csv").read_text()
    assert (out2 / "per_clip.csv").read_text() == (out1 / "per_clip.csv").read_text()
    r1, r2 = (json.loads((o / "results.json").read_text()) for o in (out1, out2))
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert r2["clips"] == r1["clips"] and len(r1["clips"]) > 2  # every clip, each scored once (checked in the bench)


# ---------------------------------------------------------------------------------------------------------------------
# Cluster launch scripts


SCRIPTS = sorted(p for p in CLUSTER.iterdir() if p.suffix in (".sbatch", ".sh"))


def test_the_cluster_scripts_are_there_and_valid_bash():
    assert {p.name for p in SCRIPTS} >= {"train.sbatch", "bench.sbatch", "preprocess.sbatch", "torchrun.sh"}
    for script in SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"


def script_overrides(script: Path) -> list[str]:
    """The ``key=value`` config overrides a script passes (lower-case dotted keys on its command lines), each shell
    expansion replaced by its ``${VAR:-default}`` default or by a number."""
    out = []
    for line in script.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        for token in line.split():
            if re.fullmatch(r"[a-z_]+(\.[a-z_]+)*=\S+", token):
                key, value = token.split("=", 1)
                value = re.sub(r"\$\{\w+:-([^$}]*)\}", r"\1", value.strip('"'))
                out.append(f"{key}={'2' if '$' in value else value}")
    return out


@pytest.mark.parametrize("script", ["train.sbatch", "torchrun.sh"])
@pytest.mark.parametrize("model", ["stage1", "stage2"])
def test_the_launch_scripts_name_only_config_keys_that_exist(script, model):
    from dreamhead_lit.config import load_config
    from dreamhead_lit.registry import get

    overrides = script_overrides(CLUSTER / script)
    assert {"trainer=ddp", "trainer.num_nodes=2", "trainer.devices=2"} <= set(overrides)
    spec = get(model)
    cfg = load_config(spec.config_file("paper"), overrides, schema=spec.schema_class())  # an unknown key: ConfigError
    assert (cfg.trainer.strategy, cfg.trainer.num_nodes, cfg.data.pin_memory) == ("ddp", 2, True)


def test_the_bench_script_default_config_loads():
    from dreamhead_lit.bench import load_bench_config

    text = (CLUSTER / "bench.sbatch").read_text()
    default = re.search(r"CONFIG=\$\{1:-(\S+)\}", text).group(1)
    assert load_bench_config(default, []).methods
