"""Pretrained files fetched ahead of the jobs (``dkd.fetch``): what each workflow group fetches
(read independently from config/published.yaml and the metric modules), the offline error, the
calls into the libraries that later load the files, and clean-fid's Inception loaded from a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import dkd.fetch as fetch_module
from dkd.fetch import INCEPTION_FILE, ModelFiles, ModelUnavailableError, fetch, fetch_all, files_for

ROOT = Path(__file__).resolve().parents[1]


def test_model_files_check_their_fields():
    with pytest.raises(ValueError, match="kind"):
        ModelFiles("weights", "a/b")
    with pytest.raises(ValueError, match="needs filename"):
        ModelFiles("hub_file", "a/b")
    with pytest.raises(ValueError, match="needs tag"):
        ModelFiles("open_clip", "ViT-g-14")
    with pytest.raises(ValueError, match="filename do"):
        ModelFiles("pipeline", "a/b", filename="x.bin")
    assert ModelFiles("pipeline", "a/b").to_dict() == {"kind": "pipeline", "source": "a/b"}
    with pytest.raises(ValueError, match="needs subfolder"):
        ModelFiles("hub_folder", "a/b")
    with pytest.raises(ValueError, match="without do"):
        ModelFiles("hub_file", "a/b", filename="x.bin", without=["unet"])
    with pytest.raises(ValueError, match="without must be a list"):
        ModelFiles("pipeline", "a/b", without="unet")
    files = ModelFiles("pipeline", "a/b", without=["transformer"])
    assert files.without == ("transformer",) and ModelFiles(**files.to_dict()) == files  # the marker's JSON


def test_each_group_names_the_files_its_loader_reads():
    catalog = yaml.safe_load((ROOT / "config" / "published.yaml").read_text())["models"]
    dmd2, lcm = catalog["dmd2-sd15"], catalog["lcm-lora-sd15"]
    assert files_for("published", name="dmd2-sd15") == [
        ModelFiles("pipeline", dmd2["base"]),
        ModelFiles("hub_file", dmd2["denoiser"]["repo"], filename=dmd2["denoiser"]["file"]),
    ]
    assert files_for("published", name="lcm-lora-sd15") == [
        ModelFiles("pipeline", lcm["base"]),
        ModelFiles("hub_file", lcm["adapter"]["repo"], filename=lcm["adapter"]["file"]),
    ]
    assert files_for("published", name="instaflow-0.9b") == [
        ModelFiles("pipeline", catalog["instaflow-0.9b"]["base"], custom_pipeline="instaflow_one_step")
    ]
    assert files_for("teacher", source="owner/model") == [ModelFiles("pipeline", "owner/model")]
    assert files_for("teacher", source="stabilityai/stable-diffusion-2-1-base", backbone="sd21") == [
        ModelFiles("pipeline", "stabilityai/stable-diffusion-2-1-base")
    ]
    # PixArt-alpha 256's repo holds only transformer/: the rest of 1024-MS's pipeline, without its transformer
    assert files_for("teacher", source="PixArt-alpha/PixArt-XL-2-256x256", backbone="pixart256") == [
        ModelFiles("pipeline", "PixArt-alpha/PixArt-XL-2-1024-MS", without=("transformer",)),
        ModelFiles("hub_folder", "PixArt-alpha/PixArt-XL-2-256x256", subfolder="transformer"),
    ]
    assert files_for("teacher", source="/data/pixart256", backbone="pixart256") == [
        ModelFiles("pipeline", "/data/pixart256")
    ]  # a complete folder of one's own
    assert files_for("clip") == [ModelFiles("open_clip", "ViT-g-14", tag="laion2b_s12b_b42k")]
    assert files_for("scorer") == [  # the clamped CLIP loss: TAESD, the files AutoencoderTiny loads; ViT-B-32
        ModelFiles("hub_file", "madebyollin/taesd", filename="config.json"),
        ModelFiles("hub_file", "madebyollin/taesd", filename="diffusion_pytorch_model.safetensors"),
        ModelFiles("open_clip", "ViT-B-32", tag="laion2b_s34b_b79k"),
    ]
    assert files_for("hps", version="v2.1") == [ModelFiles("hub_file", "xswu/HPSv2", filename="HPS_v2.1_compressed.pt")]
    assert files_for("inception", folder="/x") == [ModelFiles("inception", "/x")]
    for what, options, message in [
        ("published", {"name": "nope"}, "no published checkpoint"),
        ("hps", {"version": "v3"}, "HPS version"),
        ("weights", {}, "unknown"),
    ]:
        with pytest.raises(ValueError, match=message):
            files_for(what, **options)


def test_offline_is_one_error_naming_the_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"hub_file xswu/HPSv2 \(HPS_v2_compressed.pt\): offline"):
        fetch(ModelFiles("hub_file", "xswu/HPSv2", filename="HPS_v2_compressed.pt"))


def test_each_kind_is_fetched_by_the_library_that_loads_it(monkeypatch, tmp_path):
    """Stand-ins record the calls (no network here); a failing download is one error."""
    import diffusers
    import huggingface_hub
    import open_clip

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(fetch_module, "is_offline", lambda: False)
    calls = []
    monkeypatch.setattr(
        diffusers.DiffusionPipeline,
        "download",
        staticmethod(lambda source, **kw: calls.append(("pipeline", source, kw)) or "/cache/p"),
    )
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda repo, name, **kw: calls.append(("file", repo, name)) or "/cache/f"
    )
    monkeypatch.setattr(
        open_clip.pretrained, "download_pretrained", lambda cfg: calls.append(("clip", cfg["hf_hub"])) or "/cache/c"
    )
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append(("folder", repo, kw)) or "/cache/s"
    )
    rows = fetch_all(
        [
            ModelFiles("pipeline", "a/b", custom_pipeline="instaflow_one_step"),
            ModelFiles("hub_file", "c/d", filename="w.bin").to_dict(),
            *files_for("clip"),
            *files_for("teacher", source="PixArt-alpha/PixArt-XL-2-256x256", backbone="pixart256"),
        ],
        out_file=tmp_path / "marker.json",
    )
    release = ".".join(diffusers.__version__.split(".")[:3])
    assert calls == [
        ("file", "diffusers/community-pipelines-mirror", f"v{release}/instaflow_one_step.py"),
        ("pipeline", "a/b", {"custom_pipeline": "/cache/f", "trust_remote_code": True}),
        ("file", "c/d", "w.bin"),
        ("clip", "laion/CLIP-ViT-g-14-laion2B-s12B-b42K/"),
        ("pipeline", "PixArt-alpha/PixArt-XL-2-1024-MS", {"transformer": None}),
        ("folder", "PixArt-alpha/PixArt-XL-2-256x256", {"allow_patterns": ["transformer/*"]}),
    ]
    assert [row["path"] for row in rows] == ["/cache/p", "/cache/f", "/cache/c", "/cache/p", "/cache/s/transformer"]
    assert json.loads((tmp_path / "marker.json").read_text()) == {"files": rows}
    assert fetch(ModelFiles("pipeline", str(tmp_path))) == str(tmp_path)  # a local folder: nothing to fetch

    def failing(repo, name, **kw):
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(ModelUnavailableError, match="c/d .w.bin.: download failed: OSError: connection refused"):
        fetch(ModelFiles("hub_file", "c/d", filename="w.bin"))
    with pytest.raises(ModelUnavailableError, match="no pretrained weights 'nope'"):
        fetch(ModelFiles("open_clip", "ViT-g-14", tag="nope"))


class _Layers(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 299, 299) -> (B, 2048, 1, 1)
        return x.mean(dim=(2, 3), keepdim=True).repeat(1, 683, 1, 1)[:, :2048]


class _FakeInception(nn.Module):
    """The interface clean-fid's InceptionV3W uses of the torchscript file: ``layers`` and forward."""

    def __init__(self):
        super().__init__()
        self.layers = _Layers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


