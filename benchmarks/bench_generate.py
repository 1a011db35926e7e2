"""End-to-end generation speed: a portrait and a minute of speech through ``pipeline.generate``, timed per part.

    python benchmarks/bench_generate.py [--stage1 CKPT] [--stage2 CKPT] [--distilled] [--steps N] [--seconds 60]
                                        [--device cpu|cuda] [--dtype fp32|bf16] [--compile] [--threads N]
                                        [--json OUT]

Runs the real code path (``pipeline.generate`` fills its ``timings`` dict) and prints: frames/s overall and the ratio
to real time (25 frames/s), seconds per part (reading the audio, the reference's face detection and landmarks, audio
features, stage 1, stage 2, H.264 encoding as frames arrive, flush + AAC + mp4 muxing), the time from the start of
stage 2 to the first frame handed to the encoder, the stage-2 UNet's achieved GFLOP/s (its FLOPs per pass counted
with ``torch.utils.flop_counter.FlopCounterMode``, times the passes made, over the stage-2 seconds) against a large
matmul's GFLOP/s measured in the same process, and peak memory (resident set on CPU, also
``torch.cuda.max_memory_allocated`` on a GPU). It never asserts a speed.

Inputs: speech from ``$DREAMHEAD_REAL_DIR/audio`` (default ``../shared/data/real`` beside the project) concatenated
and repeated to ``--seconds``, the first portrait from its ``images/``; without them, SynthTalk audio of the
stage-1 run's dataset concatenated the same way and the first frame of a SynthTalk clip. ``--steps`` is passed to
``generate`` and so applies to both stages (as ``generate --steps`` does), ``--stage2-steps`` to stage 2 alone; by
default each uses its own.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_stage2 import PeakRSS  # same folder: the scripts run as `python benchmarks/<name>.py`

from dreamhead_lit import pipeline
from dreamhead_lit.config import resolve_path
from dreamhead_lit.data.audio import load_audio, save_wav
from dreamhead_lit.data.clip import SAMPLES_PER_FRAME

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = Path(os.environ.get("DREAMHEAD_REAL_DIR", ROOT.parent / "shared" / "data" / "real"))
DISTILLED = "runs/stage2_distilled/demo/checkpoints/last.ckpt"
PARTS = ("audio", "reference", "audio_features", "stage1", "stage2", "encoding", "muxing")
FPS = 25


def speech(seconds: float, synth_root: Path) -> tuple[np.ndarray, str]:
    """``seconds`` of 16 kHz speech: the real clips when present, else SynthTalk's, concatenated and repeated."""
    files = sorted((REAL_DIR / "audio").glob("*.wav")) if (REAL_DIR / "audio").is_dir() else []
    source = f"real speech ({len(files)} files in {REAL_DIR / 'audio'})"
    if not files:
        files = sorted((synth_root / "clips").glob("*/audio.wav"))[:40]
        source = f"SynthTalk audio ({len(files)} clips of {synth_root})"
    if not files:
        sys.exit(f"error: no speech found: neither {REAL_DIR / 'audio'} nor SynthTalk clips under {synth_root} "
                 "(make data)")
    pieces = [load_audio(f) for f in files]
    joined = np.concatenate(pieces)
    need = int(seconds * 16000)
    return np.resize(joined, need).astype(np.float32), source  # repeated when the files are shorter


def portrait(synth_root: Path, size: int, info: dict) -> tuple[object, str]:
    """The reference: a real portrait when present, else the first frame of a SynthTalk clip."""
    images = sorted((REAL_DIR / "images").glob("*.png")) if (REAL_DIR / "images").is_dir() else []
    if images:
        return images[0], f"portrait {images[0].name}"
    clips = sorted(p for p in (synth_root / "clips").glob("*") if (p / "meta.json").is_file())
    if not clips:
        sys.exit(f"error: no portrait found: neither {REAL_DIR / 'images'} nor SynthTalk clips under {synth_root}")
    return pipeline.reference_from_clip(clips[0], max_frames=1), f"first frame of SynthTalk clip {clips[0].name}"


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """GFLOP/s of a large square matmul in ``dtype``: the roof the UNet's convolutions are compared with."""
    n = 4096 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best / 1e9


