"""The bench report's paper side and its per-split rows: the reference files (every value with its provenance), the
orderings check (✓, ✗ and each reason for unverified, comparing only rows that differ in the varied fact), the "as
reported" table kept out of the ranked table and table.csv, the by-split means of the per-clip rows, and one run of
``run_bench`` with injected methods showing the new sections.

No training: the orderings check runs on hand-made table rows; the end-to-end run scores two re-encoded / frozen
videos with the bench tests' stand-in networks (their numbers only exercise the plumbing)."""
from __future__ import annotations

import configparser
import fnmatch
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dreamhead_lit.bench import GroundTruthMethod, MethodConfig, StaticReferenceMethod, bench_context, run_bench
from dreamhead_lit.bench.claims import (NOT_COMPARABLE, ReferenceFileError, applicable, check_claim, check_orderings,
                                        load_reference, load_references, reference_dir, render_orderings,
                                        render_reported)
from dreamhead_lit.bench.report import (BY_SPLIT_COLUMNS, TABLE_COLUMNS, by_split_rows, describe_splits,
                                        render_by_split)
from test_bench import backends, make_cfg, read_csv, structured

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:LPIPSMetric. RANDOM AlexNet trunk")]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dreamtalk():
    (ref,) = [r for r in load_references() if r.key == "dreamtalk"]
    return ref


def claim(ref, claim_id):
    return next(c for c in ref.claims if c.id == claim_id)


def row(method, clips=4, status="ok", **values):
    """A table.csv row as the report builds it (values as written: floats, 'n/a', '')."""
    return {"method": method, "label": method, "kind": "", "clips": clips, "status": status, **values}


DT = {"kind": "dreamtalk", "guidance_scale": 1.0, "style_source": "same_clip"}


# ---------------------------------------------------------------------------------------------------------------------
# Reference files


def test_reference_file_loads_and_every_value_has_its_provenance(dreamtalk, tmp_path):
    assert dreamtalk.kind == "dreamtalk" and dreamtalk.arxiv == "2312.09767"
    for v in dreamtalk.values:
        assert v.paper.startswith("DreamTalk") and v.arxiv == "2312.09767"
        assert v.table and v.row and v.column and v.dataset and isinstance(v.value, float)
    got = {(v.table, v.row, v.column, v.dataset): v.value for v in dreamtalk.values}
    table1 = {"SSIM": (0.86, 0.85, 0.69), "F-LMD": (1.93, 1.80, 2.69), "M-LMD": (2.91, 2.15, 2.72),
              "Sync_conf": (3.78, 5.17, 4.90)}
    for col, vals in table1.items():
        for ds, x in zip(("MEAD", "HDTF", "VoxCeleb"), vals):
            assert got[("Table I", "DreamTalk", col, ds)] == x
    for ds, x in zip(("MEAD", "HDTF", "VoxCeleb"), (4.13, 5.44, 5.23)):
        assert got[("Table I", "Ground Truth", "Sync_conf", ds)] == x
    assert got[("Table I", "DreamTalk", "style accuracy (%)", "MEAD")] == 86.7
    assert got[("Table I", "Ground Truth", "style accuracy (%)", "MEAD")] == 92.5
    table4 = {(v.row, v.column): v.value for v in dreamtalk.values if v.table == "Table IV"}
    assert table4 == {("lip expert: none", "Sync_conf"): 2.63, ("lip expert: unconditional", "Sync_conf"): 4.51,
                      ("lip expert: style-aware (full)", "Sync_conf"): 3.78, ("lip expert: none", "F-LMD"): 1.90,
                      ("lip expert: unconditional", "F-LMD"): 2.19, ("lip expert: style-aware (full)", "F-LMD"): 1.93}
    assert {c.id: c.column for c in dreamtalk.claims} == {
        "lip_expert_sync": "lse_c", "lip_expert_lmd": "lmd_face", "guidance_emotion": "emotion_acc",
        "style_clip_vs_no_label": "emotion_acc", "guidance_emotion_lm": "emotion_acc_lm",
        "style_clip_vs_no_label_lm": "emotion_acc_lm"}
    # an installed package carries the reference files (setup.cfg package_data)
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["dreamhead_lit"].split(",")]
    rel = (reference_dir() / "dreamtalk.yaml").relative_to(REPO / "src" / "dreamhead_lit").as_posix()
    assert any(fnmatch.fnmatch(rel, g) for g in globs), (rel, globs)
    # a value without its provenance is refused, naming the entry
    bad = tmp_path / "bad.yaml"
    bad.write_text("paper: P\narxiv: '1'\nkind: k\nreported:\n  - {table: T, column: C, dataset: D, value: 1}\n")
    with pytest.raises(ReferenceFileError, match=r"reported\[0\] lacks \['row'\]"):
        load_reference(bad)
    bad.write_text("paper: P\narxiv: '1'\nkind: k\nclaims:\n  - {id: c, statement: s, source: t, column: x, "
                   "among: {kind: k}, vary: v, order: 'a > b < c'}\n")
    with pytest.raises(ReferenceFileError, match="mixes directions"):
        load_reference(bad)


