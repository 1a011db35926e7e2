"""Stage-1 speed: seconds to generate landmarks for 60 s of audio per sampler and step count, and training steps/s.

    python benchmarks/bench_stage1.py [--seconds 60] [--size demo] [--device cpu]

Uses the demo-size architecture from experiments/stage1/<size>.yaml (a trained checkpoint is not needed for speed:
the network's cost does not depend on its weights). Prints one line per measurement.
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
    args = parser.parse_args()
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
    for sampler, steps in (("ddim", 10), ("ddim", 25), ("dpmpp_2m", 10), ("dpmpp_2m", 20), ("ddpm", 100)):
        start = time.perf_counter()
        module.generate(audio, ref_landmarks=ref, sampler=sampler, steps=steps)
        secs = time.perf_counter() - start
        print(f"  generate {args.seconds:.0f} s of audio  {sampler:<9} {steps:>4} steps  {secs:7.2f} s  "
              f"({args.seconds / secs:6.1f}x real time)")
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


if __name__ == "__main__":
    main()
