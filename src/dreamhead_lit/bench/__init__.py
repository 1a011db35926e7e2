"""The benchmark behind ``make bench``: every method x the test split(s) -> the field's metrics -> one table.

    python -m dreamhead_lit.bench [--config bench/demo.yaml] [--strict] [key=value ...]
    torchrun --nproc-per-node N -m dreamhead_lit.bench [--config ...]          # clips sharded over N processes

For each method of the config (a ``kind`` from :data:`METHOD_KINDS`), a video is produced for each test clip -- or an
already generated one read -- and scored against the clip's ground truth by one piece of code, whatever made it:

=====================  ===================================================================================
``dreamhead``          stage-1 + stage-2 checkpoints through :func:`dreamhead_lit.pipeline.generate`. Protocol
                       ``dubbing`` (the paper's, default): the processed test clip is the reference, so pose and
                       background come from the clip and speech from its audio (a stage-2 model in ``dubbing``
                       mode also sees the clip's frames with the lower face masked); ``one_shot``: its first frame
                       only (frozen pose).
``ground_truth``       the test clip re-encoded by the same mp4 writer (upper bound: only the codec differs).
``static_reference``   the clip's first frame repeated (lower bound).
``stage2_gt_landmarks`` the clip's ground-truth landmarks -> stage 2 (the stage-2 upper bound), through the same
                       ``pipeline.generate`` with a stand-in for stage 1 that returns the true landmarks
                       (:class:`GroundTruthLandmarks`), so rasterisation and conditioning are shared, not copied.
``audio_to_image``     a stage-2 checkpoint trained with ``model.condition=audio`` (the ``landmark_hierarchy``
                       ablation: audio -> frames, no landmarks, no stage 1) through the same ``pipeline.generate``.
                       Without landmarks only a dubbing-mode model can take pose and background from the clip
                       (protocol ``dubbing``); otherwise it is one-shot from the clip's first frame, pose frozen.
``folder``             ``<folder>/<clip_id>.mp4`` made elsewhere (official DreamTalk / SadTalker code ...).
=====================  ===================================================================================

Metrics per clip (mean over its frames): SSIM, PSNR, and both on the 96x96 mouth crop around the ground-truth mouth
(``ssim_mouth``, ``psnr_mouth``); LPIPS; M-LMD and F-LMD (dlib 68 on real data, the trained landmarker of
:mod:`dreamhead_lit.metrics.scorers` on rendered data -- the table names which); LSE-C, LSE-D and the AV offset (the
official SyncNet when ``syncnet_v2.model`` is found, else the trained expert when one exists, else n/a); CSIM against
the clip's first frame; the emotion accuracy (1 when the dataset's trained landmark emotion classifier reads the clip's
emotion label from the landmarks LMD's landmarker finds on the method's frames; its bounds, the same classifier on
the ground-truth landmarks and on the landmarker's points of the ground-truth frames, in the notes; n/a on data without
emotion labels, even under ``--strict``). FID is over all frames of a method against the ground-truth frames of the same clips (running
sums). Table values aggregate the per-clip metric *states* with each metric's own reduction (torchmetrics
``merge_state``): SSIM/PSNR/LPIPS/CSIM average over all frames, LMD and LSE over videos, as the metrics define them.

Generated frames are compared with the ground truth over the shorter of the two lengths, after resizing to the
dataset resolution when the sizes differ (both counted per clip). The sync metrics use the clip's source audio (the
audio every method was driven by; ``sync.audio=video`` takes the mp4's own track).

Weights: a metric whose pretrained file is missing is ``n/a`` with the exact file name and where to put it
(``--strict`` makes that an error). Nothing is ever scored with random weights; tests inject small labelled networks
through :class:`Backends`.

Outputs (rank 0): ``<out_root>/<dataset>/<name>/`` with ``table.md``, ``table.csv`` (:data:`TABLE_COLUMNS`),
``results.json``, ``per_clip.csv`` (:data:`PER_CLIP_COLUMNS`) and ``tensorboard/`` (scalars ``bench/<metric>/<method>``
and the table as text). ``videos/<method>/<clip>.mp4`` caches generated videos and ``cache/<method>/<clip>.json`` the
per-clip results, keyed by method + clip + metric settings: an interrupted run resumes where it stopped.

Distributed: under ``torchrun`` (or any launcher setting ``RANK``/``WORLD_SIZE``, e.g. Lightning's; SLURM's
``SLURM_PROCID``/``SLURM_NTASKS`` with ``MASTER_ADDR``) clip ``i`` goes to rank ``i % world``; per-clip rows are
gathered (each clip exactly once, checked), FID sums are reduced, rank 0 writes.
"""
from .cache import file_fingerprint
from .clips import TestClip, select_clips
from .cli import main
from .config import (
    METRICS,
    BenchConfig,
    BenchError,
    CSIMSettings,
    EmotionSettings,
    LMDSettings,
    MethodConfig,
    MethodUnavailable,
    MetricNotApplicable,
    SyncSettings,
    load_bench_config,
)
from .methods import (
    METHOD_KINDS,
    AudioToImageMethod,
    BenchContext,
    DreamHeadMethod,
    FolderMethod,
    GroundTruthLandmarks,
    GroundTruthMethod,
    Method,
    Stage2GTLandmarksMethod,
    StaticReferenceMethod,
    build_method,
    find_checkpoint,
    register_method,
)
from .report import PER_CLIP_COLUMNS, TABLE_COLUMNS, TABLE_HEADINGS, BenchResult, arrow
from .run import bench_context, run_bench
from .scorer import Backends, Scorer

__all__ = [
    "METRICS",
    "TABLE_COLUMNS",
    "TABLE_HEADINGS",
    "PER_CLIP_COLUMNS",
    "MethodConfig",
    "LMDSettings",
    "SyncSettings",
    "CSIMSettings",
    "EmotionSettings",
    "BenchConfig",
    "Backends",
    "BenchError",
    "MethodUnavailable",
    "MetricNotApplicable",
    "TestClip",
    "select_clips",
    "Method",
    "METHOD_KINDS",
    "register_method",
    "build_method",
    "find_checkpoint",
    "BenchContext",
    "GroundTruthMethod",
    "StaticReferenceMethod",
    "FolderMethod",
    "DreamHeadMethod",
    "Stage2GTLandmarksMethod",
    "AudioToImageMethod",
    "GroundTruthLandmarks",
    "Scorer",
    "BenchResult",
    "run_bench",
    "load_bench_config",
    "bench_context",
    "file_fingerprint",
    "arrow",
    "main",
]