def test_a_file_is_used_only_when_the_table_has_a_row_of_its_kind(dreamtalk):
    assert applicable([dreamtalk], {"a": {"kind": "dreamhead"}}) == []
    assert applicable([dreamtalk], {"a": {"kind": "dreamhead"}, "b": {"kind": "dreamtalk"}}) == [dreamtalk]


def test_a_paper_with_no_digested_values_says_so_instead_of_an_empty_table():
    (dae,) = [r for r in load_references() if r.key == "daetalker"]
    assert not dae.values and dae.claims
    text = "\n".join(render_reported([dae]))
    assert "no values digested yet" in text and "| table |" not in text


# ---------------------------------------------------------------------------------------------------------------------
# The orderings check


def test_ordering_holds_fails_and_compares_only_rows_that_differ_in_the_varied_fact(dreamtalk):
    sync = claim(dreamtalk, "lip_expert_sync")
    facts = {"unc": {**DT, "lip_expert": "unconditional"}, "sty": {**DT, "lip_expert": "style"},
             "non": {**DT, "lip_expert": "none"},
             # another guidance scale: its own group, never compared with the rows above
             "non_g2": {**DT, "guidance_scale": 2.0, "lip_expert": "none"}}
    table = [row("unc", lse_c=0.81), row("sty", lse_c=0.72), row("non", lse_c=0.55), row("non_g2", lse_c=0.99)]
    r = check_claim(sync, table, facts)
    assert r.verdict == "✓", r.reason
    assert "unconditional 0.81 > style 0.72 > none 0.55" in r.this_bench  # the values that decided it
    assert "guidance_scale=2.0" in r.reason and "lip_expert=unconditional" in r.reason  # the other group: incomplete
    # style above unconditional: ✗, with the values that contradict
    table[1] = row("sty", lse_c=0.9)
    r = check_claim(sync, table, facts)
    assert r.verdict == "✗" and "unconditional 0.81 > style 0.9 does not hold" in r.reason
    # a missing middle level is skipped, so a contradiction among the rows present is still ✗
    facts_two = {"unc": facts["unc"], "non": facts["non"]}
    r = check_claim(sync, [row("unc", lse_c=0.5), row("non", lse_c=0.6)], facts_two)
    assert r.verdict == "✗" and "unconditional 0.5 > none 0.6 does not hold" in r.reason


def test_named_rows_are_compared_only_within_the_facts_they_must_share():
    (dae,) = [r for r in load_references() if r.key == "daetalker"]
    bound = claim(dae, "reconstruction_bound_ssim")
    assert bound.same == ("protocol",)
    facts = {"rec_p": {"kind": "daetalker_reconstruction", "shared_noise": True, "protocol": "person_specific"},
             "dae_p": {"kind": "daetalker", "pose_source": "clip", "shared_noise": True, "protocol": "person_specific",
                       "pose_modelling": True},
             # a multi-speaker row far above the person-specific bound: another protocol, never compared with it
             "dae_m": {"kind": "daetalker", "pose_source": "clip", "shared_noise": True, "protocol": "multi_speaker",
                       "pose_modelling": True}}
    table = [row("rec_p", ssim=0.80), row("dae_p", ssim=0.70), row("dae_m", ssim=0.95)]
    r = check_claim(bound, table, facts)
    assert r.verdict == "✓", r.reason
    assert "protocol=multi_speaker" in r.reason  # that group has no reconstruction row: said, not failed
    table[1] = row("dae_p", ssim=0.9)
    r = check_claim(bound, table, facts)
    assert r.verdict == "✗" and "reconstruction 0.8 ≳ DAE-Talker 0.9 does not hold" in r.reason
    with pytest.raises(ReferenceFileError, match="`same` groups named rows"):
        from dreamhead_lit.bench.claims import _claim
        _claim({"id": "x", "statement": "s", "source": "s", "column": "ssim", "vary": "a", "order": "b > c",
                "same": ["protocol"]}, "here")


