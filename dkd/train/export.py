"""What a finished run leaves for evaluation and reuse.

* ``adapter/``: the student's adapter as a PEFT folder (``adapter_config.json`` and
  ``adapter_model.safetensors``); ``PeftModel.from_pretrained(teacher_denoiser, folder)`` loads it.
* ``pipeline/``: a diffusers pipeline folder with the merged student (``W <- R W`` for LoRaD,
  ``W + BA`` for LoRA/DoRA, the trained weights for FT) and the teacher's text encoder,
  tokenizer, VAE and scheduler, plus ``dkd_student.json`` (backbone, generator input, objective, method) for
  ``dkd.sampling.pipeline.OneStepPipeline``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from peft import get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import _get_submodules
from safetensors.torch import save_file
from torch import nn

from ..adapters import AdapterSpec
from ..backbones import Teacher
from ..backbones.folder import save_pipeline_folder
from ..sampling.pipeline import STUDENT_INFO


def save_adapter(model: nn.Module, spec: AdapterSpec, folder: str | Path, adapter_name: str = "default") -> Path:
    """The adapter of ``model`` as a PEFT folder, in the key layout ``PeftModel.save_pretrained`` writes."""
    config = spec.peft_config()
    if config is None:
        raise ValueError("method 'ft' has no adapter: the whole denoiser is the result.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    save_file(
        {f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in state.items()},
        str(folder / "adapter_model.safetensors"),
    )
    config.save_pretrained(str(folder))
    return folder


def merge_adapters(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every adapter merged into its base weights and removed."""
    merged = copy.deepcopy(model)
    for name, module in list(merged.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = _get_submodules(merged, name)
            setattr(parent, child, module.get_base_layer())
    return merged


def export_student(
    student: nn.Module,
    spec: AdapterSpec,
    teacher: Teacher,
    out: str | Path,
    *,
    t_init: int = 999,
    scaled_input: bool = False,
    objective: str = "dkd",
    teacher_sha256: str | None = None,
) -> Path:
    """Write ``out/adapter`` (adapter methods) and ``out/pipeline`` (always); return ``out``. Each
    folder is built under a temporary name and swapped in when complete (a killed export leaves
    the previous one, or nothing). ``t_init`` and ``scaled_input``: the generator's input
    (``dkd.train.step.generate``), recorded for the sampler; ``objective``: what trained it;
    ``teacher_sha256``: the digest of the teacher's weights (``dkd.provenance.weights_sha256``), if known."""
    from ..io import atomic_folder

    out = Path(out)
    if spec.method != "ft":
        with atomic_folder(out / "adapter") as folder:
            save_adapter(student, spec, folder)
    denoiser = merge_adapters(student).eval()
    if any(p.dtype != teacher.denoiser.dtype for p in denoiser.parameters()):
        denoiser = denoiser.to(teacher.denoiser.dtype)  # the teacher's storage dtype (FT trains in fp32)
    info = {
        "backbone": teacher.spec.name,
        "t_init": t_init,
        "scaled_input": scaled_input,
        "objective": objective,
        "method": spec.method,
        "rank": spec.rank,
        "layers": spec.layers,
        "prediction_type": teacher.prediction_type,
        **({"teacher_sha256": teacher_sha256} if teacher_sha256 else {}),
    }
    with atomic_folder(out / "pipeline") as folder:
        save_pipeline_folder(
            folder,
            teacher.family,
            denoiser=denoiser,
            text_encoder=teacher.text_encoder,
            tokenizer=teacher.tokenizer,
            vae=teacher.vae,
            scheduler=teacher.scheduler,
        )
        (folder / STUDENT_INFO).write_text(json.dumps(info, indent=2))
    return out
