"""How far FID's resamples lie above the FID of all the images, and what the shift of the bootstrap interval
(``dkd.metrics.bootstrap.fid_interval``) does about it, for one model's images of a toy results folder.

Prints the FID of the images, the mean and standard deviation of the resamples' FIDs, the plain percentile
interval and the shifted one (the one ``fid.json`` holds). For DKD's images of a toy run::

  python benchmarks/fid_bootstrap_bias.py results/toy lorad-s8-f4-linear-zero toy-eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from dkd.evaluators import Evaluator
    from dkd.metrics.bootstrap import fid_interval, percentile_interval, resampled_fids
    from dkd.metrics.fid import feature_stats, frechet_distance, load_stats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a toy results folder (make demo: results/toy)")
    parser.add_argument("model", help="e.g. lorad-s8-f4-linear-zero")
    parser.add_argument("evalset", help="e.g. toy-eval")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--level", type=float, default=0.95)
    args = parser.parse_args()
    images = args.results / "toy" / args.model / args.evalset / "images"
    if not images.is_dir():
        raise SystemExit(f"{images} does not exist: make the model's images first (the workflow's images rule)")
    evaluator = Evaluator(kind="toy", classifier=str(args.results / "evaluator"), device="cpu")
    features, _ = evaluator.features(images, args.results / "bootstrap-bias-scratch")
    ref = load_stats(args.results / "reference-stats" / f"{args.evalset}.npz")
    full = frechet_distance(*feature_stats(features), ref["mu"], ref["sigma"])
    fids = resampled_fids(features, ref["mu"], ref["sigma"], samples=args.samples, seed=0)
    plain = percentile_interval(fids, args.level)
    shifted = fid_interval(features, ref["mu"], ref["sigma"], samples=args.samples, level=args.level, seed=0)
    print(
        f"{args.model} on {args.evalset}, {len(features)} images: FID {full:.2f}; {args.samples} resamples: mean "
        f"{np.mean(fids):.2f}, standard deviation {np.std(fids):.2f}; {args.level:.0%} percentile interval "
        f"[{plain[0]:.2f}, {plain[1]:.2f}], shifted [{shifted[0]:.2f}, {shifted[1]:.2f}]"
    )


if __name__ == "__main__":
    main()
