"""Diffusers samplers: multi-step teachers with their own scheduler, community pipelines, the
network calls of the teacher rows."""

from __future__ import annotations

import pytest

from dkd.backbones.tiny import save_tiny_backbone
from dkd.io import image_path
from dkd.sampling import DiffusersSampler, MultiStepSpec, generate_shard

PROMPTS = [f"a handwritten digit {d}" for d in range(7)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=5)


def test_multi_step_teacher_with_cfg_and_its_own_scheduler(folder, tmp_path):
    spec = MultiStepSpec(source=str(folder), steps=3, guidance_scale=3.0, scheduler="DDIMScheduler")
    sampler = DiffusersSampler(spec)
    assert type(sampler.pipe.scheduler).__name__ == "DDIMScheduler"
    generate_shard(sampler, PROMPTS[:3], tmp_path / "t", seed=7, batch_size=2, progress=False, suffix=".jpg")
    generate_shard(sampler, PROMPTS[:3], tmp_path / "u", start=2, end=3, seed=7, progress=False, suffix=".jpg")
    assert image_path(tmp_path / "t", 2, ".jpg").read_bytes() == image_path(tmp_path / "u", 2, ".jpg").read_bytes()
    assert len(list((tmp_path / "t").glob("*.jpg"))) == 3
    with pytest.raises(ValueError, match="steps"):
        MultiStepSpec(source="x", steps=0)


def test_a_community_pipeline_loads_from_the_mirror_file_without_asking_pypi(folder, tmp_path, monkeypatch):
    """`custom_pipeline` (InstaFlow's `instaflow_one_step`): the code comes from diffusers' mirror
    dataset at this release through hf_hub_download (cached by the fetch_model rule); diffusers'
    own by-name resolution, which asks PyPI first, is never used (stand-ins: no network here)."""
    import diffusers
    import huggingface_hub
    from diffusers.utils import dynamic_modules_utils

    code = tmp_path / "mirror" / "fake_one_step.py"
    code.parent.mkdir()
    code.write_text(
        "from diffusers import StableDiffusionPipeline\n\n\n"
        "class FakeOneStepPipeline(StableDiffusionPipeline):\n    pass\n"
    )
    asked = []
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda repo, filename, **kw: asked.append((repo, filename, kw)) or str(code)
    )

    def no_network():
        raise OSError("pypi.org is unreachable")

    monkeypatch.setattr(dynamic_modules_utils, "get_diffusers_versions", no_network)
    sampler = DiffusersSampler(MultiStepSpec(source=str(folder), steps=1, custom_pipeline="fake_one_step"))
    assert type(sampler.pipe).__name__ == "FakeOneStepPipeline"
    release = ".".join(diffusers.__version__.split(".")[:3])
    assert asked == [("diffusers/community-pipelines-mirror", f"v{release}/fake_one_step.py", {"repo_type": "dataset"})]


def test_the_sd_teacher_rows_make_as_many_network_calls_as_the_paper_counts(folder, tmp_path):
    """config/config.yaml's SD teacher rows (Tables 1, 5) on a tiny SD that ships SD's own scheduler
    (PNDM, skip_prk_steps): the U-Net is called as many times as the paper's NFE
    (config/paper/results.csv), once per step on the CFG batch; PNDM itself would make one call more."""
    import csv
    from pathlib import Path

    import yaml
    from diffusers import DiffusionPipeline, PNDMScheduler

    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=True, steps_offset=1)
    pipe.save_pretrained(tmp_path / "pndm")
    folder = tmp_path / "pndm"

    root = Path(__file__).resolve().parents[2]
    teachers = yaml.safe_load((root / "config" / "config.yaml").read_text())["evaluation"]["teachers"]
    with open(root / "config" / "paper" / "results.csv", newline="") as handle:
        nfe = {
            row["backbone"]: int(row["value"])
            for row in csv.DictReader(handle)
            if row["metric"] == "nfe" and row["method"].startswith(("SD1.5 (cfg", "SD2.1 (cfg"))
        }
    assert set(nfe) == {"sd15", "sd21"}
    for backbone, expected in nfe.items():
        sampler = DiffusersSampler(MultiStepSpec(source=str(folder), **teachers[backbone]))
        calls = []
        sampler.pipe.unet.register_forward_hook(lambda module, args, out, calls=calls: calls.append(args[0].shape[0]))
        sampler(PROMPTS[:2], [0, 1])
        assert calls == [4] * expected, (backbone, len(calls))  # 2 prompts x (cond, uncond)
    own = {key: value for key, value in teachers["sd15"].items() if key != "scheduler"}
    sampler = DiffusersSampler(MultiStepSpec(source=str(folder), **own))
    calls = []
    sampler.pipe.unet.register_forward_hook(lambda module, args, out: calls.append(1))
    sampler(PROMPTS[:1], [0])
    assert type(sampler.pipe.scheduler).__name__ == "PNDMScheduler" and len(calls) == nfe["sd15"] + 1
