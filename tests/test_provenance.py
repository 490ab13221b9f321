"""Provenance of the result files (dkd.provenance): the environment and digests of the weights used."""

from __future__ import annotations

import hashlib
import json

import diffusers
import torch

from dkd.provenance import environment, file_sha256, weights_sha256
from dkd.report.results import write_result


def test_a_folder_digest_covers_every_weight_file_by_name_and_bytes(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"unet weights")
    (tmp_path / "vae.bin").write_bytes(b"vae weights")
    (tmp_path / "unet" / "config.json").write_text("{}")
    by_hand = hashlib.sha256()
    for name, data in (("unet/diffusion_pytorch_model.safetensors", b"unet weights"), ("vae.bin", b"vae weights")):
        by_hand.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    assert weights_sha256(tmp_path) == by_hand.hexdigest()
    assert (
        weights_sha256(tmp_path / "vae.bin")
        == file_sha256(tmp_path / "vae.bin")
        == hashlib.sha256(b"vae weights").hexdigest()
    )
    (tmp_path / "unet" / "config.json").write_text('{"changed": 1}')  # configs do not count
    assert weights_sha256(tmp_path) == by_hand.hexdigest()
    (tmp_path / "vae.bin").write_bytes(b"vae weightS")  # one byte of the weights does
    assert weights_sha256(tmp_path) != by_hand.hexdigest()
    assert weights_sha256("stabilityai/sd-turbo") is None and weights_sha256(tmp_path / "unet" / "none") is None


def test_every_result_file_names_its_software_and_device(tmp_path):
    info = environment()
    assert (info["torch"], info["diffusers"]) == (torch.__version__, diffusers.__version__)
    assert info["cpu"] and info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    path = write_result(tmp_path / "fid.json", backbone="toy", model="teacher", evalset="e", values={"fid": 1.0})
    assert json.loads(path.read_text())["provenance"]["environment"] == json.loads(json.dumps(info))
