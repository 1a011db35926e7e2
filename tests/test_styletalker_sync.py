"""StyleTalker†'s contrastive lip-sync discriminator: it learns sync on decoded codes, its log-probability is a
differentiable loss for a generator, its checkpoint holds no autoencoder, and it is never the bench's sync scorer.

The frame autoencoder (``styletalker_autoencoder``) is replaced by a test double, :class:`TinyDecoderAE` (a Linear
decoder with the autoencoder's ``decode`` / ``latent_dim`` / ``resolution`` interface), over a code cache written
here: each frame's code is a fixed random projection of its landmarks, so the decoded lower faces carry the mouth
shape (from the audio) as an autoencoder's do. Where a test needs the double loaded from a run (the train CLI, the
loader, DDP), it is registered under the autoencoder's name for that test (:func:`fake_autoencoder_registered`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from dreamhead_lit import registry
from dreamhead_lit.baselines.styletalker.sync_discriminator import (
    AUTOENCODER_MODEL, SyncDataModule, SyncDiscriminator, load_sync_discriminator)
from dreamhead_lit.checkpoints import read_header
from dreamhead_lit.config import ConfigError
from dreamhead_lit.data.clip import ClipReader, read_index

from conftest import check_two_process_ddp_fit, train_on_one_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

TESTS_DIR = Path(__file__).resolve().parent
CODE_DIM = 16
AE_RESOLUTION = 32  # the double decodes 32 px frames (lower half 16 x 32 at face_size 32)
MAX_SHIFT = 4
WINDOW = 5 + 2 * MAX_SHIFT
TINY_NET = {"window": 5, "embed_dim": 32, "audio_channels": 32, "audio_layers": 1, "face_size": 32,
            "face_channels": [16, 32], "groups": 4}
TINY_LOSS = {"min_shift": 3, "max_shift": MAX_SHIFT}
# windows_per_clip=4: 24 train windows, so each of two DDP ranks still fills a batch of 8
TINY = [f"data.window={WINDOW}", "data.batch_size=8", "data.windows_per_clip=4", "model.embed_dim=32",
        "model.audio_channels=32", "model.audio_layers=1", "model.face_size=32", "model.face_channels=[16,32]",
        "model.groups=4", f"loss.max_shift={MAX_SHIFT}", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false"]


class TinyDecoderAE(nn.Module):
    """The frame autoencoder's decoding interface: ``decode(codes (..., D)) -> (..., 3, R, R)`` in [-1, 1]."""

    def __init__(self, latent_dim: int = CODE_DIM, resolution: int = AE_RESOLUTION) -> None:
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, resolution
        self.linear = nn.Linear(latent_dim, 3 * resolution * resolution)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        return torch.tanh(self.linear(codes)).unflatten(-1, (3, r, r))

    def save(self, path: Path) -> None:
        """A plain file headed as an autoencoder checkpoint (what the registry reads before loading)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"dreamhead": {"model": AUTOENCODER_MODEL}, "state_dict": self.state_dict(),
                    "hyper_parameters": {"latent_dim": self.latent_dim, "resolution": self.resolution}}, path)

    @classmethod
    def load(cls, path: Path) -> TinyDecoderAE:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        ae = cls(**blob["hyper_parameters"])
        ae.load_state_dict(blob["state_dict"])
        return ae.eval()


def register_fake_autoencoder() -> registry.ModelSpec:
    """Put :class:`TinyDecoderAE` under the autoencoder's registry name in this process; returns the real entry."""
    real = registry.get(AUTOENCODER_MODEL)  # discovers the packages first, so theirs cannot overwrite the double
    registry.register(registry.ModelSpec(AUTOENCODER_MODEL, "dreamhead_lit.config:RunConfig", TinyDecoderAE,
                                         lambda cfg: None, monitor="val/loss", mode="min", load=TinyDecoderAE.load),
                      replace=True)
    return real


@pytest.fixture
def fake_autoencoder_registered():
    real = register_fake_autoencoder()
    yield
    registry.register(real, replace=True)


