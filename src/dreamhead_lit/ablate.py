"""The ablation harness: a named component dropped -> trained -> benched -> a delta table against the full model.

    python -m dreamhead_lit.ablate --list
    python -m dreamhead_lit.ablate --drop temporal_smooth [--drop cfg ...] [--seeds 0 1 2] [--size demo|paper]
                                   [--data synthtalk|hdtf|mead] [--name RUN] [key=value ...] [--bench key=value ...]

``key=value`` overrides apply to both stages' training configs, ``stage1.key=value`` / ``stage2.key=value`` to one;
``--bench key=value`` (repeatable) to the bench config (``--bench max_clips=4``).

The components live in ``experiments/ablations/components.yaml`` (name, one-line description, the overrides that remove
it per stage, the bench method that scores it). For each seed, the full model and each variant are trained with the
same data, seed and budget (``experiments/stage{1,2}/<size>.yaml``); a variant retrains only the stages it overrides.
A training run is never repeated: any finished run under ``runs/<stage>/`` whose resolved config equals the one
wanted is reused (so the full model of ``make demo`` serves ``--size demo --seeds 0``), and an interrupted one is
resumed from its ``last.ckpt``. Each seed's models are then scored by:

* stage-1 landmarks (when the variant has a stage 1): M-LMD and jitter of the exact landmark sequences on the
  identity-disjoint test split (``evaluation.evaluate_stage1``): the temporal-smoothness figure without a renderer or a
  landmark detector in between;
* the benchmark package (``experiments/bench/<size>.yaml``): videos of the test clips through each variant's stages,
  every metric of ``make bench`` (per-clip cached, so an interrupted bench resumes), with the ground truth and the
  static frame as reference rows.

Outputs: ``benchmarks/results/ablations/<run>/{table.md, table.csv, ablation.json}`` and the per-seed bench tables
under ``benchmarks/results/ablations/<run>/<dataset>/seed<k>/``. Each cell is the mean over seeds (± the sample
standard deviation with more than one seed) and, for a variant, its difference to the full model (mean over seeds of
the per-seed differences). Running the same command again costs seconds: everything is cached.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, experiments_dir, load_config, resolve_path, to_container
from .data.clip import ClipError, atomic_write_text

REGISTRY_FILE = "ablations/components.yaml"
STAGES = ("stage1", "stage2")
FULL = "full"
FULL_ONE_SHOT = "full_one_shot"  # the full model benched one-shot: the like-for-like row for a one-shot variant
# stage-1 landmark columns of the ablation table: (column, key in evaluate_stage1's rows, heading, higher is better);
# "lm_" keeps them apart from the bench's columns of the same metric measured on the videos
_LANDMARK_COLUMNS = (("lm_lmd_mouth", "lmd_mouth", "M-LMD (lm)", False),
                     ("lm_jitter_ratio", "jitter_ratio", "Jitter (lm)", None))


@dataclass
class Component:
    """One entry of the registry: what it is and the overrides that remove it, per stage."""

    description: str = ""
    stage1: list[str] = field(default_factory=list)
    stage2: list[str] = field(default_factory=list)
    method: str = "dreamhead"  # the bench method kind that scores the variant

    def overrides(self, stage: str) -> list[str]:
        return list(getattr(self, stage))

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages the variant's bench method runs: audio_to_image has no stage 1."""
        return ("stage2",) if self.method == "audio_to_image" else STAGES


class AblationError(Exception):
    """A request the harness cannot carry out (unknown component, conflicting run), with what to do instead."""


def load_registry(path: str | Path | None = None) -> dict[str, Component]:
    """The registry file (default ``experiments/ablations/components.yaml``), each entry checked against
    :class:`Component`."""
    p = resolve_path(path) if path else experiments_dir() / REGISTRY_FILE
    raw = OmegaConf.load(p)
    out = {}
    for name, entry in raw.items():
        try:
            merged = OmegaConf.merge(OmegaConf.structured(Component), entry)
        except Exception as err:  # omegaconf's own errors name the bad key
            raise ConfigError(f"{p}: ablation {name!r}: {err}") from err
        out[str(name)] = Component(**to_container(merged))
        if not (out[str(name)].stage1 or out[str(name)].stage2):
            raise ConfigError(f"{p}: ablation {name!r} overrides no stage")
    return out


