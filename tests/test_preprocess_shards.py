"""``preprocess --shard K/N`` (an array job's tasks into one dataset) and ``--merge``: the shards cover every input
exactly once, shards run at the same time give the index of one unsharded run, and the merge reports the summary and
what is missing. Real clips from shared/data/real/video (skipped when absent), their first 2.2 s only."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamhead_lit.data.clip import read_index
from dreamhead_lit.data.preprocess import PreprocessConfig, discover, parse_shard, preprocess, shard_items
from dreamhead_lit.data.resume import DestinationBusy, destination_lock, shard_lock_name

from test_preprocess import SECONDS, SIZE, _cfg, real_video  # noqa: F401 (real_video: a fixture, shared)

FLAGS = ["--size", str(SIZE), "--max-seconds", str(SECONDS), "--quiet"]


@pytest.fixture(scope="module")
def unsharded(real_video, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "ds"
    preprocess(_cfg(real_video, out), progress=False)
    return out


def _cli(*args: str, timeout: float = 170) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dreamhead_lit.data.preprocess", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _index(root: Path) -> str:
    return (root / "index.jsonl").read_text()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_cover_every_input_exactly_once(n, real_video):
    items = discover(real_video, "plain")
    shares = [[i.rel for i in shard_items(list(reversed(items)), k, n)] for k in range(n)]  # input order is irrelevant
    flat = [rel for share in shares for rel in share]
    assert sorted(flat) == sorted(i.rel for i in items) and len(flat) == len(set(flat))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced


@pytest.mark.parametrize("text", ["3/2", "2/2", "-1/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_a_clear_error(text, real_video, tmp_path, capsys):
    from dreamhead_lit.data.preprocess import main

    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)
    assert main(["--src", str(real_video), "--dst", str(tmp_path / "ds"), f"--shard={text}"]) == 2
    assert "--shard" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()  # refused before anything was written


def test_two_concurrent_shards_give_the_unsharded_index_and_merge_reports_it(real_video, unsharded, tmp_path):
    dst = tmp_path / "ds"
    shards = [_cli("--src", str(real_video), "--dst", str(dst), *FLAGS, "--shard", f"{k}/2") for k in (0, 1)]
    outs = [p.communicate(timeout=170) for p in shards]
    for p, (out, err) in zip(shards, outs):
        assert p.returncode == 0, err[-2000:]
    assert [o.splitlines()[0].split(" of ")[0] for o, _ in outs] == ["shard 0/2", "shard 1/2"]
    merge = _cli("--src", str(real_video), "--dst", str(dst), *FLAGS, "--merge")
    out, err = merge.communicate(timeout=170)
    assert merge.returncode == 0, err[-2000:]
    assert _index(dst) == _index(unsharded)  # same clips, same splits
    assert "merged and checked" in out and "dataset: 5 clips, 5 identities, 275 frames" in out
    assert "MISSING" not in out
    assert not list(dst.glob(".preprocess*.lock"))


def test_merge_names_the_inputs_a_missing_shard_left_undone(real_video, tmp_path, capsys):
    from dreamhead_lit.data.preprocess import main

    dst = tmp_path / "ds"
    preprocess(_cfg(real_video, dst, shard="1/3"), progress=False)  # shards 0 and 2 never ran
    undone = [i.rel for k in (0, 2) for i in shard_items(discover(real_video, "plain"), k, 3)]
    assert main(["--src", str(real_video), "--dst", str(dst), *FLAGS, "--merge"]) == 1
    out = capsys.readouterr().out
    assert f"MISSING: {len(undone)} inputs" in out and all(rel in out for rel in undone)
    assert len(read_index(dst)) == 5 - len(undone)


def test_a_shard_running_twice_or_beside_an_unsharded_run_is_refused(real_video, tmp_path):
    dst = tmp_path / "ds"
    dst.mkdir()
    with destination_lock(dst, name=shard_lock_name(0, 2)):  # shard 0/2 is running
        with pytest.raises(DestinationBusy, match="being preprocessed"):
            preprocess(_cfg(real_video, dst, shard="0/2"), progress=False)
        with pytest.raises(DestinationBusy, match="shard.*0/2.*still running"):
            preprocess(_cfg(real_video, dst), progress=False)
        with pytest.raises(DestinationBusy, match="--merge starts after"):
            preprocess(_cfg(real_video, dst, merge=True), progress=False)
    assert not (dst / "index.jsonl").exists()  # nothing was written by the refused runs


def test_overwrite_and_merge_do_not_combine_with_a_shard(real_video, tmp_path):
    for kw in ({"overwrite": True}, {"merge": True}):
        with pytest.raises(ValueError, match="--shard|--merge"):
            PreprocessConfig(src=str(real_video), dst=str(tmp_path), shard="0/2", **kw).check()
