# The controlnet target (config downstream.controlnet; docs/downstream.md). Helpers in downstream.smk and
# controlnet_helpers.smk.
# Paper 4.3 and F.2 (Figs. 5 and 22): the exported one-step student in diffusers'
# StableDiffusionControlNetPipeline with a stock SD1.5 ControlNet per control (canny, depth, openpose),
# one call at t_init without CFG, against the teacher with the same ControlNet, DDIM with CFG; the same
# condition, prompts and seeds. Per control: its condition image; per model, its images and per-part
# timing (one job, one pipeline load); the canny F1 (canny controls); then `controlnet`: a grid per
# control and summary.json. Hub ControlNets and hf:// source images are fetched by rule fetch_model
# (group controlnet-<kind>, models.smk), so the jobs run with HF_HUB_OFFLINE=1. `controlnet: tiny` /
# `image: tiny` (the tiny config): a ControlNet of the tiny teacher and a drawn picture, built by rule
# tiny_controlnet.


include: "controlnet_helpers.smk"


rule tiny_controlnet:
    """The tiny config's ControlNet (the tiny teacher's encoder, random non-zero output convolutions) and
    source picture (drawn in code), at the target's resolution."""
    input:
        teacher=lambda wc: results("backbones", controlnet_config()["backbone"], "model_index.json"),
    output:
        controlnet=controlnet_path("tiny", "controlnet", "config.json"),
        image=controlnet_path("tiny", "source.png"),
    log:
        controlnet_log("tiny.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        seed=config["seed"],
        resolution=lambda wc: controlnet_settings().get("resolution", 512),
    script:
        "../../scripts/controlnet_tiny.py"


rule controlnet_condition:
    input:
        unpack(controlnet_condition_inputs),
    output:
        condition=controlnet_path("{control}", "condition.png"),
    log:
        controlnet_log("{control}", "condition.log"),
    wildcard_constraints:
        control="canny|depth|openpose",
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        control=controlnet_control_settings,
        settings=controlnet_settings,
        image=controlnet_image,
    script:
        "../../scripts/controlnet_condition.py"


rule controlnet_images:
    input:
        unpack(controlnet_model_inputs),
    output:
        images=directory(controlnet_path("{control}", "{model}", "images")),
        marker=controlnet_path("{control}", "{model}", "images.json"),
        timing=controlnet_path("{control}", "{model}", "parts.json"),
    log:
        controlnet_log("{control}", "{model}", "images.log"),
    wildcard_constraints:
        control="canny|depth|openpose",
        model="teacher|student",
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=90,
        gpus=1,
    params:
        **controlnet_model_params(),
    script:
        "../../scripts/controlnet_images.py"


rule controlnet_f1:
    input:
        condition=controlnet_path("{control}", "condition.png"),
        images=controlnet_path("{control}", "{model}", "images.json"),
    output:
        f1=controlnet_path("{control}", "{model}", "canny_f1.json"),
    log:
        controlnet_log("{control}", "{model}", "canny_f1.log"),
    wildcard_constraints:
        control="canny",
        model="teacher|student",
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        control=controlnet_control_settings,
        settings=controlnet_settings,
    script:
        "../../scripts/controlnet_f1.py"


rule controlnet:
    """The target: a grid per control (condition | teacher | student) and summary.json."""
    input:
        controlnet_summary_inputs,
    output:
        summary=controlnet_path("summary.json"),
        grids=[
            report(
                grid,
                caption="../report/downstream.rst",
                category="Downstream",
                subcategory="ControlNet (Figs. 5, 22)",
                labels={"figure": downstream_label("controlnet", grid)},
            )
            for grid in controlnet_grids()
        ],
    log:
        controlnet_log("summary.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        files=lambda wc: controlnet_files(),
        controls=lambda wc: list(controlnet_config()["controls"]),
    script:
        "../../scripts/controlnet_summary.py"
