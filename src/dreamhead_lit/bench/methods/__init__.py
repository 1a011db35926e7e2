"""The methods a bench compares, one module per family. Importing this package registers the built-in kinds; a new
baseline adds its own module here (imported below) or calls :func:`register_method` from its own package."""
from .base import (METHOD_KINDS, BenchContext, Method, build_method, find_checkpoint, motion_landmarks_file,
                   register_method, sample_videos)
from .dreamhead import AudioToImageMethod, DreamHeadMethod, GroundTruthLandmarks, Stage2GTLandmarksMethod, StageMethod
from .reference import FolderMethod, GroundTruthMethod, StaticReferenceMethod

__all__ = [
    "METHOD_KINDS",
    "BenchContext",
    "Method",
    "build_method",
    "find_checkpoint",
    "motion_landmarks_file",
    "register_method",
    "sample_videos",
    "GroundTruthMethod",
    "StaticReferenceMethod",
    "FolderMethod",
    "DreamHeadMethod",
    "Stage2GTLandmarksMethod",
    "StageMethod",
    "AudioToImageMethod",
    "GroundTruthLandmarks",
]
