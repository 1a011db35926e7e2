"""The bench's outputs: the table rows and per-clip rows, the markdown report, and the files under the results
folder (``table.md``, ``table.csv``, ``results.json``, ``per_clip.csv``, ``by_split.csv`` when the clips come from
more than one split, ``tensorboard/``). Paper-reported numbers and the orderings check come from :mod:`.claims` and
appear only in their own sections of ``table.md`` and in ``results.json``, never in the ranked table or table.csv."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import resolve_path
from ..data.clip import atomic_write_text, read_index
from . import claims as claims_mod
from ..metrics.emotion import near_chance as emotion_near_chance
from ..models.emotion import emotion_label
from .clips import TestClip
from .config import MethodConfig
from .scorer import Scorer

# The value columns each metric contributes to table.csv (per_clip.csv: the same, with sync_offset for the mean
# absolute offset and no fid).
_VALUE_COLUMNS = {
    "ssim": ("ssim",), "psnr": ("psnr",), "ssim_mouth": ("ssim_mouth",), "psnr_mouth": ("psnr_mouth",),
    "lpips": ("lpips",), "lmd": ("lmd_mouth", "lmd_face", "jitter_ratio", "motion_spread"), "sync": ("lse_c", "lse_d", "sync_abs_offset"),
    "csim": ("csim",), "emotion": ("emotion_acc", "emotion_acc_lm", "emotion_acc_gt", "emotion_acc_gt_frames"),
    "fid": ("fid",),
}
TABLE_COLUMNS = (
    "method", "label", "kind", "protocol", "uses_source_video", "clips", "clips_expected", "frames",
    "ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd_mouth", "lmd_face", "lmd_unit", "jitter_ratio",
    "motion_spread", "lse_c", "lse_d", "sync_abs_offset", "csim", "fid", "emotion_acc", "emotion_acc_lm", "emotion_acc_gt",
    "emotion_acc_gt_frames", "status",
)
PER_CLIP_COLUMNS = (
    "method", "split", "clip", "status", "frames", "frames_generated", "resized_from",
    "ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd_mouth", "lmd_face", "lmd_missing_frames", "jitter_ratio",
    "motion_spread", "lse_c", "lse_d", "sync_offset", "csim", "emotion_acc", "emotion_acc_lm", "emotion_acc_gt",
    "emotion_acc_gt_frames", "emotion_pred",
)
NA = "n/a"
# columns only methods that make several samples of a clip have (``bench.methods.base.sample_videos``): shown only
# when some row has a value
SAMPLED_COLUMNS = ("motion_spread",)
# by_split.csv: per (method, split), the per-clip means of the per-clip metric columns (FID is not per clip: left out;
# sync_abs_offset is the mean of |sync_offset|)
BY_SPLIT_VALUE_COLUMNS = (
    "ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd_mouth", "lmd_face", "jitter_ratio", "motion_spread",
    "lse_c", "lse_d", "sync_abs_offset", "csim", "emotion_acc", "emotion_acc_lm", "emotion_acc_gt", "emotion_acc_gt_frames",
)
BY_SPLIT_COLUMNS = ("method", "label", "split", "split_is", "clips", "clips_expected", *BY_SPLIT_VALUE_COLUMNS)
# Table headings: (column, heading, higher is better; None: closest to 1 is best)
TABLE_HEADINGS = (
    ("ssim", "SSIM", True), ("psnr", "PSNR", True), ("ssim_mouth", "SSIM-m", True), ("psnr_mouth", "PSNR-m", True),
    ("lpips", "LPIPS", False), ("lmd_mouth", "M-LMD", False), ("lmd_face", "F-LMD", False), ("jitter_ratio", "Jitter", None),
    ("motion_spread", "Motion spread", True), ("lse_c", "LSE-C", True),
    ("lse_d", "LSE-D", False), ("sync_abs_offset", "|offset|", False), ("csim", "CSIM", True),
    ("emotion_acc", "Emotion", True), ("emotion_acc_lm", "Emotion (lm)", True), ("fid", "FID", False),
)


@dataclass
class BenchResult:
    """What :func:`run_bench` produced (on every rank)."""

    out_dir: Path
    table: list[dict[str, Any]]  # table.csv rows
    per_clip: list[dict[str, Any]]  # per_clip.csv rows
    stats: dict[str, dict[str, int]]  # method -> {"computed", "cached", "generated", "errors"} summed over ranks
    markdown: str
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> Method.facts() (skipped: its kind)
    reported: list[claims_mod.Reference] = field(default_factory=list)  # the papers' reference files in use
    orderings: list[claims_mod.ClaimResult] = field(default_factory=list)  # their claims checked on the table
    by_split: list[dict[str, Any]] = field(default_factory=list)  # by_split.csv rows (empty: one split)
    splits: dict[str, str] = field(default_factory=dict)  # split -> what it is (unseen / seen identities ...)


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return NA
        return round(v, 6)
    return v


def table_row(name: str, label: str, kind: str, protocol: str, uses_source: bool | None, clips: int, expected: int,
              frames: int, values: dict[str, Any], scorer: Scorer, status: str) -> dict[str, Any]:
    """One table.csv row: the method's facts, then each requested metric's value (n/a where it is not available)."""
    row: dict[str, Any] = {"method": name, "label": label, "kind": kind, "protocol": protocol,
                           "uses_source_video": "" if uses_source is None else bool(uses_source), "clips": clips,
                           "clips_expected": expected, "frames": frames, "lmd_unit": scorer.lmd_unit, "status": status}
    for metric in scorer.requested:
        for col in _VALUE_COLUMNS[metric]:
            v = values.get(col, float("nan")) if scorer.setup[metric].available else float("nan")
            row[col] = _cell(v)
    for col in TABLE_COLUMNS:
        row.setdefault(col, "")
    return {c: row[c] for c in TABLE_COLUMNS}


def per_clip_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A scored (method, clip) entry as its per_clip.csv row."""
    return {c: _cell(entry.get(c, "")) for c in PER_CLIP_COLUMNS}


