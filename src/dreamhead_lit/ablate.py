"""The ablation harness: a named component dropped -> trained -> benched -> a delta table against the full model.

    python -m dreamhead_lit.ablate [--method dreamhead|dreamtalk] --list
    python -m dreamhead_lit.ablate --drop temporal_smooth [--drop cfg ...] [--seeds 0 1 2] [--size demo|paper]
                                   [--data synthtalk|hdtf|mead] [--name RUN] [key=value ...] [--bench key=value ...]
    python -m dreamhead_lit.ablate --method dreamtalk --drop lip_expert

A method is made of parts trained in order: DreamHead's two stages (``stage1``, ``stage2``, independent), or the
parts of a registered :class:`~dreamhead_lit.registry.Recipe` (DreamTalk†: ``dreamtalk_lip_expert`` then ``dreamtalk``
linked to it by ``lip_expert.checkpoint={run}``). ``key=value`` overrides apply to every part's training config,
``PART.key=value`` (or ``PART:key=value``) to one (``stage1.model.depth=2``, ``dreamtalk.trainer.max_steps=200``);
``--bench key=value`` (repeatable) to the bench config (``--bench max_clips=4``).

The components live in ``experiments/ablations/components.yaml`` (DreamHead) and ``experiments/ablations/<method>.yaml``
(the others): name, one-line description, the training overrides that remove it per part, and how its bench row (and
where needed a like-for-like full row) differs. For each seed, the full model and each variant are trained with the
same data, seed (each part's configured seed + the seed) and budget (each part's ``<size>.yaml``); a variant retrains
only the parts it overrides and the parts linked to a retrained one (each linked to the variant's run; ``{run}`` in a
part's recipe overrides names the run of the part just before it), and uses the full model's runs of the others. A
training run is never repeated: any finished run under ``runs/<part>/`` whose resolved config equals the one wanted is
reused (so the full model of ``make demo`` serves ``--size demo --seeds 0``), and an interrupted one is resumed from
its ``last.ckpt``. Each seed's models are then scored by:

* stage-1 landmarks (when the variant has a stage 1): M-LMD and jitter of the exact landmark sequences on the
  identity-disjoint test split (``evaluation.evaluate_stage1``): the temporal-smoothness figure without a renderer or a
  landmark detector in between;
* the benchmark package (``experiments/bench/<size>.yaml``): videos of the test clips through each variant's runs
  (the rows copy that config's method of the method's kind: its renderer, sampler and options), every metric of
  ``make bench`` (per-clip cached, so an interrupted bench resumes), with the ground truth and the static frame as
  reference rows.

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

DREAMHEAD = "dreamhead"
REGISTRY_FILE = "ablations/components.yaml"  # DreamHead's; another method's: ablations/<method>.yaml
STAGES = ("stage1", "stage2")  # DreamHead's parts; also the bench row fields that name their runs
DISTILLED = "stage2_distilled"  # DreamHead's optional part: lit/distill.py's MODEL_NAME (not imported: torch-free)
FULL = "full"
FULL_ONE_SHOT = "full_one_shot"  # the full model benched one-shot: the like-for-like row for a one-shot variant
# stage-1 landmark columns of the ablation table: (column, key in evaluate_stage1's rows, heading, higher is better);
# "lm_" keeps them apart from the bench's columns of the same metric measured on the videos
_LANDMARK_COLUMNS = (("lm_lmd_mouth", "lmd_mouth", "M-LMD (lm)", False),
                     ("lm_jitter_ratio", "jitter_ratio", "Jitter (lm)", None))


class AblationError(Exception):
    """A request the harness cannot carry out (unknown component, conflicting run), with what to do instead."""


# ---------------------------------------------------------------------------------------------------------------------
# Methods and their components
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodAblation:
    """What the harness needs to know of a method: its parts in training order (a registry recipe), where its
    components are registered, the bench kind of its full model's row, and what the table calls its parts."""

    name: str
    parts: tuple[str, ...]  # registered models, in training order
    links: dict[str, tuple[str, ...]]  # part -> its recipe overrides; "{run}": the run of the part just before it
    registry_file: str  # under experiments/
    kind: str  # the bench kind of the full model's row (its settings: the size's bench config's method of that kind)
    noun: str  # what the table's text calls a part
    optional: tuple[str, ...] = ()  # parts trained only for a component that requires them (not the full model's)

    @property
    def core(self) -> tuple[str, ...]:
        """The parts of the full model (every part but the optional ones)."""
        return tuple(p for p in self.parts if p not in self.optional)

    def linked(self, part: str) -> bool:
        """Whether ``part`` names the run of the part before it (so it is retrained whenever that one is)."""
        return any("{run}" in o for o in self.links.get(part, ()))