def test_approximately_within_the_stated_tolerance(dreamtalk):
    lmd = claim(dreamtalk, "lip_expert_lmd")
    assert lmd.tolerance == pytest.approx(0.05) and lmd.relations == ("≲", "<")
    facts = {"non": {**DT, "lip_expert": "none"}, "sty": {**DT, "lip_expert": "style"},
             "unc": {**DT, "lip_expert": "unconditional"}}

    def verdict(none_lmd):
        return check_claim(lmd, [row("non", lmd_face=none_lmd), row("sty", lmd_face=2.0),
                                 row("unc", lmd_face=2.3)], facts)

    assert verdict(1.9).verdict == "✓"
    assert verdict(2.08).verdict == "✓"  # 4 % worse than style: within 5 %
    worse = verdict(2.2)
    assert worse.verdict == "✗" and "none 2.2 ≲ style 2 does not hold" in worse.reason


def test_each_reason_for_unverified(dreamtalk):
    sync, lmd = claim(dreamtalk, "lip_expert_sync"), claim(dreamtalk, "lip_expert_lmd")
    guidance, cross = claim(dreamtalk, "guidance_emotion"), claim(dreamtalk, "style_clip_vs_no_label")
    facts = {"unc": {**DT, "lip_expert": "unconditional"}, "sty": {**DT, "lip_expert": "style"}}
    # no row with lip_expert=none: says which method entry would add it; the rows present still hold
    r = check_claim(sync, [row("unc", lse_c=0.8), row("sty", lse_c=0.7)], facts)
    assert r.verdict == "unverified"
    assert "no row with lip_expert=none" in r.reason and "lip_expert: null" in r.reason
    assert "unconditional 0.8 > style 0.7" in r.this_bench
    # the metric n/a in this bench, with why
    r = check_claim(lmd, [row("unc", lmd_face="n/a"), row("sty", lmd_face="n/a")], facts,
                    {"lmd_face": "not measured by this bench: add lmd to its metrics"})
    assert r.verdict == "unverified"
    assert r.reason.startswith("lmd_face is n/a for unc, sty (not measured by this bench: add lmd to its metrics)")
    # a row that was skipped (no clips scored) says so
    r = check_claim(sync, [row("unc", lse_c=0.8), row("sty", clips=0, status="skipped: no checkpoint", lse_c="n/a")],
                    facts)
    assert r.verdict == "unverified" and "sty not scored (skipped: no checkpoint)" in r.reason
    # fewer than 2 rows that differ only in guidance_scale
    gfacts = {"g1": {**DT, "lip_expert": "style"}, "g2": {**DT, "lip_expert": "none", "guidance_scale": 2.0}}
    r = check_claim(guidance, [row("g1", emotion_acc=0.5, emotion_acc_gt_frames=0.9),
                               row("g2", emotion_acc=0.7, emotion_acc_gt_frames=0.9)], gfacts)
    assert r.verdict == "unverified" and "fewer than 2 rows differing only in guidance_scale" in r.reason
    # the emotion column's ground-truth-frames bound near chance: emotion claims cannot be checked at all
    gfacts = {f"g{s}": {**DT, "lip_expert": "style", "guidance_scale": float(s)} for s in (1, 2, 3)}
    rising = [row(f"g{s}", emotion_acc=a, emotion_acc_gt_frames=0.9) for s, a in ((1, 0.3), (2, 0.5), (3, 0.6))]
    assert check_claim(guidance, rising, gfacts).verdict == "✓"
    near = [{**r, "emotion_acc_gt_frames": 0.2} for r in rising]
    r = check_claim(guidance, near, gfacts)
    assert r.verdict == "unverified" and "emotion_acc_gt_frames" in r.reason and "near chance" in r.reason
    falling = [row(f"g{s}", emotion_acc=a, emotion_acc_gt_frames=0.9) for s, a in ((1, 0.5), (2, 0.4), (3, 0.6))]
    r = check_claim(guidance, falling, gfacts)
    assert r.verdict == "✗" and "falls from 0.5 at guidance_scale=1 to 0.4 at 2" in r.reason
    # named rows across kinds: DreamTalk with another identity's style clip vs DreamHead without its emotion label
    xfacts = {"dt": {**DT, "style_source": "other_identity_same_emotion", "lip_expert": "style"},
              "dh": {"kind": "dreamhead", "protocol": "dubbing", "emotion_label": False},
              "dh_label": {"kind": "dreamhead", "protocol": "dubbing", "emotion_label": True}}
    xrows = [row("dt", emotion_acc=0.6, emotion_acc_gt_frames=0.9), row("dh", emotion_acc=0.3, emotion_acc_gt_frames=0.9),
             row("dh_label", emotion_acc=0.9, emotion_acc_gt_frames=0.9)]
    r = check_claim(cross, xrows, xfacts)
    assert r.verdict == "✓" and "dreamtalk_other_clip 0.6 > dreamhead_no_label 0.3" in r.this_bench
    r = check_claim(cross, xrows[:1], {"dt": xfacts["dt"]})
    assert r.verdict == "unverified" and "emotion_label: false" in r.reason
    # the rendered section: statement | this bench | verdict, one line per claim
    lines = render_orderings(check_orderings([dreamtalk], xrows, xfacts))
    assert lines[0] == "## Orderings check" and "| paper statement | this bench | verdict |" in lines
    assert len([x for x in lines if x.startswith("| DreamTalk")]) == len(dreamtalk.claims)


