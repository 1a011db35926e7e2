"""What the papers report, kept apart from the bench's numbers: the "as reported" table and the orderings check
(BASELINES.md, "Table conventions").

A paper's reference file, ``bench/reported/<paper>.yaml`` (packaged with the code), holds

* ``paper``, ``arxiv``: the paper; ``kind``: the method kind it describes -- the file is used when the bench table
  has a row of that kind (a skipped row counts: its claims then say why they are unverified);
* ``columns``: the paper's column -> this bench's nearest column (same idea, another protocol), for the reader;
* ``reported``: the paper's values, each ``{table, row, column, dataset, value}`` (with the paper: its provenance).
  They are shown in their own table, marked "their data, crops and metric code; not comparable", and never enter the
  ranked table or ``table.csv``;
* ``claims``: orderings the paper states, each with ``id``, ``statement``, ``source`` (where in the paper) and the
  ``column`` of the bench table it is checked on, in one of two forms:

  - over rows that vary one fact: ``among`` (facts every row must have, e.g. ``{kind: dreamtalk}``), ``vary`` (the
    fact that varies) and either ``order`` -- a chain over its values from left to right, e.g.
    ``unconditional > style > none`` -- or ``trend: increasing`` (the column rises with the fact's numeric value:
    never falls from one value to the next, and ends higher than it starts);
  - over named rows: ``rows`` (name -> the facts its rows must have) and an ``order`` chain over those names;
    ``same`` (a list of facts) compares only rows that agree on them, each such group checked on its own (a
    DAE-Talker† row against the reconstruction bound of its own protocol's autoencoder, not another's).

  A chain's relations compare the column's values as written, whatever the metric's direction: ``<``, ``>``
  (strict), ``≲`` / ``<~`` and ``≳`` / ``>~`` (may be off by ``tolerance``, relative to the right-hand value:
  ``a ≲ b`` holds when ``a <= b + tolerance * |b|``). One chain goes in one direction. ``hints`` (level or row
  name, or ``any`` -> text) say which method entry would add a missing row.

The rule for which rows a ``vary`` claim compares: among the rows whose facts match ``among`` and have the varied
fact, rows are grouped by *all their other facts* (``Method.facts()``), and only rows within a group are compared --
so a DreamTalk row with another guidance scale never stands in a lip-expert comparison. Each group is checked on
its own; a claim is ✗ when any group contradicts it, ✓ when a group holds it with every level present and none
contradicts it, else unverified, with the reason (a level without a row, and which entry would add it; the metric
n/a; fewer than 2 rows; an emotion column whose ground-truth-frames bound is near chance, :func:`metrics.emotion.near_chance`).
A level missing from a group is skipped in its chain (``a > b > c`` without ``b`` checks ``a > c``), so a
contradiction among the rows present is still ✗. A named-rows claim compares every row of one name with every row
of the next.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..metrics.emotion import near_chance

NOT_COMPARABLE = "their data, crops and metric code; not comparable"
Verdict = Literal["✓", "✗", "unverified"]
_RELATIONS = {"<": "<", ">": ">", "≲": "≲", "<~": "≲", "≳": "≳", ">~": "≳"}
_SPLIT = re.compile(r"\s*(<~|>~|≲|≳|<|>)\s*")
# A column whose ground-truth bound says whether the column can rank methods at all, and the test that it cannot.
BOUNDS = {"emotion_acc": ("emotion_acc_gt_frames", near_chance), "emotion_acc_lm": ("emotion_acc_gt", near_chance)}
_VALUE_KEYS = ("table", "row", "column", "dataset", "value")


class ReferenceFileError(ValueError):
    """A reference file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class ReportedValue:
    """One number a paper reports, with where it comes from."""

    paper: str
    arxiv: str
    table: str
    row: str
    column: str
    dataset: str
    value: float
    ours: str | None = None  # this bench's nearest column (another protocol: not comparable)