def method_ablation(name: str) -> MethodAblation:
    """DreamHead (its two stages) or a method with a registered recipe."""
    if name == DREAMHEAD:
        return MethodAblation(DREAMHEAD, (*STAGES, DISTILLED), {DISTILLED: ("teacher.run={run}",)}, REGISTRY_FILE,
                              "dreamhead", "stage", optional=(DISTILLED,))
    from .registry import RegistryError, names, recipe, recipes

    try:
        r = recipe(name)
    except RegistryError as err:
        raise AblationError(f"no method {name!r} to ablate: {DREAMHEAD} or a registered recipe "
                            f"({', '.join(recipes()) or 'none'})") from err
    unknown = [m for m in r.models if m not in names()]
    if unknown:
        raise AblationError(f"the {name} recipe's part(s) {', '.join(unknown)} are not registered models: register "
                            "them (registry.register) before ablating the method")
    if r.parts and any("{run}" in o for o in r.parts[0][1]):
        raise AblationError(f"the {name} recipe's first part {r.parts[0][0]} links ({{run}}) to no part before it")
    return MethodAblation(name, tuple(r.models), {m: tuple(extra) for m, extra in r.parts}, f"ablations/{name}.yaml",
                          name, "part")


_FIELDS = ("description", "label", "method", "bench", "full_row", "requires")


