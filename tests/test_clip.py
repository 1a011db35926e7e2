"""The processed-clip format: atomic writes, validation with clear messages, the DataModule skipping bad clips."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from dreamhead_lit.data.clip import (
    ClipData,
    ClipError,
    ClipReader,
    ClipRecord,
    load_clip,
    read_index,
    validate_clip,
    write_clip,
)


def _clip(clip_id="c1", t=10, n=70):
    rng = np.random.default_rng(0)
    return ClipData(
        record=ClipRecord(id=clip_id, identity="p1", split="train", num_frames=t),
        frames=rng.integers(0, 255, (t, 16, 16, 3), dtype=np.uint8),
        landmarks=rng.uniform(0, 16, (t, n, 2)).astype(np.float32),
        landmarks68=rng.uniform(0, 16, (t, 68, 2)).astype(np.float32),
        audio=rng.uniform(-0.5, 0.5, t * 640).astype(np.float32),
    )


@pytest.mark.parametrize("frames_format", ["npy", "jpg"])
def test_write_then_read_round_trip(tmp_path, frames_format):
    clip = _clip()
    write_clip(tmp_path, clip, frames_format=frames_format)
    loaded = load_clip(tmp_path, clip.record)
    assert loaded.frames.shape == (10, 16, 16, 3)
    if frames_format == "npy":
        assert np.array_equal(loaded.frames, clip.frames)
    np.testing.assert_array_equal(loaded.landmarks, clip.landmarks)
    np.testing.assert_allclose(loaded.audio, clip.audio, atol=1 / 32767)
    assert ClipReader(tmp_path, clip.record).frame(3).shape == (16, 16, 3)


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from dreamhead_lit.data.clip import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    clip_folder = write_clip(tmp_path, _clip())
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(clip_folder.stat().st_mode) == 0o777 & ~umask


def test_interrupted_write_leaves_no_clip(tmp_path, monkeypatch):
    clip = _clip()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        write_clip(tmp_path, clip)
    assert list((tmp_path / "clips").iterdir()) == []  # neither the clip nor a temporary folder


def test_writer_refuses_inconsistent_lengths(tmp_path):
    clip = _clip()
    clip.landmarks = clip.landmarks[:7]
    with pytest.raises(ClipError, match="'c1'.*landmarks has 7 frames"):
        write_clip(tmp_path, clip)


def _damage(root, clip_id, how):
    d = root / "clips" / clip_id
    if how == "missing":
        (d / "landmarks68.npy").unlink()
    elif how == "truncated":
        data = (d / "landmarks.npy").read_bytes()
        (d / "landmarks.npy").write_bytes(data[: len(data) // 2])
    elif how == "inconsistent":
        lm = np.load(d / "landmarks.npy")
        np.save(d / "landmarks.npy", lm[:-5])
    elif how == "samplerate":
        audio, _ = sf.read(d / "audio.wav")
        sf.write(d / "audio.wav", audio, 22050)
    elif how == "short_audio":
        audio, sr = sf.read(d / "audio.wav")
        sf.write(d / "audio.wav", audio[: len(audio) // 2], sr)


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing", r"missing file landmarks68\.npy"),
        ("truncated", r"landmarks\.npy is unreadable or truncated"),
        ("inconsistent", r"inconsistent lengths: index says \d+ frames but frames \d+, landmarks \d+"),
        ("samplerate", r"audio\.wav is 22050 Hz, expected 16000 Hz"),
        ("short_audio", r"audio is .* s but \d+ frames at 25 fps last"),
    ],
)
def test_validator_names_clip_and_problem(synth_copy, how, message):
    rec = read_index(synth_copy)[0]
    _damage(synth_copy, rec.id, how)
    with pytest.raises(ClipError, match=message) as info:
        validate_clip(synth_copy, rec)
    assert rec.id in str(info.value)


def test_datamodule_skips_bad_clips_with_warning_and_count(synth_copy):
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule

    train = [r for r in read_index(synth_copy) if r.split == "train"]
    _damage(synth_copy, train[0].id, "truncated")
    shutil.rmtree(synth_copy / "clips" / train[1].id)
    dm = TalkingHeadDataModule(root=synth_copy, stage="a2l", batch_size=2, window=16)
    with pytest.warns(RuntimeWarning, match="skipping clip"):
        dm.setup()
    assert set(dm.skipped) == {train[0].id, train[1].id}
    assert "truncated" in dm.skipped[train[0].id] and "missing" in dm.skipped[train[1].id]
    batches = list(dm.train_dataloader())  # the rest of the epoch runs
    assert batches and all(b["landmarks"].shape[1:] == (16, 100, 2) for b in batches)


def test_clip_broken_mid_epoch_is_replaced_not_fatal(synth_copy):
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule

    dm = TalkingHeadDataModule(root=synth_copy, stage="l2i", batch_size=4)
    dm.setup()
    first = dm.datasets["train"].readers[0].record.id
    (synth_copy / "clips" / first / "frames.npy").unlink()  # deleted after setup validated it
    with pytest.warns(RuntimeWarning, match=f"skipping unreadable sample of clip '{first}'"):
        batches = list(dm.train_dataloader())
    assert sum(len(b["frame"]) for b in batches) == len(dm.datasets["train"]) - len(dm.datasets["train"]) % 4


def test_index_lines_are_plain_json(tiny_synth):
    lines = (tiny_synth / "index.jsonl").read_text().splitlines()
    keys = set(json.loads(lines[0]))
    assert {"id", "identity", "split", "num_frames", "fps", "emotion", "intensity", "source"} <= keys