def test_inception_is_fetched_into_a_folder_and_fid_loads_it_from_there(monkeypatch, tmp_path):
    from dkd.metrics.fid import build_extractor

    source = tmp_path / "server"
    source.mkdir()
    torch.jit.save(torch.jit.script(_FakeInception()), str(source / INCEPTION_FILE))
    monkeypatch.setattr(fetch_module, "INCEPTION_URL", (source / INCEPTION_FILE).as_uri())
    folder = tmp_path / "models" / "inception"
    with pytest.raises(FileNotFoundError, match="Inception weights .* are missing"):
        build_extractor(None, inception_dir=folder, device="cpu")
    (row,) = fetch_all(files_for("inception", folder=str(folder)))
    assert (
        Path(row["path"]) == folder / INCEPTION_FILE
        and (folder / INCEPTION_FILE).read_bytes() == (source / INCEPTION_FILE).read_bytes()
    )

    extractor = build_extractor(None, inception_dir=folder, device="cpu")
    images = torch.rand(2, 3, 299, 299, dtype=torch.float64) * 255
    features = extractor(images.float()).numpy()
    channel_means = ((images - 128) / 128).mean(dim=(2, 3)).numpy()  # the normalisation InceptionV3W applies
    expected = np.tile(channel_means, 683)[:, :2048]
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    from dkd.evaluators import Evaluator  # the workflow's paper evaluator passes data/models/inception

    paper = Evaluator(kind="paper", inception_dir=str(folder), device="cpu").feature_extractor()
    np.testing.assert_array_equal(paper(images.float()).numpy(), features)
    with pytest.raises(ValueError, match="legacy_pytorch"):
        build_extractor(None, inception_dir=folder, mode="legacy_pytorch", device="cpu")