def check_names(names: list[str], registry: dict[str, Component]) -> None:
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise AblationError(f"unknown ablation(s) {', '.join(map(repr, unknown))}; the registered ones are: "
                            f"{', '.join(registry)} (python -m dreamhead_lit.ablate --list)")
    if len(set(names)) != len(names):
        raise AblationError(f"--drop names a component twice: {names}")


def format_registry(registry: dict[str, Component]) -> str:
    width = max(len(n) for n in registry)
    lines = []
    for name, c in registry.items():
        stages = "+".join(s for s in STAGES if c.overrides(s))
        lines.append(f"{name:<{width}}  {f'[{stages}]':<15}  {c.description}")
        for s in STAGES:
            if c.overrides(s):
                lines.append(f"{'':<{width}}    {s}: {' '.join(c.overrides(s))}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Training runs: found by config, resumed, or trained
# ---------------------------------------------------------------------------------------------------------------------


def _schema(stage: str) -> type:
    from .registry import get

    return get(stage).schema_class()


@dataclass
class RunPlan:
    """A training run the ablation needs: where it is and whether it must still be trained."""

    stage: str
    cfg: DictConfig
    run_dir: Path
    state: str  # "reused" (a finished run with the same config), "resume", "train"

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"


def plan_run(stage: str, size: str, name: str, overrides: list[str]) -> RunPlan:
    """The run of ``stage`` configured by ``<stage>/<size>.yaml`` + ``overrides``: an existing finished run with the
    same config, else ``runs/<stage>/<name>`` (resumed when it holds a checkpoint of the same config)."""
    from .runs import DONE_FILE, comparable_config, config_differences

    schema = _schema(stage)
    cfg = load_config(f"{stage}/{size}.yaml", [*overrides, f"name={name}"], schema=schema)
    wanted = comparable_config(cfg, schema)
    root = resolve_path(cfg.runs_root) / stage
    own = root / name
    candidates = sorted(root.glob("*/config.yaml"), key=lambda p: (p.parent != own, p.parent.name))
    for path in candidates:
        run = path.parent
        if not (run / DONE_FILE).is_file():
            continue
        try:
            same = comparable_config(OmegaConf.load(path), schema) == wanted
        except Exception:  # a config saved by an older schema that no longer merges: not the same experiment
            same = False
        if same:
            return RunPlan(stage, cfg, run, "reused")
    if (own / "config.yaml").is_file() and any((own / "checkpoints").glob("*.ckpt")):
        diff = config_differences(comparable_config(OmegaConf.load(own / "config.yaml"), schema), wanted)
        if diff:
            raise AblationError(f"{own} holds a run with a different config ({', '.join(diff[:6])}); remove it or pass "
                                f"--name to start this ablation under another name")
        return RunPlan(stage, cfg, own, "resume")
    return RunPlan(stage, cfg, own, "train")


def ensure_trained(plan: RunPlan) -> None:
    """Train (or resume) the planned run unless it is reused."""
    from .runs import DONE_FILE
    from .training import fit

    if plan.state != "reused":
        cfg = plan.cfg.copy()
        if plan.state == "resume":
            cfg.ckpt_path = "last"
        try:
            fit(plan.stage, cfg)
        except SystemExit as stop:  # Lightning ends the process with sys.exit(1) after a graceful Ctrl-C
            raise KeyboardInterrupt from stop
        if not (plan.run_dir / DONE_FILE).is_file():
            raise KeyboardInterrupt  # the trainer stopped early without finishing: stop here too
        plan.state = "trained"


# ---------------------------------------------------------------------------------------------------------------------
# The ablation
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str  # "full" or the dropped component
    label: str
    method: str
    stages: tuple[str, ...]
    overrides: dict[str, list[str]]  # per stage, on top of the shared ones
    baseline: str = FULL  # the bench row its deltas are taken against (FULL_ONE_SHOT for a one-shot variant)


@dataclass
class AblationSettings:
    drop: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    size: str = "demo"
    data: str | None = None  # a data group (synthtalk, hdtf, mead) or a processed dataset's folder; None: the configs'
    name: str | None = None  # results folder under benchmarks/results/ablations/ (default: from the request)
    overrides: list[str] = field(default_factory=list)  # key=value (both stages) or stage1./stage2.key=value
    bench_overrides: list[str] = field(default_factory=list)
    out_root: str = "benchmarks/results/ablations"
    registry: str | None = None

    @property
    def data_overrides(self) -> list[str]:
        """``data=<group>`` for a config group of experiments/data/, else ``data.root=<folder>``."""
        if not self.data:
            return []
        if (experiments_dir() / "data" / f"{self.data}.yaml").is_file():
            return [f"data={self.data}"]
        return [f"data.root={self.data}"]

    @property
    def data_tag(self) -> str:
        return Path(str(self.data)).name if self.data else ""

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        parts = [self.size, *([self.data_tag] if self.data else []), "+".join(self.drop)]
        seeds = self.seeds
        parts.append("s" + "-".join(map(str, seeds)))
        return "-".join(parts)


def variants(settings: AblationSettings, registry: dict[str, Component]) -> list[Variant]:
    out = [Variant(FULL, "full model", "dreamhead", STAGES, {s: [] for s in STAGES})]
    for name in settings.drop:
        c = registry[name]
        out.append(Variant(name, f"− {name}", c.method, c.stages, {s: c.overrides(s) for s in STAGES}))
    return out


def _shared_overrides(settings: AblationSettings, seed: int, stage: str) -> list[str]:
    """The data choice, the seed and the user's overrides that apply to ``stage`` (stage prefix removed)."""
    own = []
    for item in settings.overrides:
        head, _, rest = item.partition(".")
        if head in STAGES:
            if head == stage:
                own.append(rest)
        else:
            own.append(item)
    return [*settings.data_overrides, f"seed={seed}", *own]


def _run_name(settings: AblationSettings, variant: Variant, seed: int) -> str:
    data = f"{settings.data_tag}-" if settings.data else ""
    return f"ablate-{settings.size}-{data}{variant.name}-s{seed}"


def plan_seed(settings: AblationSettings, vs: list[Variant], seed: int) -> dict[str, dict[str, RunPlan]]:
    """variant -> stage -> the run it uses. A stage the variant does not override is the full model's run."""
    shared = {s: _shared_overrides(settings, seed, s) for s in STAGES}
    full = {s: plan_run(s, settings.size, _run_name(settings, vs[0], seed), shared[s]) for s in STAGES}
    plans = {FULL: full}
    for v in vs[1:]:
        plans[v.name] = {s: (plan_run(s, settings.size, _run_name(settings, v, seed), [*shared[s], *v.overrides[s]])
                             if v.overrides[s] else full[s]) for s in v.stages}
    return plans


def _needed(plans: dict[str, dict[str, RunPlan]], vs: list[Variant]) -> list[RunPlan]:
    """The distinct runs the variants use, the full model's first."""
    seen: dict[Path, RunPlan] = {}
    for v in vs:
        for s in v.stages:
            seen.setdefault(plans[v.name][s].run_dir, plans[v.name][s])
    return list(seen.values())


def landmark_scores(ckpt: Path, out_dir: Path, seed: int) -> dict[str, float]:
    """Stage-1 figures of a checkpoint on the test split, cached by the checkpoint's fingerprint."""
    from .bench import file_fingerprint
    from .evaluation import evaluate_stage1

    cache = out_dir / "scores.json"
    key = file_fingerprint(ckpt)
    if cache.is_file():
        blob = json.loads(cache.read_text())
        if blob.get("checkpoint") == key:
            return blob["metrics"]
    rows = evaluate_stage1(ckpt, split="test", overrides=[], videos=0, seed=seed, out_dir=out_dir)
    atomic_write_text(cache, json.dumps({"checkpoint": key, "metrics": rows}, indent=2))
    return rows


def _one_shot(variant: Variant, plans: dict[str, dict[str, RunPlan]], protocol: str) -> bool:
    """Whether the bench can only run ``variant`` one-shot while the full model follows the clip: without landmarks
    (audio_to_image) only a dubbing-mode stage 2 takes the clip's pose."""
    return (variant.method == "audio_to_image" and protocol == "dubbing"
            and plans[variant.name]["stage2"].cfg.model.mode != "dubbing")


def bench_config(settings: AblationSettings, vs: list[Variant], plans: dict[str, dict[str, RunPlan]], seed: int,
                 out_root: Path) -> Any:
    """The size's bench config with one method per variant (template: its ``dreamhead`` method's sampler settings)
    and the ground truth and static frame kept as reference rows. A variant that can only be benched one-shot gets
    the full model benched one-shot too, so its deltas compare like with like (pose following aside)."""
    from .bench import load_bench_config

    cfg = load_bench_config(f"bench/{settings.size}.yaml", [*settings.data_overrides, *settings.bench_overrides])
    template = next((m for m in cfg.methods.values() if m.kind == "dreamhead"), None)
    methods: dict[str, Any] = {k: m for k, m in cfg.methods.items() if m.kind in ("ground_truth", "static_reference")}
    for v in vs:
        m = OmegaConf.merge(template, {}) if template is not None else OmegaConf.create({})
        m.kind, m.label = v.method, v.label
        m.stage1 = plans[v.name]["stage1"].name if "stage1" in v.stages else None
        m.stage2 = plans[v.name]["stage2"].name
        methods[v.name] = m
        if template is not None and _one_shot(v, plans, template.protocol):
            v.baseline = FULL_ONE_SHOT
            methods[FULL_ONE_SHOT] = OmegaConf.merge(methods[FULL], {"protocol": "one_shot",
                                                                     "label": "full model (one-shot)"})
    cfg.methods = methods
    cfg.name, cfg.seed, cfg.out_root = f"seed{seed}", seed, str(out_root)
    return cfg


@dataclass
class SeedResult:
    seed: int
    landmarks: dict[str, dict[str, float]]  # variant -> stage-1 figures
    bench: dict[str, dict[str, Any]]  # method -> table row
    bench_markdown: str
    runs: dict[str, dict[str, str]]  # variant -> stage -> "run dir (state)"


def run_seed(settings: AblationSettings, vs: list[Variant], seed: int, out: Path, *, backends: Any = None,
             log=print) -> SeedResult:
    from .bench import run_bench

    plans = plan_seed(settings, vs, seed)
    for plan in _needed(plans, vs):
        what = {"reused": "reusing finished run", "resume": "resuming", "train": "training"}[plan.state]
        log(f"[seed {seed}] {plan.stage}: {what} {plan.run_dir}")
        ensure_trained(plan)
    landmarks = {}
    for v in vs:
        if "stage1" in v.stages:
            plan = plans[v.name]["stage1"]
            log(f"[seed {seed}] stage-1 landmarks of {v.label} ({plan.name})")
            landmarks[v.name] = landmark_scores(plan.checkpoint, out / "landmarks" / plan.name, seed)
    log(f"[seed {seed}] bench: {', '.join(v.label for v in vs)}")
    result = run_bench(bench_config(settings, vs, plans, seed, out), backends=backends)
    errors = {m: s["errors"] for m, s in result.stats.items() if s["errors"]}
    if errors:
        raise AblationError(f"bench of seed {seed}: videos failed for {errors}; see {result.out_dir / 'per_clip.csv'}")
    runs = {v.name: {s: f"{plans[v.name][s].run_dir} ({plans[v.name][s].state})" for s in v.stages} for v in vs}
    return SeedResult(seed, landmarks, {r["method"]: r for r in result.table}, result.markdown, runs)


# ---------------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------------


def _number(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
    return mean, std


def _columns(results: list[SeedResult]) -> list[tuple[str, str, bool | None, str]]:
    """(column, heading, higher is better, source) of the metrics some variant has a value for."""
    from .bench import TABLE_HEADINGS  # one table vocabulary for the bench and the ablation

    cols: list[tuple[str, str, bool | None, str]] = []
    for column, key, heading, hib in _LANDMARK_COLUMNS:
        if any(key in r.landmarks.get(v, {}) for r in results for v in r.landmarks):
            cols.append((column, heading, hib, "landmarks"))
    for key, heading, hib in TABLE_HEADINGS:
        if any(math.isfinite(_number(row.get(key))) for r in results for row in r.bench.values()):
            cols.append((key, heading, hib, "bench"))
    return cols


def _value(result: SeedResult, variant: str, key: str, source: str) -> float:
    if source == "landmarks":
        return _number(result.landmarks.get(variant, {}).get(key.removeprefix("lm_")))
    return _number(result.bench.get(variant, {}).get(key))


def _fmt(x: float, key: str) -> str:
    key = key.removeprefix("lm_")
    digits = 2 if key in ("psnr", "psnr_mouth", "fid", "sync_abs_offset") else (4 if key.startswith(("ssim", "lpips", "csim")) else 3)
    return f"{x:.{digits}f}"


def summarise(vs: list[Variant], results: list[SeedResult], reference_rows: list[tuple[str, str]]) -> list[dict]:
    """Rows of table.csv: per variant (and reference row) and metric: mean, std, delta to the full model (mean of the
    per-seed differences) and its std."""
    cols = _columns(results)
    rows = []
    for name, label in [(v.name, v.label) for v in vs] + reference_rows:
        variant = next((v for v in vs if v.name == name), None)
        row: dict[str, Any] = {"variant": name, "label": label, "seeds": " ".join(str(r.seed) for r in results),
                               "baseline": variant.baseline if variant is not None and name != FULL else ""}
        for key, _, _, source in cols:
            values = [_value(r, name, key, source) for r in results]
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(values)
            if variant is not None and name != FULL:
                base = FULL if source == "landmarks" else variant.baseline  # one stage 1 whatever the protocol
                deltas = [x - _value(r, base, key, source) for x, r in zip(values, results)]
                row[f"{key}_delta"], row[f"{key}_delta_std"] = _mean_std(deltas)
            else:
                row[f"{key}_delta"] = row[f"{key}_delta_std"] = math.nan
        rows.append(row)
    return rows


def markdown_table(settings: AblationSettings, vs: list[Variant], results: list[SeedResult], rows: list[dict],
                   registry: dict[str, Component], seconds: float) -> str:
    from .bench import arrow

    cols = _columns(results)
    n = len(results)
    head = ["variant"] + [f"{h} {arrow(hib)}" for _, h, hib, _ in cols]
    lines = [f"# Ablation `{settings.run_name}`: {settings.size} size, "
             f"{settings.data or 'the stage configs’ data'}, seeds {', '.join(str(r.seed) for r in results)}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["label"]]
        for key, _, _, _ in cols:
            mean, std = row[f"{key}_mean"], row[f"{key}_std"]
            if not math.isfinite(mean):
                cells.append("n/a")
                continue
            cell = _fmt(mean, key) + (f" ± {_fmt(std, key)}" if n > 1 and math.isfinite(std) else "")
            delta = row[f"{key}_delta"]
            if math.isfinite(delta):
                cell += f" ({'+' if delta >= 0 else '−'}{_fmt(abs(delta), key)})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Cells: mean over {n} seed(s)" + (" ± sample std" if n > 1 else "") +
              "; in brackets the difference to the full model under the same bench protocol (mean of per-seed "
              "differences; a variant that can only be benched one-shot is compared with 'full model (one-shot)'). "
              "(lm): stage-1 landmark sequences on the identity-disjoint test split, exact, no renderer in between; "
              "Jitter: mean acceleration magnitude over the ground truth's (→1 is best). Other columns: the bench "
              "videos (protocols and metric settings in the per-seed bench tables below).", "", "Dropped components:"]
    for v in vs[1:]:
        c = registry[v.name]
        ov = "; ".join(f"{s}: {' '.join(c.overrides(s))}" for s in STAGES if c.overrides(s))
        lines.append(f"- {v.name}: {c.description} ({ov}; scored by the bench method `{c.method}`)")
    lines += ["", "Runs (same data, seed and budget; a stage a variant does not override is the full model's):"]
    for r in results:
        for v in vs:
            lines.append(f"- seed {r.seed}, {v.label}: " + "; ".join(f"{s} {d}" for s, d in r.runs[v.name].items()))
    lines += ["", f"Per-seed bench tables: {', '.join(f'<dataset>/seed{r.seed}/table.md' for r in results)} beside "
              f"this file. Total time of this invocation: {seconds:.0f} s (cached steps cost nothing)."]
    return "\n".join(lines)


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    keys = list(rows[0]) if rows else []
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return buf.getvalue()


def run_ablation(settings: AblationSettings, *, backends: Any = None, log=print) -> Path:
    """Train, score and tabulate the ablation; returns its results folder."""
    start = time.perf_counter()
    registry = load_registry(settings.registry)
    check_names(settings.drop, registry)
    if not settings.drop:
        raise AblationError("nothing to ablate: name a component with --drop (see --list)")
    vs = variants(settings, registry)
    out = resolve_path(settings.out_root) / settings.run_name
    out.mkdir(parents=True, exist_ok=True)
    results = [run_seed(settings, vs, seed, out, backends=backends, log=log) for seed in settings.seeds]
    refs = [(k, row["label"]) for k, row in results[0].bench.items() if k not in {v.name for v in vs}]
    refs.sort(key=lambda ref: ref[0] != FULL_ONE_SHOT)  # the one-shot full model first: it is a baseline, not a bound
    rows = summarise(vs, results, refs)
    md = markdown_table(settings, vs, results, rows, registry, time.perf_counter() - start)
    atomic_write_text(out / "table.md", md + "\n")
    atomic_write_text(out / "table.csv", _csv(rows))
    atomic_write_text(out / "ablation.json", json.dumps({
        "settings": {k: getattr(settings, k) for k in ("drop", "seeds", "size", "data", "overrides", "bench_overrides")},
        "components": {v.name: to_container(OmegaConf.structured(registry[v.name])) for v in vs[1:]},
        "seeds": {r.seed: {"landmarks": r.landmarks, "runs": r.runs} for r in results},
        "rows": rows}, indent=2, default=str))
    log("\n" + md + f"\n\nwritten: {out}/{{table.md, table.csv, ablation.json}}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the registered components and exit")
    parser.add_argument("--drop", action="append", default=[], metavar="NAME", help="a component to remove (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--size", default="demo", help="experiments/{stage1,stage2,bench}/<size>.yaml (demo or paper)")
    parser.add_argument("--data", help="data group (synthtalk, hdtf, mead) or a processed dataset's folder, for "
                                       "training and bench alike")
    parser.add_argument("--name", help="results folder under benchmarks/results/ablations/ (default from the request)")
    parser.add_argument("--registry", help=f"registry file (default experiments/{REGISTRY_FILE})")
    parser.add_argument("--out-root", default=AblationSettings.out_root, help="where results folders go")
    parser.add_argument("--bench", action="append", default=[], metavar="KEY=VALUE",
                        help="a bench config override (repeatable), e.g. --bench max_clips=4")
    parser.add_argument("overrides", nargs="*",
                        help="training overrides: key=value for both stages, stage1.key=value / stage2.key=value for one")
    args = parser.parse_intermixed_args(argv)
    try:
        registry = load_registry(args.registry)
        if args.list:
            print(format_registry(registry))
            return 0
        settings = AblationSettings(drop=args.drop, seeds=args.seeds, size=args.size, data=args.data, name=args.name,
                                    overrides=args.overrides, bench_overrides=args.bench, registry=args.registry,
                                    out_root=args.out_root)
        run_ablation(settings)
    except (AblationError, ConfigError, ClipError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
