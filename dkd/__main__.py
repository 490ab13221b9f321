"""Command line of the ``dkd`` package: ``python -m dkd <command>``."""

from __future__ import annotations

import argparse
import sys


def _params(args: argparse.Namespace) -> int:
    from .params import parameter_table, to_markdown

    table = parameter_table(args.expected)
    print(to_markdown(table))
    mismatches = int((table["match"] != "yes").sum())
    if mismatches:
        print(f"\n{mismatches} row(s) do not match the paper.", file=sys.stderr)
    return 1 if mismatches else 0


def _clear_errors(run):
    """Bad input (a missing model, mismatched layers) ends in one ``error:`` line and exit code 2."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapped


def _analyze_weights(args: argparse.Namespace) -> int:
    from .analysis import compare_models, load_state_dict, summarize, summary_json, write_analysis

    frame = compare_models(
        load_state_dict(args.a, args.subfolder),
        load_state_dict(args.b, args.subfolder),
        include_conv=args.include_conv,
        with_svd=not args.no_svd,
    )
    summary = summarize(frame)
    if args.out:
        for path in write_analysis(frame, summary, args.out).values():
            print(f"wrote {path}", file=sys.stderr)
    print(summary_json(summary), end="")
    return 0


def _swap_weights(args: argparse.Namespace) -> int:
    from .analysis import load_state_dict, model_files, save_model_folder, swap_models

    direction_source = args.b if args.norms_from == "a" else args.a
    config = model_files(direction_source, args.subfolder)[1]
    if config is None:
        raise FileNotFoundError(f"{direction_source!r} has no config.json to copy (the direction model's)")
    state = swap_models(
        load_state_dict(args.a, args.subfolder),
        load_state_dict(args.b, args.subfolder),
        norms_from=args.norms_from,
        include_conv=args.include_conv,
    )
    print(f"wrote {save_model_folder(state, config, args.out)}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from .data import read_prompts
    from .io import atomic_write_text, image_path
    from .sampling.pipeline import OneStepPipeline
    from .sampling.shards import generate_shard, sampler_fingerprint

    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"{args.model}: no such folder (expected an exported student's pipeline/ folder)")
    prompts = [*args.prompt, *(read_prompts(args.prompts).prompts if args.prompts else [])]
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) and/or --prompts FILE (.txt or .jsonl)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}")
    index = [
        {"image": image_path(args.out, i).name, "prompt": prompt, "seed": args.seed + i}
        for i, prompt in enumerate(prompts)
    ]
    index_file = Path(args.out) / "prompts.jsonl"
    if index_file.is_file() and [json.loads(line) for line in index_file.read_text().splitlines()] != index:
        raise ValueError(
            f"{args.out} holds the images of other prompts or seeds ({index_file}): "
            "choose another --out, or delete that folder"
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = OneStepPipeline.from_pretrained(
        args.model, dtype=getattr(torch, args.dtype), device=device, backbone=args.backbone
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(index_file, "".join(json.dumps(row) + "\n" for row in index))  # first: a rerun resumes
    fingerprint = sampler_fingerprint(args.model, {"dtype": args.dtype, "device": device}, args.seed, prompts)
    counts = generate_shard(
        pipe, prompts, args.out, seed=args.seed, batch_size=args.batch_size, fingerprint=fingerprint
    )
    print(f"{args.out}: {counts['written']} image(s) written, {counts['skipped']} already there", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``python -m dkd`` command (the docs' command lines are checked against it)."""
    parser = argparse.ArgumentParser(prog="python -m dkd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    params = commands.add_parser("params", help="trainable-parameter table against the paper's counts")
    params.add_argument(
        "--expected", default=None, help="CSV of the paper's counts (default: config/paper/parameter_counts.csv)"
    )
    params.set_defaults(run=_params)

    analyze = commands.add_parser(
        "analyze-weights", help="norm/direction change of B against A per layer (Fig. 2a, Eq. 14-17, Table 2 NM/DM)"
    )
    analyze.add_argument("a", help="reference (multi-step) model: diffusers folder, .safetensors file or hub id")
    analyze.add_argument("b", help="new (one-step) model, same forms as A")
    analyze.add_argument(
        "--subfolder", default=None, help="subfolder of both sources (default: root, unet, transformer)"
    )
    analyze.add_argument(
        "--include-conv", action="store_true", help="also analyse Conv2d weights (flattened per output)"
    )
    analyze.add_argument("--no-svd", action="store_true", help="skip the SVD of the direction residual (Fig. 2b)")
    analyze.add_argument(
        "--out", default=None, help="folder for weights.csv, summary.json, weights.png (default: print only)"
    )
    analyze.set_defaults(run=_clear_errors(_analyze_weights))

    swap = commands.add_parser(
        "swap-weights", help="a model with the norms of one and the directions of the other (Fig. 2c/d)"
    )
    swap.add_argument("a", help="first model: diffusers folder, .safetensors file (with config.json beside) or hub id")
    swap.add_argument("b", help="second model, same forms as A")
    swap.add_argument("--norms-from", choices=("a", "b"), required=True, help="model whose per-row norms are kept")
    swap.add_argument("--out", required=True, help="output diffusers folder (config.json of the direction model)")
    swap.add_argument("--subfolder", default=None, help="subfolder of both sources (default: root, unet, transformer)")
    swap.add_argument("--include-conv", action="store_true", help="also swap Conv2d weights")
    swap.set_defaults(run=_clear_errors(_swap_weights))

    sample = commands.add_parser(
        "sample", help="images from an exported one-step student: one network call per batch, a seed per image"
    )
    sample.add_argument("model", help="the exported pipeline/ folder of a distillation run")
    sample.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    sample.add_argument("--prompts", default=None, help="a prompt file: .txt (one per line) or .jsonl ('prompt')")
    sample.add_argument(
        "--out",
        required=True,
        help="folder for <index:05d>.png and prompts.jsonl (a rerun with the "
        "same prompts and seed resumes; images made on another device or dtype are redone)",
    )
    sample.add_argument("--seed", type=int, default=0, help="image i uses seed SEED + i (default 0)")
    sample.add_argument("--batch-size", type=int, default=16, help="prompts per network call (default 16)")
    sample.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="weights' precision (default float32, as the evaluation)",
    )
    sample.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    sample.add_argument("--backbone", default=None, help="backbone name when the folder has no dkd_student.json")
    sample.set_defaults(run=_clear_errors(_sample))

    from .data.cli import add_subcommands as add_data_subcommands
    from .train.cli import add_subcommand as add_distill_subcommand

    add_distill_subcommand(commands)  # python -m dkd distill RUN --backbone B --prompts FILE --out DIR

    add_data_subcommands(commands)  # python -m dkd data coco2014|coco2017|hpsv2|journeydb ...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