def unet_flops_per_pass(l2i, reference, size: int) -> float:
    """FLOPs of one UNet pass for one frame (counted on a real pass: one step, guidance off)."""
    rast = pipeline._rasterizer(l2i.data_info, size)
    lm = rast(reference.landmarks[:1])  # (1, L, H, W)
    ref = torch.from_numpy(np.array(reference.frames[:1])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    kw = {}
    if l2i.net.mode == "dubbing":
        kw = {"masked": torch.zeros(1, 3, size, size), "mask": torch.ones(1, 1, size, size)}
    with FlopCounterMode(display=False) as counter:
        l2i.generate_frames(lm, ref=ref[0], ref_landmarks=lm[0], steps=1, guidance_scale=1.0, batch_size=1, **kw)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage1", default="runs/stage1/demo/checkpoints/last.ckpt")
    parser.add_argument("--stage2", default="runs/stage2/demo/checkpoints/last.ckpt")
    parser.add_argument("--distilled", action="store_true", help=f"stage 2 from {DISTILLED} when present")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps for both stages (default: each own)")
    parser.add_argument("--stage2-steps", type=int, default=None, help="stage 2's alone (default: --steps)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the stage-2 UNet's forward")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=16, help="stage-2 frames per batch")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU")
    stage2 = resolve_path(args.stage2)
    if args.distilled:
        distilled = resolve_path(DISTILLED)
        if distilled.is_file():
            stage2 = distilled
        else:
            print(f"note: no distilled stage 2 at {distilled} (make distill-stage2); using {stage2}", file=sys.stderr)
    stage1 = resolve_path(args.stage1)
    try:
        a2l = pipeline.load_checked(stage1, "stage1").to(args.device)
        l2i = pipeline.load_checked(stage2, "stage2").to(args.device)
    except pipeline.GenerationError as err:
        sys.exit(f"error: {err} (train the demo first: make demo)")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.compile:
        l2i.net.forward = torch.compile(l2i.net.forward)  # the module stays: EMA swaps its weights by name
    size = int(l2i.data_info["resolution"])
    synth_root = resolve_path(a2l.data_info.get("root") or "data/synthtalk")  # the dataset stage 1 was trained on
    samples, audio_source = speech(args.seconds, synth_root)
    ref, ref_source = portrait(synth_root, size, a2l.data_info)
    reference = ref if isinstance(ref, pipeline.Reference) else pipeline.load_reference(
        ref, size=size, info=a2l.data_info, num_frames=1)
    reference = pipeline.reference_at_size(reference, size)
    autocast = (torch.autocast(args.device, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    with autocast:
        flops = unet_flops_per_pass(l2i, reference, size)
        peak = matmul_peak(args.device, dtype)
    steps2 = args.stage2_steps or args.steps or l2i.diffusion_cfg.sample_steps
    guided = l2i.diffusion_cfg.guidance_scale != 1.0
    passes = steps2 * (2 if guided else 1)  # classifier-free guidance: two passes a step
    num_frames = int(np.ceil(len(samples) / SAMPLES_PER_FRAME))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        save_wav(wav, samples)  # through the file path, as a user's `generate` reads it
        timings: dict[str, float] = {}
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem, autocast:
            pipeline.generate(audio=wav, ref=ref, out=Path(tmp) / "out.mp4", stage1=a2l, stage2=l2i,
                              steps=args.steps, stage2_steps=args.stage2_steps, batch_size=args.batch_size,
                              progress=False, timings=timings)
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    total = timings["total"]
    achieved = flops * passes * num_frames / timings["stage2"] / 1e9
    fig = {
        "frames": num_frames, "seconds_of_audio": len(samples) / 16000, "frames_per_s": num_frames / total,
        "real_time_ratio": num_frames / total / FPS, "seconds": {p: timings.get(p, 0.0) for p in PARTS},
        "total_s": total, "first_frame_s": timings.get("first_frame"),
        "unet_gflop_per_pass_per_frame": flops / 1e9, "unet_passes_per_frame": passes,
        "unet_gflop_per_s": achieved, "matmul_peak_gflop_per_s": peak, "unet_share_of_peak": achieved / peak,
        "peak_rss_mib": mem.peak, "cuda_max_allocated_mib": cuda_peak,
        "stage1": str(stage1), "stage2": str(stage2), "stage1_steps": args.steps or a2l.gen_cfg.steps
        or a2l.diffusion_cfg.sample_steps, "stage1_window_batch": a2l.gen_cfg.window_batch,
        "stage2_steps": steps2, "stage2_guidance": l2i.diffusion_cfg.guidance_scale, "device": args.device,
        "dtype": args.dtype, "compile": args.compile, "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "audio": audio_source, "reference": ref_source,
    }
    print(f"generate: {ref_source}, {fig['seconds_of_audio']:.0f} s of {audio_source}; {args.device} {args.dtype}"
          f"{' compiled' if args.compile else ''}, {fig['threads']} threads; stage 1 {fig['stage1_steps']} steps "
          f"(window batch {fig['stage1_window_batch']}), stage 2 {steps2} steps x {passes // steps2} passes "
          f"({stage2})")
    width = 16
    for part in PARTS:
        secs = fig["seconds"][part]
        print(f"  {part:<{width}} {secs:8.3f} s  {100 * secs / total:5.1f} %")
    print(f"  {'total':<{width}} {total:8.2f} s  {num_frames} frames: {fig['frames_per_s']:.1f} frames/s, "
          f"{fig['real_time_ratio']:.2f}x real time ({FPS} frames/s)")
    first = fig["first_frame_s"]
    print(f"  first frame written {first:.2f} s after stage 2 starts" if first is not None else "  no frame written")
    print(f"  UNet: {flops / 1e9:.2f} GFLOP per pass per frame, {passes} passes per frame, {achieved:.1f} GFLOP/s "
          f"achieved vs {peak:.1f} GFLOP/s matmul peak ({100 * achieved / peak:.0f} %)")
    mem_line = f"  peak memory: {mem.peak:.0f} MiB resident"
    if cuda_peak is not None:
        mem_line += f", {cuda_peak:.0f} MiB CUDA max allocated"
    print(mem_line)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=2))
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
