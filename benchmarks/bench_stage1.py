"""Stage-1 speed: seconds to generate landmarks for 60 s of audio per sampler and step count, and training steps/s.

    python benchmarks/bench_stage1.py [--seconds 60] [--size demo] [--device cpu]
    python benchmarks/bench_stage1.py --quality runs/stage1/demo/checkpoints/last.ckpt [--plans 20:1 5:16] [--seeds 6]

Uses the demo-size architecture from experiments/stage1/<size>.yaml (a trained checkpoint is not needed for speed:
the network's cost does not depend on its weights). Prints one line per measurement; ``generate`` rows include the
fast path (5 steps, 16 lanes: ``generation.steps`` / ``generation.window_batch``).

``--quality CKPT``: what the long-audio plans cost in quality. Each identity's test clips are joined into one long
clip (audio and true landmarks) and generated from the audio alone with ``A2LDiffusion.generate`` at each plan
``steps:window_batch``; M-LMD (pixels, 68-point mouth) and jitter over every frame, mean over ``--seeds`` seeds,
with the change against the first plan. (``python -m dreamhead_lit.evaluate stage1 diffusion.sample_steps=N`` gives
the window-level figures, which do not involve the lanes.)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dreamhead_lit.config import load_config, resolve_path, to_container
from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit.lit.a2l import A2LDiffusion, Stage1Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--quality", metavar="CKPT", help="whole-clip M-LMD / jitter of the plans on CKPT's test split")
    parser.add_argument("--plans", nargs="+", default=["20:1", "5:16"], help="steps:window_batch, first = reference")
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    if args.quality:
        quality(resolve_path(args.quality), args.plans, args.seeds)
        return
    cfg = load_config(f"stage1/{args.size}.yaml", schema=Stage1Config)
    root = resolve_path(cfg.data.root)
    if not (root / "index.jsonl").is_file():
        from dreamhead_lit.data.synth import SynthConfig, generate_dataset

        generate_dataset(SynthConfig(out=str(root)))
    dm = TalkingHeadDataModule(stage="a2l", **to_container(cfg.data))
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(0)
    module = A2LDiffusion.from_datamodule(dm, net=to_container(cfg.model), loss=to_container(cfg.loss),
                                          diffusion=to_container(cfg.diffusion), optim=to_container(cfg.optim))
    module.motion_std.fill_(0.05)
    module.to(args.device).eval()
    params = sum(p.numel() for p in module.net.parameters())
    print(f"stage 1 ({args.size}): {params / 1e6:.2f} M parameters, window {module.window}, "
          f"{module.num_points} landmarks, device {args.device}, torch threads {torch.get_num_threads()}")
    audio = np.random.default_rng(0).standard_normal(int(args.seconds * 16000)).astype(np.float32) * 0.1
    ref = np.zeros((module.num_points, 2), np.float32)
    for sampler, steps, lanes in (("ddim", 10, 1), ("ddim", 25, 1), ("dpmpp_2m", 10, 1), ("dpmpp_2m", 20, 1),
                                  ("ddpm", 100, 1), ("dpmpp_2m", 5, 1), ("dpmpp_2m", 5, 16)):
        start = time.perf_counter()
        module.generate(audio, ref_landmarks=ref, sampler=sampler, steps=steps, window_batch=lanes)
        secs = time.perf_counter() - start
        print(f"  generate {args.seconds:.0f} s of audio  {sampler:<9} {steps:>4} steps  {lanes:>2} lanes  "
              f"{secs:7.2f} s  ({args.seconds / secs:6.1f}x real time)")
    module.train()
    opt = torch.optim.AdamW(module.net.parameters(), lr=1e-4)
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(3)]
    for i in range(args.train_steps + 3):
        if i == 3:
            start = time.perf_counter()
        batch = {k: v.to(args.device) for k, v in batches[i % 3].items()}
        loss = module.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rate = args.train_steps / (time.perf_counter() - start)
    print(f"  training: {rate:.2f} steps/s at batch {cfg.data.batch_size} (model only; data loading excluded)")


def quality(ckpt, plans: list[str], seeds: int) -> None:
    from dreamhead_lit.evaluation import load_for_evaluation
    from dreamhead_lit.lit.a2l import to_pixels
    from dreamhead_lit.metrics.lmd import landmark_distance, landmark_jitter

    module, dm = load_for_evaluation(A2LDiffusion, ckpt, data_stage="a2l", split="test", overrides=[])
    module.eval()
    ds = dm._split("test")
    clips: dict[str, list] = {}
    for i, reader in enumerate(ds.readers):  # one long clip per identity, referenced by another clip's first frame
        ref, _ = ds.canonical(ds.readers[ds._other_clip(i, None)], 0, 1)
        true, to_image = ds.canonical(reader, 0, reader.num_frames)
        clips.setdefault(reader.record.identity, []).append((reader.audio()[: reader.num_frames * 640], ref[0],
                                                               true, to_image))
    long = [(np.concatenate([c[0] for c in g]), g[0][1], np.concatenate([c[2] for c in g]),
             np.concatenate([c[3] for c in g])) for g in clips.values()]
    print(f"stage 1 whole-clip quality: {ckpt}, {len(long)} identities x {[len(c[2]) for c in long]} frames, "
          f"{seeds} seeds; M-LMD in pixels at {module.resolution} px (68-point mouth), jitter = mean acceleration")
    mouth, base = list(range(48, 68)), None
    for plan in plans:
        steps, lanes = (int(v) for v in plan.split(":"))
        lmd, jit = [], []
        for seed in range(seeds):
            total = [0.0, 0.0, 0]
            for audio, ref, true, to_image in long:
                pred = module.generate(audio, ref_landmarks=ref, num_frames=len(true), seed=seed, steps=steps,
                                       window_batch=lanes)
                to_img = torch.from_numpy(to_image)[None]
                pred_px = to_pixels(pred[None].float(), to_img)[..., module.index68, :]
                true_px = to_pixels(torch.from_numpy(true)[None], to_img)[..., module.index68, :]
                total[0] += float(landmark_distance(pred_px, true_px, mouth).sum()) * len(true)
                total[1] += float(landmark_jitter(pred_px).sum()) * len(true)
                total[2] += len(true)
            lmd.append(total[0] / total[2])
            jit.append(total[1] / total[2])
        row = (float(np.mean(lmd)), float(np.std(lmd, ddof=1)) if seeds > 1 else 0.0, float(np.mean(jit)))
        base = base or row
        print(f"  {steps:>3} steps {lanes:>2} lanes  M-LMD {row[0]:.4f} (sd over seeds {row[1]:.3f}, "
              f"{100 * (row[0] / base[0] - 1):+.1f} %)  jitter {row[2]:.4f} ({100 * (row[2] / base[2] - 1):+.1f} %)")


if __name__ == "__main__":
    main()
