"""The main job on the embedded data (`make demo`): SynthTalk -> stage 1 -> stage 2 -> talking-head videos.

    python -m dreamhead_lit.demo [--ref PORTRAIT_OR_VIDEO] [--audio SPEECH]

Each step is skipped when its output is complete and resumed when it was interrupted, so running it again costs
seconds. Outputs: data/synthtalk/preview.png, runs/stage{1,2}/demo/ (checkpoints, TensorBoard, eval/),
outputs/demo/*.mp4: a held-out SynthTalk identity speaking, and a real portrait speaking when one is given with
--ref or found in ../shared/data/real/ (a SynthTalk-trained model makes a poor job of a real face: the point is
that the whole path runs and gives a valid video), and last the benchmark table of the demo models against ground
truth, the static reference frame, stage 2 on true landmarks and the re-implemented baselines (DreamTalk†, DAE-Talker† and
its reconstruction bound; benchmarks/results/synthtalk/demo/, `make bench`).
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
    for col, name in (("ssim_mouth", "mouth SSIM"), ("lse_c", "LSE-C")):  # issue 17's bar for the distilled model
        teacher, student = value("dreamhead_teacher_steps", col), value("dreamhead_distilled", col)
        if teacher == teacher and student == student:  # both rows ran
            ok = student >= 0.98 * teacher
            lines.append(f"{'ok ' if ok else 'NOT'} distilled (2 steps) {student:.3f} within 2 % of the 20-step "
                         f"teacher {teacher:.3f} on {name}")
    return lines


def _train(name: str, overrides: list[str] = ()) -> Path:
    """The registered model ``name`` at demo size, trained unless its run is complete (resumed when interrupted)."""
    from . import registry
    from .config import load_config
    from .training import fit_if_needed

    spec = registry.get(name)
    return fit_if_needed(name, load_config(spec.config_file("demo"), list(overrides), schema=spec.schema_class()))


def _synthtalk() -> Path:
    """SynthTalk at demo size (complete clips are kept) and its preview image."""
    from omegaconf import OmegaConf

    from .config import load_config
    from .data.preview import write_preview
    from .data.synth import SynthConfig, format_summary, generate_dataset

    cfg = SynthConfig(**OmegaConf.to_container(load_config("synth/demo.yaml", schema=SynthConfig)))
    print(format_summary(generate_dataset(cfg)))
    root = resolve_path(cfg.out)
    print(f"preview: {write_preview(root)}")
    return root


def _talking_heads(root: Path, out: Path, ref: str | None, audio: str | None) -> None:
    """A held-out SynthTalk identity speaking another of its clips' audio, and a real (or the user's) portrait."""
    from .data.clip import read_index
    from .pipeline import generate
    from .runs import latest_checkpoint

    stages = {"stage1": latest_checkpoint("stage1", name="demo"), "stage2": latest_checkpoint("stage2", name="demo")}
    test = [r for r in read_index(root) if r.split == "test"]
    speaker, speech = test[0], next((r for r in test[1:] if r.identity == test[0].identity), test[0])
    jobs = [(root / "clips" / speech.id / "audio.wav", root / "clips" / speaker.id, out / f"synthtalk_{speaker.identity}.mp4")]
    real = resolve_path(REAL_DATA)
    if ref:
        speech_file = audio or next(iter(sorted((real / "audio").glob("*.wav"))), jobs[0][0])
        jobs.append((Path(speech_file), resolve_path(ref), out / f"user_{Path(ref).stem}.mp4"))
    elif (real / "images").is_dir() and (real / "audio").is_dir():
        portrait = sorted((real / "images").glob("*.png"))[0]
        speech_file = Path(audio) if audio else sorted((real / "audio").glob("*.wav"))[0]
        jobs.append((speech_file, portrait, out / f"real_{portrait.stem}.mp4"))
    out.mkdir(parents=True, exist_ok=True)
    for speech_file, reference, path in jobs:  # the demo's own folder: each run replaces its videos
        print(f"wrote {generate(audio=speech_file, ref=reference, out=path, **stages)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--ref", help="a portrait image or talking video of your own to animate")
    parser.add_argument("--audio", help="speech for --ref (default: a real speech file, else SynthTalk audio)")
    parser.add_argument("--out", default="outputs/demo")
    args = parser.parse_args(argv)
    from . import bench
    from .checkpoints import CheckpointError
    from .data.audio import AudioError
    from .data.clip import ClipError
    from .evaluation import evaluate_stage1, evaluate_stage2
    from .lit.guards import NonFiniteError
    from .pipeline import GenerationError
    from .training import fit_method
    from .runs import latest_checkpoint
    from .video import VideoError

    try:
        t = _step("1/7 SynthTalk (demo size)")
        root = _synthtalk()
        print(f"({time.perf_counter() - t:.0f} s)")
        for stage, number in (("stage1", 2), ("stage2", 4)):
            t = _step(f"{number}/7 train {stage} (demo size; skipped when runs/{stage}/demo is complete)")
            _train(stage, ["name=demo"])
            print(f"({time.perf_counter() - t:.0f} s)")
            t = _step(f"{number + 1}/7 {stage} on the identity-disjoint test split")
            ckpt = latest_checkpoint(stage, name="demo")
            if stage == "stage1":
                evaluate_stage1(ckpt, split="test", overrides=[], videos=1, seed=0, out_dir=None)
            else:  # scored on 8 frames of each test clip (192 frames): enough for the comparison, minutes on a CPU
                evaluate_stage2(ckpt, split="test", overrides=["data.frames_per_clip=8"], seed=0, out_dir=None)
            print(f"({time.perf_counter() - t:.0f} s)")
        t = _step("6/7 talking heads")
        _talking_heads(root, resolve_path(args.out), args.ref, args.audio)
        print(f"({time.perf_counter() - t:.0f} s)")
        t = _step("7/7 benchmark table (the dataset's own landmarker, sync expert and emotion classifier, stage 2 "
                  "distilled for real time, and the DreamTalk†, DAE-Talker† and StyleTalker† baselines, are trained "
                  "first, once)")
        for scorer in ("landmarker", "syncnet", "emotion"):  # dlib and official SyncNet cannot score rendered faces
            _train(scorer)
        _train("stage2_distilled", ["name=demo", "teacher.run=demo"])  # the bench's "DreamHead (distilled)" row
        for baseline in ("dreamtalk", "daetalker", "styletalker"):
            fit_method(baseline, "demo", ["name=demo"])  # every part in order, each skipped when complete
        result = bench.run_bench(bench.load_bench_config("bench/demo.yaml"))
    except (AudioError, bench.BenchError, CheckpointError, ClipError, ConfigError, FileNotFoundError, GenerationError,
            VideoError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(sanity_checks({row["method"]: row for row in result.table})))
    print(f"({time.perf_counter() - t:.0f} s)\n\ndemo outputs: {resolve_path(args.out)}  |  TensorBoard: "
          "tensorboard --logdir runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