# ---------------------------------------------------------------------------------------------------------------------
# By split


def test_by_split_means_of_the_per_clip_rows():
    per_clip = [
        {"method": "a", "split": "test", "status": "ok", "ssim": 0.8, "lse_c": 0.5, "sync_offset": -2, "emotion_acc": 1},
        {"method": "a", "split": "test", "status": "ok", "ssim": 0.6, "lse_c": 0.7, "sync_offset": 4,
         "emotion_acc": "n/a"},
        {"method": "a", "split": "test", "status": "error: boom", "ssim": "", "lse_c": "", "sync_offset": ""},
        {"method": "a", "split": "test_seen", "status": "ok", "ssim": 0.9, "lse_c": 0.9, "sync_offset": 0,
         "emotion_acc": 0},
        {"method": "b", "split": "test_seen", "status": "ok", "ssim": 0.5, "lse_c": "n/a", "sync_offset": "",
         "emotion_acc": 1},
    ]
    table = [{"method": "a", "label": "A"}, {"method": "b", "label": "B"}]
    splits = {"test": "unseen identities (1, none in train)", "test_seen": "seen identities (3, all in train)"}
    scorer = SimpleNamespace(available=["ssim", "sync", "emotion", "fid"])
    rows = by_split_rows(per_clip, table, splits, scorer)
    got = {(r["method"], r["split"]): r for r in rows}
    assert list(got) == [("a", "test"), ("a", "test_seen"), ("b", "test_seen")]
    a = got[("a", "test")]
    assert a["clips"] == 2 and a["clips_expected"] == 3 and a["label"] == "A"
    assert a["ssim"] == pytest.approx(0.7) and a["lse_c"] == pytest.approx(0.6)
    assert a["sync_abs_offset"] == pytest.approx(3.0)  # mean |offset|
    assert a["emotion_acc"] == 1.0  # the unlabelled clip is left out
    assert got[("b", "test_seen")]["lse_c"] == "n/a"
    assert a["psnr"] == "" and "fid" not in BY_SPLIT_COLUMNS  # not measured; FID is not per clip
    md = "\n".join(render_by_split(rows, splits))
    assert "## By split" in md and "| A | test (unseen identities) | 2/3 |" in md
    assert "FID is not a per-clip number" in md and "PSNR ↑" not in md and "\\|offset\\| ↓" in md


def test_splits_are_named_by_what_they_are(tiny_synth):
    assert describe_splits(tiny_synth, ["test", "test_seen"], "train") == {
        "test": "unseen identities (1, none in train)", "test_seen": "seen identities (3, all in train)"}
    assert describe_splits(tiny_synth, ["test"], "no_such_split") == {"test": "test"}


