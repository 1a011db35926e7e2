"""`generate` never loses a user's file, never writes a non-finite frame and refuses bad inputs before any work."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from dreamhead_lit import pipeline
from dreamhead_lit.data.clip import read_index
from dreamhead_lit.data.landmarks import topology_68
from dreamhead_lit.generate import main
from dreamhead_lit.video import probe_video, write_video
from test_generate import _speech, checkpoints  # noqa: F401 (a fixture: the tiny stage-1 and stage-2 checkpoints)

pytestmark = pytest.mark.usefixtures("one_thread")


def _refuse_loading(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("a checkpoint was loaded before the inputs were checked")

    monkeypatch.setattr(pipeline, "load_stage", refuse)


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a checkpoint is loaded: the refusals under test must come before any work."""
    _refuse_loading(monkeypatch)


def _clip(tiny_synth):
    return tiny_synth / "clips" / read_index(tiny_synth)[0].id


def _main(checkpoints, audio, ref, out, *extra, s1=None, s2=None):
    return main(["--audio", str(audio), "--ref", str(ref), "--out", str(out), "--stage1", str(s1 or checkpoints[0]),
                 "--stage2", str(s2 or checkpoints[1]), "--steps", "2", *extra])


def _last_line(err: str) -> str:
    """What a terminal shows last: progress bars end in a newline or are erased with a carriage return."""
    return re.split(r"[\r\n]", err.rstrip("\n"))[-1]


def _one_error(err: str, *needles: str) -> None:
    """One message line, after the progress bars if sampling had started (they are closed first)."""
    last = _last_line(err)
    assert "Traceback" not in err and err.count("error: ") == 1 and last.startswith("error: "), err
    for needle in needles:
        assert needle in last, err


# --------------------------------------------------------------------------------------------------- 1. user files


