"""Which steps of the toy benchmark give other numbers on other CPUs: one toy run trained, sampled and
scored under CPU kernel settings that stand in for other machines, on CPU.

torch picks its CPU kernels by the instruction set the CPU has (``torch.backends.cpu.get_cpu_capability()``:
DEFAULT, AVX2, AVX512 ...) and so do MKL (matrix products) and oneDNN (convolutions). Forcing a lower level
(``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``) runs the code paths another CPU would take.
Each variant runs the toy workflow for one run in its own results folder (the shared folders of a finished
``make demo`` copied in: the toy data, teacher, evaluator and reference statistics), and the script prints,
per variant, the digests of the student's weights and of its images and the run's FID, so that a difference
is traced to training (the weights differ), sampling (same weights, other images) or scoring (same images,
other FID). The jobs run on one thread each, as the workflow runs them (Snakemake's default ``threads``).

  python benchmarks/toy_cpu_kernels.py --shared-from results/toy          # after make demo: ~2 min a variant
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["backbones", "data", "evaluator", "reference-stats"]
VARIANTS = {  # name -> environment: each stands in for a CPU of another instruction set
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def images_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.png")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_variant(name: str, env: dict, run: str, out: Path, shared: Path) -> dict:
    """Train, sample and score ``run`` under ``env`` in ``out/name``; its digests and scores."""
    folder = out / name
    config = copy.deepcopy(yaml.safe_load((ROOT / "config" / "toy.yaml").read_text()))
    config["results"] = str(folder)
    config["distill"]["runs"] = {"toy": [run]}
    for key in ("curves", "merges"):
        config["distill"].pop(key, None)
    config.pop("analysis", None)
    folder.mkdir(parents=True, exist_ok=True)
    for part in SHARED:
        if not (folder / part).exists():
            shutil.copytree(shared / part, folder / part, copy_function=shutil.copy2)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    scores = [folder / "toy" / run / "toy-eval" / f"{metric}.json" for metric in ("fid", "text_image")]
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, scores), "--cores", "1", "--configfile"]
        + [str(folder / "config.yaml"), "--rerun-triggers", "mtime"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name}: snakemake failed\n{done.stderr[-3000:]}")
    fid = json.loads(scores[0].read_text())
    train = json.loads((folder / "toy" / run / "train.json").read_text())["provenance"]
    return {
        "variant": name,
        "capability": fid["provenance"]["environment"]["cpu_capability"],
        "student": train["student_sha256"][:12],
        "images": images_sha256(folder / "toy" / run / "toy-eval" / "images")[:12],
        "fid": fid["values"]["fid"],
        "digit_prob": json.loads(scores[1].read_text())["values"]["digit_prob"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="lorad-s8-f4-linear-zero")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--shared-from", type=Path, default=ROOT / "results" / "toy")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "toy-cpu-kernels")
    args = parser.parse_args()
    missing = [part for part in SHARED if not (args.shared_from / part).exists()]
    if missing:
        sys.exit(f"{args.shared_from} lacks {', '.join(missing)}: run `make demo` first (or pass --shared-from)")
    rows = [run_variant(name, VARIANTS[name], args.run, args.out, args.shared_from) for name in args.variants]
    print("| variant | torch CPU kernels | student weights | images | FID | P(prompted digit) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['capability']} | {row['student']} | {row['images']} | "
            f"{row['fid']:.4f} | {row['digit_prob']:.4f} |"
        )


if __name__ == "__main__":
    main()
