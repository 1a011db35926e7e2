"""The bench run: every method on this rank's clips (scored, or read from the cache), the rows of all ranks merged into
one table, and its files written by rank 0."""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, resolve_path, save_resolved_config
from ..data.clip import read_dataset_info
from .cache import ResultCache, digest, load_features, load_row, save_features, save_row
from .clips import TestClip, select_clips
from .config import BenchError, MethodConfig, MethodUnavailable
from .methods import METHOD_KINDS, BenchContext, Method, build_method, motion_landmarks_file, sample_videos
from .claims import applicable, check_orderings, load_references
from .report import (BenchResult, by_split_rows, describe_splits, na_reasons, per_clip_row, render_markdown, table_row,
                     write_outputs)
from .scorer import Backends, Scorer, aligned
from .shard import barrier, check_each_once, distributed, gather, share

Skipped = dict[str, tuple[MethodConfig, str]]  # method -> (its config, why it cannot run here)


def run_bench(cfg: Any, *, backends: Backends | None = None, methods: dict[str, Method] | None = None) -> BenchResult:
    """Run the benchmark of ``cfg`` (a :class:`BenchConfig` tree); see the package docstring.

    ``methods`` replaces the config's methods by ready-made ones (tests inject cheap or counting methods);
    ``backends`` replaces resolved networks by labelled stand-ins. Under DDP every rank calls this with the same config.

    Raises:
        BenchError: under ``strict``, a metric or method that would be n/a; a clip lost or scored twice across ranks.
    """
    start = time.perf_counter()
    cfg = _as_config(cfg)
    rank, world, owns_group = distributed()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        result = _run(cfg, backends, methods, rank, world, start)
        if owns_group:  # rank 0 may still be writing the table: leave together (only on success: a failed rank exits)
            import torch.distributed as dist

            dist.barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _as_config(cfg: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return cfg
    return OmegaConf.structured(cfg)


def _device(setting: str) -> torch.device:
    if setting != "auto":
        return torch.device(setting)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def bench_context(cfg: Any) -> BenchContext:
    """What methods built outside the config (``run_bench(methods=...)``) need: dataset, runs folder, device."""
    cfg = _as_config(cfg)
    root = resolve_path(cfg.data.root)
    return BenchContext(root, cfg.runs_root, _device(cfg.device), read_dataset_info(root))


def _run(cfg: Any, backends: Backends | None, injected: dict[str, Method] | None, rank: int, world: int,
         start: float) -> BenchResult:
    torch.manual_seed(cfg.seed)
    ctx = bench_context(cfg)
    dataset = ctx.data_root.name
    out = resolve_path(cfg.out_root) / dataset / cfg.name
    clips = select_clips(ctx.data_root, list(cfg.data.test_splits), cfg.max_clips, cfg.max_frames,
                         identities=cfg.identities)
    splits = [s for s in cfg.data.test_splits if any(c.split == s for c in clips)]
    scorer = _scorer(cfg, ctx, backends)
    methods, skipped = _methods(cfg, ctx, injected)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out)
    barrier(world)

    scoring = _Scoring(cfg, scorer, methods, out)
    scoring.run(share(clips, rank, world), rank)
    rows, stats = _merge(scoring, clips, world)
    fid_values = _fid_values(scoring.fids)
    table = _table(methods, skipped, rows, fid_values, scorer, len(clips))
    notes = {name: m.describe() for name, m in methods.items()}
    facts = {name: m.facts() for name, m in methods.items()}
    facts.update({name: {"kind": mcfg.kind} for name, (mcfg, _) in skipped.items()})
    per_clip = [per_clip_row(r) for r in rows]
    split_names = describe_splits(ctx.data_root, splits, cfg.data.train_split)
    by_split = by_split_rows(per_clip, table, split_names, scorer) if len(splits) > 1 else []
    references = applicable(load_references(), facts)  # a paper's file when the table has a row of its kind
    orderings = check_orderings(references, table, facts, na_reasons(scorer))
    markdown = render_markdown(cfg, dataset, splits, clips, table, scorer, notes, skipped, fid_values, world,
                               by_split=by_split, split_names=split_names, reported=references, orderings=orderings)
    result = BenchResult(out, table, per_clip, stats, markdown, facts=facts, reported=references, orderings=orderings,
                         by_split=by_split, splits=split_names)
    if rank == 0:
        write_outputs(out, cfg, result, scorer, notes, fid_values, world, time.perf_counter() - start, clips)
        print(markdown)
        extra = ", by_split.csv" if by_split else ""
        print(f"\nwritten: {out}/{{table.md, table.csv, results.json, per_clip.csv{extra}}}")
    barrier(world)
    return result


