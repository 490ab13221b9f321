"""Data: prompt files and their batch order; download/preparation of COCO, HPSv2 and JourneyDB."""

from .prompts import (
    SUFFIXES,
    PromptFileError,
    PromptSet,
    batches_per_epoch,
    epoch_permutation,
    prompt_batches,
    read_prompts,
    write_prompts,
)
from .coco import (
    COCO2014,
    COCO2017,
    CocoImage,
    CocoSplit,
    parse_captions,
    prepare_coco,
    prepare_coco2014,
    prepare_coco2017,
    read_caption_file,
    select_captions,
)
from .download import ChecksumError, DataUnavailableError, RemoteFile, download_file, ensure_files, is_offline
from .hub import journeydb_prompts, prepare_hpsv2, prepare_journeydb, read_hpsv2_style, sample_prompts

__all__ = [
    "SUFFIXES",
    "PromptFileError",
    "PromptSet",
    "batches_per_epoch",
    "epoch_permutation",
    "prompt_batches",
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
    "prepare_coco2014",
    "prepare_coco2017",
    "prepare_hpsv2",
    "prepare_journeydb",
    "read_caption_file",
    "read_hpsv2_style",
    "sample_prompts",
    "select_captions",
]