@dataclass
class Component:
    """One entry of a method's component file: what it is, the training overrides that remove it (per part), the
    bench kind that scores the variant and, where the variant differs at bench time, its row's overrides and the
    like-for-like full row it is compared with."""

    description: str
    train: dict[str, list[str]]  # every part of the method, in training order -> its overrides (often none)
    method: str  # the bench method kind that scores the variant
    label: str | None = None  # the table row's name (default "− <name>")
    bench: dict[str, Any] = field(default_factory=dict)  # the variant's row: bench method settings (options ...)
    full_row: dict[str, Any] = field(default_factory=dict)  # {}: compared with the full model's row itself
    requires: list[str] = field(default_factory=list)  # parts it needs beyond the ones it overrides

    def overrides(self, part: str) -> list[str]:
        return list(self.train.get(part, ()))

    def parts(self, all_parts: tuple[str, ...], optional: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The parts the variant's bench row uses: audio_to_image has no stage 1; an optional part only when the
        component overrides or requires it."""
        return tuple(p for p in all_parts if not (p == "stage1" and self.method == "audio_to_image")
                     and (p not in optional or p in self.requires or self.overrides(p)))

    def as_dict(self) -> dict[str, Any]:
        """The entry as written in its file (optional fields only when set)."""
        out: dict[str, Any] = {"description": self.description, **{p: list(o) for p, o in self.train.items()},
                               "method": self.method}
        for key in ("label", "bench", "full_row", "requires"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


def _method(method: str | MethodAblation) -> MethodAblation:
    return method if isinstance(method, MethodAblation) else method_ablation(method)


def load_registry(path: str | Path | None = None, method: str | MethodAblation = DREAMHEAD) -> dict[str, Component]:
    """A method's component file (default ``experiments/ablations/components.yaml`` for DreamHead, ``<method>.yaml``
    for another), each entry checked: known fields, one list of ``key=value`` per part of the method."""
    m = _method(method)
    p = resolve_path(path) if path else experiments_dir() / m.registry_file
    if not p.is_file():
        raise ConfigError(f"no ablation components for {m.name} at {p}: write one "
                          "(experiments/ablations/dreamtalk.yaml shows the format)")
    raw = to_container(OmegaConf.load(p)) or {}
    out = {}
    for name, entry in raw.items():
        where = f"{p}: ablation {name!r}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: a mapping of {', '.join(_FIELDS)} and {m.noun} overrides, not {entry!r}")
        unknown = [k for k in entry if k not in _FIELDS and k not in m.parts]
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}: the fields are "
                              f"{', '.join(_FIELDS)}, the {m.name} {m.noun}s {', '.join(m.parts)}")
        train = {}
        for part in m.parts:
            items = entry.get(part) or []
            if not isinstance(items, list) or not all(isinstance(i, str) and "=" in i for i in items):
                raise ConfigError(f"{where}: {part}: a list of key=value overrides, not {items!r}")
            train[part] = items
        tables = {k: entry.get(k) or {} for k in ("bench", "full_row")}
        for key, value in tables.items():
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key}: bench method settings (a mapping), not {value!r}")
            if value:
                _check_row_settings(value, f"{where}: {key}")
        requires = entry.get("requires") or []
        if not isinstance(requires, list):
            raise ConfigError(f"{where}: requires: a list of model names, not {requires!r}")
        c = Component(description=str(entry.get("description", "")), train=train,
                      method=str(entry.get("method") or m.kind), label=entry.get("label"), bench=tables["bench"],
                      full_row=tables["full_row"], requires=[str(r) for r in requires])
        if not (any(c.train.values()) or c.bench):
            raise ConfigError(f"{where} overrides no {m.noun} and no bench setting")
        out[str(name)] = c
    return out


def _check_row_settings(settings: dict, where: str) -> None:
    """Bench-row overrides must be fields of a bench method (``MethodConfig``)."""
    from .bench.config import MethodConfig

    try:
        OmegaConf.merge(OmegaConf.structured(MethodConfig), settings)
    except Exception as err:  # omegaconf's own errors name the bad key
        raise ConfigError(f"{where}: {err}") from err


def check_names(names: list[str], registry: dict[str, Component], method: str | MethodAblation = DREAMHEAD) -> None:
    unknown = [n for n in names if n not in registry]
    option = "" if _method_name(method) == DREAMHEAD else f" --method {_method_name(method)}"
    if unknown:
        raise AblationError(f"unknown ablation(s) {', '.join(map(repr, unknown))}; the registered ones are: "
                            f"{', '.join(registry)} (python -m dreamhead_lit.ablate{option} --list)")
    if len(set(names)) != len(names):
        raise AblationError(f"--drop names a component twice: {names}")
    m = _method(method)
    for name in names:
        missing = [r for r in registry[name].requires if r not in m.parts]
        if missing:
            raise AblationError(f"ablation {name!r} needs {_models(missing)}, which the "
                                f"{m.name} recipe does not train ({' -> '.join(m.parts)}): drop {name!r} until the "
                                "recipe has that part")


def _method_name(method: str | MethodAblation) -> str:
    return method.name if isinstance(method, MethodAblation) else method


def _models(models: list[str]) -> str:
    """The names, each unregistered one said so."""
    from .registry import names

    return ", ".join(x if x in names() else f"{x} (not a registered model yet)" for x in models)


def _dotlist(settings: dict, prefix: str = "") -> list[str]:
    """``{"options": {"style_source": "none"}}`` -> ``["options.style_source=none"]``."""
    out = []
    for k, v in settings.items():
        if isinstance(v, dict) and v:
            out += _dotlist(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v}")
    return out


def _bench_notes(c: Component) -> list[str]:
    """How a component's rows differ at bench time (nothing for one that changes training only)."""
    notes = []
    if c.bench:
        notes.append(f"bench row: {' '.join(_dotlist(c.bench))}")
    if c.full_row:
        rest = {k: v for k, v in c.full_row.items() if k != "label"}
        notes.append(f"compared with {_full_row_label(c.full_row)!r}: {' '.join(_dotlist(rest))}")
    return notes


def _full_row_label(full_row: dict) -> str:
    return str(full_row.get("label") or f"full model ({' '.join(_dotlist(full_row))})")


