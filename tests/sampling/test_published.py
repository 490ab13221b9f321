"""Published checkpoints as sampling specs: the shipped YAML, its validation, and two entries run
end to end on a tiny local SD pipeline (a fused LoRA; a replaced U-Net sampled in one step)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dkd.backbones.tiny import save_tiny_backbone, tiny_unet
from dkd.report import TableSpec, build_table, read_paper, read_results, table_specs
from dkd.runs import parse_run_name
from dkd.sampling import (
    DiffusersSampler,
    MultiStepSpec,
    load_catalog,
    load_published,
    load_unavailable,
    paper_rows,
    results_path,
    scheduler_class,
    unavailable_reasons,
)
from dkd.vocabulary import model_kind

ROOT = Path(__file__).resolve().parents[2]
TEACHERS = ("SD1.5", "SD2.1", "PixArt-alpha")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def results():
    return pd.read_csv(results_path(), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_backbone("sd", tmp_path_factory.mktemp("tiny-sd"), seed=5)


def test_shipped_yaml_loads_and_matches_the_paper(catalog, results):
    models, unavailable = catalog
    assert {"hyper-sd15-1step", "lcm-lora-sd15", "yoso-sd15-1step", "sd-turbo", "dmd2-sd15"} <= set(models)
    assert {"ufogen", "tiue-sd21"} <= set(unavailable)
    nfe = {
        (r.backbone, r.method): int(r.value)
        for r in results.itertuples()
        if r.table == "1 (COCO2014 30k)" and r.metric == "nfe"
    }
    for model in models.values():
        if model.scheduler:
            assert scheduler_class(model.scheduler).__module__.startswith("diffusers.")
        for row in model.rows:
            lines = results[
                (results.table == row.table) & (results.backbone == model.backbone) & (results.method == row.method)
            ]
            assert len(lines) > 0, (model.name, row)
            if row.table.startswith("1 "):  # the paper's NFE column: one step, no CFG (two calls)
                assert model.nfe == nfe[(model.backbone, row.method)], model.name
        assert model.to_spec().resolution == 512
    assert all(u.reason.strip() for u in unavailable.values())


def test_every_comparison_row_of_tables_1_5_6_9_is_in_the_report_runnable_or_footnoted(results):
    """What the report prints (build_table on config/config.yaml's tables, as the table rules do): each
    comparison row of the paper's Tables 1, 5, 6 and 9 is a row of the table for it, evaluated as
    pub-<name> of its published entry (or, for DMD2*, as our retraining), or, where there is no public
    checkpoint, our retraining of the baseline with its own footnote, or no model and that entry's
    reason as its footnote."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    specs = {spec.paper: spec for spec in table_specs(config["report"]["tables"])}
    catalog, reasons = paper_rows(), unavailable_reasons()
    assert not catalog.duplicated(["table", "backbone", "method"]).any()
    paper = read_paper(ROOT / config["paper"]["results"])
    tables = {name: build_table(spec, read_results([]), paper, reasons) for name, spec in specs.items()}
    rows = results[results.table.str.match(r"^[1569] ")][["table", "backbone", "method"]].drop_duplicates()
    others = rows[(rows.method != "DKD") & ~rows.method.str.startswith(TEACHERS)]
    assert len(others) > 20 and (catalog[catalog.status == "unavailable"].reason.str.len() > 20).all()
    for row in others.itertuples(index=False):
        (ours,) = [r for r in specs[row.table].rows if (r.backbone, r.label) == (row.backbone, row.method)]
        (entry,) = catalog[
            (catalog.table == row.table) & (catalog.backbone == row.backbone) & (catalog.method == row.method)
        ].itertuples(index=False)
        if entry.status == "runnable":  # evaluated: its checkpoint, or our retraining of it (DMD2*, the FT run)
            assert ours.model in (f"pub-{entry.name}", "ft-sfull-fft-linear-zero"), row
            continue
        table = tables[row.table]  # its frame's rows are the spec's, in order
        (cell,) = [c for r, c in zip(specs[row.table].rows, table.frame["Method"]) if r is ours]
        footnotes = [table.footnotes[int(n) - 1] for n in re.findall(r"\[(\d+)\]", cell)]
        if ours.model is not None:  # our retraining of a baseline without public weights: its own footnote
            retrained = (
                model_kind(ours.model) == "merged" or parse_run_name(row.backbone, ours.model).objective != "dkd"
            )
            assert retrained and footnotes == [ours.note] and "docs/baselines.md" in ours.note, row
            continue
        assert footnotes == [entry.reason], row
    assert set(catalog[catalog.status == "runnable"].name) == set(load_published())
    assert set(catalog[catalog.status == "unavailable"].name) == set(load_unavailable())


def test_a_row_note_that_repeats_a_catalog_reason_is_refused():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    spec = config["report"]["tables"]["table1"]
    (row,) = [r for r in spec["rows"] if r["label"] == "UFOGen"]
    row["note"] = "No public weights."
    paper = read_paper(ROOT / config["paper"]["results"])
    with pytest.raises(ValueError, match="both a note and the reason of the published-checkpoint list"):
        build_table(TableSpec.from_dict("table1", spec), read_results([]), paper, unavailable_reasons())


GOOD = """\
models:
  toy-lcm:
    backbone: sd15
    provenance: official
    rows:
      - {table: "1 (COCO2014 30k)", method: LCM-LoRA}
    base: some/base
    adapter: {repo: some/lora, file: lora.safetensors, scale: 1.0}
    scheduler: LCMScheduler
    steps: 1
    guidance_scale: 0.0
    resolution: 512
    reference: https://example.org/card
unavailable:
  ufogen:
    backbone: sd15
    rows:
      - {table: "1 (COCO2014 30k)", method: UFOGen}
    reason: no weights
"""


def _write(tmp_path, text):
    path = tmp_path / "published.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("    steps: 1\n", "    steps: 1\n    stpes: 2\n", r"models\.toy-lcm: unknown key\(s\) \['stpes'\]"),
        ("    resolution: 512\n", "", r"models\.toy-lcm: .*missing key\(s\) \['resolution'\]"),
        ("LCMScheduler", "LCMSchedulr", r"'toy-lcm': 'LCMSchedulr' is not a diffusers scheduler"),
        (
            "    scheduler: LCMScheduler\n",
            "    scheduler: LCMScheduler\n    scheduler_kwargs: {spacing: trailing}\n",
            r"'toy-lcm': LCMScheduler takes no argument\(s\) \['spacing'\]",
        ),
        (
            "    scheduler: LCMScheduler\n",
            "    scheduler: LCMScheduler\n    eta: 1.0\n",
            r"'toy-lcm': eta is set but LCMScheduler.step takes no eta",
        ),
        ("    steps: 1\n", "    steps: 1\n    timesteps: [999, 500]\n", r"'toy-lcm': 2 timesteps .* but steps=1"),
        ("method: LCM-LoRA", "method: LCM LoRA", r"'toy-lcm': paper row .*'LCM LoRA'.* is not in"),
        ("backbone: sd15\n    provenance", "backbone: sd21\n    provenance", r"'toy-lcm': paper row .*'sd21'"),
        ("provenance: official", "provenance: reproduced", r"'toy-lcm': provenance 'reproduced' does not match"),
        ("method: UFOGen", "method: LCM-LoRA", r"'ufogen': paper row .* already claimed by 'toy-lcm'"),
        ("    reason: no weights\n", "    reason: no weights\n    reason: again\n", r"duplicate key 'reason'"),
        ("resolution: 512", "resolution: 500", r"'toy-lcm': resolution must be a positive multiple of 8"),
        ("    scheduler: LCMScheduler\n", "    custom_pipeline: ../evil.py\n", r"'toy-lcm': custom_pipeline must name"),
        ("reference: https://example.org/card", "reference: example.org", r"'toy-lcm': reference must be an https"),
    ],
)
def test_bad_entries_give_one_clear_error_naming_the_file_and_entry(tmp_path, old, new, message):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ValueError, match=message) as error:
        load_published(path)
    assert str(path) in str(error.value)
    assert load_published(_write(tmp_path, GOOD))["toy-lcm"].nfe == 1


