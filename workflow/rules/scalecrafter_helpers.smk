# Helpers of the scalecrafter target (workflow/rules/scalecrafter.smk, which includes this file): its config,
# arms, inputs and params. Helpers only (snakemake --lint: no rules beside functions).
from types import SimpleNamespace


def _scalecrafter():
    return config["downstream"]["scalecrafter"]


def scalecrafter_resolutions():
    """{"<height>x<width>": its settings} of config downstream.scalecrafter.resolutions."""
    return {f"{r['height']}x{r['width']}": r for r in _scalecrafter()["resolutions"]}


def scalecrafter_arms():
    """The arms of the comparison, in the grids' row order."""
    settings = _scalecrafter()
    teacher = settings.get("teacher")
    if teacher and teacher.get("freeu") and not settings.get("freeu"):
        raise ValueError("downstream.scalecrafter.teacher.freeu needs the factors of downstream.scalecrafter.freeu")
    arms = ["student", "student-redilated"]
    arms += ["student-redilated-freeu"] if settings.get("freeu") else []
    return arms + (["teacher-redilated"] if teacher else [])


def scalecrafter_seeds():
    seeds = _scalecrafter()["seeds"]
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def scalecrafter_backbone():
    return SimpleNamespace(backbone=_scalecrafter()["backbone"])


def scalecrafter_inputs(wildcards):
    """The teacher's files (built tiny folder or fetched hub marker) or the student's exported pipeline."""
    settings = _scalecrafter()
    if wildcards.arm.startswith("teacher"):
        return teacher_inputs(scalecrafter_backbone())
    return {"student": results(settings["backbone"], settings["student"], "pipeline", "model_index.json")}


def scalecrafter_source(wildcards):
    settings = _scalecrafter()
    if wildcards.arm.startswith("teacher"):
        return teacher_source(scalecrafter_backbone())
    return results(settings["backbone"], settings["student"], "pipeline")


def scalecrafter_arm_files(wildcards):
    """images.json of every (resolution, arm), resolution-major, arms in row order."""
    return [
        downstream_path("scalecrafter", resolution, arm, "images.json")
        for resolution in scalecrafter_resolutions()
        for arm in scalecrafter_arms()
    ]