@dataclass(frozen=True)
class Claim:
    """An ordering a paper states, in a form checked on the bench table (see the module docstring)."""

    id: str
    statement: str
    source: str
    column: str
    among: dict[str, Any] = field(default_factory=dict)
    vary: str | None = None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # named selectors (instead of among/vary)
    same: tuple[str, ...] = ()  # named rows: facts the compared rows must share (one group per combination)
    levels: tuple[Any, ...] = ()  # the chain's operands, left to right (values of `vary`, or names of `rows`)
    relations: tuple[str, ...] = ()  # between consecutive levels: < > ≲ ≳
    trend: str | None = None  # "increasing" (instead of levels/relations)
    tolerance: float = 0.0
    hints: dict[str, str] = field(default_factory=dict)

    def describe_order(self) -> str:
        if self.trend:
            return f"{self.column} {self.trend} with {self.vary}"
        parts = [str(self.levels[0])]
        for rel, level in zip(self.relations, self.levels[1:]):
            parts += [rel, str(level)]
        return f"{self.column}: " + " ".join(parts)


@dataclass(frozen=True)
class Reference:
    """One paper's reference file."""

    key: str  # the file's stem
    paper: str
    arxiv: str
    kind: str
    columns: dict[str, str]
    values: tuple[ReportedValue, ...]
    claims: tuple[Claim, ...]
    path: str = ""


@dataclass
class ClaimResult:
    """A claim checked on the bench table: the verdict, why, and the values that decided it."""

    paper: str
    arxiv: str
    id: str
    statement: str
    source: str
    column: str
    order: str
    verdict: Verdict
    reason: str  # why ✗ or unverified ("" for ✓)
    this_bench: str  # the values compared, as text
    values: list[dict[str, Any]] = field(default_factory=list)  # {"group", "level", "method", "value"} per row used


# ---------------------------------------------------------------------------------------------------------------------
# Reading reference files


def reference_dir() -> Path:
    """The packaged reference files' folder."""
    return Path(str(resources.files(__package__).joinpath("reported")))