def test_bad_specs_are_refused():
    for bad in (
        dict(custom_pipeline="owner/repo"),
        dict(timesteps=(500, 999)),
        dict(eta=2.0),
        dict(adapter_weight_name="x.safetensors"),
        dict(scheduler_kwargs={"timestep_spacing": "trailing"}),
    ):
        with pytest.raises(ValueError):
            MultiStepSpec(source="x", **bad)
    assert MultiStepSpec(source="x", steps=1, timesteps=[999]).timesteps == (999,)


def _tiny_lora(folder, out):
    """A random rank-2 LoRA on the tiny U-Net's attention projections, saved in diffusers format."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    torch.manual_seed(3)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False))
    lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=lora)
    return lora


def test_lora_entry_runs_with_its_scheduler_and_fuses_at_the_given_scale(folder, tmp_path):
    from diffusers import UNet2DConditionModel

    lora = _tiny_lora(folder, tmp_path / "lora")
    entry = load_published()["hyper-sd15-1step"]
    spec = entry.to_spec(
        source=str(folder),
        adapter=str(tmp_path / "lora"),
        adapter_weight_name="pytorch_lora_weights.safetensors",
        adapter_scale=0.5,
        resolution=16,
    )
    sampler = DiffusersSampler(spec)
    assert type(sampler.pipe.scheduler).__name__ == "TCDScheduler"
    base = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").state_dict()
    fused = sampler.pipe.unet.state_dict()
    assert not [k for k in fused if "lora" in k]  # fused, then unloaded: plain layers
    modules = {k.rsplit(".lora_", 1)[0] for k in lora}
    assert modules == {k[: -len(".weight")] for k in base if k.endswith((".to_q.weight", ".to_v.weight"))}
    for name in modules:  # W + scale * (alpha / r) * B A, with alpha = r
        expected = base[f"{name}.weight"] + 0.5 * lora[f"{name}.lora_B.weight"] @ lora[f"{name}.lora_A.weight"]
        torch.testing.assert_close(fused[f"{name}.weight"], expected, rtol=0, atol=1e-6)
    untouched = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight"
    assert torch.equal(fused[untouched], base[untouched])
    images = sampler(["a red square", "a blue circle"], [1, 2])
    assert [im.size for im in images] == [(16, 16), (16, 16)]
    assert np.array_equal(np.asarray(sampler(["a blue circle"], [2])[0]), np.asarray(images[1]))


def test_eta_reaches_the_scheduler(folder):
    def image(eta):
        spec = MultiStepSpec(
            source=str(folder), steps=2, guidance_scale=0.0, scheduler="TCDScheduler", eta=eta, resolution=16
        )
        return np.asarray(DiffusersSampler(spec)(["a cat"], [4])[0]).astype(int)

    assert np.abs(image(1.0) - image(0.0)).max() > 0


def test_unet_replacement_entry_samples_x0_from_eps_at_t999(folder, tmp_path):
    """DMD2-style one-step sampling (main/test_folder_sd.py): eps = G(z, 999, text),
    x0 = (z - sqrt(1 - a) eps) / sqrt(a), decoded by the VAE; computed here by hand."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(11)
    student = tiny_unet()
    torch.save(student.state_dict(), tmp_path / "pytorch_model.bin")
    entry = load_published()["dmd2-sd15"]
    spec = entry.to_spec(
        source=str(folder), denoiser_weights=str(tmp_path), resolution=16, denoiser_weight_name="pytorch_model.bin"
    )
    prompt, seed = "a photo of a cat", 7
    got = np.asarray(DiffusersSampler(spec)([prompt], [seed])[0]).astype(int)

    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    a = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod[999]
    ids = tokenizer(
        [prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed))
        eps = student(z, 999, encoder_hidden_states=text_encoder(ids)[0]).sample
        x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
        pixels = vae.decode(x0 / vae.config.scaling_factor).sample[0]
    expected = ((pixels / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(int)
    assert np.abs(got - expected).max() <= 1
    assert got.std() > 5  # not a flat image

    plain = entry.to_spec(source=str(folder), resolution=16, denoiser_weights=None, denoiser_weight_name=None)
    base = np.asarray(DiffusersSampler(plain)([prompt], [seed])[0])
    assert np.abs(base.astype(int) - expected).max() > 5  # the replacement is what made the difference

    bad = {f"prefix.{k}": v for k, v in student.state_dict().items()}
    torch.save(bad, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match=r"bad\.bin does not fit the denoiser of .*missing keys"):
        DiffusersSampler(
            entry.to_spec(
                source=str(folder), denoiser_weights=str(tmp_path / "bad.bin"), denoiser_weight_name=None, resolution=16
            )
        )


def test_published_model_names_resolve_to_their_card_spec(catalog):
    from dkd.sampling import published_spec

    models, _ = catalog
    assert published_spec("sd15", "pub-hyper-sd15-1step") == models["hyper-sd15-1step"].to_spec()
    with pytest.raises(ValueError, match="is a sd21 checkpoint"):
        published_spec("sd15", "pub-sd-turbo")
    with pytest.raises(ValueError, match="no published checkpoint 'nope'.*pub-sd-turbo"):
        published_spec("sd15", "pub-nope")


def test_workflow_sampler_of_a_published_entry_is_its_card_pipeline(folder, tmp_path):
    """make_sampler("pub-<name>") samples the catalog entry exactly as a DiffusersSampler of its spec."""
    from dkd.sampling import make_sampler

    catalog = tmp_path / "published.yaml"
    catalog.write_text(
        textwrap.dedent(f"""\
        models:
          tiny-turbo:
            backbone: sd15
            provenance: official
            rows: [{{table: "1 (COCO2014 30k)", method: SD-Turbo}}]
            base: {folder}
            scheduler: EulerDiscreteScheduler
            scheduler_kwargs: {{timestep_spacing: trailing}}
            steps: 1
            guidance_scale: 0.0
            resolution: 16
            reference: https://huggingface.co/stabilityai/sd-turbo
        """)
    )
    sampler = make_sampler(
        "sd15", "pub-tiny-turbo", source="unused", catalog=str(catalog)
    )  # an sd15 entry on a tiny base
    direct = DiffusersSampler(
        MultiStepSpec(
            source=str(folder),
            steps=1,
            guidance_scale=0.0,
            resolution=16,
            scheduler="EulerDiscreteScheduler",
            scheduler_kwargs={"timestep_spacing": "trailing"},
        )
    )
    ours, theirs = sampler(["a red square", "a cat"], [3, 4]), direct(["a red square", "a cat"], [3, 4])
    assert [np.asarray(im).tolist() for im in ours] == [np.asarray(im).tolist() for im in theirs]
    assert type(sampler.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