def na_reasons(scorer: Scorer) -> dict[str, str]:
    """Why each value column of the table is n/a in this bench (not measured, or its metric unavailable)."""
    out = {}
    missing = scorer.unavailable()
    for metric, cols in _VALUE_COLUMNS.items():
        if metric not in scorer.requested:
            reason = f"not measured by this bench: add {metric} to its metrics"
        elif metric in missing:
            reason = missing[metric].splitlines()[0] if missing[metric] else "not available"
        else:
            continue
        out.update({c: reason for c in cols})
    return out


def describe_splits(root: Path, splits: list[str], train_split: str) -> dict[str, str]:
    """What each test split is, from the dataset's index: its identities against those of ``train_split`` (unseen,
    seen, or partly seen); the bare split name where the dataset has no train clips to tell."""
    records = read_index(root)
    train = {r.identity for r in records if r.split == train_split}
    out = {}
    for split in splits:
        ids = {r.identity for r in records if r.split == split}
        seen = ids & train
        if not train or not ids:
            out[split] = split
        elif not seen:
            out[split] = f"unseen identities ({len(ids)}, none in {train_split})"
        elif seen == ids:
            out[split] = f"seen identities ({len(ids)}, all in {train_split})"
        else:
            out[split] = f"{len(seen)} of {len(ids)} identities seen in {train_split}"
    return out


def _value(v: Any) -> float | None:
    if v in ("", None, NA):
        return None
    x = float(v)
    return None if math.isnan(x) else x


