"""Learning-rate sweep of the toy benchmark's Table 2 methods (DKD, LoRA, DoRA, FT) and of the reproduced
baselines (SiD-LSG, SwiftBrush, PG-SB, SwiftBrush v2's two schemes: docs/baselines.md), on CPU.

The toy's shared settings (``config/toy.yaml``: 400 steps, batch 32, real-model CFG 2.0) were tuned
on DKD; here every Table 2 method is trained at each learning rate of its grid (student, and for FT's
fully trained fake model also the fake's) through the workflow (``snakemake``, each point in its own
results folder) and scored with the toy evaluator on the 500 evaluation prompts, as the report does:
the learning rates are selected on the evaluation set itself (as DKD's settings were), so the best FID
is a best-of-sweep, not a held-out estimate. The best point of each method (lowest FID) is what
``distill.run_settings`` of ``config/toy.yaml`` should hold. Prints one Markdown table.

A point's folder is reused (its finished outputs are kept, as by ``snakemake --rerun-triggers mtime``:
the copied shared folders carry no Snakemake records) only while its config is the same; after a change
of ``config/toy.yaml``'s settings it is refused. After a change of the ``dkd`` code, or of the shared
folders in ``--shared-from``, use a new ``--out``.

  python benchmarks/toy_lr_sweep.py        # every point (66; 1 to 2.5 min each): about 2 h on 2 cores
  python benchmarks/toy_lr_sweep.py --runs sidlsg-ft-sfull-fft-linear-zero swiftbrush-ft-sfull-flora4-linear-zero \
      pgsb-ft-sfull-flora4-linear-zero sbv2-ft-sfull-flora4-linear-zero sbv2-lora-s8-flora4-linear-zero  # 38: ~45 min
  python benchmarks/toy_lr_sweep.py --runs ft-sfull-fft-linear-zero --out results/toy-lr

``--generator-every N`` trains each point at N fake updates per generator update (DMD2's FT: 10) and N
times the steps, so that the generator gets as many updates as at 1:1; ``--points`` replaces the grid
(student lr, or student:fake):

  python benchmarks/toy_lr_sweep.py --runs ft-sfull-fft-linear-zero --generator-every 10 --points 3e-4:3e-5
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dkd.train.run import merge_settings

ROOT = Path(__file__).resolve().parents[1]
# run -> [(student lr, fake lr or None: the config's)]. Each point is config/toy.yaml's settings for the run
# (distill.settings, then run_settings.<run>) with only these learning rates changed; 2e-3 / 1e-2 are the shared ones.
GRID = {
    "lorad-s8-f4-linear-zero": [(lr, None) for lr in (1e-3, 2e-3, 4e-3)],
    "lora-s8-f4-linear-zero": [(lr, None) for lr in (1e-3, 2e-3, 4e-3)],
    "dora-s8-f4-linear-zero": [(lr, None) for lr in (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3)],
    "ft-sfull-fft-linear-zero": [(s, f) for s in (1e-4, 3e-4, 1e-3) for f in (1e-4, 1e-3, 1e-2)]
    + [(3e-4, 1e-5), (3e-4, 3e-5), (1e-3, 3e-5), (3e-4, 3e-4), (2e-3, 1e-2)],
    # the baselines, each with its recipe's objective and optimiser kind: full students (and SiD's full fake)
    # around FT's rates, LoRA fakes and students around the LoRA rates
    "sidlsg-ft-sfull-fft-linear-zero": [(s, f) for s in (1e-4, 3e-4, 1e-3) for f in (3e-5, 3e-4)],
    **{
        run: [(s, f) for s in (1e-4, 3e-4, 1e-3) for f in (1e-3, 1e-2)] + [(1e-5, 1e-2), (3e-5, 1e-2)]
        for run in (
            "swiftbrush-ft-sfull-flora4-linear-zero",
            "pgsb-ft-sfull-flora4-linear-zero",
            "sbv2-ft-sfull-flora4-linear-zero",
        )
    },
    "sbv2-lora-s8-flora4-linear-zero": [(s, f) for s in (1e-3, 2e-3, 4e-3) for f in (1e-3, 1e-2)]
    + [(8e-3, 1e-2), (4e-3, 3e-2)],
}
SHARED = ["backbones", "data", "evaluator", "reference-stats"]  # made once by the toy workflow, copied


def point_config(
    base: dict, run: str, student_lr: float, fake_lr: float | None, folder: Path, generator_every: int = 1
) -> dict:
    """``config/toy.yaml`` reduced to ``run`` at these learning rates, results in ``folder``; with
    ``generator_every`` > 1, that many fake updates per generator update over that many times the steps."""
    config = copy.deepcopy(base)
    config["results"] = str(folder)
    distill = config["distill"]
    distill["runs"] = {"toy": [run]}
    distill.pop("curves", None)
    settings = {"optim_student": {"lr": student_lr}}
    if fake_lr is not None:
        settings["optim_fake"] = {"lr": fake_lr}
    own = (distill.get("run_settings") or {}).get(run) or {}
    if generator_every > 1:
        steps = merge_settings(distill["settings"], own)["max_steps"]
        settings.update(generator_every=generator_every, max_steps=steps * generator_every)
    distill["run_settings"] = {run: merge_settings(own, settings)}
    config.pop("analysis", None)
    return config


def run_point(config: dict, run: str, folder: Path, shared_from: Path, cores: int) -> dict:
    """Train and score one point (its outputs are kept); its config, learning rates and scores."""
    path, text = folder / "config.yaml", yaml.safe_dump(config, sort_keys=False)
    if path.exists() and path.read_text() != text:
        raise SystemExit(f"{folder} was made with other settings: delete it or pass another --out")
    folder.mkdir(parents=True, exist_ok=True)
    for part in SHARED:
        if not (folder / part).exists():
            shutil.copytree(shared_from / part, folder / part, copy_function=shutil.copy2)
    path.write_text(text)
    scores = [folder / "toy" / run / "toy-eval" / f"{name}.json" for name in ("fid", "text_image")]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            *map(str, scores),
            "--cores",
            str(cores),
            "--configfile",
            str(path),
            "--rerun-triggers",
            "mtime",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{folder}: snakemake failed\n{done.stderr[-3000:]}")
    settings = merge_settings(config["distill"]["settings"], config["distill"]["run_settings"][run])
    row = dict(
        run=run,
        student_lr=settings["optim_student"]["lr"],
        fake_lr=settings["optim_fake"]["lr"],
        generator_every=settings.get("generator_every", 1),
        steps=settings["max_steps"],
    )
    for score in scores:
        row.update(json.loads(score.read_text())["values"])
    return row


def table(rows: list[dict]) -> str:
    best = {run: min((r for r in rows if r["run"] == run), key=lambda r: r["fid"]) for run in {r["run"] for r in rows}}
    lines = [
        "| run | student lr | fake lr | fake:generator updates | steps | FID | P(prompted digit) | digit accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mark = "**" if best[row["run"]] is row else ""
        lines.append(
            f"| {row['run']} | {row['student_lr']:g} | {row['fake_lr']:g} | {row['generator_every']}:1 | "
            f"{row['steps']} | "
            f"{mark}{row['fid']:.2f}{mark} | {row['digit_prob']:.3f} | {row['digit_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def learning_rates(text: str) -> tuple[float, float | None]:
    """``"3e-4"`` -> (3e-4, None: the config's fake lr); ``"3e-4:3e-5"`` -> (3e-4, 3e-5)."""
    student, _, fake = text.partition(":")
    try:
        return float(student), (float(fake) if fake else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a student lr, or student:fake (3e-4:3e-5)") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "toy-lr")
    parser.add_argument(
        "--shared-from",
        type=Path,
        default=ROOT / "results" / "toy",
        help="a toy results folder holding " + ", ".join(SHARED) + " (make demo)",
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--generator-every", type=int, default=1, help="fake updates per generator update")
    parser.add_argument(
        "--points", nargs="+", type=learning_rates, help="student lr or student:fake (replaces the grid)"
    )
    args = parser.parse_args()
    if args.generator_every < 1:
        parser.error("--generator-every must be at least 1")
    missing = [part for part in SHARED if not (args.shared_from / part).exists()]
    if missing:
        sys.exit(f"{args.shared_from} lacks {', '.join(missing)}: run `make demo` first (or pass --shared-from)")
    base, rows = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text()), []
    try:
        for run in args.runs:
            for student_lr, fake_lr in args.points or GRID[run]:
                folder = (
                    args.out
                    / run
                    / (
                        f"s{student_lr:g}"
                        + (f"-f{fake_lr:g}" if fake_lr is not None else "")
                        + (f"-g{args.generator_every}" if args.generator_every > 1 else "")
                    )
                )
                config = point_config(base, run, student_lr, fake_lr, folder, args.generator_every)
                rows.append(run_point(config, run, folder, args.shared_from, args.cores))
                print(
                    f"{run}: student lr {rows[-1]['student_lr']:g}, fake lr {rows[-1]['fake_lr']:g}: "
                    f"FID {rows[-1]['fid']:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if rows:  # the points made so far, also when one fails
            print(table(rows))


if __name__ == "__main__":
    main()
