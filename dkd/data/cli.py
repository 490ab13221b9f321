"""``python -m dkd data coco2014|coco2017|hpsv2|journeydb --out DIR ...``: prepare the evaluation
and training prompt sets (and the COCO FID reference folders).

Wire it into ``dkd/__main__.py`` with ``add_subcommands(commands)`` on the top-level
subparsers; each leaf sets ``run`` to a function ``(args) -> exit code`` that prints the paths
it wrote on stdout, and for bad input or missing data prints one ``error:`` message and
returns 2. Heavy imports happen only when a command runs.
"""

from __future__ import annotations

import argparse
import sys


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _report(run):
    """Print the returned paths; turn the data errors into one ``error:`` line and exit code 2."""

    def wrapped(args: argparse.Namespace) -> int:
        from .download import ChecksumError, DataUnavailableError

        try:
            paths = run(args)
        except (DataUnavailableError, ChecksumError, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for key, path in paths.items():
            print(f"{key}\t{path}")
        return 0

    return wrapped


def _coco(args: argparse.Namespace) -> dict:
    from .coco import prepare_coco

    return prepare_coco(
        args.dataset,
        out=args.out,
        local=args.local,
        seed=args.seed,
        count=args.count,
        captions_file=args.captions,
        reference=args.reference,
        base_url=args.base_url,
        progress=not args.quiet,
    )


def _hpsv2(args: argparse.Namespace) -> dict:
    from .hub import prepare_hpsv2

    return prepare_hpsv2(out=args.out, local=args.local, styles=args.styles, progress=not args.quiet)


def _journeydb(args: argparse.Namespace) -> dict:
    from .hub import prepare_journeydb

    return prepare_journeydb(
        out=args.out,
        local=args.local,
        count=args.count or None,
        seed=args.seed,
        dedupe=not args.keep_duplicates,
        progress=not args.quiet,
    )


def _common(parser: argparse.ArgumentParser, local_help: str) -> None:
    parser.add_argument("--out", required=True, help="output folder (downloads go to OUT/downloads/)")
    parser.add_argument("--local", default=None, metavar="DIR", help=local_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars (one-line summaries still print)")


def add_subcommands(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` with its four sub-commands to an ``argparse`` subparsers object; return ``data``."""
    from .coco import BASE_URL, REFERENCE_MODES, SPLITS
    from .hub import HPSV2_STYLES, JOURNEYDB_COUNT

    data = subparsers.add_parser("data", help="download/prepare COCO, HPSv2 and JourneyDB prompt sets")
    commands = data.add_subparsers(dest="dataset", required=True)
    for name, split in SPLITS.items():
        coco = commands.add_parser(name, help=f"{name} val captions ({split.default_count:,}) and FID reference folder")
        archives = f"{split.annotations_zip.rsplit('/', 1)[-1]} and {split.images_zip.rsplit('/', 1)[-1]}"
        _common(
            coco,
            f"folder holding {archives} (or their extracted annotations/{split.captions_json} and {split.image_dir}/)",
        )
        coco.add_argument(
            "--seed", type=_non_negative, default=0, help="seed of the image and caption choice (default 0)"
        )
        coco.add_argument(
            "--count",
            type=_non_negative,
            default=None,
            help=f"captions to draw (default {split.default_count}); with --captions: the file's "
            "first COUNT (default all)",
        )
        coco.add_argument(
            "--captions",
            default=None,
            metavar="FILE",
            help="use this caption list as is: .pkl (DMD2's captions_coco14_test.pkl), .txt, "
            ".jsonl, .json, .csv; hf://<owner>/<repo>/<path> fetches it from the hub (DMD2's: "
            "hf://tianweiy/DMD2/data/coco/captions_coco14_test.pkl)",
        )
        coco.add_argument(
            "--reference",
            choices=REFERENCE_MODES,
            default=None,
            help="FID reference folder: the selected images (default when known), all val images "
            "(default for a caption file naming none), or none",
        )
        coco.add_argument("--base-url", default=BASE_URL, help=f"where the archives are (default {BASE_URL})")
        coco.set_defaults(run=_report(_coco))

    hps = commands.add_parser("hpsv2", help="HPSv2 benchmark prompts (zhwang/HPDv2, 4 styles x 800)")
    _common(hps, "folder holding <style>.json (or benchmark/<style>.json)")
    hps.add_argument("--styles", nargs="+", choices=HPSV2_STYLES, default=list(HPSV2_STYLES), help="styles to write")
    hps.set_defaults(run=_report(_hpsv2))

    jdb = commands.add_parser("journeydb", help="JourneyDB training prompts (gated; token from HF_TOKEN)")
    _common(jdb, "folder holding train_anno_realease_repath.jsonl.tgz (or the extracted .jsonl)")
    jdb.add_argument(
        "--count",
        type=_non_negative,
        default=JOURNEYDB_COUNT,
        help=f"prompts to sample (default {JOURNEYDB_COUNT:,}, the paper's; 0 = all, in file order)",
    )
    jdb.add_argument("--seed", type=_non_negative, default=0, help="seed of the sample (default 0)")
    jdb.add_argument("--keep-duplicates", action="store_true", help="keep repeated prompts (default: first one only)")
    jdb.set_defaults(run=_report(_journeydb))
    return data
