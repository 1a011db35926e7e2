"""The one face track (dreamhead_lit.data.tracking): a reference video for generation is tracked and cropped exactly
as preprocessing tracks and crops the same video into a dataset clip. Skipped where ../shared/data/real is absent."""
from __future__ import annotations

import numpy as np

from dreamhead_lit.data.clip import ClipReader, read_index
from dreamhead_lit.data.landmarks import topology_68
from dreamhead_lit.data.preprocess import PreprocessConfig, preprocess
from dreamhead_lit.data.tracking import TrackSettings


def test_a_reference_video_gets_the_crops_and_landmarks_preprocessing_gives_the_same_video(real_data, tmp_path):
    from dreamhead_lit import pipeline

    # a 700 px video with the face a third of the frame: the detection stride, the tracker's detection size, the
    # smoothing and the 512 px working crop all show in the crops (when the reference path had its own tracker,
    # 87 % of its pixel values here differed from the clip's)
    name = "video-retalking__face_1"
    src = tmp_path / "raw"
    src.mkdir()
    (src / f"{name}.mp4").symlink_to(real_data / "video" / f"{name}.mp4")
    size, frames = 64, 55  # npy frames below 128 px: compared exactly, no jpeg in between
    summary = preprocess(PreprocessConfig(src=str(src), dst=str(tmp_path / "ds"), size=size,
                                          max_seconds=frames / 25), progress=False)
    assert summary["clips"] == 1 and not summary["notes"]  # one clip of the whole 2.2 s: nothing trimmed or cut
    (record,) = read_index(tmp_path / "ds")
    clip = ClipReader(tmp_path / "ds", record)

    info = {"landmark_topology": topology_68().to_json()}
    ref = pipeline.reference_from_video(src / f"{name}.mp4", size=size, info=info, max_frames=frames)
    assert ref.frames.shape == (frames, size, size, 3)
    np.testing.assert_array_equal(ref.frames, clip.frames(0, frames))
    np.testing.assert_array_equal(ref.landmarks68, np.asarray(clip.landmarks68))


def test_preprocessing_defaults_are_the_trackers():
    """The CLI's defaults and a reference video's tracker settings are one set of numbers."""
    assert PreprocessConfig(src="", dst="").track_settings() == TrackSettings()