def _scorer(cfg: Any, ctx: BenchContext, backends: Backends | None) -> Scorer:
    """The metrics of the run; under ``strict`` every one must be available."""
    scorer = Scorer(cfg, data_root=ctx.data_root, dataset_info=ctx.dataset_info, device=ctx.device, backends=backends)
    missing = scorer.missing()  # an inapplicable metric (emotion without labels) stays n/a under strict
    if cfg.strict and missing:
        raise BenchError("strict: metric(s) not available:\n" + "\n".join(f"[{m}] {r}" for m, r in missing.items()))
    return scorer


def _methods(cfg: Any, ctx: BenchContext, injected: dict[str, Method] | None) -> tuple[dict[str, Method], Skipped]:
    """The methods to run (the injected ones, else the config's enabled ones) and those that cannot run here, with
    why (under ``strict`` an error)."""
    if injected is not None:
        return dict(injected), {}
    if not cfg.methods:
        raise ConfigError("the bench config lists no methods (methods: {name: {kind: ...}})")
    methods: dict[str, Method] = {}
    skipped: Skipped = {}
    for name, mcfg in cfg.methods.items():
        if not mcfg.enabled:
            continue
        try:
            methods[name] = build_method(name, mcfg, ctx)
        except MethodUnavailable as err:
            if cfg.strict:
                raise BenchError(f"strict: method {name!r} cannot run: {err}") from err
            skipped[name] = (mcfg, str(err))
    return methods, skipped


class _Scoring:
    """This rank's share of the run: one entry per (method, clip) -- its row values, status and metric states --
    scored or read from the cache, counted in ``stats``, with each method's FID running sums in ``fids``."""

    def __init__(self, cfg: Any, scorer: Scorer, methods: dict[str, Method], out: Path) -> None:
        self.cfg = cfg
        self.scorer = scorer
        self.methods = methods
        self.out = out
        self.scorer_key = scorer.key()
        self.fids = {name: scorer.fid_metric() for name in methods}
        self.cache = ResultCache(out, scorer.fid_label)
        self.stats = {name: {"computed": 0, "cached": 0, "generated": 0, "errors": 0} for name in methods}
        self.rows: list[dict[str, Any]] = []

    def run(self, clips: list[TestClip], rank: int) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(clips) * len(self.methods), desc=f"bench {self.cfg.name}", unit="video",
                   disable=not self.cfg.progress or rank != 0)
        for clip in clips:
            real_feats: np.ndarray | None = None
            for name, method in self.methods.items():
                entry: dict[str, Any] = {"method": name, "split": clip.split, "clip": clip.id}
                try:
                    fake_feats = self._score_or_load(name, method, clip, entry)
                    fid = self.fids[name]
                    if fake_feats is not None and entry["status"] == "ok":
                        if real_feats is None:
                            real_feats = self._real_features(clip)
                        fid.add_features(torch.from_numpy(fake_feats), real=False)
                        fid.add_features(torch.from_numpy(real_feats[: len(fake_feats)]), real=True)
                except Exception as err:  # one clip's failure must not hang the other ranks: recorded, not cached
                    self.stats[name]["errors"] += 1
                    entry.update(status=f"error: {type(err).__name__}: {err}", states={})
                    if self.cfg.progress:
                        traceback.print_exc()
                self.rows.append(entry)
                bar.update(1)
            clip.release()
        bar.close()

    def _score_or_load(self, name: str, method: Method, clip: TestClip, entry: dict[str, Any]) -> np.ndarray | None:
        """Fill ``entry`` from the cache or by scoring the method's video of the clip, and cache it; returns the
        video's FID features (None without FID)."""
        from ..video import read_video

        cfg, stats, with_fid = self.cfg, self.stats[name], self.fids[name] is not None
        key = digest({"method": method.key(), "clip_key": method.clip_key(clip), "clip": clip.id,
                      **({"frames": clip.record.num_frames} if cfg.max_frames else {}),
                      "split": clip.split, "scorer": self.scorer_key})
        row_file, fid_file = self.cache.row_file(name, clip.id), self.cache.fid_file(name, clip.id)
        cached = load_row(row_file, key)
        fake_feats = None
        if cached is not None and with_fid:
            fake_feats = load_features(fid_file, cached["row"].get("frames", -1))
            if fake_feats is None:
                cached = None  # the FID features are gone: rescore the clip
        if cached is not None:
            entry.update(cached["row"], status=cached["status"], states=cached["states"])
            stats["cached"] += 1
            return fake_feats
        video, made = method.video(clip, self.out / "videos" / name)
        stats["generated"] += int(made)
        if video is None:
            entry.update(status=f"missing: no video for this clip ({method.missing_reason(clip)})", states={})
        else:
            data = read_video(video, with_audio=cfg.sync.audio == "video", target_fps=clip.fps)
            track = data.audio if cfg.sync.audio == "video" else None
            motion = motion_landmarks_file(video)
            samples = ([read_video(v, with_audio=False, target_fps=clip.fps).frames for v in sample_videos(video)]
                       if "lmd" in self.scorer.available else [])  # Motion spread reads them with the landmarker
            row, states = self.scorer.score(data.frames, clip, audio=track,
                                            motion=np.load(motion) if motion.is_file() else None,
                                            samples=samples or None)
            entry.update(row, status="ok", states=states)
            if with_fid:
                fake_feats = self.scorer.fid_features(aligned(data.frames, clip))
                save_features(fid_file, fake_feats)
            stats["computed"] += 1
        save_row(row_file, key, entry)
        return fake_feats

    def _real_features(self, clip: TestClip) -> np.ndarray:
        path = self.cache.real_fid_file(clip.id)
        feats = load_features(path, clip.record.num_frames) if path.is_file() else None
        if feats is None:
            feats = self.scorer.fid_features(clip.frames)
            save_features(path, feats)
        return feats