# ---------------------------------------------------------------------------------------------------------------------
# End to end


class _FakeDreamTalk:
    """A stand-in DreamTalk row (not registered: the real kind lives in baselines/dreamtalk): its kind and facts."""

    kind = "dreamtalk"

    def __init__(self, *args, lip_expert: str, **kw) -> None:
        super().__init__(*args, **kw)
        self.lip_expert = lip_expert

    def facts(self):
        return {"kind": "dreamtalk", "lip_expert": self.lip_expert, "guidance_scale": 1.0, "style_source": "same_clip"}


class _DTGroundTruth(_FakeDreamTalk, GroundTruthMethod):
    pass


class _DTStatic(_FakeDreamTalk, StaticReferenceMethod):
    pass


def test_run_bench_writes_the_new_sections(tiny_synth, tmp_path):
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim", "lmd", "sync"], max_clips=1, methods={},
                              data={"root": str(tiny_synth), "test_splits": ["test", "test_seen"]}))
    ctx = bench_context(cfg)
    methods = {"ground_truth": GroundTruthMethod("ground_truth", MethodConfig(kind="ground_truth"), ctx),
               "dt_unc": _DTGroundTruth("dt_unc", MethodConfig(kind="dreamtalk", label="DreamTalk† unc"), ctx,
                                        lip_expert="unconditional"),
               "dt_style": _DTStatic("dt_style", MethodConfig(kind="dreamtalk", label="DreamTalk† style"), ctx,
                                     lip_expert="style")}
    result = run_bench(cfg, backends=backends(), methods=methods)
    out = result.out_dir
    md = (out / "table.md").read_text()
    ranked, _, after = md.partition("\n## ")
    # the ranked table: this bench's three rows and nothing of the paper
    assert len([x for x in ranked.splitlines() if x.startswith("| ") and "---" not in x]) == 1 + 3
    for text in ("Table I", "2312.09767", "As reported", "Sync_conf"):
        assert text not in ranked, text
    sections = [x for x in md.splitlines() if x.startswith("## ")]
    assert sections == ["## By split", f"## As reported ({NOT_COMPARABLE})", "## Orderings check"]
    assert "| Table IV | lip expert: none | MEAD |  | 1.90 |  | 2.63 |  |" in md
    assert "test (unseen identities)" in md and "test_seen (seen identities)" in md
    # the orderings: lip_expert=none has no row (unverified, with the entry that would add it); emotion not measured
    by_id = {r.id: r for r in result.orderings}
    assert by_id["lip_expert_sync"].verdict == "unverified" and "lip_expert=none" in by_id["lip_expert_sync"].reason
    assert "style" in by_id["lip_expert_sync"].this_bench and "unconditional" in by_id["lip_expert_sync"].this_bench
    assert by_id["guidance_emotion"].reason == ("emotion_acc is n/a for DreamTalk† unc (dt_unc), DreamTalk† style "
                                                "(dt_style) (not measured by this bench: add emotion to its metrics)")
    # table.csv: this bench's rows only, its columns only
    header, rows = read_csv(out / "table.csv")
    assert header == list(TABLE_COLUMNS) and [r["method"] for r in rows] == list(methods)
    # results.json: facts per method, the paper's values with provenance, the orderings, the rows by split
    res = json.loads((out / "results.json").read_text())
    assert res["methods"]["dt_unc"]["facts"] == methods["dt_unc"].facts()
    assert res["methods"]["ground_truth"]["facts"] == {"kind": "ground_truth"}
    values = res["reported"]["dreamtalk"]["values"]
    assert all(v["arxiv"] == "2312.09767" and v["table"] and v["row"] and v["column"] and v["dataset"] for v in values)
    assert [o["id"] for o in res["orderings"]] == [c.id for c in next(r for r in load_references() if r.key == "dreamtalk").claims]
    assert {(r["method"], r["split"]) for r in res["by_split"]["rows"]} == {
        (m, s) for m in methods for s in ("test", "test_seen")}
    header, split_rows = read_csv(out / "by_split.csv")
    assert header == list(BY_SPLIT_COLUMNS) and len(split_rows) == 6
    assert {r["split_is"] for r in split_rows} == {"unseen identities (1, none in train)",
                                                   "seen identities (3, all in train)"}
