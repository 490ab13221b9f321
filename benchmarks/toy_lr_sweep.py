"""Learning-rate sweep of the toy benchmark's Table 2 methods (DKD, LoRA, DoRA, FT) and of the reproduced
baselines (SiD-LSG, SwiftBrush, PG-SB, SwiftBrush v2's two schemes: docs/baselines.md), on CPU.

The toy's shared settings (``config/toy.yaml``: 400 steps, batch 32, real-model CFG 2.0) were tuned
on DKD; here every Table 2 method is trained at each learning rate of its grid (student, and for FT's
fully trained fake model also the fake's) through the workflow (``snakemake``, each point in its own
results folder) and scored with the toy evaluator on the validation set ``toy-val`` (500 prompts and
noise drawn apart from the evaluation set's), never on the evaluation set: the best point of each method
(lowest validation FID) is what ``distill.run_settings`` of ``config/toy.yaml`` and
``config/toy-study.yaml`` hold, and the report then scores it once on ``toy-eval``. Prints one Markdown
table.

A point's folder is reused (its finished outputs are kept, as by ``snakemake --rerun-triggers mtime``:
the copied shared folders carry no Snakemake records) only while its config is the same; after a change
of ``config/toy.yaml``'s settings it is refused. After a change of the ``dkd`` code, or of the shared
folders in ``--shared-from``, use a new ``--out``.

  python benchmarks/toy_lr_sweep.py --jobs 2   # every point (66; 1 to 2.5 min each): about 1 h on 2 cores
  python benchmarks/toy_lr_sweep.py --jobs 2 --grid near   # config/toy-study.yaml's: 35 points, about 1 h
  python benchmarks/toy_lr_sweep.py --jobs 2 --grid near --generator-every 10   # ... and its 19 points at 10:1
  python benchmarks/toy_lr_sweep.py --runs sidlsg-ft-sfull-fft-linear-zero swiftbrush-ft-sfull-flora4-linear-zero \
      pgsb-ft-sfull-flora4-linear-zero sbv2-ft-sfull-flora4-linear-zero sbv2-lora-s8-flora4-linear-zero  # 38: ~45 min
  python benchmarks/toy_lr_sweep.py --runs ft-sfull-fft-linear-zero --out results/toy-lr

``--generator-every N`` trains each point as the run's ``-g{N}`` variant (``dkd.runs``: N fake updates per
generator update over N times the steps, so that the generator gets as many updates as at 1:1);
``--points`` replaces the grid (student lr, or student:fake); ``--jobs`` trains that many points at once
(one core each):

  python benchmarks/toy_lr_sweep.py --runs ft-sfull-fft-linear-zero --generator-every 10 --points 3e-4:3e-5
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from dkd.vocabulary import merge_settings

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
# The validation sweep behind config/toy-study.yaml (--grid near): each run's best point of GRID on the evaluation
# set (benchmarks/results/cpu-toy-lr-sweep.md) and its neighbours along each learning rate.
NEAR = {
    "lorad-s8-f4-linear-zero": [(lr, None) for lr in (1e-3, 2e-3, 4e-3)],
    "lora-s8-f4-linear-zero": [(lr, None) for lr in (1e-3, 2e-3, 4e-3)],
    "dora-s8-f4-linear-zero": [(lr, None) for lr in (2e-5, 5e-5, 1e-4)],
    "ft-sfull-fft-linear-zero": [(3e-4, 3e-5), (1e-4, 3e-5), (1e-3, 3e-5), (3e-4, 1e-5), (3e-4, 1e-4)],
    "sidlsg-ft-sfull-fft-linear-zero": [(3e-4, 3e-4), (1e-4, 3e-4), (1e-3, 3e-4), (3e-4, 3e-5)],
    "swiftbrush-ft-sfull-flora4-linear-zero": [(1e-4, 1e-2), (3e-5, 1e-2), (3e-4, 1e-2), (1e-4, 1e-3)],
    "pgsb-ft-sfull-flora4-linear-zero": [(1e-3, 1e-2), (3e-4, 1e-2), (3e-3, 1e-2), (1e-3, 1e-3)],
    "sbv2-ft-sfull-flora4-linear-zero": [(1e-3, 1e-3), (3e-4, 1e-3), (3e-3, 1e-3), (1e-3, 1e-2)],
    "sbv2-lora-s8-flora4-linear-zero": [(4e-3, 1e-2), (2e-3, 1e-2), (8e-3, 1e-2), (4e-3, 3e-2), (4e-3, 1e-3)],
}
# ... and at DMD2's 10:1 (--grid near --generator-every 10): around each method's 1:1 rates, the fake's too
# (FT at 10:1 was best at a 10x higher fake rate than at 1:1 in GRID's sweep on the evaluation set).
NEAR_10 = {
    "lorad-s8-f4-linear-zero": [
        (2e-3, 1e-2),
        (1e-3, 1e-2),
        (2e-3, 3e-3),
        (4e-3, 1e-2),
        (8e-3, 1e-2),
        (1.6e-2, 1e-2),
        (3.2e-2, 1e-2),
    ],
    "lora-s8-f4-linear-zero": [(2e-3, 1e-2), (1e-3, 1e-2), (2e-3, 3e-3), (4e-3, 1e-2)],
    "dora-s8-f4-linear-zero": [
        (5e-5, 1e-2),
        (1e-4, 1e-2),
        (5e-5, 3e-3),
        (2e-4, 1e-2),
        (5e-4, 1e-2),
        (1e-3, 1e-2),
        (2e-3, 1e-2),
        (4e-3, 1e-2),
    ],
    "ft-sfull-fft-linear-zero": [(3e-4, 3e-4), (3e-4, 1e-4), (3e-4, 1e-3), (1e-3, 3e-4)],
}
SHARED = ["backbones", "data", "evaluator", "reference-stats"]  # made once by the toy workflow, copied
EVALSET = "toy-val"  # where the points are scored (config/toy.yaml): the validation set, never toy-eval


def point_config(
    base: dict, run: str, student_lr: float, fake_lr: float | None, folder: Path, generator_every: int = 1
) -> dict:
    """``config/toy.yaml`` reduced to ``run`` (its ``-g{N}`` variant with ``generator_every`` N > 1) at these
    learning rates, scored on the validation set alone, results in ``folder``."""
    config = copy.deepcopy(base)
    config["results"] = str(folder)
    distill = config["distill"]
    distill["runs"] = {"toy": [point_run(run, generator_every)]}
    distill.pop("curves", None)
    distill.pop("merges", None)
    settings = {"optim_student": {"lr": student_lr}}
    if fake_lr is not None:
        settings["optim_fake"] = {"lr": fake_lr}
    own = (distill.get("run_settings") or {}).get(run) or {}
    distill["run_settings"] = {run: merge_settings(own, settings)}  # the -g{N} variant takes its plain run's
    evaluation = config["evaluation"]
    evaluation["sets"] = {EVALSET: {**evaluation["sets"][EVALSET], "models": {"toy": distill["runs"]["toy"]}}}
    evaluation["one_step_teachers"], evaluation["teachers"] = [], {}
    config.pop("analysis", None)
    config.pop("report", None)
    return config


def point_run(run: str, generator_every: int) -> str:
    """The run name a point trains: ``run``, or its ``-g{N}`` variant."""
    return run if generator_every == 1 else f"{run}-g{generator_every}"


def check_folder(folder: Path, config: dict) -> None:
    """A point's folder is reused only with the same config: one clear error otherwise."""
    path = folder / "config.yaml"
    if path.exists() and path.read_text() != yaml.safe_dump(config, sort_keys=False):
        raise SystemExit(f"{folder} was made with other settings: delete it or pass another --out")


