"""Data: prompt files and their batch order; download/preparation of COCO, HPSv2 and JourneyDB."""

from .coco import (
    COCO2014,
    COCO2017,
    CocoImage,
    CocoSplit,
    check_reference_mode,
    parse_captions,
    prepare_coco,
    read_caption_file,
    select_captions,
)
from .download import ChecksumError, DataUnavailableError, RemoteFile, download_file, ensure_files, is_offline
from .hub import journeydb_prompts, prepare_hpsv2, prepare_journeydb, read_hpsv2_style, sample_prompts
from .prompts import (
    SUFFIXES,
    PromptFileError,
    PromptSet,
    epoch_permutation,
    read_prompts,
    step_batch,
    write_prompts,
)

__all__ = [
    "check_reference_mode",
    "SUFFIXES",
    "PromptFileError",
    "PromptSet",
    "epoch_permutation",
    "step_batch",
    "read_prompts",
    "write_prompts",
    "COCO2014",
    "COCO2017",
    "ChecksumError",
    "CocoImage",
    "CocoSplit",
    "DataUnavailableError",
    "RemoteFile",
    "download_file",
    "ensure_files",
    "is_offline",
    "journeydb_prompts",
    "parse_captions",
    "prepare_coco",
    "prepare_hpsv2",
    "prepare_journeydb",
    "read_caption_file",
    "read_hpsv2_style",
    "sample_prompts",
    "select_captions",
]