def retrained(c: Component, method: str | MethodAblation = DREAMHEAD) -> list[str]:
    """The parts a component's variant trains itself: those it overrides and, in training order, each part linked to
    one of them (the others are the full model's runs)."""
    m = _method(method)
    out: list[str] = []
    used = c.parts(m.parts, m.optional)
    for i, part in enumerate(m.parts):
        if part in m.optional:  # trained for the components that use it, never for the full model
            if part in used:
                out.append(part)
        elif c.overrides(part) or (i and m.linked(part) and m.parts[i - 1] in out):
            out.append(part)
    return out


def format_registry(registry: dict[str, Component], method: str | MethodAblation = DREAMHEAD) -> str:
    m = _method(method)
    width = max(len(n) for n in registry)
    trains = {name: "[" + ("+".join(retrained(c, m)) or "bench") + "]" for name, c in registry.items()}
    column = max(15, *map(len, trains.values()))
    lines = []
    for name, c in registry.items():
        lines.append(f"{name:<{width}}  {trains[name]:<{column}}  {c.description}")
        for p in m.parts:
            if c.overrides(p):
                lines.append(f"{'':<{width}}    {p}: {' '.join(c.overrides(p))}")
        for note in _bench_notes(c):
            lines.append(f"{'':<{width}}    {note}")
        missing = [r for r in c.requires if r not in m.parts]
        if missing:
            lines.append(f"{'':<{width}}    needs {', '.join(missing)}: not a part of the {m.name} recipe yet")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Training runs: found by config, resumed, or trained
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RunPlan:
    """A training run the ablation needs: where it is and whether it must still be trained."""

    stage: str  # the registered model (a stage of DreamHead, a part of a recipe)
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
    """The run of the registered model ``stage`` configured by its ``<size>.yaml`` + ``overrides``: an existing
    finished run with the same config, else ``runs/<its group>/<name>`` (resumed when it holds a checkpoint of the
    same config)."""
    from .registry import get
    from .runs import DONE_FILE, comparable_config, config_differences

    spec = get(stage)
    schema = spec.schema_class()
    cfg = load_config(spec.config_file(size), [*overrides, f"name={name}"], schema=schema)
    wanted = comparable_config(cfg, schema)
    root = resolve_path(cfg.runs_root) / spec.group
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
    method: str  # its bench row's kind
    parts: tuple[str, ...]  # the parts its bench row uses, in training order
    overrides: dict[str, list[str]]  # per part, on top of the shared ones
    baseline: str = FULL  # the bench row its deltas are taken against (FULL_ONE_SHOT for a one-shot variant)
    bench: dict[str, Any] = field(default_factory=dict)  # its bench row's settings beyond the full model's
    full_row: dict[str, Any] = field(default_factory=dict)  # the like-for-like full row's ({}: the full row)


@dataclass
class AblationSettings:
    drop: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    size: str = "demo"
    data: str | None = None  # a data group (synthtalk, hdtf, mead) or a processed dataset's folder; None: the configs'
    name: str | None = None  # results folder under benchmarks/results/ablations/, and part of new runs' names
    overrides: list[str] = field(default_factory=list)  # key=value (every part) or PART.key=value / PART:key=value
    bench_overrides: list[str] = field(default_factory=list)
    out_root: str = "benchmarks/results/ablations"
    registry: str | None = None  # the components file (default: the method's)
    method: str = DREAMHEAD  # dreamhead or a method with a registered recipe

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
        parts = [*([self.method] if self.method != DREAMHEAD else []), self.size,
                 *([self.data_tag] if self.data else []), "+".join(self.drop)]
        seeds = self.seeds
        parts.append("s" + "-".join(map(str, seeds)))
        return "-".join(parts)


def variants(settings: AblationSettings, registry: dict[str, Component],
             method: MethodAblation | None = None) -> list[Variant]:
    m = method or method_ablation(settings.method)
    out = [Variant(FULL, "full model", m.kind, m.core, {p: [] for p in m.parts})]
    for name in settings.drop:
        c = registry[name]
        out.append(Variant(name, c.label or f"− {name}", c.method, c.parts(m.parts, m.optional),
                           {p: c.overrides(p) for p in m.parts}, bench=c.bench, full_row=c.full_row))
    return out


