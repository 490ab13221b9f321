# Helpers of the controlnet target (workflow/rules/controlnet.smk, which includes this file): its config,
# paths, inputs and params. Helpers only (snakemake --lint: no rules beside functions).
from types import SimpleNamespace

CONTROLNET_TINY = "tiny"


def controlnet_config():
    return config["downstream"]["controlnet"]


def controlnet_control(wildcards):
    return controlnet_config()["controls"][wildcards.control]


def controlnet_backbone():
    return SimpleNamespace(backbone=controlnet_config()["backbone"])


def controlnet_path(*parts):
    return downstream_path("controlnet", *parts)


def controlnet_log(*parts):
    return downstream_log("controlnet", *parts)


def controlnet_settings(wildcards=None):
    """The target's shared settings (dkd.downstream.controlnet.run.TargetSettings)."""
    return {k: v for k, v in controlnet_config().items() if k not in ("backbone", "student", "controls")}


def controlnet_control_settings(wildcards):
    """A control's settings, its ControlNet resolved (tiny: the folder rule tiny_controlnet builds)."""
    control = dict(controlnet_control(wildcards))
    if control["controlnet"] == CONTROLNET_TINY:
        control["controlnet"] = controlnet_path("tiny", "controlnet")
    return control


def controlnet_fetched(wildcards):
    """The marker of a control's fetched hub files (ControlNet, hf:// image), if it has any."""
    return model_marker(f"controlnet-{wildcards.control}", "fetched")


def controlnet_image(wildcards):
    """A control's source image: a path, hf://<owner>/<repo>/<path>, or the drawn picture (tiny)."""
    image = controlnet_control(wildcards)["image"]
    return controlnet_path("tiny", "source.png") if image == CONTROLNET_TINY else image


def controlnet_condition_inputs(wildcards):
    inputs = controlnet_fetched(wildcards)
    image = controlnet_control(wildcards)["image"]
    if not image.startswith("hf://"):  # a local file, or the picture rule tiny_controlnet draws
        inputs["image"] = controlnet_image(wildcards)
    return inputs


def controlnet_model_source(wildcards):
    """The teacher (folder or hub id) or the exported student's pipeline folder."""
    if wildcards.model == "teacher":
        return teacher_source(controlnet_backbone())
    return results(controlnet_config()["backbone"], controlnet_config()["student"], "pipeline")


def controlnet_model_inputs(wildcards):
    inputs = {"condition": controlnet_path(wildcards.control, "condition.png"), **controlnet_fetched(wildcards)}
    if controlnet_control(wildcards)["controlnet"] == CONTROLNET_TINY:
        inputs["controlnet"] = controlnet_path("tiny", "controlnet", "config.json")
    if wildcards.model == "teacher":
        return {**inputs, **teacher_inputs(controlnet_backbone())}
    return {**inputs, "student": str(Path(controlnet_model_source(wildcards), "model_index.json"))}


def controlnet_model_params():
    return {
        "source": controlnet_model_source,
        "control": controlnet_control_settings,
        "settings": controlnet_settings,
        "dtype": lambda wc: config["backbones"][controlnet_config()["backbone"]]["dtype"],
    }


def controlnet_files():
    """{control: {condition, teacher/student: {images, timing[, f1]}}}: what the summary reads."""
    files = {}
    for control in controlnet_config()["controls"]:
        entry = {"condition": controlnet_path(control, "condition.png")}
        for model in ("teacher", "student"):
            entry[model] = {
                "images": controlnet_path(control, model, "images.json"),
                "timing": controlnet_path(control, model, "parts.json"),
            }
            if control == "canny":
                entry[model]["f1"] = controlnet_path(control, model, "canny_f1.json")
        files[control] = entry
    return files


def controlnet_summary_inputs(wildcards):
    files = controlnet_files()
    return [
        path
        for entry in files.values()
        for value in entry.values()
        for path in (value.values() if isinstance(value, dict) else [value])
    ]


def controlnet_grids():
    """grid-<control>.png of every control (none where the target is not configured)."""
    controls = config["downstream"].get("controlnet", {}).get("controls", {})
    return [controlnet_path(f"grid-{control}.png") for control in controls]