def by_split_rows(per_clip: list[dict[str, Any]], table: list[dict[str, Any]], splits: dict[str, str],
                  scorer: Scorer) -> list[dict[str, Any]]:
    """by_split.csv: one row per (method, split) -- ``splits``: split -> what it is, in table order -- with the mean
    over the split's scored clips of each per-clip metric column (n/a where no clip has a value). FID is not a per-clip
    number and is left out."""
    measured = {c for m in scorer.available if m != "fid" for c in _VALUE_COLUMNS[m]}
    if "sync" in scorer.available:
        measured.add("sync_abs_offset")
    labels = {r["method"]: r["label"] for r in table}
    rows = []
    for method in dict.fromkeys(r["method"] for r in per_clip):
        for split, what in splits.items():
            mine = [r for r in per_clip if r["method"] == method and r["split"] == split]
            if not mine:
                continue
            ok = [r for r in mine if r["status"] == "ok"]
            row: dict[str, Any] = {"method": method, "label": labels.get(method, method), "split": split,
                                   "split_is": what, "clips": len(ok), "clips_expected": len(mine)}
            for col in BY_SPLIT_VALUE_COLUMNS:
                if col not in measured:
                    row[col] = ""
                    continue
                src = "sync_offset" if col == "sync_abs_offset" else col
                xs = [x for x in (_value(r.get(src)) for r in ok) if x is not None]
                if col == "sync_abs_offset":
                    xs = [abs(x) for x in xs]
                row[col] = round(sum(xs) / len(xs), 6) if xs else NA
            rows.append(row)
    return rows


def render_by_split(rows: list[dict[str, Any]], splits: dict[str, str]) -> list[str]:
    """The "By split" section (markdown lines)."""
    if not rows:
        return []
    cols = [(c, h, hib) for c, h, hib in TABLE_HEADINGS if c in BY_SPLIT_VALUE_COLUMNS and any(r[c] != "" for r in rows)
            and (c not in SAMPLED_COLUMNS or any(_value(r[c]) is not None for r in rows))]
    head = ["method", "split", "clips"] + [_heading(h, hib) for _, h, hib in cols]
    lines = ["## By split", "",
             "Per-clip means over each split's scored clips: " + "; ".join(f"`{s}` = {w}" for s, w in splits.items())
             + ". Unweighted by frames, so a column that the ranked table averages over frames (SSIM, PSNR, LPIPS, "
             "CSIM) can differ slightly from it there; FID is not a per-clip number and is left out (by_split.csv).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], f"{r['split']} ({r['split_is'].split(' (')[0]})" if r["split_is"] != r["split"]
                 else r["split"], f"{r['clips']}/{r['clips_expected']}"]
        cells += [_fmt(r[c], c) for c, _, _ in cols]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def arrow(higher_is_better: bool | None) -> str:
    """The heading's direction mark: higher, lower or closest to 1 is best."""
    return {True: "↑", False: "↓", None: "→1"}[higher_is_better]


def _heading(heading: str, higher_is_better: bool | None) -> str:
    """A markdown table heading with its arrow; a '|' in it (``|offset|``) escaped so it does not split the cell."""
    return f"{heading} {arrow(higher_is_better)}".replace("|", "\\|")


def _fmt(v: Any, col: str) -> str:
    if v in ("", None):
        return ""
    if v == NA:
        return NA
    if col == "sync_abs_offset":
        return f"{float(v):.2f}"
    if col in ("psnr", "psnr_mouth", "fid"):
        return f"{float(v):.2f}"
    return f"{float(v):.4f}" if col in ("ssim", "ssim_mouth", "lpips", "csim") else f"{float(v):.3f}"


