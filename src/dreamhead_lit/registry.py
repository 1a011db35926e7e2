"""The model registry: one entry per trainable model, so every tool finds every model the same way.

An entry (:class:`ModelSpec`) says what ``python -m dreamhead_lit.train NAME`` needs to train the model and what
``generate``, ``bench`` and ``ablate`` need to load its checkpoints: the config schema and experiment file, the
LightningModule, the DataModule that feeds it, the validation metric that picks ``best-*.ckpt``, and (optionally)
what to write when training ends and how to load a checkpoint for use. Every checkpoint a registered model writes
carries its name (``checkpoint["dreamhead"]["model"]``), so a file is loaded by the header it carries.

DreamHead's two stages and the dataset-trained scorers are registered below. A new method is one package folder:
``dreamhead_lit/baselines/<name>/__init__.py`` calls :func:`register` for each model it trains (and
``bench.register_method`` for its bench rows), and :func:`discover` imports it the first time any tool asks the
registry. A package outside this repository registers through the ``dreamhead_lit.models`` entry-point group.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Literal

import lightning as L
from omegaconf import DictConfig

from .checkpoints import CheckpointError, header_model, load_module, read_header
from .config import RunConfig, to_container

ENTRY_POINT_GROUP = "dreamhead_lit.models"


class RegistryError(KeyError):
    """An unknown model name, or a name registered twice; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _import(target: str | type) -> Any:
    """``"package.module:attr"`` imported on first use (so listing the registry imports no model code)."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ModelSpec:
    """A trainable model. ``schema``, ``module``, ``datamodule`` and ``export`` may be ``"module:attr"`` strings,
    imported when first used.

    ``datamodule(cfg)`` returns a DataModule already set up for fitting; ``build(spec, cfg, dm)`` the LightningModule
    (default: ``module.from_datamodule(dm, **sections)``, the config sections named in ``sections`` -- by default
    every one beyond :class:`RunConfig`'s -- passed by name, ``model`` as ``net``); ``export(run_dir, trainer, cfg)``,
    when given, runs on rank zero after training finishes and returns extra figures for ``done.json`` (a scorer
    writes its standalone weights file here); ``load(path)`` gives the object generation and the bench use (default:
    the LightningModule in eval mode); ``run_name(cfg)``, when given, names a run whose config gives no ``name``.
    """

    name: str
    schema: str | type
    module: str | type
    datamodule: str | Callable[[DictConfig], L.LightningDataModule]
    monitor: str
    mode: Literal["min", "max"]
    config: str = "{name}/{size}.yaml"  # the experiment file under experiments/ ({name}, {size} filled in)
    run_group: str = ""  # runs/<run_group>/<run name>; default: the model's name
    sections: tuple[str, ...] = ()  # config sections the LightningModule takes; default: all beyond RunConfig's
    build: Callable[[ModelSpec, DictConfig, Any], L.LightningModule] | None = None
    export: str | Callable[[Path, L.Trainer, DictConfig], dict] | None = None
    load: Callable[[Path], Any] | None = None
    run_name: Callable[[DictConfig], str] | None = None  # the run's name when the config's is null
    description: str = ""
    serves: str = ""  # another model its checkpoints stand in for (a distilled stage 2 serves as "stage2")

    @property
    def group(self) -> str:
        return self.run_group or self.name

    def schema_class(self) -> type:
        return _import(self.schema)

    def module_class(self) -> type[L.LightningModule]:
        return _import(self.module)

    def config_file(self, size: str) -> str:
        return self.config.format(name=self.name, size=size)

    def named(self, cfg: DictConfig) -> DictConfig:
        """``cfg`` with the run name ``run_name`` gives when the config gives none (``cfg`` itself otherwise)."""
        if cfg.name is not None or self.run_name is None:
            return cfg
        cfg = cfg.copy()
        cfg.name = self.run_name(cfg)
        return cfg

    def make_datamodule(self, cfg: DictConfig) -> L.LightningDataModule:
        return _import(self.datamodule)(cfg)

    def build_module(self, cfg: DictConfig, dm: Any) -> L.LightningModule:
        if self.build is not None:
            return self.build(self, cfg, dm)
        run = {f.name for f in fields(RunConfig)}
        sections = self.sections or [f.name for f in fields(self.schema_class()) if f.name not in run]
        return self.module_class().from_datamodule(
            dm, **{("net" if name == "model" else name): to_container(cfg[name]) for name in sections})

    def export_figures(self, out: Path, trainer: L.Trainer, cfg: DictConfig) -> dict:
        """What ``export`` writes when training has finished, and its figures for ``done.json`` (none without it)."""
        return _import(self.export)(out, trainer, cfg) if self.export is not None else {}

    def load_checkpoint(self, path: Path) -> Any:
        if self.load is not None:
            return self.load(path)
        return load_module(self.module_class(), path).eval()


@dataclass(frozen=True)
class Recipe:
    """A method made of several registered models trained in order (a baseline's parts: DreamTalk's lip expert, then
    its denoiser with that expert, then its style predictor on that denoiser): what ``python -m dreamhead_lit.train
    --method NAME`` trains. Each part is ``(model, overrides)``; ``{run}`` in an override is the run name the recipe
    is trained under (every part's run gets that name), which is how a part names the run of an earlier one."""

    name: str
    parts: tuple[tuple[str, tuple[str, ...]], ...]
    description: str = ""

    def overrides(self, model: str, run: str) -> list[str]:
        return [o.format(run=run) for m, extra in self.parts if m == model for o in extra]

    @property
    def models(self) -> list[str]:
        return [m for m, _ in self.parts]


def split_part_override(item: str, parts: tuple[str, ...] | list[str], separators: str = ":") -> tuple[str | None, str]:
    """``PART:key=value`` (or ``PART<sep>key=value`` for another of ``separators``) naming one of ``parts`` ->
    (PART, ``key=value``); anything else -> (None, item). How the train CLI and the ablation harness address one part
    of a method's recipe."""
    key = item.split("=", 1)[0]
    for sep in separators:
        head, found, _ = key.partition(sep)
        if found and head in parts:
            return head, item[len(head) + 1:]
    return None, item


_REGISTRY: dict[str, ModelSpec] = {}
_RECIPES: dict[str, Recipe] = {}
_discovered = False


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec``; a second model under a taken name is an error unless ``replace`` (tests, reloads)."""
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] != spec:
        raise RegistryError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a method's training recipe (its parts must be registered models when it is used)."""
    if recipe.name in _RECIPES and _RECIPES[recipe.name] != recipe:
        raise RegistryError(f"a recipe named {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def recipe(name: str) -> Recipe:
    discover()
    if name not in _RECIPES:
        raise RegistryError(f"no method recipe named {name!r}; registered: {', '.join(sorted(_RECIPES)) or 'none'}")
    return _RECIPES[name]


def recipes() -> list[str]:
    discover()
    return sorted(_RECIPES)


def discover() -> None:
    """Import every package under ``dreamhead_lit.baselines`` and every ``dreamhead_lit.models`` entry point once,
    so their :func:`register` calls have run."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    from . import baselines

    for info in pkgutil.iter_modules(baselines.__path__, f"{baselines.__name__}."):
        importlib.import_module(info.name)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def get(name: str) -> ModelSpec:
    discover()
    if name not in _REGISTRY:
        raise RegistryError(f"no model named {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def load_checkpoint(path: str | Path, *, expected: str | None = None) -> Any:
    """The model in ``path`` loaded by its registry entry, found from the header the checkpoint carries.

    Raises:
        CheckpointError: unreadable or unsafe file, no header naming a registered model, or (with ``expected``) a
            checkpoint of another model.
    """
    path = Path(path)
    name = header_model(read_header(path))
    if name is None:
        raise CheckpointError(f"{path} carries no dreamhead-lit header naming its model; registered: {', '.join(names())}")
    if expected is not None and name != expected:
        raise CheckpointError(f"{path} is a {name} checkpoint, but a {expected} checkpoint is needed here")
    try:
        spec = get(name)
    except RegistryError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return spec.load_checkpoint(path)


def talking_head_data(data_stage: str) -> Callable[[DictConfig], L.LightningDataModule]:
    """A ``datamodule`` for models trained on the processed clips: windows (``"a2l"``) or frame samples (``"l2i"``)."""

    def make(cfg: DictConfig) -> L.LightningDataModule:
        from .data.datamodule import TalkingHeadDataModule

        dm = TalkingHeadDataModule(stage=data_stage, **to_container(cfg.data))
        dm.prepare_data()
        dm.setup("fit")
        dm.require_splits(cfg.data.train_split, cfg.data.val_split)
        return dm

    return make


def scorer_spec(name: str, schema: str, module: str, datamodule: str, *, export: str, sections: tuple[str, ...],
                monitor: str, mode: Literal["min", "max"], description: str) -> ModelSpec:
    """A dataset-trained scorer: configured by ``experiments/scorers/<name>.yaml`` (one size), trained into
    ``runs/scorers/<name>-<dataset folder>/`` (where :func:`dreamhead_lit.metrics.scorers.scorer_run_dir` finds it),
    its standalone weights file written by ``export``."""

    def run_name(cfg: DictConfig) -> str:
        from .metrics.scorers import scorer_run_name

        return scorer_run_name(name, cfg.data.root)

    return ModelSpec(name, schema, module, datamodule, monitor=monitor, mode=mode, config="scorers/{name}.yaml",
                     run_group="scorers",  # metrics.scorers.SCORERS_DIR
                     sections=sections, export=export, run_name=run_name, description=description)


register(ModelSpec("stage1", "dreamhead_lit.lit.a2l:Stage1Config", "dreamhead_lit.lit.a2l:A2LDiffusion",
                   talking_head_data("a2l"), monitor="val/lmd_mouth", mode="min",
                   description="DreamHead stage 1: audio -> dense landmark sequence (A2L diffusion)"))
register(ModelSpec("stage2", "dreamhead_lit.lit.l2i:Stage2Config", "dreamhead_lit.lit.l2i:L2IDiffusion",
                   talking_head_data("l2i"), monitor="val/ssim_mouth", mode="max",
                   description="DreamHead stage 2: landmarks + reference -> frames (L2I diffusion)"))
register(ModelSpec("stage2_distilled", "dreamhead_lit.lit.distill:Stage2DistillConfig",
                   "dreamhead_lit.lit.distill:L2IDistillation", talking_head_data("l2i"), monitor="val/ssim_mouth",
                   mode="max", sections=("teacher", "distill", "optim", "validation"),
                   build=lambda spec, cfg, dm: _import("dreamhead_lit.lit.distill:build_student")(spec, cfg, dm),
                   load=lambda path: _import("dreamhead_lit.lit.distill:load_student")(path), serves="stage2",
                   description="DreamHead stage 2 distilled into a few-step, one-pass student (make distill-stage2)"))
register(scorer_spec("landmarker", "dreamhead_lit.lit.landmarker:LandmarkerConfig",
                     "dreamhead_lit.lit.landmarker:LandmarkerModule",
                     "dreamhead_lit.data.scorer_data:landmarker_datamodule",
                     export="dreamhead_lit.lit.landmarker:export_landmarker", sections=("model", "augment", "optim"),
                     monitor="val/err_px", mode="min",
                     description="scorer: 68-point landmarker for LMD on the dataset's rendered faces"))
register(scorer_spec("syncnet", "dreamhead_lit.lit.sync_expert:SyncExpertConfig",
                     "dreamhead_lit.lit.sync_expert:SyncExpertModule",
                     "dreamhead_lit.data.scorer_data:sync_expert_datamodule",
                     export="dreamhead_lit.lit.sync_expert:export_sync_expert",
                     sections=("model", "loss", "optim", "eval_shifts"), monitor="val/offset_acc", mode="max",
                     description="scorer: reduced SyncNet sync expert for LSE-C/D without the official weights"))
register(scorer_spec("emotion", "dreamhead_lit.lit.emotion:EmotionConfig", "dreamhead_lit.lit.emotion:EmotionModule",
                     "dreamhead_lit.data.scorer_data:emotion_datamodule",
                     export="dreamhead_lit.lit.emotion:export_emotion", sections=("model", "augment", "optim"),
                     monitor="val/acc", mode="max",
                     description="scorer: temporal classifier of emotion from canonical 68-point landmark sequences"))

__all__ = ["ENTRY_POINT_GROUP", "ModelSpec", "RegistryError", "discover", "get", "load_checkpoint",
           "names", "register", "scorer_spec", "talking_head_data", "unregister"]
