"""A hub repo that holds only the denoiser (PixArt-alpha 256: `transformer/` alone) is loaded with the
other parts of the backbone's components pipeline (PixArt-XL-2-1024-MS), for training
(`load_teacher`) and for the teacher rows (`make_sampler`, diffusers' pipeline). Tested offline
against a Hugging Face cache written here with two tiny PixArt repos: one complete, one with only the
transformer of another tiny PixArt."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from dkd.backbones import components_source
from dkd.backbones.tiny import save_tiny_backbone

BASE, DENOISER = "dkd-test/tiny-pixart-base", "dkd-test/tiny-pixart-256"


def cache_repo(
    home: Path, repo: str, folder: Path, only: str | None = None, skip: str | None = None, absent: tuple[str, ...] = ()
) -> None:
    """``folder`` (or its subfolder ``only``; without its subfolder ``skip``) as the main revision of hub
    ``repo`` in the cache under ``home`` (HF_HOME), laid out as huggingface_hub writes it, with its
    records of the ``absent`` files (``.no_exist/``) that a loader asked for online and the repo lacks."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    ignore = (lambda where, names: [skip] if Path(where) == folder else []) if skip else None
    shutil.copytree(folder / only if only else folder, snapshot / only if only else snapshot, ignore=ignore)
    for name in absent:
        (root / ".no_exist" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (root / ".no_exist" / commit / name).touch()


def test_components_source_only_for_a_backbones_own_denoiser_repo():
    assert components_source("pixart256", "PixArt-alpha/PixArt-XL-2-256x256") == "PixArt-alpha/PixArt-XL-2-1024-MS"
    assert components_source("pixart256", "/data/pixart256-complete") is None
    assert components_source("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5") is None


def test_a_denoiser_only_repo_loads_with_the_components_pipeline_offline(tmp_path):
    base = save_tiny_backbone("pixart", tmp_path / "base", seed=1)
    other = save_tiny_backbone("pixart", tmp_path / "other", seed=2)  # its transformer is the 256 repo's
    home = tmp_path / "hf-home"
    # as fetch_model leaves them: the components pipeline without its own transformer, the denoiser repo
    cache_repo(home, BASE, Path(base), skip="transformer", absent=("tokenizer/config.json",))  # AutoTokenizer asks
    cache_repo(home, DENOISER, Path(other), only="transformer")
    assert not list((home / "hub" / f"models--{DENOISER.replace('/', '--')}").rglob("model_index.json"))
    assert not list((home / "hub" / f"models--{BASE.replace('/', '--')}").rglob("transformer"))
    script = textwrap.dedent(f"""
        import torch
        from dkd.backbones import load_teacher
        from dkd.backbones.specs import BACKBONES, BackboneSpec
        from dkd.sampling import make_sampler

        BACKBONES["hub-pixart"] = BackboneSpec("hub-pixart", "pixart", {DENOISER!r}, 120, 16, components_id={BASE!r})
        same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        base, other = load_teacher("tiny-pixart", {str(base)!r}), load_teacher("tiny-pixart", {str(other)!r})
        assert not same(base.denoiser.state_dict(), other.denoiser.state_dict())

        teacher = load_teacher("hub-pixart")  # the default source: the hub id, from the cache
        assert same(teacher.denoiser.state_dict(), other.denoiser.state_dict())
        assert same(teacher.text_encoder.state_dict(), base.text_encoder.state_dict())
        assert same(teacher.vae.state_dict(), base.vae.state_dict())
        assert torch.equal(teacher.alphas_cumprod, base.alphas_cumprod)

        sampler = make_sampler("hub-pixart", "teacher", source={DENOISER!r},
                               teacher={{"steps": 2, "guidance_scale": 4.5}})
        assert same(sampler.pipe.transformer.state_dict(), other.denoiser.state_dict())
        assert same(sampler.pipe.text_encoder.state_dict(), base.text_encoder.state_dict())
        print("ok", type(sampler.pipe).__name__)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "ok PixArtAlphaPipeline" in run.stdout