def render_markdown(cfg: Any, dataset: str, splits: list[str], clips: list[TestClip], table: list[dict],
                    scorer: Scorer, notes: dict[str, str], skipped: dict[str, tuple[MethodConfig, str]],
                    fid_values: dict, world: int, *, by_split: list[dict] | None = None,
                    split_names: dict[str, str] | None = None, reported: list[claims_mod.Reference] | None = None,
                    orderings: list[claims_mod.ClaimResult] | None = None) -> str:
    """table.md: the table (columns of the requested metrics), then the protocols, the settings and what was n/a;
    then, when given, the per-split table, the papers' numbers "as reported" and the orderings check."""
    cols = [(c, h, hib) for c, h, hib in TABLE_HEADINGS if any(c in _VALUE_COLUMNS[m] for m in scorer.requested)
            and (c not in SAMPLED_COLUMNS or any(_value(r.get(c)) is not None for r in table))]
    head = ["method", "protocol", "source video", "clips"] + [_heading(h, hib) for _, h, hib in cols]
    only = cfg.get("identities")  # a person-specific bench: only these identities' clips
    who = f", identities {', '.join(only)} only" if only is not None else ""
    lines = [f"# Benchmark `{cfg.name}` on {dataset}: {', '.join(splits)}{who} ({len(clips)} clips)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        src = {True: "yes", False: "no (one-shot)", "": "?"}.get(row["uses_source_video"], "?")
        cells = [row["label"], row["protocol"] or "-", src, f"{row['clips']}/{row['clips_expected']}"]
        cells += [_fmt(row[c], c) for c, _, _ in cols]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Protocols:"]
    for name, text in notes.items():
        lines.append(f"- {name}: {text}")
    for name, (_, reason) in skipped.items():
        lines.append(f"- {name}: skipped -- {reason}")
    bad = [r for r in table if r["status"] not in ("ok",) and not r["status"].startswith("skipped")]
    for r in bad:
        lines.append(f"- {r['method']}: {r['status']}")
    s = scorer.setup
    lines += ["", "Settings:"]
    if "lmd" in s and s["lmd"].available:
        lmd = cfg.lmd
        unit = (f"pixels at {lmd.report_resolution or scorer.resolution} px" if lmd.normalisation == "pixels"
                else "divided by the ground-truth inter-ocular distance (points 36-45)")
        target = ("the same landmarker on the ground-truth frames" if lmd.target == "frames"
                  else "the dataset's landmarks68.npy")
        lines.append(f"- LMD: landmarks by {s['lmd'].label}; reference: {target}; M-LMD = mouth points 48-67, F-LMD = all "
                     f"68; each frame's points centred on their mean, mean L2 per point, mean over frames, then "
                     f"videos; {unit}. Jitter: mean acceleration magnitude |x[t+1] - 2x[t] + x[t-1]| of the 68 "
                     f"detected points, over that of the ground truth's (1 = as smooth as the ground truth)"
                     + ("; Motion spread (rows that sample several videos of a clip with other seeds): at each frame "
                        "the std across the samples of the detected points 0-47 (no mouth: head pose, brows, eyes), "
                        "RMS over points, mean over frames, in pixels; 0 = every seed moves alike"
                        if any(_value(r.get("motion_spread")) is not None for r in table) else ""))
    if "sync" in s and s["sync"].available:
        lines.append(f"- LSE-C / LSE-D / |offset|: expert {s['sync'].label}; offsets searched ±{cfg.sync.vshift} "
                     f"frames; audio: {'the clip source audio' if cfg.sync.audio == 'source' else 'the video track'}")
    if "fid" in s and s["fid"].available:
        counts = next(iter(fid_values.values()), {})
        lines.append(f"- FID: features {s['fid'].label}; all compared frames of a method vs the ground-truth frames "
                     f"of the same clips (running sums)" + (f"; e.g. {counts.get('fid_fake_images')} generated frames"
                                                            if counts.get("fid_fake_images") else ""))
    if "lpips" in s and s["lpips"].available:
        lines.append(f"- LPIPS: {s['lpips'].label}")
    if "csim" in s and s["csim"].available:
        lines.append(f"- CSIM: {s['csim'].label}")
    if "emotion" in s and s["emotion"].available:
        lines.append(_emotion_note(s["emotion"].label, clips, table))
    if any(m in s and s[m].available for m in ("ssim", "psnr", "ssim_mouth", "psnr_mouth")):
        lines.append("- SSIM / PSNR: per frame against the ground truth, mean over all frames; -m: on the 96x96 crop "
                     "around the ground-truth mouth (metrics.image.crop_mouth)")
    lines.append(f"- frames compared over min(generated, ground-truth) length at the dataset resolution; "
                 f"{world} process(es)")
    missing = scorer.unavailable()
    if missing:
        lines += ["", "Not available (n/a):"]
        for m, reason in missing.items():
            body = reason.replace("\n", "\n    ")
            lines.append(f"- {m}: {body}")
    for section in (render_by_split(by_split or [], split_names or {}), claims_mod.render_reported(reported or []),
                    claims_mod.render_orderings(orderings or [])):
        if section:
            lines += ["", *section]
    return "\n".join(lines)


def _emotion_note(label: str, clips: list[TestClip], table: list[dict]) -> str:
    """The emotion column's settings line, with its bounds: the same classifier on the ground-truth landmarks, and on
    the landmarker's points of the ground-truth frames (flagged when that is near chance)."""
    unlabelled = sum(emotion_label(c.record.emotion) is None for c in clips)
    rows = [r for r in table if r.get("emotion_acc_gt") not in ("", NA, None)]
    best = max(rows, key=lambda r: int(r["clips"]), default=None)  # the method scored on the most clips
    if best is None:
        bounds = NA
    else:
        read = float(best["emotion_acc_gt_frames"])
        bounds = (f"on the ground-truth landmarks68 {float(best['emotion_acc_gt']):.3f}; on the landmarker's points of "
                  f"the ground-truth frames {read:.3f}, the most a method can score through this landmarker"
                  + (" -- NEAR CHANCE: the landmarker's error hides the expressions' cues, so the column cannot rank "
                     "methods here" if emotion_near_chance(read) else "")
                  + f" (on the clips of {best['label']}; every method's: emotion_acc_gt, emotion_acc_gt_frames in "
                  "table.csv)")
    return (f"- Emotion: {label}. Per clip 1 when the emotion it reads from the landmarks found on the method's frames "
            f"is the clip's label, else 0; mean over the clips with an emotion label (chance 1/8 = 0.125). Upper "
            f"bounds, the same classifier on the same frames' ground truth: {bounds}"
            + (f". {unlabelled} of {len(clips)} clips have no emotion label: n/a, left out" if unlabelled else "")
            + ". Emotion (lm): the same classifier on the landmarks the method itself generated before rendering "
            "(DreamHead's stage 1, DreamTalk†'s motion; the stage-2 bound's are the truth): the motion model's emotion "
            "with no renderer and no landmarker in between, bounded by the ground-truth landmarks' figure above; n/a "
            "for methods that make no landmarks")


def write_outputs(out: Path, cfg: Any, result: BenchResult, scorer: Scorer, notes: dict[str, str], fid_values: dict,
                  world: int, seconds: float, clips: list[TestClip]) -> None:
    """table.md, table.csv, per_clip.csv, results.json and (``cfg.tensorboard``) the scalars and table under
    ``tensorboard/``."""
    def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    atomic_write_text(out / "table.md", result.markdown + "\n")
    atomic_write_text(out / "table.csv", csv_text(result.table, TABLE_COLUMNS))
    atomic_write_text(out / "per_clip.csv", csv_text(result.per_clip, PER_CLIP_COLUMNS))
    if result.by_split:
        atomic_write_text(out / "by_split.csv", csv_text(result.by_split, BY_SPLIT_COLUMNS))
    else:
        (out / "by_split.csv").unlink(missing_ok=True)  # left by an earlier run over several splits
    results = {
        "name": cfg.name, "dataset": out.parent.name, "data_root": str(resolve_path(cfg.data.root)),
        "splits": list(cfg.data.test_splits), "clips": [c.id for c in clips], "world_size": world,
        "identities": None if cfg.get("identities") is None else list(cfg.identities),
        "seconds": round(seconds, 1), "columns": {"table": list(TABLE_COLUMNS), "per_clip": list(PER_CLIP_COLUMNS)},
        "lmd_unit": scorer.lmd_unit,
        "settings": {m: scorer.setup[m].label for m in scorer.available},
        "not_available": scorer.unavailable(),
        "protocols": notes,
        "fid": {k: {kk: _finite(vv) for kk, vv in v.items()} for k, v in fid_values.items()},
        "stats": result.stats,
        "methods": {r["method"]: {**{k: (None if v == NA else v) for k, v in r.items()},
                                  "facts": result.facts.get(r["method"], {"kind": r["kind"]})} for r in result.table},
        "by_split": {"splits": result.splits, "columns": list(BY_SPLIT_COLUMNS),
                     "rows": [{k: (None if v == NA else v) for k, v in r.items()} for r in result.by_split]},
        **claims_mod.as_json(result.reported, result.orderings),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tensorboard")) as tb:
            for row in result.table:
                for col, _, _ in TABLE_HEADINGS:
                    v = row.get(col)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        tb.add_scalar(f"bench/{col}/{row['method']}", float(v), 0)
            tb.add_text("bench/table", result.markdown, 0)
