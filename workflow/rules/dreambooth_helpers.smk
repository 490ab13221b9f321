# Helpers of the dreambooth target (workflow/rules/dreambooth.smk, which includes this file): its config,
# arms, paths, inputs and params. Helpers only (snakemake --lint: no rules beside functions).
import re
from types import SimpleNamespace

DREAMBOOTH_STUDENT_PREFIX = "dkd-"  # dkd.downstream.dreambooth.evaluate.STUDENT_PREFIX
DREAMBOOTH_TINY = "tiny"  # metric_models: tiny random DINO and CLIP, built by rule dreambooth_tiny_metric_models


def dreambooth_config():
    """Config downstream.dreambooth ({} when the target is not configured)."""
    return config["downstream"].get("dreambooth") or {}


def dreambooth_path(*parts):
    return downstream_path("dreambooth", *parts)


def dreambooth_log(*parts):
    return downstream_log("dreambooth", *parts)


def dreambooth_subjects():
    """{subject: class} of the config."""
    return dict(dreambooth_config().get("subjects", {}))


def dreambooth_slug(class_name):
    """A class as a path part (dkd.downstream.dreambooth.data.class_slug): "stuffed animal" -> stuffed_animal."""
    return "_".join(class_name.split())


def dreambooth_classes():
    """{class slug: class} of the configured subjects (one set of class images per class)."""
    return {dreambooth_slug(name): name for name in dreambooth_subjects().values()}


def dreambooth_arms():
    """The arms: each method on the teacher, then dkd-<student_method> (the student fine-tuned) if set."""
    settings = dreambooth_config()
    if not settings:
        return []
    student = settings["student_method"]
    return list(settings["methods"]) + ([f"{DREAMBOOTH_STUDENT_PREFIX}{student}"] if student else [])


def dreambooth_pattern(names):
    """A wildcard constraint matching exactly ``names`` (none: nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def dreambooth_method(arm):
    return arm.removeprefix(DREAMBOOTH_STUDENT_PREFIX)


def dreambooth_on_student(wildcards):
    return wildcards.arm.startswith(DREAMBOOTH_STUDENT_PREFIX)


def dreambooth_backbone():
    return SimpleNamespace(backbone=dreambooth_config()["backbone"])


def dreambooth_student_pipeline():
    settings = dreambooth_config()
    return results(settings["backbone"], settings["student"], "pipeline")


def dreambooth_base_inputs(wildcards):
    """The base model's files: the teacher's (an arm on the teacher, the class images) or the student's
    exported pipeline (an arm dkd-<method>)."""
    if "arm" in wildcards.keys() and dreambooth_on_student(wildcards):
        return {"student": str(Path(dreambooth_student_pipeline(), "model_index.json"))}
    return teacher_inputs(dreambooth_backbone())


def dreambooth_base_source(wildcards):
    if "arm" in wildcards.keys() and dreambooth_on_student(wildcards):
        return dreambooth_student_pipeline()
    return teacher_source(dreambooth_backbone())


def dreambooth_dtype(wildcards=None):
    return config["backbones"][dreambooth_config()["backbone"]]["dtype"]


def dreambooth_settings(method):
    """The DreamBoothConfig settings of a method (dkd.downstream.dreambooth.method.arm_config): every arm's, then
    its own."""
    settings = dreambooth_config()
    return [settings["settings"], settings["method_settings"].get(method, {})]


def dreambooth_methods():
    """{method: its settings} of every arm (the class images are as many as the largest class_images)."""
    return {dreambooth_method(arm): dreambooth_settings(dreambooth_method(arm)) for arm in dreambooth_arms()}


def dreambooth_photos(subject):
    return dreambooth_path("subjects", subject, "photos.json")


def dreambooth_class_info(subject):
    return dreambooth_path("classes", dreambooth_slug(dreambooth_subjects()[subject]), "images.json")


def dreambooth_photo_inputs(wildcards):
    """The fetched photos of the data set's subjects (none for a synthetic subject)."""
    return model_marker("dreambooth-photos", "fetched")


def dreambooth_train_inputs(wildcards):
    return {
        "photos": dreambooth_photos(wildcards.subject),
        "classes": dreambooth_class_info(wildcards.subject),
        **dreambooth_base_inputs(wildcards),
    }


def dreambooth_sample_inputs(wildcards):
    return {
        "arm": dreambooth_path(wildcards.subject, wildcards.arm, "model", "dreambooth.json"),
        "photos": dreambooth_photos(wildcards.subject),
        **dreambooth_base_inputs(wildcards),
    }


def dreambooth_metric_inputs(wildcards):
    """Every arm's images of a subject, its photos and the metric models (tiny: built; else fetched)."""
    inputs = {
        "images": [dreambooth_path(wildcards.subject, arm, "images.json") for arm in dreambooth_arms()],
        "photos": dreambooth_photos(wildcards.subject),
    }
    if dreambooth_config()["metric_models"] == DREAMBOOTH_TINY:
        return {**inputs, "models": dreambooth_path("metric-models", "models.json")}
    return {**inputs, **model_marker("dreambooth-metrics", "models")}


def dreambooth_metric_models(wildcards):
    """{dino, clip}: {source, revision} (tiny: the folders rule dreambooth_tiny_metric_models builds)."""
    models = dreambooth_config()["metric_models"]
    if models == DREAMBOOTH_TINY:
        return {name: {"source": dreambooth_path("metric-models", "models", name)} for name in ("dino", "clip")}
    return models


def dreambooth_summary_inputs(wildcards):
    subjects, arms = list(dreambooth_subjects()), dreambooth_arms()
    cells = [(subject, arm) for subject in subjects for arm in arms]
    return {
        "metrics": [dreambooth_path(s, a, "metrics.json") for s, a in cells],
        "arms": [dreambooth_path(s, a, "model", "dreambooth.json") for s, a in cells],
        "images": [dreambooth_path(s, a, "images.json") for s, a in cells],
        "photos": [dreambooth_photos(s) for s in subjects],
    }
