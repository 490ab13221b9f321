"""The names the workflow and the package share (dkd/vocabulary.yaml through dkd/vocabulary.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from dkd.data.coco import COCO2014, COCO2017
from dkd.data.hub import HPSV2_STYLES
from dkd.runs import parse_run_name, run_name
from dkd.train.objective import OBJECTIVES
from dkd.vocabulary import (
    METRIC_FILES,
    MODEL_LEVEL_FILES,
    OBJECTIVE_PREFIXES,
    RUN_LEVEL_FILES,
    RUN_PATTERN,
    SETTINGS_RUN_PATTERN,
    catalog_model,
    model_kind,
    published_name,
    released_name,
    run_objective,
    run_ratio,
    run_settings_for,
    seeded,
    split_seed,
    swapped_parts,
    with_seed,
)
from tests.conftest import ROOT

CONFIGS = (
    "config/config.yaml",
    "config/toy.yaml",
    "config/toy-study.yaml",
    "config/tiny.yaml",
    ".test/config/toy.yaml",
)


def _configured_runs() -> set[str]:
    runs = set()
    for name in CONFIGS:
        config = yaml.safe_load((ROOT / name).read_text())
        for names in config.get("distill", {}).get("runs", {}).values():
            runs.update(names)
    return runs


@pytest.mark.parametrize(
    "model,kind",
    [
        ("teacher", "teacher"),
        ("teacher-1step", "teacher-1step"),
        ("pub-dmd2-sd15", "published"),
        ("lorad-s256-f32-linear-zero", "run"),
        ("ft-sfull-fft-linear-zero", "run"),
        ("lora-s8-f4-conv-xavier", "run"),
        ("sbv2-lora-s256-flora64-linear-zero", "run"),
        ("merged-swiftbrushv2", "merged"),
        ("lorad-s8-f4-linear-zero-g10-seed2", "run"),
        ("merged-swiftbrushv2-seed1", "merged"),
        ("tnorm-ft-sfull-fft-linear-zero-seed1", "swapped"),
    ],
)
def test_model_kinds(model, kind):
    assert model_kind(model) == kind


@pytest.mark.parametrize(
    "bad",
    ["", "teacher-2step", "pub-", "merged-", "merged-a-b", "rel-", "rel-DMD2", "lorad-256-f32-linear-zero"]
    + ["lorad-s8-f4-linear-ones"],
)
def test_a_name_of_no_kind_is_one_clear_error(bad):
    with pytest.raises(
        ValueError, match="is none of 'teacher', 'teacher-1step', 'pub-<name>', 'merged-<name>', 'rel-<name>', 'tnorm-'"
    ):
        model_kind(bad)


def test_swapped_parts():
    assert swapped_parts("tnorm-ft-sfull-fft-linear-zero") == ("norms", "ft-sfull-fft-linear-zero")
    assert swapped_parts("tdir-merged-swiftbrushv2") == ("directions", "merged-swiftbrushv2")
    assert swapped_parts("tnorm-pub-dmd2-sd15") == ("norms", "pub-dmd2-sd15")
    assert [catalog_model(m) for m in ("tdir-pub-dmd2-sd15", "pub-sd-turbo", "tdir-ft-sfull-fft-linear-zero")] == [
        "pub-dmd2-sd15",
        "pub-sd-turbo",
        None,
    ]
    for bad in ("tdir-teacher", "tnorm-rel-dmd2-sd15", "tnorm-tdir-ft-sfull-fft-linear-zero"):
        with pytest.raises(ValueError):
            swapped_parts(bad)


def test_released_name():
    assert released_name("rel-sid-lsg-sd15") == "sid-lsg-sd15" and model_kind("rel-pcm-sd15-2step") == "released"
    with pytest.raises(ValueError, match="not a released model"):
        released_name("pub-sd-turbo")


def test_published_name():
    assert published_name("pub-sd-turbo") == "sd-turbo"
    with pytest.raises(ValueError, match="not a published model"):
        published_name("teacher")


def test_every_configured_run_matches_the_pattern_and_parses_back():
    runs = _configured_runs()
    assert len(runs) > 15
    for name in runs:
        assert re.fullmatch(RUN_PATTERN, name), name
        spec = parse_run_name("sd15", name)
        assert run_name(spec) == name and spec.objective == run_objective(name)


def test_the_schema_and_the_package_use_the_vocabulary():
    """The JSON schema cannot read the vocabulary: its run-name pattern is checked here; the package's
    constants are the vocabulary's."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    distill = schema["properties"]["distill"]["properties"]
    settings = distill["run_settings"]["propertyNames"]["pattern"]
    runs = distill["runs"]["additionalProperties"]["items"]["pattern"]
    assert settings.replace("[0-9]", r"\d") == f"^{SETTINGS_RUN_PATTERN}$"
    assert runs.replace("[0-9]", r"\d") == f"^{RUN_PATTERN}$"
    assert (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text().count("(lorad|lora|dora|ft)") == 2
    objectives = schema["properties"]["distill"]["properties"]["objectives"]["propertyNames"]["enum"]
    assert objectives == ["dkd", *OBJECTIVE_PREFIXES.values()] == list(OBJECTIVES)
    assert HPSV2_STYLES == ("anime", "concept-art", "paintings", "photo")
    assert (COCO2014.default_count, COCO2017.default_count) == (30000, 5000)
    assert set(RUN_LEVEL_FILES) < set(MODEL_LEVEL_FILES) <= set(METRIC_FILES.values())


def test_the_workflow_loads_where_dkd_is_not_importable(tmp_path):
    """The rules read the vocabulary by its path: a dry-run of each config plans the same jobs in a
    Python where `import dkd` fails (a meta-path finder installed by sitecustomize refuses it)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n\n\nclass NoDkd:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'dkd':\n            raise ImportError('dkd is not importable here')\n\n\n"
        "sys.meta_path.insert(0, NoDkd())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    check = subprocess.run([sys.executable, "-c", "import dkd"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert "dkd is not importable here" in check.stderr
    for config in ("config/config.yaml", "config/tiny.yaml"):
        plans = [
            subprocess.run(
                [sys.executable, "-m", "snakemake", "all", "-n", "--configfile", config],
                cwd=ROOT,
                env=where,
                capture_output=True,
                text=True,
                timeout=300,
            )
            for where in (env, os.environ)
        ]
        assert plans[0].returncode == 0, plans[0].stderr[-3000:]
        counts = [re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, flags=re.M) for plan in plans]
        assert counts[0] == counts[1] and counts[0]


@pytest.mark.parametrize(
    "model,base,k",
    [
        ("lorad-s8-f4-linear-zero", "lorad-s8-f4-linear-zero", 0),
        ("lorad-s8-f4-linear-zero-g10-seed12", "lorad-s8-f4-linear-zero-g10", 12),
        ("merged-swiftbrushv2-seed3", "merged-swiftbrushv2", 3),
        ("tdir-merged-swiftbrushv2-seed1", "tdir-merged-swiftbrushv2", 1),
        ("tnorm-pub-foo-seed1", "tnorm-pub-foo-seed1", 0),  # a published checkpoint's name, not a seed
        ("pub-foo-seed1", "pub-foo-seed1", 0),
        ("teacher", "teacher", 0),
    ],
)
def test_split_seed_and_with_seed_are_inverse(model, base, k):
    assert split_seed(model) == (base, k)
    assert with_seed(base, k) == model


def test_seeded_names_every_seed_of_the_models_that_have_seeds():
    models = ["teacher", "lora-s8-f4-linear-zero-g10", "merged-a", "pub-x", "tnorm-ft-sfull-fft-linear-zero"]
    assert seeded(models, 3) == [
        "teacher",
        "lora-s8-f4-linear-zero-g10",
        "lora-s8-f4-linear-zero-g10-seed1",
        "lora-s8-f4-linear-zero-g10-seed2",
        "merged-a",
        "merged-a-seed1",
        "merged-a-seed2",
        "pub-x",
        "tnorm-ft-sfull-fft-linear-zero",
        "tnorm-ft-sfull-fft-linear-zero-seed1",
        "tnorm-ft-sfull-fft-linear-zero-seed2",
    ]
    assert seeded(models, 1) == models
    assert run_ratio("ft-sfull-fft-linear-zero-g10-seed4") == ("ft-sfull-fft-linear-zero", 10)
    assert run_ratio("ft-sfull-fft-linear-zero-seed4") == ("ft-sfull-fft-linear-zero", 1)
    for bad, message in ((0, "seeds must be"), (True, "seeds must be")):
        with pytest.raises(ValueError, match=message):
            seeded(models, bad)
    with pytest.raises(ValueError, match="has no seeds"):
        with_seed("teacher", 1)
    with pytest.raises(ValueError, match="already names seed 2"):
        with_seed("merged-a-seed2", 1)
    assert not re.fullmatch(SETTINGS_RUN_PATTERN, "lora-s8-f4-linear-zero-seed1")


def test_run_settings_of_a_variant_are_its_plain_runs_then_its_own():
    """A plain run's entry unchanged (the distill rule's param of the runs made before the variants); a
    -g{N} run's own entry merged over its plain run's, key by key; seeds share them; a -g{N} entry that
    would set the run's length is one error."""
    entries = {
        "ft-sfull-fft-linear-zero": {"optim_student": {"lr": 3e-4, "betas": [0.0, 0.99]}, "optim_fake": {"lr": 3e-5}},
        "ft-sfull-fft-linear-zero-g10": {"optim_fake": {"lr": 3e-4}},
    }
    plain = entries["ft-sfull-fft-linear-zero"]
    assert run_settings_for("ft-sfull-fft-linear-zero", entries) == plain
    assert run_settings_for("ft-sfull-fft-linear-zero-seed2", entries) == plain
    assert run_settings_for("ft-sfull-fft-linear-zero-g10-seed1", entries) == {
        "optim_student": {"lr": 3e-4, "betas": [0.0, 0.99]},
        "optim_fake": {"lr": 3e-4},
    }
    assert run_settings_for("ft-sfull-fft-linear-zero-g2", entries) == plain
    assert run_settings_for("lora-s8-f4-linear-zero-g10", entries) == {}
    assert entries["ft-sfull-fft-linear-zero"]["optim_fake"] == {"lr": 3e-5}  # inputs unchanged
    with pytest.raises(ValueError, match=r"sets \['max_steps'\].*distill.run_settings.lora-s8-f4-linear-zero"):
        run_settings_for("lora-s8-f4-linear-zero-g10", {"lora-s8-f4-linear-zero-g10": {"max_steps": 10}})