def write_fake_run(root: Path, run: Path) -> Path:
    """An autoencoder run folder: ``checkpoints/last.ckpt`` (a :class:`TinyDecoderAE`) and ``latents/`` (every clip's
    codes, written by that checkpoint as the index says). A code is a fixed random projection of the frame's
    canonical mouth (dlib points 48-67, head pose removed), standardised: the mouth shape an autoencoder's code
    carries, without the pose and identity that a few seconds of training could not learn to look past."""
    from dreamhead_lit.data.datamodule import canonical_landmarks, load_context

    torch.manual_seed(0)
    TinyDecoderAE().save(run / "checkpoints" / "last.ckpt")
    out = run / "latents"
    out.mkdir(parents=True)
    records = read_index(root)
    ctx = load_context(root, "dense", records)
    mouth = list(ctx.topology.index68[48:68])
    flat = {rec.id: canonical_landmarks(ctx, np.asarray(ClipReader(root, rec).landmarks))[0][:, mouth].reshape(
        rec.num_frames, -1) for rec in records}
    every = np.concatenate(list(flat.values()))
    mean, std = every.mean(0), every.std(0) + 1e-6
    proj = np.random.default_rng(0).standard_normal((every.shape[1], CODE_DIM)) / np.sqrt(every.shape[1])
    for clip_id, x in flat.items():
        np.save(out / f"{clip_id}.npy", np.tanh((x - mean) / std @ proj).astype(np.float32))
    clips = {rec.id: rec.num_frames for rec in records}
    (out / "index.json").write_text(json.dumps({"dim": CODE_DIM, "clips": clips, "checkpoint": "last.ckpt"}))
    return run


@pytest.fixture(scope="module")
def ae_run(tiny_synth, tmp_path_factory) -> Path:
    return write_fake_run(tiny_synth, tmp_path_factory.mktemp("runs") / AUTOENCODER_MODEL / "fake")


@pytest.fixture(scope="module")
def dm(tiny_synth, ae_run) -> SyncDataModule:
    dm = SyncDataModule(latents=ae_run / "latents", root=tiny_synth, window=WINDOW, batch_size=8, windows_per_clip=4)
    dm.prepare_data()
    dm.setup()
    return dm


def tiny_module(dm, **kwargs) -> SyncDiscriminator:
    return SyncDiscriminator.from_datamodule(dm, autoencoder_module=TinyDecoderAE.load(dm.autoencoder_dir / "checkpoints"
                                                                                        / "last.ckpt"),
                                             net={**TINY_NET, **kwargs.pop("net", {})},
                                             loss={**TINY_LOSS, **kwargs.pop("loss", {})}, **kwargs)


def test_overfits_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module = tiny_module(dm)
    batch = next(iter(dm.train_dataloader()))
    losses = train_on_one_batch(lambda: module.losses(batch)["loss"], module.parameters(), lr=3e-3, max_steps=300,
                                factor=10)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 10, (losses[:10], losses[-10:])
    assert float(module.losses(batch)["sync_acc"]) == 1.0  # every face window's true offset above its shifted ones


