"""The jobs the paper config's dry-run plans for the four downstream targets (tests/workflow/test_workflow.py)."""

from __future__ import annotations


def downstream_jobs(downstream: dict) -> dict[str, int]:
    """The jobs of the four downstream targets, counted from their config sections (each target's own test
    checks its jobs' inputs)."""
    controls, dreambooth = downstream["controlnet"]["controls"], downstream["dreambooth"]
    arms = len(dreambooth.get("methods", ["lorad", "lora", "ft"])) + (dreambooth.get("student_method", "") is not None)
    subjects, scalecrafter = len(dreambooth["subjects"]), downstream["scalecrafter"]
    relations = len(downstream["reversion"]["relations"])
    return {
        "controlnet_condition": len(controls),
        "controlnet_images": 2 * len(controls),  # teacher and student
        "controlnet_f1": 2 * ("canny" in controls),
        "controlnet": 1,
        "dreambooth_photos": subjects,
        "dreambooth_class_images": len(set(dreambooth["subjects"].values())),
        "dreambooth_train": subjects * arms,
        "dreambooth_sample": subjects * arms,
        "dreambooth_metrics": subjects,
        "dreambooth": 1,
        "scalecrafter_images": len(scalecrafter["resolutions"])
        * (2 + bool(scalecrafter.get("freeu")) + bool(scalecrafter.get("teacher"))),
        "scalecrafter": 1,
        "reversion_invert": relations,
        "reversion_generate": 2 * relations,
        "reversion_timing": 2,
        "reversion": 1,
        "downstream_fetch": len(controls) + 2,  # each hub ControlNet; DreamBooth's photos and its DINO/CLIP
    }
