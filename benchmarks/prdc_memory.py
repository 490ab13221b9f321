"""Peak memory of precision/recall (``dkd.metrics.precision_recall``, i.e. ``prdc.compute_prdc``).

prdc builds the full real-real, fake-fake and real-fake distance matrices, so its memory grows with
the square of the image counts. This measures the peak RSS of one call, each size in its own
process (above the RSS after the features are made and a warm-up call on 10 samples), fits
``peak = a + c * max(N_real, N_fake)^2`` (the larger set's distance matrix and ``argpartition``'s int64
indices into it dominate) and extrapolates to the paper's evaluation sets; `workflow/rules/evaluate.smk` sizes the
features_metrics rule's memory from this table.

  python benchmarks/prdc_memory.py                       # 2048-d features (Inception), 3 sizes, about 1 min
  python benchmarks/prdc_memory.py --sizes 4000:3000 12000:9000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np

# (name, reference images, generated images) of the evaluation sets in config/config.yaml
TARGETS = [
    ("COCO2017-5k", 5_000, 5_000),
    ("COCO2014-30k, 30k reference", 30_000, 30_000),
    ("COCO2014-30k, all 40,504 reference", 40_504, 30_000),
]


def measure(real: int, fake: int, dim: int) -> dict:
    """Peak RSS (bytes) of one precision_recall call on random features, in this process."""
    from dkd.metrics import precision_recall

    rng = np.random.default_rng(0)
    real_features = rng.standard_normal((real, dim), dtype=np.float32)
    fake_features = rng.standard_normal((fake, dim), dtype=np.float32)
    precision_recall(real_features[:10], fake_features[:10])  # imports sklearn and starts its threads
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    precision_recall(real_features, fake_features)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"real": real, "fake": fake, "extra": peak - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["4000:3000", "8000:6000", "12000:9000"],
        help="REAL:FAKE feature counts, one process each",
    )
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (Inception-v3 pool: 2048)")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.dim)))
        return
    rows = []
    for size in args.sizes:
        real, fake = (int(n) for n in size.split(":"))
        done = subprocess.run(
            [sys.executable, __file__, "--dim", str(args.dim), "--child", str(real), str(fake)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(done.stdout.splitlines()[-1]))
    # least squares: extra = a + c * max(real, fake)^2 (a: buffers that do not grow with N)
    squares = [max(row["real"], row["fake"]) ** 2 for row in rows]
    c, a = np.polyfit(squares, [row["extra"] for row in rows], 1)
    print("| real | fake | peak above set-up (GB) | bytes / max(real, fake)^2 |\n|---|---|---|---|")
    for s, row in zip(squares, rows):
        print(f"| {row['real']:,} | {row['fake']:,} | {row['extra'] / 1e9:.2f} | {row['extra'] / s:.2f} |")
    print(
        f"\nfit: peak = {a / 1e9:.2f} GB + {c:.2f} x max(real, fake)^2 bytes\n\n"
        "| evaluation set | real | fake | predicted peak (GB) |"
        "\n|---|---|---|---|"
    )
    for name, real, fake in TARGETS:
        print(f"| {name} | {real:,} | {fake:,} | {(a + c * max(real, fake) ** 2) / 1e9:.1f} |")


if __name__ == "__main__":
    main()