def test_a_short_fit_ranks_the_true_offset_above_shifted_ones(dm, test_seed):
    torch.manual_seed(test_seed)
    module = tiny_module(dm)
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    steps, loader = 0, dm.train_dataloader()
    while steps < 360:  # ~8 s
        for batch in loader:
            loss = module.losses(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    module.eval()
    held_out = DataLoader(ConcatDataset([dm.datasets["val"], dm.datasets["test_seen"]]), batch_size=8)  # 24 windows
    w, c = module.window, MAX_SHIFT  # the face window sits at frames c..c+w of a sample, audio at c + s
    shifts = [s for s in range(-MAX_SHIFT, MAX_SHIFT + 1) if abs(s) >= 3]
    wins, pairs, figures = [], [], []
    with torch.no_grad():
        for batch in held_out:
            faces = module.decode_lower(batch["latents"][:, c:c + w])
            true = module.sync_logprob(batch["audio"][:, c:c + w], faces)  # (B,)
            shifted = torch.stack([module.sync_logprob(batch["audio"][:, c + s:c + s + w], faces) for s in shifts], 1)
            pairs.append((true[:, None] > shifted).float().flatten())
            wins.append((true[:, None] > shifted).all(1).float())
            figures.append(module.evaluate_batch(batch))
    pair_acc, win_acc = torch.cat(pairs).mean().item(), torch.cat(wins).mean().item()
    # chance: 0.5 of the pairs, 1/5 of the windows (the true offset above 4 shifted ones by luck); measured over
    # seeds 0-3: pairs 0.86-0.95, windows 0.71-0.88
    assert pair_acc > 0.75 and win_acc > 0.5, (pair_acc, win_acc)
    assert torch.cat([f["sync_acc"] for f in figures]).mean().item() == pytest.approx(win_acc)  # val/sync_acc's count
    p_sync = torch.cat([f["p_sync"] for f in figures]).mean().item()
    p_shifted = torch.cat([f["p_shifted"] for f in figures]).mean().item()
    assert p_sync > p_shifted + 0.25, (p_sync, p_shifted)  # the calibrated P(in sync) separates them (0.30-0.59)


def test_sync_logprob_is_a_differentiable_loss_for_the_faces_and_the_codes(dm):
    module = tiny_module(dm).eval().requires_grad_(False)  # as a generator gets it: frozen
    batch = next(iter(dm.val_dataloader()))
    w = module.window
    audio, codes = batch["audio"][:, :w], batch["latents"][:, :w].clone().requires_grad_(True)
    faces = module.decode_lower(codes)
    assert faces.shape == (8, w, 3, module.face_height, module.face_width) == (8, 5, 3, 16, 32)
    logp = module.sync_logprob(audio, faces)
    assert logp.shape == (8,) and bool((logp <= 0).all())
    logp.sum().backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0  # through the lower-face encoder and the decoder
    assert all(p.grad is None for p in module.parameters())
    leaf = faces.detach().requires_grad_(True)
    module.sync_logprob(audio, leaf).sum().backward()
    assert leaf.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"lower_faces must be \(B, 5, 3, 16, 32\)"):
        module.sync_logprob(audio, faces[..., :8, :])


def test_a_window_too_short_for_the_shifts_is_refused(dm):
    with pytest.raises(ConfigError, match="data.window=13.*≥ 17"):
        tiny_module(dm, loss={"max_shift": 6})


def test_train_cli_checkpoint_holds_no_autoencoder_and_loads_frozen(tiny_synth, ae_run, tmp_path,
                                                                    fake_autoencoder_registered):
    from dreamhead_lit.train import main

    args = ["styletalker_sync", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={tmp_path}", "name=tiny",
            f"autoencoder.run={ae_run}", *TINY, "trainer.max_steps=3", "trainer.val_check_interval=3", "threads=1"]
    assert main(args) == 0
    run = tmp_path / "styletalker_sync" / "tiny"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_header(ckpt)["model"] == "styletalker_sync"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["state_dict"] and not any("linear" in k or "autoencoder" in k for k in saved["state_dict"])
    prefixes = {k.split(".")[0] for k in saved["state_dict"]}
    assert prefixes <= {"audio_encoder", "face_encoder", "log_temperature", "bias", "val_metrics"}, prefixes
    assert saved["hyper_parameters"]["autoencoder"]["run"] == str(ae_run)  # where the decoder is reloaded from
    assert saved["hyper_parameters"]["autoencoder"]["checkpoint"] == "last.ckpt"
    for ref, root in ((str(ckpt), tmp_path / "elsewhere"), (str(run), tmp_path), ("tiny", tmp_path)):
        disc = load_sync_discriminator(ref, root)
        assert isinstance(disc, SyncDiscriminator) and not disc.training
        assert not any(p.requires_grad for p in disc.parameters())
    assert isinstance(disc.autoencoder, TinyDecoderAE)  # reloaded from the recorded run when first needed
    injected = TinyDecoderAE()
    assert load_sync_discriminator(str(ckpt), autoencoder=injected).autoencoder is injected
    with pytest.raises(ConfigError, match="8 dims"):
        load_sync_discriminator(str(ckpt), autoencoder=TinyDecoderAE(latent_dim=8))