def _shared_overrides(settings: AblationSettings, seed: int, stage: str, parts: tuple[str, ...] = STAGES) -> list[str]:
    """The data choice, the seed and the user's overrides that apply to part ``stage`` (part prefix removed)."""
    from .registry import split_part_override

    own = []
    for item in settings.overrides:
        head, rest = split_part_override(item, parts, separators=".:")  # PART.key=value or PART:key=value
        if head is None or head == stage:
            own.append(rest)
    return [*settings.data_overrides, f"seed={seed}", *own]


def _seed(part: str, size: str, seed: int) -> int:
    """Seed ``seed`` of a part: its configured seed + ``seed`` (DreamHead's stages are configured with 0; a loss
    network such as DreamTalk's lip expert keeps the draw apart from the bench scorers' seed 0, and a part trained by
    ``make`` serves seed 0)."""
    from .registry import get

    spec = get(part)
    return int(load_config(spec.config_file(size), schema=spec.schema_class()).seed) + seed


def _run_name(settings: AblationSettings, variant: Variant, seed: int) -> str:
    """New runs: ``runs/<part>/ablate-[<method>-]<size>-[<data>-]<variant>-s<seed>`` (DreamHead's without a method),
    or ``ablate-[<method>-]<name>-<variant>-s<seed>`` with ``--name``: an ablation under overrides (a longer budget)
    then trains beside the default-named runs instead of colliding with them. Reuse is by config either way."""
    prefix = "ablate-" if settings.method == DREAMHEAD else f"ablate-{settings.method}-"
    if settings.name:
        return f"{prefix}{settings.name}-{variant.name}-s{seed}"
    data = f"{settings.data_tag}-" if settings.data else ""
    return f"{prefix}{settings.size}-{data}{variant.name}-s{seed}"


def plan_seed(settings: AblationSettings, vs: list[Variant], seed: int,
              method: MethodAblation | None = None) -> dict[str, dict[str, RunPlan]]:
    """variant -> part -> the run it uses (every part a variant uses, in training order). The parts are planned in
    the method's training order: a part is the full model's run unless the variant overrides it or it links to the
    part before it (``{run}``) and that one is not the full model's run, in which case the variant trains its own,
    linked to the variant's run of the part before."""
    m = method or method_ablation(settings.method)
    seeds = {p: _seed(p, settings.size, seed) for p in m.parts}
    shared = {p: _shared_overrides(settings, seeds[p], p, m.parts) for p in m.parts}

    def plan(v: Variant, full: dict[str, RunPlan] | None) -> dict[str, RunPlan]:
        out: dict[str, RunPlan] = {}
        prev: str | None = None
        for part in m.parts[:max(m.parts.index(p) for p in v.parts) + 1]:
            upstream_changed = (m.linked(part) and prev is not None and full is not None
                                and out[prev].run_dir != full[prev].run_dir)
            if full is not None and part in full and not v.overrides[part] and not upstream_changed:
                out[part] = full[part]
            else:
                links = [o.format(run=out[prev].name) for o in m.links.get(part, ())] if prev is not None else []
                out[part] = plan_run(part, settings.size, _run_name(settings, v, seed),
                                     [*links, *shared[part], *v.overrides[part]])
            prev = part
        return {p: out[p] for p in v.parts}

    full = plan(vs[0], None)
    plans = {FULL: full}
    for v in vs[1:]:
        plans[v.name] = plan(v, full)
    return plans


def _needed(plans: dict[str, dict[str, RunPlan]], vs: list[Variant]) -> list[RunPlan]:
    """The distinct runs the variants use, the full model's first, each after the runs it links to."""
    seen: dict[Path, RunPlan] = {}
    for v in vs:
        for s in v.parts:
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