def _merge(scoring: _Scoring, clips: list[TestClip], world: int) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """Every rank's entries, each (method, clip) exactly once, in table order (methods, then clips), and the counts
    summed over ranks."""
    methods = list(scoring.methods)
    gathered = gather({"rows": scoring.rows, "stats": scoring.stats}, world)
    rows = [r for g in gathered for r in g["rows"]]
    check_each_once(rows, methods, [c.id for c in clips], world)
    stats = {m: {k: sum(g["stats"][m][k] for g in gathered) for k in scoring.stats[m]} for m in methods}
    order = {c.id: i for i, c in enumerate(clips)}
    rows.sort(key=lambda r: (methods.index(r["method"]), order[r["clip"]]))
    return rows, stats


def _fid_values(fids: dict[str, Any]) -> dict[str, Any]:
    """Each method's FID report; collective on every rank: torchmetrics sums the running sums across processes."""
    values: dict[str, Any] = {}
    for name, fid in fids.items():
        if fid is None:
            continue
        try:
            values[name] = fid.report()
        except ValueError as err:
            values[name] = {"fid": float("nan"), "error": str(err)}
    return values


def _table(methods: dict[str, Method], skipped: Skipped, rows: list[dict[str, Any]], fid_values: dict[str, Any],
           scorer: Scorer, expected: int) -> list[dict[str, Any]]:
    """One table row per method (its scored clips' states merged by each metric's reduction), then the skipped ones."""
    table = []
    for name, method in methods.items():
        mine = [r for r in rows if r["method"] == name]
        ok = [r for r in mine if r["status"] == "ok"]
        values = scorer.aggregate([r["states"] for r in ok]) if ok else {}
        if name in fid_values:
            values["fid"] = fid_values[name].get("fid", float("nan"))
        bad = [r for r in mine if r["status"] != "ok"]
        status = "ok" if not bad else f"{len(bad)} clip(s) not scored: {bad[0]['clip']}: {bad[0]['status']}"
        table.append(table_row(name, method.label, method.kind, method.protocol, method.uses_source_video, len(ok),
                               expected, sum(r.get("frames", 0) for r in ok), values, scorer, status))
    for name, (mcfg, reason) in skipped.items():
        cls = METHOD_KINDS[mcfg.kind]
        table.append(table_row(name, mcfg.label or name, mcfg.kind, cls.protocol_of(mcfg), cls.source_video(mcfg), 0,
                               expected, 0, {}, scorer, f"skipped: {reason}"))
    return table