def test_existing_out_is_refused_without_overwrite(checkpoints, tiny_synth, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the user's earlier video")
    audio = _speech(tmp_path / "s.wav", seconds=0.4)
    with monkeypatch.context() as patch:
        _refuse_loading(patch)
        assert _main(checkpoints, audio, _clip(tiny_synth), out) == 2
    _one_error(capsys.readouterr().err, f"{out} already exists", "--overwrite")
    assert out.read_bytes() == b"the user's earlier video"

    assert _main(checkpoints, audio, _clip(tiny_synth), out, "--overwrite") == 0, capsys.readouterr().err
    assert probe_video(out).num_frames == 10


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("option", ["--ref", "--audio", "--stage1", "--stage2"])
def test_out_that_is_an_input_is_always_refused(checkpoints, tiny_synth, tmp_path, capsys, no_model_loading,
                                                option, overwrite):
    s1, s2 = checkpoints
    audio, ref = _speech(tmp_path / "s.wav", seconds=0.4), _clip(tiny_synth)
    target = tmp_path / "input.mp4"  # the input under test, named like a video so that it is a valid --out
    if option == "--ref":  # dubbing: the user's source video
        write_video(target, np.load(ref / "frames.npy")[:5], fps=25)
        ref = target
    elif option == "--audio":  # audio taken from a video file
        shutil.copy(audio, target)
        audio = target
    else:
        shutil.copy(s1 if option == "--stage1" else s2, target)
        s1, s2 = (target, s2) if option == "--stage1" else (s1, target)
    before = target.read_bytes()
    (tmp_path / "sub").mkdir()
    out = tmp_path / "sub" / ".." / target.name  # another spelling of the same path
    code = _main(checkpoints, audio, ref, out, *(["--overwrite"] if overwrite else []), s1=s1, s2=s2)
    assert code == 2
    _one_error(capsys.readouterr().err, "refusing to write over an input", option)
    assert target.read_bytes() == before


def test_out_that_is_a_directory_is_refused(checkpoints, tiny_synth, tmp_path, capsys, no_model_loading):
    out = tmp_path / "videos.mp4"
    (out / "keep").mkdir(parents=True)
    assert _main(checkpoints, _speech(tmp_path / "s.wav", seconds=0.4), _clip(tiny_synth), out, "--overwrite") == 2
    _one_error(capsys.readouterr().err, "is a directory")
    assert (out / "keep").is_dir()


# --------------------------------------------------------------------------------------------------- 2. numbers


@pytest.mark.parametrize("option, value", [("--steps", "0"), ("--steps", "-3"), ("--batch-size", "0"),
                                           ("--batch-size", "-1")])
def test_non_positive_numbers_are_rejected_before_any_work(checkpoints, tiny_synth, tmp_path, capsys,
                                                          no_model_loading, option, value):
    out = tmp_path / "out.mp4"
    argv = ["--audio", str(_speech(tmp_path / "s.wav")), "--ref", str(_clip(tiny_synth)), "--out", str(out),
            "--stage1", str(checkpoints[0]), "--stage2", str(checkpoints[1]), option, value]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: must be a positive integer, got {value}" in err and "Traceback" not in err
    assert not out.exists()


# --------------------------------------------------------------------------------------------------- 3. Ctrl-C


@pytest.mark.parametrize("existing", [False, True])
def test_ctrl_c_mid_generation_leaves_nothing(checkpoints, tiny_synth, tmp_path, capsys, monkeypatch, existing):
    from dreamhead_lit.lit.l2i import L2IDiffusion

    audio = _speech(tmp_path / "s.wav", seconds=1.2)  # 30 frames: 4 batches of 8
    out = tmp_path / "out.mp4"
    if existing:
        out.write_bytes(b"the user's earlier video")
    before = sorted(p.name for p in tmp_path.iterdir())
    real, calls = L2IDiffusion.frame_batches, []

    def interrupted_in_second_batch(self, *args, **kwargs):  # the first batch is already in the temporary file
        for frames in real(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            yield frames

    monkeypatch.setattr(L2IDiffusion, "frame_batches", interrupted_in_second_batch)
    try:
        code = _main(checkpoints, audio, _clip(tiny_synth), out, "--batch-size", "8",
                     *(["--overwrite"] if existing else []))
    except KeyboardInterrupt:  # escaping main would also stop pytest itself
        pytest.fail("Ctrl-C escaped main() as a traceback")
    err = capsys.readouterr().err
    assert code == 130 and len(calls) == 2
    assert _last_line(err).startswith(f"interrupted: nothing written to {out}"), err
    assert ("unchanged" in err) == existing and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial mp4, no temporary file beside it
    if existing:
        assert out.read_bytes() == b"the user's earlier video"


# --------------------------------------------------------------------------------------------------- 4. non-finite


def _damaged(ckpt, path, where: str):
    """A copy of ``ckpt`` with one NaN in its live weights (``net``) or in the EMA weights used for sampling."""
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    state = blob["state_dict"]
    if where == "net":
        tensor = next(t for k, t in state.items() if k.startswith("net.") and t.is_floating_point())
    else:
        tensor = next(t for t in state["ema._extra_state"]["shadow_params"].values() if t.is_floating_point())
    tensor.view(-1)[0] = float("nan")
    torch.save(blob, path)
    return path


@pytest.mark.parametrize("where", ["net", "ema"])
@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_checkpoint_with_non_finite_weights_is_refused(checkpoints, tiny_synth, tmp_path, capsys, stage, where):
    s1, s2 = checkpoints
    bad = _damaged(s1 if stage == "stage1" else s2, tmp_path / f"{stage}_nan.ckpt", where)
    out = tmp_path / "out.mp4"
    code = _main(checkpoints, _speech(tmp_path / "s.wav", seconds=0.4), _clip(tiny_synth), out,
                 **{"s1" if stage == "stage1" else "s2": bad})
    assert code == 2
    _one_error(capsys.readouterr().err, f"{bad} has non-finite weights", "retrain")
    assert not out.exists() and not list(tmp_path.glob(".*.mp4"))


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_non_finite_stage_output_writes_nothing(checkpoints, tiny_synth, tmp_path, capsys, monkeypatch, stage):
    """A model whose weights are finite but whose outputs are not (it diverged): stop, name the stage and the file."""
    from dreamhead_lit.lit.a2l import A2LDiffusion
    from dreamhead_lit.lit.l2i import L2IDiffusion

    if stage == "stage1":
        real = A2LDiffusion.generate
        monkeypatch.setattr(A2LDiffusion, "generate", lambda self, *a, **k: real(self, *a, **k) * float("nan"))
        message = f"stage 1 produced non-finite landmarks: the stage-1 model {checkpoints[0]}"
    else:
        real = L2IDiffusion.frame_batches
        monkeypatch.setattr(L2IDiffusion, "frame_batches",
                            lambda self, *a, **k: (f + float("inf") for f in real(self, *a, **k)))
        message = f"stage 2 produced non-finite pixels: the stage-2 model {checkpoints[1]}"
    out = tmp_path / "out.mp4"
    assert _main(checkpoints, _speech(tmp_path / "s.wav", seconds=0.4), _clip(tiny_synth), out) == 2
    _one_error(capsys.readouterr().err, message, "retrain")
    assert not out.exists() and not list(tmp_path.glob(".*.mp4"))


@pytest.mark.parametrize("given", ["file", "array"])
def test_audio_with_non_finite_samples_is_refused(checkpoints, tiny_synth, tmp_path, capsys, given):
    """Blamed on the audio, not on stage 1, which would be the first to produce NaN from it."""
    from dreamhead_lit.data.audio import AudioError

    samples = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    samples[100] = np.nan
    out = tmp_path / "out.mp4"
    if given == "file":
        sf.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
        assert _main(checkpoints, tmp_path / "nan.wav", _clip(tiny_synth), out) == 2
        _one_error(capsys.readouterr().err, "nan.wav: audio", "non-finite samples")
    else:  # as the bench passes it
        with pytest.raises(AudioError, match="non-finite samples"):
            pipeline.generate(audio=samples, ref=_clip(tiny_synth), out=out, stage1=checkpoints[0],
                              stage2=checkpoints[1], steps=2, progress=False)
    assert not out.exists()


# --------------------------------------------------------------------------------------------------- 5. clip refs


@pytest.mark.parametrize("damage, message", [("nan", "non-finite"), ("truncated", "landmarks.npy")])
def test_damaged_reference_clip_is_refused_naming_it(checkpoints, synth_copy, tmp_path, capsys, damage, message):
    clip = _clip(synth_copy)
    path = clip / "landmarks.npy"
    if damage == "nan":
        landmarks = np.load(path)
        landmarks[0, 7] = np.nan
        np.save(path, landmarks)
    else:
        path.write_bytes(path.read_bytes()[:200])
    out = tmp_path / "out.mp4"
    assert _main(checkpoints, _speech(tmp_path / "s.wav", seconds=0.4), clip, out) == 2
    _one_error(capsys.readouterr().err, f"the reference clip '{clip.name}'", message)
    assert not out.exists()


# --------------------------------------------------------------------------------------------------- 6. two faces


def test_portrait_with_two_faces_uses_the_largest_and_says_so(checkpoints, real_data, tmp_path, capsys):
    from PIL import Image

    images = sorted((real_data / "images").glob("*.png"))
    # the small copy of this one scores higher with dlib: picking by score took the wrong face
    source = next((p for p in images if p.name == "SadTalker__happy.png"), images[0])
    face = Image.open(source).convert("RGB")
    small = face.resize((face.width * 6 // 10, face.height * 6 // 10))
    two = Image.new("RGB", (face.width + small.width, face.height), (128, 128, 128))
    two.paste(face, (0, 0))
    two.paste(small, (face.width, (face.height - small.height) // 2))
    two.save(tmp_path / "two.png")
    face.save(tmp_path / "one.png")
    info = pipeline.load_stage(checkpoints[0], "stage1").data_info

    ref_two = pipeline.reference_from_image(tmp_path / "two.png", size=64, info=info)
    err = capsys.readouterr().err
    match = re.search(r"warning: 2 faces in two\.png; using the largest \(at (\d+),(\d+), (\d+)×(\d+) px\)", err)
    assert match and err.count("\n") == 1, err
    x, _, w, _ = map(int, match.groups())
    assert x + w <= face.width and w > small.width * 0.5  # the box of the full-size face
    ref_one = pipeline.reference_from_image(tmp_path / "one.png", size=64, info=info)
    assert capsys.readouterr().err == ""  # one face: no warning
    assert np.abs(ref_two.landmarks68 - ref_one.landmarks68).max() < 1.0  # the same face, landmarked the same


# --------------------------------------------------------------------------------------------------- 7. landmark set


def _clip_with_68_points(tiny_synth, root):
    """A one-clip dataset like SynthTalk but landmarked with dlib's 68 points only."""
    src = _clip(tiny_synth)
    shutil.copytree(src, root / "clips" / src.name)
    shutil.copy(tiny_synth / "index.jsonl", root / "index.jsonl")
    info = json.loads((tiny_synth / "dataset.json").read_text())
    info["landmark_topology"] = topology_68().to_json()
    (root / "dataset.json").write_text(json.dumps(info))
    shutil.copy(src / "landmarks68.npy", root / "clips" / src.name / "landmarks.npy")
    return root / "clips" / src.name


def test_reference_clip_with_another_landmark_set_is_refused(checkpoints, tiny_synth, tmp_path, capsys):
    clip = _clip_with_68_points(tiny_synth, tmp_path / "dlib68")
    out = tmp_path / "out.mp4"
    assert _main(checkpoints, _speech(tmp_path / "s.wav", seconds=0.4), clip, out) == 2
    _one_error(capsys.readouterr().err, f"the stage-1 model {checkpoints[0]} was trained on 100-point SynthTalk dense "
               f"landmarks; the reference clip '{clip.name}' has dlib's 68 points: use a model trained on data "
               "preprocessed with --landmarks dlib68, or a portrait/video reference")
    assert not out.exists()


def test_landmark_contract_is_one_function_for_any_caller(checkpoints):
    stage2 = pipeline.load_stage(checkpoints[1], "stage2")
    pipeline.check_landmark_contract(stage2, 100, "the test clip")  # the model's own set: accepted
    with pytest.raises(pipeline.GenerationError) as err:
        pipeline.check_landmark_contract(stage2, 478, "the test clip", points_name="mediapipe478")
    assert str(err.value).startswith("the stage-2 model was trained on 100-point SynthTalk dense landmarks; the test "
                                     "clip has MediaPipe's 478 points: use a model trained on data preprocessed with "
                                     "--landmarks mediapipe")


# --------------------------------------------------------------------------------------------------- 8. help


def test_help_states_the_overwrite_and_trust_rules(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in text and "never overwritten without --overwrite" in text
    assert "weights only" in text and "TorchScript latent codec" in text and "trust" in text