def _set_runs(row: Any, m: MethodAblation, parts: tuple[str, ...], plans: dict[str, RunPlan]) -> None:
    """A bench row's runs: DreamHead's stages in its ``stage1``/``stage2`` fields (None: a stage the row does not use),
    any other part under ``checkpoints`` (registered model -> run name) when the bench kind loads it (a part that
    only trained another, as StyleTalker's sync discriminator, is recorded by that part's run, not named here)."""
    from . import registry
    from .bench.methods import METHOD_KINDS

    for stage in STAGES:
        if stage in m.parts:  # a distilled stage 2 takes the place of its teacher (named under checkpoints)
            row[stage] = plans[stage].name if stage in parts and not (stage == "stage2" and DISTILLED in parts) else None
    registry.discover()
    loads = getattr(METHOD_KINDS.get(m.kind), "CHECKPOINTS", ()) or ()
    others = {p: plans[p].name for p in parts if p not in STAGES and (not loads or p in loads)}
    if others:
        row.checkpoints = others


def bench_config(settings: AblationSettings, vs: list[Variant], plans: dict[str, dict[str, RunPlan]], seed: int,
                 out_root: Path, method: MethodAblation | None = None) -> Any:
    """The size's bench config with one method per variant (template: its method of the method's kind -- DreamHead's
    sampler settings, or DreamTalk†'s renderer, steps and options) and the ground truth and static frame kept as
    reference rows. A variant that can only be benched one-shot gets the full model benched one-shot too, and one
    whose component names a like-for-like full row gets that row, so its deltas compare like with like."""
    from .bench import load_bench_config

    m = method or method_ablation(settings.method)
    cfg = load_bench_config(f"bench/{settings.size}.yaml", [*settings.data_overrides, *settings.bench_overrides])
    template = next((x for x in cfg.methods.values() if x.kind == m.kind), None)
    if template is None and m.name != DREAMHEAD:
        raise AblationError(f"bench/{settings.size}.yaml has no method of kind {m.kind!r}: the {m.name} rows take "
                            "their settings (renderer run, sampler steps, options) from it; add one")
    methods: dict[str, Any] = {k: x for k, x in cfg.methods.items() if x.kind in ("ground_truth", "static_reference")}
    baselines: set[str] = set()
    for v in vs:
        row = OmegaConf.merge(template, {}) if template is not None else OmegaConf.create({})
        row.kind, row.label = v.method, v.label
        _set_runs(row, m, v.parts, plans[v.name])
        methods[v.name] = OmegaConf.merge(row, v.bench) if v.bench else row
        base = None
        if v.full_row:
            base = (f"{FULL}_{v.name}", {**v.full_row, "label": _full_row_label(v.full_row)})
        elif template is not None and _one_shot(v, plans, template.protocol):
            base = (FULL_ONE_SHOT, {"protocol": "one_shot", "label": "full model (one-shot)"})
        if base is not None:
            key, changes = base
            row = OmegaConf.merge(methods[FULL], changes)
            v.baseline = next((k for k in baselines if methods[k] == row), key)  # one row for identical baselines
            methods[v.baseline] = row
            baselines.add(v.baseline)
    cfg.methods = methods
    cfg.name, cfg.seed, cfg.out_root = f"seed{seed}", seed, str(out_root)
    return cfg


def _check_fixed_runs(cfg: Any, m: MethodAblation, vs: list[Variant]) -> None:
    """The runs a row names that the ablation does not train (DreamTalk†'s renderer: DreamHead's stage-2 run of the
    size) must exist before anything trains."""
    from .bench.config import MethodUnavailable
    from .bench.methods.base import find_checkpoint

    for key in [v.name for v in vs] + [v.baseline for v in vs[1:]]:
        row = cfg.methods[key]
        for stage in STAGES:
            if stage not in m.parts and row.get(stage) is not None:
                try:
                    find_checkpoint(row[stage], stage, cfg.runs_root)
                except MethodUnavailable as err:
                    raise AblationError(f"the {m.name} rows are rendered through {stage} run {row[stage]!r} "
                                        f"(methods.{key}.{stage}, bench/<size>.yaml or --bench): {err}") from err


