"""``dkd.evaluators.hps`` (the workflow's Table 6 metric, one evaluation set per style) agrees with
the HPSv2 benchmark layout's ``hps_benchmark`` on the same images and prompts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dkd import evaluators
from dkd.io import image_path
from dkd.metrics.hps import HPSModel, hps_benchmark

from .test_hps import _write_benchmark, tiny  # noqa: F401  (fixture)


def test_hps_of_evaluation_sets_equals_the_benchmark(tiny, tmp_path):  # noqa: F811
    counts = {"anime": 3, "concept-art": 2, "paintings": 4, "photo": 2}
    images, prompts_dir, layout = _write_benchmark(tmp_path / "bench", counts, suffixes=(".png",))
    reference = hps_benchmark(
        images, prompts_dir, **tiny, version="v2.0", checkpoint="HPS_v2_compressed.pt", batch_size=3, progress=False
    )
    styles = {}
    for style, pairs in layout.items():  # the workflow's layout: <model>/<evalset>/images/<i:05d>.png
        folder = tmp_path / "results" / f"hpsv2-{style}" / "images"
        folder.mkdir(parents=True)
        for i, (path, _) in enumerate(pairs):
            shutil.copy(path, image_path(folder, i))
        styles[style] = (folder, [prompt for _, prompt in pairs])
    scorer = HPSModel(tiny["model"], tiny["preprocess"], tiny["tokenizer"], "v2.0", Path("HPS_v2_compressed.pt"))
    values, provenance = evaluators.hps(evaluators.Evaluator(device="cpu"), styles, scorer=scorer, batch_size=2)
    for style, column in evaluators.HPS_COLUMNS.items():
        assert values[column] == pytest.approx(reference["per_style"][style], abs=1e-5)
    assert values["average"] == pytest.approx(reference["average"], abs=1e-5)
    assert provenance["count"] == counts and provenance["version"] == "v2.0"


def test_hps_needs_the_paper_evaluator_and_known_styles(tmp_path):
    with pytest.raises(ValueError, match="paper's evaluator"):
        evaluators.hps(evaluators.Evaluator(kind="toy", classifier=str(tmp_path)), {"anime": (tmp_path, [])})
    with pytest.raises(ValueError, match="subset of"):
        evaluators.hps(evaluators.Evaluator(), {"cartoon": (tmp_path, [])})
