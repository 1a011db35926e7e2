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


# ---------------------------------------------------------------------------------------------------------------
# Clip ids are plain names; NaN/Inf is invalid data
# ---------------------------------------------------------------------------------------------------------------

BAD_IDS = ["../../elsewhere", "a/b", "/abs/path", ".", "..", "", ".hidden", "a b", "a\\b", "x" * 201, "é", 5, None]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_index_with_an_id_that_is_not_a_plain_name_is_refused_naming_id_and_file(tmp_path, bad):
    good = {"identity": "p1", "split": "train", "num_frames": 10}
    lines = [json.dumps({"id": "fine_id-1.2", **good}), json.dumps({"id": bad, **good})]
    (tmp_path / "index.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="is not a plain name") as info:
        read_index(tmp_path)
    assert f"{tmp_path / 'index.jsonl'}:2" in str(info.value) and repr(bad) in str(info.value)
    with pytest.raises(ValueError, match=r"meta\.json.*not a plain name"):
        ClipRecord.from_json({"id": bad, **good}, where="meta.json")


@pytest.mark.parametrize("bad", ["../../elsewhere", "a/b", "/abs", "..", ""])
def test_clip_dir_refuses_an_id_that_leads_outside_the_clips_folder(tmp_path, bad):
    from dreamhead_lit.data.clip import clip_dir

    assert clip_dir(tmp_path, "WDA_KatieHill_000_s1") == tmp_path / "clips" / "WDA_KatieHill_000_s1"
    with pytest.raises(ValueError, match="not a plain name"):
        clip_dir(tmp_path, bad)
    with pytest.raises(ValueError, match="not a plain name"):
        write_clip(tmp_path, _clip(clip_id=bad))
    assert not (tmp_path / "clips").exists() or list((tmp_path / "clips").iterdir()) == []


def test_meta_json_naming_another_clip_is_refused(synth_copy):
    first, second = read_index(synth_copy)[:2]
    meta_path = synth_copy / "clips" / first.id / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["id"] = second.id  # e.g. a clip folder copied under another name
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ClipError, match=f"meta.json names clip id '{second.id}'") as info:
        validate_clip(synth_copy, first)
    assert info.value.clip_id == first.id and str(meta_path) in str(info.value)


def test_datamodule_refuses_an_index_id_leading_outside_the_dataset_and_writes_nothing_there(synth_copy):
    """Before: clips/../../elsewhere was read as a clip and its audio-feature cache written outside the dataset."""
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule

    outside = synth_copy.parent / "elsewhere"
    records = read_index(synth_copy)
    shutil.copytree(synth_copy / "clips" / records[0].id, outside)  # a whole, valid clip where the id points
    lines = (synth_copy / "index.jsonl").read_text().splitlines()
    entry = json.loads(lines[0])
    entry["id"] = "../../elsewhere"
    lines[0] = json.dumps(entry)
    (synth_copy / "index.jsonl").write_text("\n".join(lines) + "\n")
    before = sorted(p.relative_to(outside) for p in outside.rglob("*"))
    dm = TalkingHeadDataModule(root=synth_copy, stage="a2l", batch_size=2, window=16)
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(ValueError, match=r"index\.jsonl:1: clip id '\.\./\.\./elsewhere' is not a plain name"):
            step()
    assert sorted(p.relative_to(outside) for p in outside.rglob("*")) == before  # no features/ cache written there


def _put_nonfinite(root, clip_id, what):
    d = root / "clips" / clip_id
    if what in ("landmarks", "landmarks68"):
        arr = np.load(d / f"{what}.npy")
        arr[3, 1, 0] = np.nan
        arr[5, :, :] = np.inf
        np.save(d / f"{what}.npy", arr)
        return 1 + arr.shape[1] * 2
    audio, sr = sf.read(d / "audio.wav", dtype="float32")
    audio[2 * 640 + 7] = np.nan
    sf.write(d / "audio.wav", audio, sr, subtype="FLOAT")
    return 1


@pytest.mark.parametrize("what, message", [
    ("landmarks", r"landmarks\.npy has {n} non-finite values \(first at frame 3\)"),
    ("landmarks68", r"landmarks68\.npy has {n} non-finite values \(first at frame 3\)"),
    ("audio", r"audio\.wav has {n} non-finite samples \(first at frame 2\)"),
])
def test_validator_rejects_nan_and_inf_naming_clip_file_and_frame(synth_copy, what, message):
    rec = read_index(synth_copy)[0]
    n = _put_nonfinite(synth_copy, rec.id, what)
    with pytest.raises(ClipError, match=message.format(n=n)) as info:
        validate_clip(synth_copy, rec)
    assert info.value.clip_id == rec.id


def test_validator_reads_float_audio_but_never_pcm(synth_copy, monkeypatch):
    rec = read_index(synth_copy)[0]
    d = synth_copy / "clips" / rec.id
    audio, sr = sf.read(d / "audio.wav", dtype="float32")
    calls = []
    real_read = sf.read
    monkeypatch.setattr(sf, "read", lambda *a, **k: calls.append(a) or real_read(*a, **k))
    validate_clip(synth_copy, rec)  # PCM_16, as written: header only
    assert calls == []
    real_write = sf.write
    real_write(d / "audio.wav", audio, sr, subtype="FLOAT")  # finite float samples are valid
    validate_clip(synth_copy, rec)
    assert len(calls) == 1


def test_writer_refuses_nonfinite_landmarks_and_audio(tmp_path):
    clip = _clip()
    clip.landmarks[4, 0, 1] = np.nan
    with pytest.raises(ClipError, match=r"refusing to write: landmarks has 1 non-finite values \(first at frame 4\)"):
        write_clip(tmp_path, clip)
    clip = _clip()
    clip.audio[640 * 9] = np.inf
    with pytest.raises(ClipError, match=r"refusing to write: audio has 1 non-finite samples \(first at frame 9\)"):
        write_clip(tmp_path, clip)
    assert not (tmp_path / "clips").exists()  # refused before anything is created


def test_datamodule_skips_a_nan_clip_among_good_ones_naming_it(synth_copy):
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule

    train = [r for r in read_index(synth_copy) if r.split == "train"]
    _put_nonfinite(synth_copy, train[0].id, "landmarks")
    dm = TalkingHeadDataModule(root=synth_copy, stage="a2l", batch_size=2, window=16)
    with pytest.warns(RuntimeWarning, match=f"skipping clip '{train[0].id}': landmarks.npy has .* non-finite"):
        dm.setup()
    assert list(dm.skipped) == [train[0].id]
    assert len(dm.datasets["train"].readers) == len(train) - 1
    batch = next(iter(dm.train_dataloader()))
    assert torch_isfinite_all(batch)


def torch_isfinite_all(batch) -> bool:
    import torch

    return all(bool(torch.isfinite(v).all()) for v in batch.values() if torch.is_tensor(v) and v.is_floating_point())