def _parse_order(text: str, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tokens = _SPLIT.split(str(text).strip())
    levels, relations = tuple(tokens[0::2]), tuple(_RELATIONS[t] for t in tokens[1::2])
    if len(levels) < 2 or any(not x for x in levels):
        raise ReferenceFileError(f"{where}: order {text!r} is not a chain like 'a > b > c'")
    if len({r in "<≲" for r in relations}) > 1:
        raise ReferenceFileError(f"{where}: order {text!r} mixes directions; write it one way (all < / ≲ or all > / ≳)")
    return levels, relations


def _claim(entry: dict, where: str) -> Claim:
    need = ("id", "statement", "source", "column")
    missing = [k for k in need if not entry.get(k)]
    if missing:
        raise ReferenceFileError(f"{where}: claim {entry.get('id', '?')!r} lacks {missing}")
    where = f"{where}: claim {entry['id']!r}"
    rows = {str(k): dict(v) for k, v in (entry.get("rows") or {}).items()}
    vary = entry.get("vary")
    if bool(rows) == bool(vary):
        raise ReferenceFileError(f"{where}: give either `among` + `vary` (rows that vary one fact) or `rows` (named rows)")
    same = tuple(str(x) for x in entry.get("same") or ())
    if same and not rows:
        raise ReferenceFileError(f"{where}: `same` groups named rows; with `vary` rows are grouped by all other facts")
    levels: tuple[Any, ...] = ()
    relations: tuple[str, ...] = ()
    trend = entry.get("trend")
    if trend is not None:
        if trend != "increasing" or rows:
            raise ReferenceFileError(f"{where}: trend must be 'increasing', with `vary`")
    else:
        if "order" not in entry:
            raise ReferenceFileError(f"{where}: needs `order` (a chain like 'a > b > c') or `trend`")
        levels, relations = _parse_order(entry["order"], where)
        unknown = [x for x in levels if rows and x not in rows]
        if unknown:
            raise ReferenceFileError(f"{where}: order names {unknown}, which `rows` does not define ({sorted(rows)})")
    return Claim(id=str(entry["id"]), statement=" ".join(str(entry["statement"]).split()), source=str(entry["source"]),
                 column=str(entry["column"]), among=dict(entry.get("among") or {}), vary=vary, rows=rows, same=same,
                 levels=levels, relations=relations, trend=trend, tolerance=float(entry.get("tolerance", 0.0)),
                 hints={str(k): " ".join(str(v).split()) for k, v in (entry.get("hints") or {}).items()})


def load_reference(path: str | Path) -> Reference:
    """Read and check one reference file (every value with its provenance, every claim in a checkable form).

    Raises:
        ReferenceFileError: a missing field, a value that is not a number, an order that is not a chain.
    """
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ReferenceFileError(f"{path}: not a mapping")
    for k in ("paper", "arxiv", "kind"):
        if not data.get(k):
            raise ReferenceFileError(f"{path}: needs `{k}`")
    columns = {str(k): str(v) for k, v in (data.get("columns") or {}).items()}
    values = []
    for i, v in enumerate(data.get("reported") or []):
        missing = [k for k in _VALUE_KEYS if v.get(k) in (None, "")]
        if missing:
            raise ReferenceFileError(f"{path}: reported[{i}] lacks {missing} (each value needs {list(_VALUE_KEYS)})")
        if not isinstance(v["value"], (int, float)) or isinstance(v["value"], bool):
            raise ReferenceFileError(f"{path}: reported[{i}] value {v['value']!r} is not a number")
        values.append(ReportedValue(paper=str(data["paper"]), arxiv=str(data["arxiv"]), table=str(v["table"]),
                                    row=str(v["row"]), column=str(v["column"]), dataset=str(v["dataset"]),
                                    value=float(v["value"]), ours=columns.get(str(v["column"]))))
    claims = tuple(_claim(c, str(path)) for c in data.get("claims") or [])
    return Reference(key=path.stem, paper=str(data["paper"]), arxiv=str(data["arxiv"]), kind=str(data["kind"]),
                     columns=columns, values=tuple(values), claims=claims, path=str(path))


def load_references(directory: str | Path | None = None) -> list[Reference]:
    """Every reference file of ``directory`` (default: the packaged ones), by file name."""
    folder = Path(directory) if directory is not None else reference_dir()
    return [load_reference(p) for p in sorted(folder.glob("*.yaml"))]


def applicable(references: list[Reference], facts: dict[str, dict[str, Any]]) -> list[Reference]:
    """The references whose method kind has a row in the table (``facts``: method -> its facts)."""
    kinds = {f.get("kind") for f in facts.values()}
    return [r for r in references if r.kind in kinds]


# ---------------------------------------------------------------------------------------------------------------------
# Checking claims


def _number(v: Any) -> float | None:
    if v in ("", None, "n/a") or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _matches(facts: dict[str, Any], selector: dict[str, Any]) -> bool:
    return all(k in facts and facts[k] == v for k, v in selector.items())


def _facts_text(facts: dict[str, Any]) -> str:
    """``{kind=dreamhead, emotion_label=false}``: booleans and None as a config file writes them."""
    def text(v: Any) -> str:
        return json.dumps(v) if isinstance(v, bool) or v is None else str(v)

    return "{" + ", ".join(f"{k}={text(v)}" for k, v in facts.items()) + "}"


def _holds(a: float, rel: str, b: float, tol: float) -> bool:
    slack = tol * abs(b)
    return {"<": a < b, ">": a > b, "≲": a <= b + slack, "≳": a >= b - slack}[rel]


def _combined(relations: list[str]) -> str:
    """The relation between two levels with the ones between them missing: strict only if every step is strict."""
    up = relations[0] in "<≲"
    strict = all(r in "<>" for r in relations)
    return ("<" if strict else "≲") if up else (">" if strict else "≳")


@dataclass
class _Row:
    method: str
    label: str
    facts: dict[str, Any]
    value: float | None
    usable: bool  # scored at least one clip
    status: str
    bound: float | None  # the column's ground-truth bound (BOUNDS), when it has one


def _rows(table: list[dict], facts: dict[str, dict[str, Any]], column: str) -> list[_Row]:
    bound_col = BOUNDS.get(column, (None,))[0]
    out = []
    for r in table:
        clips = int(r.get("clips") or 0)
        out.append(_Row(r["method"], str(r.get("label") or r["method"]), facts.get(r["method"], {"kind": r.get("kind")}),
                        _number(r.get(column)) if clips else None, clips > 0, str(r.get("status", "")),
                        _number(r.get(bound_col)) if bound_col else None))
    return out


def _name(row: _Row) -> str:
    return row.label if row.label == row.method else f"{row.label} ({row.method})"


class _Check:
    """The outcome of one group (or of the named rows): contradictions, missing levels, the values compared."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.failed: list[str] = []
        self.missing: list[str] = []
        self.text: list[str] = []
        self.complete = False


def _check_chain(claim: Claim, by_level: list[tuple[str, list[_Row]]], check: _Check) -> None:
    """``by_level``: (level, its rows) in chain order; a level's value is each of its rows' (all pairs compared)."""
    present = [(i, lv, rows) for i, (lv, rows) in enumerate(by_level) if rows]
    check.complete = len(present) == len(by_level)
    for (i, lv_a, rows_a), (j, lv_b, rows_b) in zip(present, present[1:]):
        rel = _combined(list(claim.relations[i:j]))
        for a in rows_a:
            for b in rows_b:
                if not _holds(a.value, rel, b.value, claim.tolerance):  # type: ignore[arg-type]
                    check.failed.append(f"{lv_a} {_num(a.value)} {rel} {lv_b} {_num(b.value)} does not hold")
    if all(len(rows) == 1 for _, _, rows in present):  # the values in chain order, with the relation they have
        parts = []
        for k, (_, lv, (r,)) in enumerate(present):
            if k:
                prev = present[k - 1][2][0].value
                parts.append(">" if prev > r.value else "<" if prev < r.value else "=")  # type: ignore[operator]
            parts.append(f"{lv} {_num(r.value)}")
        check.text.append(" ".join(parts))
    else:
        check.text.append(", ".join(f"{lv} " + " / ".join(f"{_num(r.value)} [{_name(r)}]" for r in rows)
                                    for _, lv, rows in present))


def _check_trend(claim: Claim, rows: list[_Row], check: _Check) -> None:
    try:
        pts = sorted(((float(r.facts[claim.vary]), r) for r in rows), key=lambda p: p[0])  # type: ignore[index]
    except (TypeError, ValueError):
        check.missing.append(f"{claim.vary} is not a number in every row ({[r.facts[claim.vary] for r in rows]})")
        return
    check.text.append(", ".join(f"{claim.vary}={x:g}: {_num(r.value)}" for x, r in pts))
    if len(pts) < 2:
        check.missing.append(f"fewer than 2 rows differing only in {claim.vary}")
        return
    check.complete = True
    for (x0, r0), (x1, r1) in zip(pts, pts[1:]):
        if r1.value < r0.value:  # type: ignore[operator]
            check.failed.append(f"falls from {_num(r0.value)} at {claim.vary}={x0:g} to {_num(r1.value)} at {x1:g}")
    if not check.failed and not pts[-1][1].value > pts[0][1].value:  # type: ignore[operator]
        check.failed.append(f"does not rise: {_num(pts[0][1].value)} at {claim.vary}={pts[0][0]:g}, "
                            f"{_num(pts[-1][1].value)} at {pts[-1][0]:g}")


def check_claim(claim: Claim, table: list[dict], facts: dict[str, dict[str, Any]],
                na_reasons: dict[str, str] | None = None, *, paper: str = "", arxiv: str = "") -> ClaimResult:
    """Check one claim on the bench table (``table``: its rows; ``facts``: method -> ``Method.facts()``;
    ``na_reasons``: column -> why it is n/a in this bench). See the module docstring for the rule."""
    na_reasons = na_reasons or {}
    rows = _rows(table, facts, claim.column)
    result = ClaimResult(paper, arxiv, claim.id, claim.statement, claim.source, claim.column, claim.describe_order(),
                         "unverified", "", "")
    checks: list[_Check] = []
    unscored: list[str] = []  # rows that match but were not used, and why
    na: list[str] = []

    def usable(rs: list[_Row]) -> list[_Row]:
        keep = []
        for r in rs:
            if not r.usable:
                unscored.append(f"{_name(r)} not scored ({r.status})")
            elif r.value is None:
                na.append(_name(r))
            else:
                keep.append(r)
        return keep

    if claim.rows:  # named rows, in groups that agree on the `same` facts
        named = {name: usable([r for r in rows if _matches(r.facts, claim.rows[name])]) for name in claim.levels}
        keys = sorted({tuple(str(r.facts.get(f)) for f in claim.same) for rs in named.values() for r in rs}) or [()]
        for key in keys:
            group = dict(zip(claim.same, key))
            check = _Check(_facts_text(group) if group else "")
            by_level = []
            for name in claim.levels:
                matched = [r for r in named[name] if all(str(r.facts.get(f)) == v for f, v in group.items())]
                by_level.append((name, matched))
                if not matched:
                    hint = claim.hints.get(name) or claim.hints.get("any")
                    check.missing.append(f"no row with {_facts_text({**claim.rows[name], **group})}"
                                         + (f": add {hint}" if hint else ""))
            _check_chain(claim, by_level, check)
            checks.append(check)
    else:
        vary = claim.vary
        matched_rows = [r for r in rows if _matches(r.facts, claim.among) and vary in r.facts]
        candidates = usable(matched_rows)
        groups: dict[str, list[_Row]] = {}
        for r in candidates:
            others = {k: v for k, v in r.facts.items() if k != vary}
            groups.setdefault(json.dumps(sorted(others.items()), default=str), []).append(r)
        for rs in groups.values():
            others = {k: v for k, v in rs[0].facts.items() if k != vary}
            check = _Check(_facts_text({k: v for k, v in others.items() if k not in claim.among}))
            seen: dict[str, _Row] = {}
            dup = []
            for r in rs:
                level = str(r.facts[vary])
                if level in seen:
                    dup.append(f"{_name(seen[level])} and {_name(r)}")
                seen.setdefault(level, r)
            if dup:
                check.missing.append(f"rows {'; '.join(dup)} have the same facts: their facts() must tell them apart")
            elif claim.trend:
                _check_trend(claim, rs, check)
                if check.missing and claim.hints:
                    check.missing[-1] += f": add {claim.hints.get('any') or next(iter(claim.hints.values()))}"
            else:
                by_level = [(str(lv), [r for r in rs if str(r.facts[vary]) == str(lv)]) for lv in claim.levels]
                for lv, matched in by_level:
                    if not matched:
                        hint = claim.hints.get(lv) or claim.hints.get("any")
                        check.missing.append(f"no row with {vary}={lv} among the rows with "
                                             f"{_facts_text({**claim.among, **others})}"
                                             + (f": add {hint}" if hint else ""))
                _check_chain(claim, by_level, check)
            checks.append(check)
        if not matched_rows:
            hint = claim.hints.get("any")
            checks.append(_Check(""))
            checks[-1].missing.append(f"no row with {_facts_text(claim.among)} and a {vary} fact"
                                      + (f": add {hint}" if hint else ""))

    notes = unscored[:]
    if na:
        why = na_reasons.get(claim.column)
        notes.insert(0, f"{claim.column} is n/a for {', '.join(dict.fromkeys(na))}" + (f" ({why})" if why else ""))
    result.values = _values(claim, rows, checks)
    many = len(checks) > 1
    result.this_bench = "; ".join((f"{c.title}: " if many and c.title else "") + t
                                  for c in checks for t in c.text if t) or "no rows to compare"
    # the column cannot rank methods at all where its ground-truth bound is near chance
    bound_col, too_weak = BOUNDS.get(claim.column, (None, None))
    weak = [v for v in result.values if v.get("bound") is not None and too_weak(v["bound"])]
    failed = [f for c in checks for f in c.failed]
    if weak:
        result.reason = (f"{bound_col} (the same classifier on the landmarker's points of the ground-truth frames) is "
                         f"{_num(weak[0]['bound'])}, near chance: this bench's landmarker cannot read expressions, so "
                         f"{claim.column} cannot rank methods here (see the Emotion note)")
    elif failed:
        result.verdict, result.reason = "✗", "; ".join(failed)
    elif any(c.complete and not c.missing for c in checks):
        result.verdict = "✓"
        rest = [m for c in checks for m in c.missing]
        result.reason = ("other groups unverified: " + "; ".join(rest)) if rest else ""
    else:
        result.reason = "; ".join(notes + [m for c in checks for m in c.missing]) or "no rows to compare"
    if notes and result.verdict != "unverified":
        result.reason = "; ".join([x for x in [result.reason] if x] + ["not used: " + ", ".join(notes)])
    return result


def _values(claim: Claim, rows: list[_Row], checks: list[_Check]) -> list[dict[str, Any]]:
    """The rows a claim looked at, with the fact or name that placed them and their values."""
    out = []
    for r in rows:
        if not r.usable or r.value is None:
            continue
        if claim.rows:
            names = [n for n in claim.levels if _matches(r.facts, claim.rows[n])]
            if names:
                out.append({"level": names[0], "method": r.method, "value": r.value, "bound": r.bound})
        elif _matches(r.facts, claim.among) and claim.vary in r.facts:
            out.append({"level": r.facts[claim.vary], "method": r.method, "value": r.value, "bound": r.bound,
                        "group": {k: v for k, v in r.facts.items() if k != claim.vary}})
    return out


def check_orderings(references: list[Reference], table: list[dict], facts: dict[str, dict[str, Any]],
                    na_reasons: dict[str, str] | None = None) -> list[ClaimResult]:
    """Every claim of ``references`` checked on the table, in file order."""
    return [check_claim(c, table, facts, na_reasons, paper=r.paper, arxiv=r.arxiv) for r in references for c in r.claims]


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


def _short(paper: str) -> str:
    return paper.split(":")[0].strip()


def _decimals(x: float) -> int:
    text = repr(float(x))
    return 0 if text.endswith(".0") or "e" in text else len(text.split(".")[1])


def render_reported(references: list[Reference]) -> list[str]:
    """The "As reported" section (markdown lines): each paper's values in a small table, with their provenance."""
    if not references:
        return []
    lines = [f"## As reported ({NOT_COMPARABLE})", ""]
    for ref in references:
        if not ref.values:  # a paper whose tables are not digested yet: say so rather than print an empty table
            lines += [f"{ref.paper}, arXiv {ref.arxiv} (`bench/reported/{ref.key}.yaml`): no values digested yet; "
                      f"only its orderings are checked below.", ""]
            continue
        lines += [f"{ref.paper}, arXiv {ref.arxiv} (`bench/reported/{ref.key}.yaml`). Numbers as printed in the "
                  f"paper, on its data with its crops and metric code: not comparable with the ranked table above.", ""]
        cols = list(dict.fromkeys(v.column for v in ref.values))
        keys = list(dict.fromkeys((v.table, v.row, v.dataset) for v in ref.values))
        cell = {(v.table, v.row, v.dataset, v.column): v.value for v in ref.values}
        # a column's values with as many decimals as its most precise one (YAML reads 1.80 as 1.8)
        places = {c: max(_decimals(v.value) for v in ref.values if v.column == c) for c in cols}
        lines += ["| table | row | dataset | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
        for t, row, ds in keys:
            vals = [f"{cell[(t, row, ds, c)]:.{places[c]}f}" if (t, row, ds, c) in cell else "" for c in cols]
            lines.append(f"| {t} | {row} | {ds} | " + " | ".join(vals) + " |")
        near = [f"{c} ~ {ref.columns[c]}" for c in cols if c in ref.columns]
        if near:
            lines += ["", "Nearest bench columns (same idea, another protocol): " + ", ".join(near) + "."]
        lines.append("")
    return lines[:-1]


def render_orderings(results: list[ClaimResult]) -> list[str]:
    """The "Orderings check" section (markdown lines): paper statement | this bench | verdict."""
    if not results:
        return []
    lines = ["## Orderings check", "",
             "Orderings the papers claim, checked on this bench's rows (not their numbers). Rows are compared only "
             "with rows that agree on every fact but the one varied (results.json `methods.<name>.facts`).", "",
             "| paper statement | this bench | verdict |", "|---|---|---|"]
    for r in results:
        statement = f"{_short(r.paper)} ({r.source}): {r.statement}. Checked: {r.order}"
        verdict = r.verdict + (f": {r.reason}" if r.reason else "")
        lines.append(f"| {_esc(statement)} | {_esc(r.this_bench)} | {_esc(verdict)} |")
    return lines


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def as_json(references: list[Reference], results: list[ClaimResult]) -> dict[str, Any]:
    """results.json's ``reported`` (each paper's values with their provenance) and ``orderings``."""
    reported = {r.key: {"paper": r.paper, "arxiv": r.arxiv, "kind": r.kind, "note": NOT_COMPARABLE,
                        "values": [asdict(v) for v in r.values]} for r in references}
    return {"reported": reported, "orderings": [asdict(x) for x in results]}
