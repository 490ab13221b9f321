# Helpers of the reversion target (workflow/rules/reversion.smk, which includes this file): its settings,
# the exemplar folder of a relation, the models' names, sources and inputs.
import types

REVERSION_MODELS = ("student", "teacher")


def reversion_settings():
    settings = config["downstream"].get("reversion")
    if settings is None:
        raise ValueError("the reversion target needs the config section downstream.reversion")
    return settings


def reversion_relations():
    return list(config["downstream"].get("reversion", {}).get("relations", {}))


def reversion_backbone():
    """Wildcards-like object naming the target's backbone (for teacher_source, teacher_inputs)."""
    return types.SimpleNamespace(backbone=reversion_settings()["backbone"])


def reversion_exemplars(relation):
    """The exemplar folder of a relation: relations.<name>.exemplars, else <benchmark>/<name>; benchmark
    "tiny": the folder rule reversion_tiny_exemplars draws."""
    settings = reversion_settings()
    if settings["benchmark"] == "tiny":
        return downstream_path("reversion", "exemplars", relation)
    own = (settings["relations"][relation] or {}).get("exemplars")
    return own or str(Path(settings["benchmark"], relation))


def reversion_exemplar_inputs(wildcards):
    """text.json and the images of the exemplar folder where it exists (or will: tiny); else nothing, so
    the workflow plans without the benchmark and the job says what is missing."""
    folder = Path(reversion_exemplars(wildcards.rv_relation))
    if reversion_settings()["benchmark"] == "tiny":
        return {"exemplars": str(folder / "text.json")}
    if not (folder / "text.json").is_file():
        return {}
    images = [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return {"exemplars": [str(folder / "text.json"), *images]}


def reversion_templates_input():
    """The templates file, where the templates come from one that exists."""
    source = reversion_settings().get("templates")
    return {"templates": source} if isinstance(source, str) and Path(source).is_file() else {}


def reversion_model(model):
    """(name for dkd.sampling.make_sampler, its source) of the student or the teacher."""
    settings = reversion_settings()
    if model == "teacher":
        return vocabulary.TEACHER, teacher_source(reversion_backbone())
    return settings["student"], results(settings["backbone"], settings["student"], "pipeline")


def reversion_model_inputs(model):
    settings = reversion_settings()
    if model == "teacher":
        return teacher_inputs(reversion_backbone())
    return {"student": results(settings["backbone"], settings["student"], "pipeline", "model_index.json")}


def reversion_teacher_sampling():
    """The teacher's MultiStepSpec fields: DDIM (paper F.2), steps and CFG of downstream.reversion.teacher."""
    return {"scheduler": "DDIMScheduler", **reversion_settings()["teacher"]}


def reversion_timed_relation():
    relation = reversion_settings()["timing"].get("relation") or reversion_relations()[0]
    if relation not in reversion_relations():
        raise ValueError(f"downstream.reversion.timing.relation {relation!r} is not one of the relations")
    return relation


def reversion_words(relation):
    """The relation in words (relations.<name>.words; else its name with spaces)."""
    return (reversion_settings()["relations"][relation] or {}).get("words") or relation.replace("_", " ")


def reversion_summary_inputs(wildcards):
    relations = list(reversion_settings()["relations"])
    return {
        "inversions": [downstream_path("reversion", r, "inversion.json") for r in relations],
        "images": [downstream_path("reversion", r, m, "images.json") for r in relations for m in REVERSION_MODELS],
        "timings": [downstream_path("reversion", "timing", f"{m}.json") for m in REVERSION_MODELS],
    }
