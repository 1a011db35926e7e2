"""Talking-head video from speech and a face.

    python -m dreamhead_lit.generate --audio speech.wav --ref face.png --out out.mp4
    python -m dreamhead_lit.generate --audio speech.flac --ref talking.mp4 --out dubbed.mp4     # dubbing mode
    python -m dreamhead_lit.generate --audio speech.mp3 --ref data/synthtalk/clips/<id> --out out.mp4

Checkpoints default to last.ckpt of the most recent stage-1 and stage-2 runs under runs/; --stage1 / --stage2 pick
others. A stage-2 model trained with model.condition=audio (the landmark_hierarchy ablation) makes the frames from the
audio directly: no stage 1 is used, and --stage1 must be left out. Audio: any length, wav/flac/ogg/mp3 at any rate.
The mp4 (25 fps, the audio muxed) is written atomically: on any error nothing is left at --out.
"""
from __future__ import annotations

import argparse
import sys

from .config import resolve_path
from .data.audio import AudioError
from .data.clip import EMOTIONS
from .pipeline import GenerationError, generate, load_stage


def _stage1_for(stage2, stage2_path, given: str | None, runs_root: str):
    """The stage-1 checkpoint a stage-2 model needs: none for one conditioned on audio, else --stage1 or the latest."""
    from .train import latest_checkpoint

    if stage2.net.condition == "audio":
        if given:
            raise GenerationError(f"{stage2_path} is conditioned on audio (model.condition=audio): it makes the frames "
                                  "from the audio itself; leave --stage1 out")
        return None
    if given:
        return resolve_path(given)
    try:
        return latest_checkpoint("stage1", runs_root=runs_root)
    except FileNotFoundError as err:
        raise GenerationError(f"{stage2_path} is conditioned on landmarks and needs a stage-1 checkpoint: pass "
                              f"--stage1 ({err})") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--audio", required=True, help="speech file (wav/flac/ogg/mp3, any rate and length)")
    parser.add_argument("--ref", required=True, help="portrait image, talking video (dubbing) or processed clip folder")
    parser.add_argument("--out", required=True, help="output .mp4")
    parser.add_argument("--stage1", help="stage-1 checkpoint (default: latest runs/stage1/*/checkpoints/last.ckpt; "
                        "not used with a stage-2 model conditioned on audio)")
    parser.add_argument("--stage2", help="stage-2 checkpoint (default: latest runs/stage2/*/checkpoints/last.ckpt)")
    parser.add_argument("--runs-root", default="runs")
    parser.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp_2m"], help="default: each model's own")
    parser.add_argument("--steps", type=int, help="sampling steps (default: each model's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="frames generated at once")
    parser.add_argument("--emotion", choices=EMOTIONS, help="speaking emotion for a stage 1 trained with MEAD-style "
                                                            "labels (default: unknown)")
    args = parser.parse_args(argv)
    from .train import latest_checkpoint

    try:
        out = resolve_path(args.out)
        if out.suffix.lower() != ".mp4":
            raise GenerationError(f"--out must end in .mp4, got {args.out}")
        stage2_path = (resolve_path(args.stage2) if args.stage2
                       else latest_checkpoint("stage2", runs_root=args.runs_root))
        stage2 = load_stage(stage2_path, "stage2")  # its condition decides whether stage 1 is needed
        stage1 = _stage1_for(stage2, stage2_path, args.stage1, args.runs_root)
        path = generate(audio=resolve_path(args.audio), ref=resolve_path(args.ref), out=out, stage1=stage1,
                        stage2=stage2, sampler=args.sampler, steps=args.steps, seed=args.seed,
                        batch_size=args.batch_size, emotion=args.emotion)
    except (AudioError, GenerationError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
