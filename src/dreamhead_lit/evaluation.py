"""Stage figures on a test split (the library behind ``python -m dreamhead_lit.evaluate``, the demo and the
ablation harness).

Stage 1: M-LMD / F-LMD (pixels at the dataset resolution, 68 dlib-ordered points, each frame's set centred) of
sampled windows against ground truth, the same for the "reference landmarks held still" baseline, and jitter (mean
acceleration magnitude) of prediction and ground truth; then, with ``--videos N``, whole held-out clips generated
from their audio alone (any length, overlapping windows) drawn over the ground truth in an mp4 with the audio.
Stage 2: frames generated from the TRUE landmark images of the split's frames (their audio windows for a model trained
with ``model.condition=audio``; the reference is another frame of the same identity; in dubbing mode the masked target
is given too), scored per frame against the ground truth: SSIM and PSNR on whole frames and on mouth crops
(``metrics.image.crop_mouth`` around the target's 68 landmarks), next to the same scores for the "copy the reference
frame" baseline; an image grid of examples goes to the eval folder.
Overrides apply to the run's saved config (``data.root=...``, ``diffusion.sampler=ddim``, ``diffusion.sample_steps=50``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .checkpoints import load_module
from .config import ConfigError, to_container
from .data.clip import EMOTIONS


def load_run_config(ckpt: Path, overrides: list[str]):
    cfg_path = ckpt.parent.parent / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path} not found: a checkpoint must sit in runs/<stage>/<name>/checkpoints/")
    cfg = OmegaConf.load(cfg_path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def _format_table(rows: dict[str, float], title: str) -> str:
    width = max(len(k) for k in rows)
    lines = [title] + [f"  {k:<{width}}  {v:10.4f}" for k, v in rows.items()]
    return "\n".join(lines)


def load_for_evaluation(cls, ckpt: Path, *, data_stage: str, split: str, overrides: list[str]):
    """The module of ``ckpt`` with the run config's sampler settings (after overrides) and the DataModule of
    ``split``, set up: what both stages' evaluations start from."""
    from .data.datamodule import TalkingHeadDataModule

    cfg = load_run_config(ckpt, overrides)
    module = load_module(cls, ckpt)
    d = cfg.get("diffusion", {})
    for key in ("sampler", "sample_steps", "guidance_scale"):
        if key in d:
            setattr(module.diffusion_cfg, key, d[key])
    dm = TalkingHeadDataModule(stage=data_stage, **{**to_container(cfg.data), "test_splits": [split]})
    dm.prepare_data()
    dm.setup("test")
    return module, dm


