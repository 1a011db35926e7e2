"""The bench over several sampling seeds (``python -m dreamhead_lit.bench --seeds``): every method's seed set per run,
the config's own seed keeping its run name (and cache), and a mean ± std table."""
from __future__ import annotations

import math

import pytest

from dreamhead_lit.bench import run_bench
from dreamhead_lit.bench.seeds import mean_std, run_seeds, summarise, with_seed
from test_bench import backends, make_cfg, structured

pytestmark = [pytest.mark.usefixtures("one_thread")]


def test_with_seed_sets_every_method_and_names_the_run(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path))
    assert with_seed(cfg, 0).name == cfg.name  # the config's own seed: same run, same cache
    two = with_seed(cfg, 2)
    assert two.name == f"{cfg.name}-seed2" and {m.seed for m in two.methods.values()} == {2}
    assert {m.seed for m in cfg.methods.values()} == {0}  # the given config is left alone


def test_mean_std_and_the_summary_over_seeds():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert math.isnan(mean_std([1.0])[1])
    tables = {0: [{"method": "a", "label": "A", "ssim": 0.5, "lse_c": "n/a"}],
              1: [{"method": "a", "label": "A", "ssim": 0.7, "lse_c": "n/a"}]}
    (row,) = summarise(tables)
    assert row["ssim"] == pytest.approx(0.6) and row["ssim_std"] == pytest.approx(math.sqrt(0.02))
    assert row["lse_c_n"] == 0


def test_run_seeds_writes_the_mean_std_table(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim", "psnr"], max_clips=1,
                              methods={"static": {"kind": "static_reference", "label": "static"}}))
    folder, text = run_seeds(cfg, [0, 1], run=lambda c: run_bench(c, backends=backends()))
    assert folder.name == f"{cfg.name}-seeds" and (folder / "table.md").read_text() == text
    assert "seeds 0, 1" in text and "± 0.0000" in text  # the static frame does not depend on the seed
    assert (folder.parent / f"{cfg.name}-seed1" / "table.csv").is_file()


def test_the_command_line_takes_overrides_after_the_seeds(monkeypatch):
    from dreamhead_lit.bench import cli

    seen = {}
    monkeypatch.setattr(cli, "load_bench_config", lambda path, overrides: seen.setdefault("overrides", overrides))
    monkeypatch.setattr("dreamhead_lit.bench.seeds.run_seeds",
                        lambda cfg, seeds: (seen.setdefault("seeds", seeds), "table") and ("folder", "table"))
    assert cli.main(["--seeds", "0", "2", "max_clips=1"]) == 0
    assert seen == {"overrides": ["max_clips=1"], "seeds": [0, 2]}
