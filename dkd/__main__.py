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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dkd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    params = commands.add_parser("params", help="trainable-parameter table against the paper's counts")
    params.add_argument("--expected", default=None, help="CSV of the paper's counts (default: config/paper/parameter_counts.csv)")
    params.set_defaults(run=_params)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
