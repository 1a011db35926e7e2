"""Real-time generation (issue 17): stage 1's batched lanes, stage 2's streaming frame batches and the streaming
video writer. No test here asserts a speed: benchmarks/bench_generate.py measures that."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit.lit.a2l import A2LDiffusion, lane_plan, merge_lanes, window_starts
from dreamhead_lit.video import VideoWriter, read_video

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def _frames(count: int, size: int = 32) -> np.ndarray:
    """Smooth moving content (what a face video is like to the encoder), RGB uint8 (T, H, W, 3)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = [np.stack([np.sin((x + 2 * t) / 5), np.cos((y - t) / 7), np.sin((x + y + 3 * t) / 9)], -1)
           for t in range(count)]
    return ((np.stack(out) + 1) * 127.5).round().astype(np.uint8)


def test_streaming_writer_gives_the_same_mp4_frames_as_writing_at_the_end(tmp_path):
    """Frames handed over batch by batch (as ``generate`` streams them) decode to exactly what one write at the end
    gives. crf 0: x264's lossy decisions were seen to differ between two identical encodes of tiny frames (32-64 px,
    even with one thread), so only a lossless encode makes an exact comparison of the writer itself."""
    frames = _frames(45)
    audio = np.sin(np.arange(int(45 / 25 * 16000)) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    with VideoWriter(tmp_path / "end.mp4", fps=25, width=32, height=32, audio=audio, crf=0) as writer:
        writer.write(frames)  # everything at once, after the whole video was made
    with VideoWriter(tmp_path / "stream.mp4", fps=25, width=32, height=32, audio=audio, crf=0) as writer:
        for start, stop in ((0, 4), (4, 20), (20, 36), (36, 45)):  # as generate hands over its batches
            writer.write(frames[start:stop])
    end, stream = read_video(tmp_path / "end.mp4"), read_video(tmp_path / "stream.mp4")
    assert end.frames.shape == (45, 32, 32, 3)
    np.testing.assert_array_equal(stream.frames, end.frames)


@pytest.fixture(scope="module")
def l2i(tiny_synth):
    from test_l2i import nontrivial, tiny_module

    dm = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, frames_per_clip=2)
    dm.setup()
    torch.manual_seed(0)
    module = nontrivial(tiny_module(dm, diffusion={"sample_steps": 2, "sampler": "ddim"})).eval()
    return module, next(iter(dm.val_dataloader()))


def test_frame_batches_make_the_frames_generate_frames_makes(l2i):
    """Streaming batch by batch, with uneven batches and the reference converted once, gives the same frames."""
    module, batch = l2i
    targets = batch["landmark_image"][:4]
    ref, ref_lm = batch["ref_frame"][0], batch["ref_landmark_image"][0]
    whole = module.generate_frames(targets, ref=ref, ref_landmarks=ref_lm, noise_seed=5, batch_size=4)
    pieces = list(module.frame_batches(({"targets": targets[a:b]} for a, b in ((0, 1), (1, 3), (3, 4))), ref=ref,
                                       ref_landmarks=ref_lm, noise_seed=5))
    assert [len(p) for p in pieces] == [1, 2, 1]
    torch.testing.assert_close(torch.cat(pieces), whole, atol=1e-6, rtol=0)
    # per-frame references take the same path as before: one per frame, sliced per batch
    per_frame = module.generate_frames(targets, ref=ref[None].expand(4, -1, -1, -1).clone(),
                                       ref_landmarks=ref_lm[None].expand(4, -1, -1, -1).clone(), noise_seed=5,
                                       batch_size=3)
    torch.testing.assert_close(per_frame, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("total", [16, 40, 150, 750])
@pytest.mark.parametrize("lanes", [1, 2, 4, 16])
def test_lane_plan_covers_every_frame_with_overlapping_lanes(total, lanes):
    window, overlap = 16, 4
    origins, offsets, span = lane_plan(total, window=window, overlap=overlap, lanes=lanes)
    if len(origins) == 1:
        assert origins == [0] and offsets == window_starts(total, window=window, overlap=overlap)
        return
    assert len(origins) <= lanes and origins[0] == 0 and origins[-1] + span == total
    assert offsets[-1] + window == span  # every window of a lane lies inside it
    for a, b in zip(origins[:-1], origins[1:]):
        assert a + span - b >= overlap  # neighbours share at least the overlap: room to cross-fade
    # the cross-fade weights sum to one: constant lanes merge to that constant
    merged = merge_lanes(torch.ones(len(origins), span, 3), origins, total)
    torch.testing.assert_close(merged, torch.ones(total, 3))


def test_merge_lanes_fades_linearly_from_one_lane_to_the_next():
    out = torch.stack([torch.zeros(10, 1), torch.ones(10, 1)])  # lane 0 says 0, lane 1 says 1, overlap 4 frames
    merged = merge_lanes(out, [0, 6], 16)[:, 0]
    torch.testing.assert_close(merged[:6], torch.zeros(6))
    torch.testing.assert_close(merged[6:10], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    torch.testing.assert_close(merged[10:], torch.ones(6))


@pytest.fixture(scope="module")
def a2l(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=4, window=16)
    dm.prepare_data()
    dm.setup()
    torch.manual_seed(0)
    module = A2LDiffusion.from_datamodule(dm, net={"dim": 32, "depth": 1, "heads": 2, "dropout": 0.0},
                                          diffusion={"sample_steps": 3})
    module.motion_std.fill_(0.05)
    torch.nn.init.normal_(module.net.out.weight, std=0.05)  # zero-initialised: samples would not depend on inputs
    module.ema.shadow_params["out.weight"].copy_(module.net.out.weight.detach())  # sampling uses the EMA copy
    reader = dm.datasets["test"].readers[0]
    ref, _ = dm.datasets["test"].canonical(reader, 0, 1)
    return module.eval(), ref[0], dm.num_landmarks


def test_window_batch_generates_every_frame_deterministically(a2l):
    module, ref, points = a2l
    audio = np.random.default_rng(0).standard_normal(16000 * 6).astype(np.float32) * 0.1  # 150 frames
    one = module.generate(audio, ref_landmarks=ref, window_batch=1, seed=1)
    lanes = module.generate(audio, ref_landmarks=ref, window_batch=4, seed=1)
    assert one.shape == lanes.shape == (150, points, 2) and torch.isfinite(lanes).all()
    assert (lanes - one).abs().max() > 1e-4  # the lanes are really another plan (and the model depends on inputs)
    torch.testing.assert_close(module.generate(audio, ref_landmarks=ref, window_batch=4, seed=1), lanes)
    with pytest.raises(ValueError, match="window_batch must be an int >= 1"):
        module.generate(audio, ref_landmarks=ref, window_batch=0)
