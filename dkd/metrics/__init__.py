"""Image metrics of the COCO evaluation (``docs/reference.md`` section 3): 256-pixel
preprocessing, FID by clean-fid, precision/recall (k = 3) and the CLIP score; HPSv2 (Table 6)
and inference timing (Table 5).

HPSv2 and timing are imported on first use (PEP 562): they pull in torchvision and peft, which
a job that computes FID does not need."""

from importlib import import_module

from .clip import clip_score, clip_score_folder, image_text_cosines, load_clip
from .fid import compute_fid, feature_stats, folder_features, frechet_distance, load_stats, reference_stats
from .images import center_crop_resize, list_images, preprocess_folder
from .prdc import equal_size_subsets, precision_recall, precision_recall_equal_sizes, precision_recall_folders

_LAZY = {
    "STYLES": "hps",
    "HPSModel": "hps",
    "HPSPreprocess": "hps",
    "hps_benchmark": "hps",
    "hps_scores": "hps",
    "load_hps": "hps",
    "time_call": "timing",
    "time_pipeline": "timing",
}

__all__ = [
    "center_crop_resize", "clip_score", "clip_score_folder", "compute_fid", "equal_size_subsets", "feature_stats",
    "folder_features", "frechet_distance", "image_text_cosines", "list_images", "load_clip", "load_stats",
    "precision_recall", "precision_recall_equal_sizes", "precision_recall_folders", "preprocess_folder",
    "reference_stats", *_LAZY,
]  # fmt: skip


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_LAZY[name]}", __name__), name)