def _unlinked(m: MethodAblation, plans: dict[str, RunPlan]) -> dict[str, str]:
    """part -> a note for the runs list, for a part whose link from the next part the variant overrides (the lip
    expert of a denoiser trained without one): the variant's models do not use it."""
    out = {}
    for before, part in zip(m.parts, m.parts[1:]):
        if before not in plans or part not in plans or not m.linked(part):
            continue
        for item in m.links[part]:
            if "{run}" in item:
                key, value = item.format(run=plans[before].name).split("=", 1)
                actual = OmegaConf.select(plans[part].cfg, key)
                if str(actual) != value:
                    out[before] = f"; not used: {part} has {key}={'null' if actual is None else actual}"
    return out


@dataclass
class SeedResult:
    seed: int
    landmarks: dict[str, dict[str, float]]  # variant -> stage-1 figures
    bench: dict[str, dict[str, Any]]  # method -> table row
    bench_markdown: str
    runs: dict[str, dict[str, str]]  # variant -> part -> "run dir (state)"


def run_seed(settings: AblationSettings, vs: list[Variant], seed: int, out: Path, *, backends: Any = None,
             log=print, method: MethodAblation | None = None) -> SeedResult:
    from .bench import run_bench

    m = method or method_ablation(settings.method)
    plans = plan_seed(settings, vs, seed, m)
    bench_cfg = bench_config(settings, vs, plans, seed, out, m)  # before training: its runs are named by the plans
    _check_fixed_runs(bench_cfg, m, vs)
    for plan in _needed(plans, vs):
        what = {"reused": "reusing finished run", "resume": "resuming", "train": "training"}[plan.state]
        log(f"[seed {seed}] {plan.stage}: {what} {plan.run_dir}")
        ensure_trained(plan)
    landmarks = {}
    for v in vs:
        if "stage1" in v.parts:
            plan = plans[v.name]["stage1"]
            log(f"[seed {seed}] stage-1 landmarks of {v.label} ({plan.name})")
            landmarks[v.name] = landmark_scores(plan.checkpoint, out / "landmarks" / plan.name, seed)
    log(f"[seed {seed}] bench: {', '.join(v.label for v in vs)}")
    result = run_bench(bench_cfg, backends=backends)
    errors = {k: s["errors"] for k, s in result.stats.items() if s["errors"]}
    if errors:
        raise AblationError(f"bench of seed {seed}: videos failed for {errors}; see {result.out_dir / 'per_clip.csv'}")
    ours = {v.name for v in vs} | {v.baseline for v in vs}
    skipped = {r["method"]: r["status"] for r in result.table
               if r["method"] in ours and str(r["status"]).startswith("skipped")}
    if skipped:
        raise AblationError(f"bench of seed {seed}: row(s) could not run: {skipped}")
    runs = {v.name: {s: f"{plans[v.name][s].run_dir} ({plans[v.name][s].state}{_unlinked(m, plans[v.name]).get(s, '')})"
                     for s in v.parts} for v in vs}
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
                   registry: dict[str, Component], seconds: float, method: MethodAblation | None = None) -> str:
    from .bench import arrow

    m = method or method_ablation(settings.method)
    cols = _columns(results)
    landmark_cols = any(source == "landmarks" for *_, source in cols)
    n = len(results)
    head = ["variant"] + [f"{h} {arrow(hib)}" for _, h, hib, _ in cols]
    lines = [f"# Ablation `{settings.run_name}`: {settings.size} size, "
             f"{settings.data or f'the {m.noun} configs’ data'}, seeds {', '.join(str(r.seed) for r in results)}", "",
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
    like_for_like = ("a variant that can only be benched one-shot is compared with 'full model (one-shot)'"
                     if m.name == DREAMHEAD else "a variant whose component names a like-for-like full row is compared "
                     "with that row")
    lines += ["", f"Cells: mean over {n} seed(s)" + (" ± sample std" if n > 1 else "") +
              "; in brackets the difference to the full model under the same bench protocol (mean of per-seed "
              f"differences; {like_for_like}). " +
              ("(lm): stage-1 landmark sequences on the identity-disjoint test split, exact, no renderer in between; "
               "Jitter: mean acceleration magnitude over the ground truth's (→1 is best). Other columns: the bench "
               if landmark_cols else "Columns: the bench ") +
              "videos (protocols and metric settings in the per-seed bench tables below).", "", "Dropped components:"]
    for v in vs[1:]:
        c = registry[v.name]
        ov = "; ".join([f"{s}: {' '.join(c.overrides(s))}" for s in m.parts if c.overrides(s)] + _bench_notes(c))
        lines.append(f"- {v.name}: {c.description} ({ov}; scored by the bench method `{c.method}`)")
    lines += ["", "Runs (same data, seed and budget; " + (
        "a stage a variant does not override is the full model's):" if m.name == DREAMHEAD else
        "a part a variant does not override is the full model's, unless it links to a part the variant retrains):")]
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
    m = method_ablation(settings.method)
    registry = load_registry(settings.registry, m)
    check_names(settings.drop, registry, m)
    if not settings.drop:
        raise AblationError("nothing to ablate: name a component with --drop (see --list)")
    vs = variants(settings, registry, m)
    out = resolve_path(settings.out_root) / settings.run_name
    out.mkdir(parents=True, exist_ok=True)
    results = [run_seed(settings, vs, seed, out, backends=backends, log=log, method=m) for seed in settings.seeds]
    refs = [(k, row["label"]) for k, row in results[0].bench.items() if k not in {v.name for v in vs}]
    baselines = {v.baseline for v in vs[1:]}
    refs.sort(key=lambda ref: ref[0] not in baselines)  # like-for-like full rows first: baselines, not bounds
    rows = summarise(vs, results, refs)
    md = markdown_table(settings, vs, results, rows, registry, time.perf_counter() - start, m)
    atomic_write_text(out / "table.md", md + "\n")
    atomic_write_text(out / "table.csv", _csv(rows))
    keys = ("drop", "seeds", "size", "data", "overrides", "bench_overrides") + (
        ("method",) if m.name != DREAMHEAD else ())
    atomic_write_text(out / "ablation.json", json.dumps({
        "settings": {k: getattr(settings, k) for k in keys},
        "components": {v.name: registry[v.name].as_dict() for v in vs[1:]},
        "seeds": {r.seed: {"landmarks": r.landmarks, "runs": r.runs} for r in results},
        "rows": rows}, indent=2, default=str))
    log("\n" + md + f"\n\nwritten: {out}/{{table.md, table.csv, ablation.json}}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--method", default=DREAMHEAD,
                        help="the method whose components are dropped: dreamhead (default) or a registered recipe "
                             "(dreamtalk); its components: experiments/ablations/<method>.yaml")
    parser.add_argument("--list", action="store_true", help="print the method's registered components and exit")
    parser.add_argument("--drop", action="append", default=[], metavar="NAME", help="a component to remove (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--size", default="demo", help="experiments/{<each part>,bench}/<size>.yaml (demo or paper)")
    parser.add_argument("--data", help="data group (synthtalk, hdtf, mead) or a processed dataset's folder, for "
                                       "training and bench alike")
    parser.add_argument("--name", help="results folder under benchmarks/results/ablations/ (default from the request); "
                                       "given, new runs are runs/<part>/ablate-<name>-<variant>-s<seed>")
    parser.add_argument("--registry", help=f"components file (default experiments/{REGISTRY_FILE} for dreamhead, "
                                           "experiments/ablations/<method>.yaml for another method)")
    parser.add_argument("--out-root", default=AblationSettings.out_root, help="where results folders go")
    parser.add_argument("--bench", action="append", default=[], metavar="KEY=VALUE",
                        help="a bench config override (repeatable), e.g. --bench max_clips=4")
    parser.add_argument("overrides", nargs="*",
                        help="training overrides: key=value for every part, PART.key=value for one (stage1.key=value, "
                             "dreamtalk.key=value)")
    args = parser.parse_intermixed_args(argv)
    try:
        method = method_ablation(args.method)
        registry = load_registry(args.registry, method)
        if args.list:
            print(format_registry(registry, method))
            return 0
        settings = AblationSettings(drop=args.drop, seeds=args.seeds, size=args.size, data=args.data, name=args.name,
                                    overrides=args.overrides, bench_overrides=args.bench, registry=args.registry,
                                    out_root=args.out_root, method=args.method)
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
