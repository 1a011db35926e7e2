"""One bench over several sampling seeds (``python -m dreamhead_lit.bench --seeds 0 1 2``): every method's ``seed``
set to each seed in turn (a run per seed, ``<name>`` for the config's own seed so its cache is reused,
``<name>-seed<k>`` for the others), then one table of mean ± std over the seeds per method and column
(``<name>-seeds/table.md`` and ``table.csv``). What varies is sampling (diffusion noise, the flow prior's draws, a
predicted style), not training: a claim that holds on one seed and not another is within noise."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from ..data.clip import atomic_write_text
from .report import NA, TABLE_HEADINGS, _fmt, _heading, _value


def with_seed(cfg: Any, seed: int) -> Any:
    """``cfg`` with every method's ``seed`` set to ``seed``, its run named after the seed (unchanged for its own)."""
    from omegaconf import OmegaConf

    out = cfg.copy()
    OmegaConf.set_struct(out.methods, False)
    own = {int(m.seed) for m in cfg.methods.values()}
    if own != {seed}:
        out.name = f"{cfg.name}-seed{seed}"
    for m in out.methods.values():
        m.seed = seed
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN with fewer than two values)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, std


def summarise(tables: dict[int, list[dict]]) -> list[dict[str, Any]]:
    """Per method (in the first table's order): each column's mean and std over the seeds that have a value."""
    first = next(iter(tables.values()))
    rows = []
    for base in first:
        name = base["method"]
        row: dict[str, Any] = {"method": name, "label": base["label"], "seeds": len(tables)}
        for col, _, _ in TABLE_HEADINGS:
            vals = [v for t in tables.values() for r in t if r["method"] == name
                    for v in [_value(r.get(col))] if v is not None]
            row[col], row[f"{col}_std"] = mean_std(vals)
            row[f"{col}_n"] = len(vals)
        rows.append(row)
    return rows


def render(rows: list[dict], seeds: list[int], title: str) -> str:
    cols = [(c, h, hib) for c, h, hib in TABLE_HEADINGS if any(r[f"{c}_n"] for r in rows)]
    head = ["method"] + [_heading(h, hib) for _, h, hib in cols]
    lines = [f"# {title}: mean ± std over sampling seeds {', '.join(map(str, seeds))}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"]]
        for c, _, _ in cols:
            if not r[f"{c}_n"]:
                cells.append(NA)
            elif r[f"{c}_n"] < 2 or not math.isfinite(r[f"{c}_std"]):
                cells.append(_fmt(r[c], c))
            else:
                cells.append(f"{_fmt(r[c], c)} ± {_fmt(r[f'{c}_std'], c)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "A method whose videos do not depend on the seed (ground truth, the static frame, a reconstruction) "
              "shows a std of 0."]
    return "\n".join(lines) + "\n"


def run_seeds(cfg: Any, seeds: list[int], *, run: Any = None) -> tuple[Path, str]:
    """Bench ``cfg`` once per seed, then write and return the mean ± std table (its folder and markdown)."""
    from .run import run_bench

    run = run or run_bench
    tables, out_dir = {}, None
    for seed in seeds:
        result = run(with_seed(cfg, seed))
        tables[seed] = result.table
        out_dir = result.out_dir
    assert out_dir is not None
    rows = summarise(tables)
    folder = out_dir.parent / f"{cfg.name}-seeds"
    folder.mkdir(parents=True, exist_ok=True)
    text = render(rows, seeds, f"Benchmark `{cfg.name}`")
    atomic_write_text(folder / "table.md", text)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else
                          (NA if isinstance(v, float) else v)) for k, v in r.items()} for r in rows)
    atomic_write_text(folder / "table.csv", buf.getvalue())
    return folder, text


__all__ = ["mean_std", "render", "run_seeds", "summarise", "with_seed"]
