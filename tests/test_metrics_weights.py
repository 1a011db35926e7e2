"""Weight resolution: search order, the missing-file error, and the availability table."""
from __future__ import annotations

import pickle

import pytest
import torch

from dreamhead_lit.metrics.weights import (
    MissingWeightsError,
    check_weights,
    resolve_weights,
    weights_dirs,
)


@pytest.fixture
def empty_weight_dirs(tmp_path, monkeypatch):
    """$DREAMHEAD_WEIGHTS and the torch hub cache pointed at empty temporary folders."""
    own, hub = tmp_path / "own", tmp_path / "torch_home" / "hub"
    own.mkdir()
    monkeypatch.setenv("DREAMHEAD_WEIGHTS", str(own))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return own, hub / "checkpoints"


def test_missing_file_error_names_file_every_folder_and_url(empty_weight_dirs):
    own, hub = empty_weight_dirs
    with pytest.raises(MissingWeightsError) as info:
        resolve_weights("syncnet_v2.model", purpose="LSE (SyncNet)")
    msg = str(info.value)
    assert "syncnet_v2.model" in msg and "LSE (SyncNet)" in msg
    assert str(own) in msg and str(hub) in msg
    assert "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model" in msg
    assert info.value.searched[:2] == [own, hub]
    assert isinstance(info.value, FileNotFoundError)
    # survives pickling (DDP workers raise it to the parent)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == msg


def test_search_order_own_folder_then_hub_cache(empty_weight_dirs):
    own, hub = empty_weight_dirs
    hub.mkdir(parents=True)
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(b"hub")
    assert resolve_weights("alexnet-owt-7be5be79.pth", purpose="t") == hub / "alexnet-owt-7be5be79.pth"
    (own / "alexnet-owt-7be5be79.pth").write_bytes(b"own")
    assert resolve_weights("alexnet-owt-7be5be79.pth", purpose="t") == own / "alexnet-owt-7be5be79.pth"
    assert [d for d, _ in weights_dirs()][:2] == [own, hub]


def test_default_folder_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DREAMHEAD_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights_dirs()[0][0] == tmp_path / ".cache" / "dreamhead_lit" / "weights"


def test_resolve_rejects_paths():
    with pytest.raises(ValueError, match="bare file name"):
        resolve_weights("some/dir/file.pth", purpose="t")


def test_check_weights_reports_each_metric(empty_weight_dirs):
    own, _ = empty_weight_dirs
    status = {s.metric: s for s in check_weights()}
    assert set(status) == {"fid", "lpips", "lse", "lmd", "csim"}
    assert not status["fid"].available and "pt_inception-2015-12-05-6726825d.pth" in status["fid"].message
    assert status["fid"].paths == {"pt_inception-2015-12-05-6726825d.pth": None}
    # the dlib files ship with face_recognition_models (installed with the project)
    assert status["lmd"].available and status["csim"].available
    assert all(p is not None and p.is_file() for p in status["csim"].paths.values())
    (own / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    assert {s.metric: s for s in check_weights()}["fid"].available


def test_metrics_refuse_to_build_without_their_weights(empty_weight_dirs):
    from dreamhead_lit.metrics import FIDMetric, LPIPSMetric, SyncMetric

    for build, filename in (
        (FIDMetric, "pt_inception-2015-12-05-6726825d.pth"),
        (LPIPSMetric, "alexnet-owt-7be5be79.pth"),
        (SyncMetric, "syncnet_v2.model"),
    ):
        with pytest.raises(MissingWeightsError, match=filename.replace(".", r"\.")):
            build()
