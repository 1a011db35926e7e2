"""Talking-head video from speech and a face.

    python -m dreamhead_lit.generate --audio speech.wav --ref face.png --out out.mp4
    python -m dreamhead_lit.generate --audio speech.flac --ref talking.mp4 --out dubbed.mp4     # dubbing mode
    python -m dreamhead_lit.generate --audio speech.mp3 --ref data/synthtalk/clips/<id> --out out.mp4
    python -m dreamhead_lit.generate --audio speech.wav --ref face.png --out out.mp4 --distilled        # real time

Checkpoints default to last.ckpt of the most recent stage-1 and stage-2 runs under runs/; --stage1 / --stage2 pick
others; --distilled takes the latest distilled stage 2 (make distill-stage2: 2 steps of one UNet pass instead of
20 guided steps of two, lit/distill.py), --distilled RUN a named one. A stage-2 model trained with model.condition=audio (the landmark_hierarchy ablation) makes the frames from the
audio directly: no stage 1 is used, and --stage1 must be left out. Audio: any length, wav/flac/ogg/mp3 at any rate.

Your files are safe: an existing --out is never overwritten without --overwrite, and --out may never be one of the
inputs. The mp4 (25 fps, the audio muxed) is written atomically: on any error or Ctrl-C nothing is left at --out (an
existing file there stays as it was). Checkpoints are loaded safely, as weights only, and refused when their weights
are not finite; a stage-2 model with a TorchScript latent codec (models/latent.py, model.vae_checkpoint) runs that
codec's code, so use such a model only if you trust the codec file.
"""
from __future__ import annotations

import argparse
import sys

from .config import resolve_path
from .data.audio import AudioError
from .data.clip import EMOTIONS, ClipError
from .pipeline import GenerationError, check_output, check_stage1_given, generate, load_checked, takes_stage1
from .video import VideoError


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (0 frames per batch or 0 sampling steps cannot make a video)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _stage1_for(stage2, stage2_path, given: str | None, runs_root: str):
    """The stage-1 checkpoint a stage-2 model needs: none for one conditioned on audio, else --stage1 or the latest."""
    from .runs import latest_checkpoint

    if not takes_stage1(stage2) or given:
        check_stage1_given(stage2, bool(given), str(stage2_path))
        return resolve_path(given) if given else None
    try:
        return latest_checkpoint("stage1", runs_root=runs_root)
    except FileNotFoundError as err:  # the rule holds, but no stage-1 run was found to follow it
        raise GenerationError(f"{stage2_path} needs a stage-1 checkpoint and none was found: pass --stage1 "
                              f"({err})") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.generate", description=__doc__.splitlines()[0],
                                     epilog="An existing --out is never overwritten without --overwrite. Checkpoints "
                                     "are loaded as weights only; a TorchScript latent codec (models/latent.py) is "
                                     "code and runs when the model loads: use it only if you trust the file.")
    parser.add_argument("--audio", required=True, help="speech file (wav/flac/ogg/mp3, any rate and length)")
    parser.add_argument("--ref", required=True, help="portrait image, talking video (dubbing) or processed clip folder")
    parser.add_argument("--out", required=True, help="output .mp4 (never one of the inputs)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (refused otherwise)")
    parser.add_argument("--stage1", help="stage-1 checkpoint (default: latest runs/stage1/*/checkpoints/last.ckpt; "
                        "not used with a stage-2 model conditioned on audio)")
    parser.add_argument("--stage2", help="stage-2 checkpoint (default: latest runs/stage2/*/checkpoints/last.ckpt)")
    parser.add_argument("--distilled", nargs="?", const="", metavar="RUN",
                        help="use a distilled stage 2 (make distill-stage2): the latest runs/stage2_distilled run, or "
                        "RUN; its own sampler and steps (ddim, 2) unless --sampler/--steps say otherwise")
    parser.add_argument("--runs-root", default="runs")
    parser.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp_2m"], help="default: each model's own")
    parser.add_argument("--steps", type=positive_int, help="sampling steps of both stages (default: each model's own)")
    parser.add_argument("--stage2-steps", type=positive_int, help="stage 2's steps alone (default: --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=16, help="frames generated at once")
    parser.add_argument("--emotion", choices=EMOTIONS, help="speaking emotion for a stage 1 trained with MEAD-style "
                                                            "labels (default: unknown)")
    args = parser.parse_args(argv)
    from .runs import latest_checkpoint

    out = resolve_path(args.out)
    try:
        if out.suffix.lower() != ".mp4":
            raise GenerationError(f"--out must end in .mp4, got {args.out}")
        audio, ref = resolve_path(args.audio), resolve_path(args.ref)
        if args.stage2 and args.distilled is not None:
            raise GenerationError("give --stage2 or --distilled, not both")
        if args.distilled is not None:
            from .lit.distill import MODEL_NAME as DISTILLED

            stage2_path = latest_checkpoint(DISTILLED, runs_root=args.runs_root, name=args.distilled or None)
        else:
            stage2_path = (resolve_path(args.stage2) if args.stage2
                           else latest_checkpoint("stage2", runs_root=args.runs_root))
        # before any work: a user's file is never lost to --out
        check_output(out, {"--audio": audio, "--ref": ref, "--stage1": args.stage1 and resolve_path(args.stage1),
                           "--stage2": stage2_path}, overwrite=args.overwrite)
        stage2 = load_checked(stage2_path, "stage2")  # its condition decides whether stage 1 is needed
        stage1 = _stage1_for(stage2, stage2_path, args.stage1, args.runs_root)
        path = generate(audio=audio, ref=ref, out=out, stage1=stage1, stage2=stage2, sampler=args.sampler,
                        steps=args.steps, stage2_steps=args.stage2_steps, seed=args.seed, batch_size=args.batch_size,
                        emotion=args.emotion)
    except (AudioError, ClipError, GenerationError, VideoError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the writer has already removed its temporary file
        kept = " (the existing file is unchanged)" if out.exists() else ""
        print(f"interrupted: nothing written to {out}{kept}", file=sys.stderr)
        return 130
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