def test_the_bench_sync_scorer_and_other_models_are_refused(tiny_synth, ae_run, tmp_path,
                                                             fake_autoencoder_registered):
    from dreamhead_lit.train import main

    args = ["styletalker_sync", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={tmp_path}", "name=tiny",
            f"autoencoder.run={ae_run}", *TINY, "trainer.max_steps=1", "trainer.val_check_interval=1", "threads=1"]
    assert main(args) == 0
    ckpt = tmp_path / "styletalker_sync" / "tiny" / "checkpoints" / "last.ckpt"
    scorer_run = tmp_path / "scorers" / "syncnet-synthtalk"
    (scorer_run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, scorer_run / "expert.pt")  # even a file that would load is refused by where it lies
    shutil.copy(ckpt, scorer_run / "checkpoints" / "last.ckpt")
    for ref in (scorer_run / "expert.pt", scorer_run, scorer_run / "checkpoints" / "last.ckpt"):
        with pytest.raises(ConfigError, match="bench's sync scorer.*separate styletalker_sync run"):
            load_sync_discriminator(str(ref), tmp_path)
    elsewhere = tmp_path / "elsewhere" / "syncnet-mine"  # a syncnet-* run wherever it lies
    elsewhere.mkdir(parents=True)
    shutil.copy(ckpt, elsewhere / "last.ckpt")
    with pytest.raises(ConfigError, match="bench's sync scorer"):
        load_sync_discriminator(str(elsewhere / "last.ckpt"), tmp_path)
    with pytest.raises(ConfigError, match="is a styletalker_autoencoder checkpoint.*styletalker_sync"):
        load_sync_discriminator(str(ae_run / "checkpoints" / "last.ckpt"), tmp_path)  # another model's checkpoint
    blob = torch.load(ckpt, weights_only=False)
    blob["dreamhead"]["model"] = "syncnet"
    torch.save(blob, tmp_path / "renamed.ckpt")
    with pytest.raises(ConfigError, match="syncnet checkpoint.*styletalker_sync"):
        load_sync_discriminator(str(tmp_path / "renamed.ckpt"), tmp_path)
    with pytest.raises(ConfigError, match="no styletalker_sync checkpoint"):
        load_sync_discriminator("never-trained", tmp_path)


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_both_sizes_build_and_take_a_training_step(tiny_synth, ae_run, size, fake_autoencoder_registered):
    from dreamhead_lit.baselines.styletalker.sync_discriminator import sync_datamodule
    from dreamhead_lit.config import load_config

    spec = registry.get("styletalker_sync")
    cfg = load_config(f"styletalker_sync/{size}.yaml", [f"data.root={tiny_synth}", f"autoencoder.run={ae_run}",
                                                        "data.batch_size=2", "data.num_workers=0"],
                      schema=spec.schema_class())
    dm = sync_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    assert isinstance(module.autoencoder, TinyDecoderAE)  # loaded from the run through the registry
    assert (module.face_height, module.face_width) == (cfg.model.face_size // 2, cfg.model.face_size)
    loss = module.losses(next(iter(dm.train_dataloader())))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and module.face_encoder.head.weight.grad is not None


def test_a_missing_code_cache_names_the_autoencoder(tiny_synth, tmp_path):
    with pytest.raises(ConfigError, match="the styletalker_autoencoder run writes latents/"):
        SyncDataModule(latents=tmp_path / "nowhere" / "latents", root=tiny_synth)


DDP_ENTRY = f"""import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import test_styletalker_sync
test_styletalker_sync.register_fake_autoencoder()
from dreamhead_lit.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.ddp
@pytest.mark.slow  # the fast suite is near its 15 min budget; make test-slow runs it
def test_two_process_ddp_fit_writes_one_checkpoint_and_one_log(tiny_synth, ae_run, tmp_path):
    entry = tmp_path / "train_with_fake_autoencoder.py"  # both processes register the double, then train
    entry.write_text(DDP_ENTRY)
    check_two_process_ddp_fit("styletalker_sync", [f"autoencoder.run={ae_run}", *TINY], tiny_synth,
                              tmp_path / "runs", entry=[str(entry)])
