"""Image metrics of the COCO evaluation (``shared/reference.md`` section 3): 256-pixel
preprocessing, FID by clean-fid, precision/recall (k = 3) and the CLIP score."""

from .clip_score import clip_score, clip_score_folder, image_text_cosines, load_clip
from .fid import compute_fid, feature_stats, folder_features, frechet_distance, load_stats, reference_stats
from .images import center_crop_resize, list_images, preprocess_folder
from .prdc import precision_recall, precision_recall_folders

__all__ = [
    "center_crop_resize", "clip_score", "clip_score_folder", "compute_fid", "feature_stats", "folder_features",
    "frechet_distance", "image_text_cosines", "list_images", "load_clip", "load_stats", "precision_recall",
    "precision_recall_folders", "preprocess_folder", "reference_stats",
]  # fmt: skip
