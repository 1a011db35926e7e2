"""The main job on the embedded data (`make demo`): SynthTalk -> stage 1 -> stage 2 -> talking-head videos.

    python -m dreamhead_lit.demo [--ref PORTRAIT_OR_VIDEO] [--audio SPEECH]

Each step is skipped when its output is complete and resumed when it was interrupted, so running it again costs
seconds. Outputs: data/synthtalk/preview.png, runs/stage{1,2}/demo/ (checkpoints, TensorBoard, eval/),
outputs/demo/*.mp4: a held-out SynthTalk identity speaking, and a real portrait speaking when one is given with
--ref or found in ../shared/data/real/ (a SynthTalk-trained model makes a poor job of a real face: the point is
that the whole path runs and gives a valid video), and last the benchmark table of the demo models against ground
truth, the static reference frame and stage 2 on true landmarks (benchmarks/results/synthtalk/demo/, `make bench`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import ConfigError, resolve_path

REAL_DATA = Path("../shared/data/real")


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def sanity_checks(rows: dict[str, dict]) -> list[str]:
    """The orderings a working demo shows on SynthTalk (ground truth >= DreamHead > static frame where speech shows),
    one line each with its verdict: a quick read of whether this machine's models learned what they should."""

    def value(method: str, col: str) -> float:
        try:
            return float(rows[method][col])
        except (KeyError, TypeError, ValueError):
            return float("nan")

    lines = []
    for col, name in (("ssim_mouth", "mouth SSIM"), ("lse_c", "sync confidence LSE-C")):
        gt, dh, static = (value(m, col) for m in ("ground_truth", "dreamhead", "static_reference"))
        ok = gt >= dh > static
        lines.append(f"{'ok ' if ok else 'NOT'} ground truth {gt:.3f} >= DreamHead {dh:.3f} > static frame {static:.3f} "
                     f"on {name}")
    dh, static = value("dreamhead", "lmd_mouth"), value("static_reference", "lmd_mouth")
    lines.append(f"{'ok ' if dh < static else 'NOT'} DreamHead M-LMD {dh:.3f} < static frame {static:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--ref", help="a portrait image or talking video of your own to animate")
    parser.add_argument("--audio", help="speech for --ref (default: a real speech file, else SynthTalk audio)")
    parser.add_argument("--out", default="outputs/demo")
    args = parser.parse_args(argv)
    from .data import synth
    from .data.clip import read_index
    from .data.preview import write_preview
    from . import bench, evaluate, evaluators, generate, train
    from .runs import latest_checkpoint

    t = _step("1/7 SynthTalk (demo size)")
    if synth.main(["--size", "demo"]) != 0:
        return 2
    root = resolve_path("data/synthtalk")
    print(f"preview: {write_preview(root)}  ({time.perf_counter() - t:.0f} s)")
    for stage, number in (("stage1", 2), ("stage2", 4)):
        t = _step(f"{number}/7 train {stage} (demo size; skipped when runs/{stage}/demo is complete)")
        if train.main([stage, "--size", "demo", "name=demo", "--if-needed"]) != 0:
            return 2
        print(f"({time.perf_counter() - t:.0f} s)")
        t = _step(f"{number + 1}/7 {stage} on the identity-disjoint test split")
        # stage 2 is scored on 8 frames of each test clip (192 frames): enough for the comparison, minutes on a CPU
        extra = ["--videos", "1"] if stage == "stage1" else ["data.frames_per_clip=8"]
        if evaluate.main([stage, "--run", "demo", "--split", "test", *extra]) != 0:
            return 2
        print(f"({time.perf_counter() - t:.0f} s)")
    t = _step("6/7 talking heads")
    out = resolve_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpts = ["--stage1", str(latest_checkpoint("stage1", name="demo")),
             "--stage2", str(latest_checkpoint("stage2", name="demo"))]
    test = [r for r in read_index(root) if r.split == "test"]
    speaker, speech = test[0], next((r for r in test[1:] if r.identity == test[0].identity), test[0])
    jobs = [(root / "clips" / speech.id / "audio.wav", root / "clips" / speaker.id, out / f"synthtalk_{speaker.identity}.mp4")]
    real = resolve_path(REAL_DATA)
    if args.ref:
        audio = args.audio or next(iter(sorted((real / "audio").glob("*.wav"))), jobs[0][0])
        jobs.append((Path(audio), resolve_path(args.ref), out / f"user_{Path(args.ref).stem}.mp4"))
    elif (real / "images").is_dir() and (real / "audio").is_dir():
        portrait = sorted((real / "images").glob("*.png"))[0]
        audio = Path(args.audio) if args.audio else sorted((real / "audio").glob("*.wav"))[0]
        jobs.append((audio, portrait, out / f"real_{portrait.stem}.mp4"))
    for audio, ref, path in jobs:
        if generate.main(["--audio", str(audio), "--ref", str(ref), "--out", str(path), *ckpts]) != 0:
            return 2
    print(f"({time.perf_counter() - t:.0f} s)")
    t = _step("7/7 benchmark table (the dataset's own landmarker and sync expert are trained first, once)")
    for kind in ("landmarker", "syncnet"):  # dlib and official SyncNet cannot score SynthTalk's rendered faces
        if evaluators.main([kind, "--if-needed"]) != 0:
            return 2
    try:
        result = bench.run_bench(bench.load_bench_config("bench/demo.yaml"))
    except (ConfigError, bench.BenchError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(sanity_checks({row["method"]: row for row in result.table})))
    print(f"({time.perf_counter() - t:.0f} s)\n\ndemo outputs: {out}  |  TensorBoard: tensorboard --logdir runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