def run_point(config: dict, run: str, folder: Path, shared_from: Path, cores: int) -> dict:
    """Train and score one point on the validation set (its outputs are kept); its config, learning rates
    and scores."""
    path, text = folder / "config.yaml", yaml.safe_dump(config, sort_keys=False)
    check_folder(folder, config)
    folder.mkdir(parents=True, exist_ok=True)
    for part in SHARED:
        if not (folder / part).exists():
            shutil.copytree(shared_from / part, folder / part, copy_function=shutil.copy2)
    path.write_text(text)
    (name,) = config["distill"]["runs"]["toy"]
    scores = [folder / "toy" / name / EVALSET / f"{metric}.json" for metric in ("fid", "text_image")]
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
            "--rerun-incomplete",  # a point stopped half-way resumes (its run from its last checkpoint)
            "--nolock",  # points run at once write disjoint folders; Snakemake's lock files of one folder race
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{folder}: snakemake failed\n{done.stderr[-3000:]}")
    train = json.loads((folder / "toy" / name / "train.json").read_text())["values"]
    settings = merge_settings(config["distill"]["settings"], config["distill"]["run_settings"][run])
    row = dict(
        run=run,
        student_lr=settings["optim_student"]["lr"],
        fake_lr=settings["optim_fake"]["lr"],
        generator_every=train["fake_updates"] // train["generator_updates"],
        steps=train["steps"],
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


def grid(name: str, generator_every: int) -> dict:
    """The points of ``--grid``: GRID, or the validation sweep's NEAR (NEAR_10 at 10:1)."""
    if name == "all":
        return GRID
    if generator_every not in (1, 10):
        raise SystemExit("--grid near has points at 1:1 and 10:1 only: pass --points for other ratios")
    return NEAR if generator_every == 1 else NEAR_10


def learning_rates(text: str) -> tuple[float, float | None]:
    """``"3e-4"`` -> (3e-4, None: the config's fake lr); ``"3e-4:3e-5"`` -> (3e-4, 3e-5)."""
    student, _, fake = text.partition(":")
    try:
        return float(student), (float(fake) if fake else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a student lr, or student:fake (3e-4:3e-5)") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=list(GRID), help="default: every run of the grid")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "toy-lr")
    parser.add_argument(
        "--shared-from",
        type=Path,
        default=ROOT / "results" / "toy",
        help="a toy results folder holding " + ", ".join(SHARED) + " (make demo)",
    )
    parser.add_argument("--cores", type=int, default=1, help="cores of each point's snakemake")
    parser.add_argument("--jobs", type=int, default=1, help="points trained at once")
    parser.add_argument(
        "--grid", choices=["all", "near"], default="all", help="all: GRID; near: the validation sweep's NEAR"
    )
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
    if args.jobs < 1 or args.cores < 1:
        parser.error("--jobs and --cores must be at least 1")
    base = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    points = []
    points_of = grid(args.grid, args.generator_every)
    unknown = sorted(set(args.runs or []) - set(points_of))
    if unknown and not args.points:
        parser.error(f"the {args.grid} grid at {args.generator_every}:1 has no points for {', '.join(unknown)}")
    for run in args.runs or list(points_of):
        for student_lr, fake_lr in args.points or points_of[run]:
            folder = args.out / run / (
                f"s{student_lr:g}"
                + (f"-f{fake_lr:g}" if fake_lr is not None else "")
                + (f"-g{args.generator_every}" if args.generator_every > 1 else "")
            )  # fmt: skip
            points.append((point_config(base, run, student_lr, fake_lr, folder, args.generator_every), run, folder))

    def point(args_of_point) -> dict:
        config, run, folder = args_of_point
        row = run_point(config, run, folder, args.shared_from, args.cores)
        print(f"{run}: student lr {row['student_lr']:g}, fake lr {row['fake_lr']:g}: validation FID {row['fid']:.2f}",
              file=sys.stderr, flush=True)  # fmt: skip
        return row

    for config, _, folder in points:  # before any training: a reused folder with other settings stops here
        check_folder(folder, config)
    rows, failures = [], []
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(point, p) for p in points]:
            try:
                rows.append(future.result())
            except RuntimeError as error:  # the others go on; reported at the end
                failures.append(str(error))
    if rows:  # the points made, also when some failed
        print(table(rows))
    if failures:
        sys.exit("\n\n".join(failures))


if __name__ == "__main__":
    main()
