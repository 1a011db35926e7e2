"""Evaluation metrics as the talking-head literature computes them, each a torchmetrics ``Metric`` (DDP-syncable
running sums) beside a functional form, plus the resolution of their pretrained files.

- FID: :class:`FIDMetric`, :func:`frechet_distance` -- needs ``pt_inception-2015-12-05-6726825d.pth``;
- LPIPS: :class:`LPIPSMetric`, :func:`lpips_per_image` -- ``alexnet-owt-7be5be79.pth`` (+ lpips' own linear layers);
- SSIM / PSNR (whole frame or mouth crop): :class:`SSIMMetric`, :class:`PSNRMetric`, :func:`ssim_per_image`,
  :func:`psnr_per_image` -- no weights;
- LMD: :class:`LMDMetric`, :func:`lmd_from_landmarks`, :func:`lmd_from_frames` -- dlib
  ``shape_predictor_68_face_landmarks.dat`` for frames (ships with face_recognition_models);
- LSE-C / LSE-D: :class:`SyncMetric`, :func:`sync_scores_from_embeddings` -- ``syncnet_v2.model`` or a trained expert;
- CSIM: :class:`CSIMMetric`, :func:`csim_from_frames` -- dlib 5-point and face-recognition models (shipped);
- emotion accuracy: :class:`EmotionMetric` -- a landmark emotion classifier trained on the dataset.

Where the pretrained instruments do not apply, :mod:`dreamhead_lit.metrics.scorers` holds the dataset-trained ones (a
landmarker for LMD, a sync expert for LSE-C/D, an emotion classifier) as the bench loads them.

Every Metric has ``compute()`` (tensors, for logging) and ``report()`` (a flat dict with the values *and* what a
table must state next to them: counts, the network that produced features, fallbacks).
"""

from dreamhead_lit.metrics.csim import IDENTITY_NETWORK, CSIMMetric, CSIMResult, DlibFaceEmbedder, csim_from_frames
from dreamhead_lit.metrics.emotion import EmotionMetric
from dreamhead_lit.metrics.fid import (
    FIDInceptionFeatures,
    FIDMetric,
    fid_from_features,
    fid_inception,
    fid_statistics,
    fid_sums_update,
    frechet_distance,
)
from dreamhead_lit.metrics.image import (
    MOUTH_CROP_SIZE,
    MOUTH_MARGIN,
    ImageRegion,
    PSNRMetric,
    SSIMMetric,
    crop_mouth,
    mouth_boxes,
    psnr_per_image,
    ssim_per_image,
)
from dreamhead_lit.metrics.lmd import (
    DlibLandmarker,
    Landmarker,
    LMDMetric,
    LMDNormalisation,
    LMDResult,
    dlib_landmarker,
    landmarks_from_frames,
    lmd_from_frames,
    lmd_from_landmarks,
    lmd_names,
    lmd_per_frame,
)
from dreamhead_lit.metrics.lpips import RANDOM_BACKBONE_LABEL, LPIPSMetric, build_lpips_net, lpips_per_image
from dreamhead_lit.metrics.sync import (
    DEFAULT_VSHIFT,
    OFFICIAL_EXPERT_NAME,
    SyncExpert,
    SyncMetric,
    SyncNetExpert,
    SyncScores,
    sync_scores_from_embeddings,
)
from dreamhead_lit.metrics.weights import (
    METRIC_WEIGHTS,
    MissingWeightsError,
    WeightsStatus,
    check_weights,
    format_weights_status,
    resolve_weights,
    weights_dirs,
)

__all__ = [
    "CSIMMetric",
    "CSIMResult",
    "DEFAULT_VSHIFT",
    "DlibFaceEmbedder",
    "DlibLandmarker",
    "EmotionMetric",
    "FIDInceptionFeatures",
    "FIDMetric",
    "IDENTITY_NETWORK",
    "ImageRegion",
    "LMDMetric",
    "LMDNormalisation",
    "LMDResult",
    "LPIPSMetric",
    "Landmarker",
    "METRIC_WEIGHTS",
    "MOUTH_CROP_SIZE",
    "MOUTH_MARGIN",
    "MissingWeightsError",
    "OFFICIAL_EXPERT_NAME",
    "PSNRMetric",
    "RANDOM_BACKBONE_LABEL",
    "SSIMMetric",
    "SyncExpert",
    "SyncMetric",
    "SyncNetExpert",
    "SyncScores",
    "WeightsStatus",
    "build_lpips_net",
    "check_weights",
    "crop_mouth",
    "csim_from_frames",
    "dlib_landmarker",
    "fid_from_features",
    "fid_inception",
    "fid_statistics",
    "fid_sums_update",
    "format_weights_status",
    "frechet_distance",
    "landmarks_from_frames",
    "lmd_from_frames",
    "lmd_from_landmarks",
    "lmd_names",
    "lmd_per_frame",
    "lpips_per_image",
    "mouth_boxes",
    "psnr_per_image",
    "resolve_weights",
    "ssim_per_image",
    "sync_scores_from_embeddings",
    "weights_dirs",
]
