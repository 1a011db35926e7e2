"""Generation end to end: the `generate` CLI, its outputs and every bad input it must refuse cleanly."""
from __future__ import annotations

import shutil

import lightning as L
import numpy as np
import pytest
import soundfile as sf

from dreamhead_lit.data.clip import read_index
from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit.generate import main
from dreamhead_lit.video import probe_video


def _checkpoint(module, dm, path):
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tiny_synth, tmp_path_factory):
    """Tiny stage-1 and stage-2 checkpoints (2 training steps each): the plumbing, not the quality, is under test."""
    from dreamhead_lit.lit.a2l import A2LDiffusion
    from dreamhead_lit.lit.l2i import L2IDiffusion

    out = tmp_path_factory.mktemp("ckpt")
    dm1 = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=4, window=16)
    dm1.prepare_data()
    dm1.setup()
    s1 = _checkpoint(A2LDiffusion.from_datamodule(dm1, net={"dim": 32, "depth": 1, "heads": 2},
                                                  diffusion={"sample_steps": 2}), dm1, out / "stage1.ckpt")
    dm2 = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4)
    dm2.setup()
    net = {"base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
           "head_channels": 16, "norm_groups": 8, "dropout": 0.0}
    s2 = _checkpoint(L2IDiffusion.from_datamodule(dm2, net=net, diffusion={"sample_steps": 2}), dm2,
                     out / "stage2.ckpt")
    return s1, s2


def _speech(path, seconds=1.2, rate=22050):
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, np.stack([audio, audio], 1), rate)  # stereo at 22.05 kHz: the CLI resamples
    return path


def _run(checkpoints, audio, ref, out, capsys):
    s1, s2 = checkpoints
    code = main(["--audio", str(audio), "--ref", str(ref), "--out", str(out), "--stage1", str(s1),
                 "--stage2", str(s2), "--steps", "2"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("suffix", [".flac", ".mp3"])
def test_generated_mp4_has_right_length_size_and_audio(checkpoints, tiny_synth, tmp_path, capsys, suffix):
    audio = _speech(tmp_path / f"speech{suffix}", seconds=1.2)
    clip = read_index(tiny_synth)[0].id
    out = tmp_path / "out.mp4"
    code, io = _run(checkpoints, audio, tiny_synth / "clips" / clip, out, capsys)
    assert code == 0, io.err
    info = probe_video(out)
    assert abs(info.num_frames - 1.2 * 25) <= 1 and info.fps == 25
    assert (info.width, info.height) == (64, 64)
    assert info.has_audio and abs(info.audio_duration_s - 1.2) < 0.05


def test_real_portrait_reference_gives_a_valid_video(checkpoints, real_data, tmp_path, capsys):
    portrait = sorted((real_data / "images").glob("*.png"))[0]
    audio = sorted((real_data / "audio").glob("*.wav"))[0]
    short = tmp_path / "short.wav"
    samples, rate = sf.read(audio)
    sf.write(short, samples[: int(1.0 * rate)], rate)
    code, io = _run(checkpoints, short, portrait, tmp_path / "real.mp4", capsys)
    assert code == 0, io.err
    info = probe_video(tmp_path / "real.mp4")
    assert abs(info.num_frames - 25) <= 1 and info.has_audio


def test_real_video_reference_dubbing_path(checkpoints, real_data, tmp_path, capsys):
    video = sorted((real_data / "video").glob("*.mp4"))[0]
    code, io = _run(checkpoints, _speech(tmp_path / "s.wav", seconds=1.0), video, tmp_path / "dub.mp4", capsys)
    assert code == 0, io.err
    assert abs(probe_video(tmp_path / "dub.mp4").num_frames - 25) <= 1


def _no_face_png(path):
    from PIL import Image

    ramp = np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (128, 1))
    Image.fromarray(np.stack([ramp] * 3, -1)).save(path)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_face", "no face found in the reference image"),
        ("unreadable_audio", "cannot decode"),
        ("empty_audio", "empty"),
        ("wrong_stage", "is a stage1 checkpoint, but a stage2 checkpoint is needed"),
        ("missing_ref", "not found"),
    ],
)
def test_bad_inputs_give_one_message_and_no_file(checkpoints, tiny_synth, tmp_path, capsys, case, message):
    s1, s2 = checkpoints
    audio = _speech(tmp_path / "s.wav")
    ref = tiny_synth / "clips" / read_index(tiny_synth)[0].id
    if case == "no_face":
        ref = _no_face_png(tmp_path / "gradient.png")
    elif case == "unreadable_audio":
        audio = tmp_path / "broken.wav"
        audio.write_bytes(b"RIFF....not really a wave file" * 10)
    elif case == "empty_audio":
        audio = tmp_path / "empty.wav"
        sf.write(audio, np.zeros(0, np.float32), 16000)
    elif case == "wrong_stage":
        s2 = s1
    elif case == "missing_ref":
        ref = tmp_path / "nobody.png"
    out = tmp_path / "out.mp4"
    code = main(["--audio", str(audio), "--ref", str(ref), "--out", str(out), "--stage1", str(s1), "--stage2",
                 str(s2), "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*.mp4"))  # no output, no leftover temporary file