def evaluate_stage1(ckpt: Path, *, split: str, overrides: list[str], videos: int, seed: int, out_dir: Path | None):
    from .lit.a2l import A2LDiffusion, to_pixels
    from .viz import write_landmark_video

    module, dm = load_for_evaluation(A2LDiffusion, ckpt, data_stage="a2l", split=split, overrides=overrides)
    module.eval()
    ds = dm._split(split)
    sums: dict[str, float] = {}
    count = 0
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for i, batch in enumerate(tqdm(dm._loader(ds, train=False), desc=f"stage-1 {split}", unit="batch")):
        gen = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            values = module.evaluate_batch(batch, generator=gen)
        n = len(batch["audio"])
        for k, v in values.items():
            if k.endswith("_px"):
                continue
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        count += n
    rows = {k: v / count for k, v in sums.items()}
    rows["lmd_mouth_vs_static"] = rows["lmd_mouth"] / rows["lmd_mouth_static"]
    rows["jitter_ratio"] = rows["jitter"] / rows["jitter_gt"]
    res = module.resolution
    out_dir = out_dir or ckpt.parent.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"checkpoint": str(ckpt), "split": split, "windows": count, "units": f"pixels at {res} px, 68 points",
            "sampler": module.diffusion_cfg.sampler, "steps": module.diffusion_cfg.sample_steps,
            "guidance": module.diffusion_cfg.guidance_scale, "seconds": round(time.perf_counter() - start, 1)}
    (out_dir / f"stage1_{split}.json").write_text(json.dumps({"metrics": rows, **meta}, indent=2))
    print(_format_table(rows, f"stage 1 on {dm.root.name}/{split}: {count} windows, LMD in pixels at {res} px "
                              f"({meta['sampler']}, {meta['steps']} steps, guidance {meta['guidance']})"))
    for k in range(min(videos, len(ds.readers))):
        reader = ds.readers[k * max(1, len(ds.readers) // max(1, videos))]
        rec = reader.record
        audio = reader.audio()
        ref_reader = ds.readers[ds._other_clip(ds.readers.index(reader), None)]
        ref, _ = ds.canonical(ref_reader, 0, 1)
        true, to_image = ds.canonical(reader, 0, rec.num_frames)
        emotion = EMOTIONS.index(rec.emotion) if rec.emotion in EMOTIONS else None
        with torch.no_grad():
            pred = module.generate(audio, ref_landmarks=ref[0], emotion=emotion, num_frames=rec.num_frames, seed=seed,
                                   progress=True)
        to_img = torch.from_numpy(to_image)[None]
        idx = module.index68
        pred_px = to_pixels(pred[None].float(), to_img)[0][:, idx].numpy()
        true_px = to_pixels(torch.from_numpy(true)[None], to_img)[0][:, idx].numpy()
        path = write_landmark_video(out_dir / f"stage1_{rec.id}.mp4", [true_px, pred_px], audio=audio,
                                    source_size=res, labels=["true", "pred (from audio)"])
        print(f"landmark animation: {path}")
    return rows


def evaluate_stage2(ckpt: Path, *, split: str, overrides: list[str], seed: int, out_dir: Path | None,
                    examples: int = 8) -> dict[str, float]:
    """Stage-2 figures on ``split`` (see the module docstring); writes ``<run>/eval/stage2_<split>.json`` and
    ``stage2_<split>_examples.png`` (rows: reference, landmark image or audio, [masked,] generated, true)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from .lit.l2i import FRAME_METRICS, L2IDiffusion, example_grid

    module, dm = load_for_evaluation(L2IDiffusion, ckpt, data_stage="l2i", split=split, overrides=overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    ds = dm._split(split)
    sums: dict[str, float] = {}
    count = 0
    shown: dict[str, list[torch.Tensor]] = {}
    start = time.perf_counter()
    for i, batch in enumerate(tqdm(dm._loader(ds, train=False), desc=f"stage-2 {split}", unit="batch")):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            values = module.evaluate_batch(batch, generator=torch.Generator().manual_seed(seed + i))
        for k, v in values.items():
            if k != "generated":
                sums[k] = sums.get(k, 0.0) + float(v.sum())
        count += len(batch["frame"])
        if sum(len(x) for x in shown.get("true", [])) < examples:
            for k, v in module.example_rows(batch, values["generated"]).items():
                shown.setdefault(k, []).append(v.cpu())
    rows = {k: sums[k] / count for k in [*FRAME_METRICS, *(f"{m}_ref" for m in FRAME_METRICS)]}
    out_dir = out_dir or ckpt.parent.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    dc = module.diffusion_cfg
    meta = {"checkpoint": str(ckpt), "split": split, "frames": count, "resolution": module.resolution,
            "mode": module.net.mode, "use_reference": module.net.use_reference, "condition": module.net.condition,
            "latent": module.latent, "sampler": dc.sampler, "steps": dc.sample_steps, "guidance": dc.guidance_scale,
            "mouth_crop": "96x96 box around the target's 68-point mouth (metrics.image.crop_mouth)",
            "baseline": "copy the reference frame", "seconds": round(time.perf_counter() - start, 1)}
    (out_dir / f"stage2_{split}.json").write_text(json.dumps({"metrics": rows, **meta}, indent=2))
    grid = example_grid({k: torch.cat(v) for k, v in shown.items()}, count=examples)
    png = out_dir / f"stage2_{split}_examples.png"
    Image.fromarray(grid).save(png)
    width = max(len(m) for m in FRAME_METRICS)
    given = "true landmarks" if module.net.condition == "landmarks" else "true audio, no landmarks"
    lines = [f"stage 2 on {dm.root.name}/{split}: {count} frames at {module.resolution} px, {given} "
             f"({meta['mode']} mode; {dc.sampler}, {dc.sample_steps} steps, guidance {dc.guidance_scale})",
             f"  {'':<{width}}  {'model':>10}  {'copy ref':>10}"]
    lines += [f"  {m:<{width}}  {rows[m]:10.4f}  {rows[m + '_ref']:10.4f}" for m in FRAME_METRICS]
    print("\n".join(lines))
    print(f"examples (rows: {', '.join(shown)}): {png}")
    return rows
