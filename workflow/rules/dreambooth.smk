# The dreambooth target (config downstream.dreambooth; docs/downstream.md). Helpers in downstream.smk and
# dreambooth_helpers.smk.
# Paper 4.3 and F.2 (Figs. 7 and 24): SD1.5 fine-tuned on DreamBooth subjects with LoRaD, LoRA and full
# fine-tuning at the paper's settings (dkd.downstream.dreambooth.method.DreamBoothConfig.paper), on the project's
# trainer (dkd.downstream.dreambooth.train: accelerate, checkpoints, bit-exact resume, CSV log, SIGTERM and
# SIGUSR1), and the DKD student fine-tuned the same way (arm dkd-<method>), sampled in one step. Per subject:
# its photos; per class: the teacher's class images (prior preservation), shared by every arm; per subject and
# arm: the fine-tuned weights, the images of DreamBooth's evaluation prompts (the same seeds in every arm);
# per subject: DINO, CLIP-I and CLIP-T of every arm; then `dreambooth`: the table, a grid per subject and
# summary.json. The data set's photos and the metric models are fetched by rule fetch_model (groups
# dreambooth-photos and dreambooth-metrics, models.smk), so the jobs run with HF_HUB_OFFLINE=1. A run's
# checkpoints live in <subject>/<arm>/train/ (not a declared output): a failed or preempted job resumes.


include: "dreambooth_helpers.smk"


rule dreambooth_photos:
    """A subject's photos: copied from the fetched data set, or drawn (a synthetic subject)."""
    input:
        unpack(dreambooth_photo_inputs),
    output:
        photos=directory(dreambooth_path("subjects", "{subject}", "photos")),
        info=dreambooth_path("subjects", "{subject}", "photos.json"),
    log:
        dreambooth_log("subjects", "{subject}.log"),
    wildcard_constraints:
        subject=dreambooth_pattern(dreambooth_subjects()),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        klass=lambda wc: dreambooth_subjects()[wc.subject],
        dataset=lambda wc: dreambooth_config()["dataset"],
        seed=config["seed"],
    script:
        "../../scripts/dreambooth_photos.py"


rule dreambooth_tiny_metric_models:
    """The tiny config's DINO and CLIP: random tiny transformers models (dkd.metrics.subject)."""
    output:
        info=dreambooth_path("metric-models", "models.json"),
    log:
        dreambooth_log("metric-models.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
    script:
        "../../scripts/dreambooth_tiny_metric_models.py"


rule dreambooth_class_images:
    """The prior-preservation images of a class: the teacher's multi-step samples of the class prompt."""
    input:
        unpack(dreambooth_base_inputs),
    output:
        images=directory(dreambooth_path("classes", "{klass}", "images")),
        info=dreambooth_path("classes", "{klass}", "images.json"),
    log:
        dreambooth_log("classes", "{klass}.log"),
    wildcard_constraints:
        klass=dreambooth_pattern(dreambooth_classes()),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=240,
        gpus=1,
    params:
        name=lambda wc: dreambooth_classes()[wc.klass],
        methods=lambda wc: dreambooth_methods(),
        sampling=lambda wc: dreambooth_config()["sampling"],
        seed=lambda wc: dreambooth_config()["seed"],
        batch_size=lambda wc: dreambooth_config()["batch_size"],
        backbone=lambda wc: dreambooth_config()["backbone"],
        source=dreambooth_base_source,
        dtype=dreambooth_dtype,
    script:
        "../../scripts/dreambooth_class_images.py"


rule dreambooth_train:
    """One subject fine-tuned with one arm's method (resuming from its checkpoints), then exported."""
    input:
        unpack(dreambooth_train_inputs),
    output:
        arm=dreambooth_path("{subject}", "{arm}", "model", "dreambooth.json"),
    log:
        dreambooth_log("{subject}", "{arm}", "train.log"),
    wildcard_constraints:
        subject=dreambooth_pattern(dreambooth_subjects()),
        arm=dreambooth_pattern(dreambooth_arms()),
    priority: 5
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=64000,
        runtime=720,
        gpus=1,
    params:
        method=lambda wc: dreambooth_method(wc.arm),
        settings=lambda wc: dreambooth_settings(dreambooth_method(wc.arm)),
        training=lambda wc: dreambooth_config()["training"],
        train_dir=lambda wc: dreambooth_path(wc.subject, wc.arm, "train"),
        backbone=lambda wc: dreambooth_config()["backbone"],
        source=dreambooth_base_source,
        dtype=dreambooth_dtype,
    script:
        "../../scripts/dreambooth_train.py"


rule dreambooth_sample:
    """An arm's images of the subject's evaluation prompts (teacher arms: the multi-step sampler; dkd-<method>:
    one step)."""
    input:
        unpack(dreambooth_sample_inputs),
    output:
        images=directory(dreambooth_path("{subject}", "{arm}", "images")),
        info=dreambooth_path("{subject}", "{arm}", "images.json"),
    log:
        dreambooth_log("{subject}", "{arm}", "sample.log"),
    wildcard_constraints:
        subject=dreambooth_pattern(dreambooth_subjects()),
        arm=dreambooth_pattern(dreambooth_arms()),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=120,
        gpus=1,
    params:
        one_step=dreambooth_on_student,
        sampling=lambda wc: dreambooth_config()["sampling"],
        prompts=lambda wc: dreambooth_config()["prompts"],
        images_per_prompt=lambda wc: dreambooth_config()["images_per_prompt"],
        seed=lambda wc: dreambooth_config()["seed"],
        batch_size=lambda wc: dreambooth_config()["batch_size"],
        backbone=lambda wc: dreambooth_config()["backbone"],
        source=dreambooth_base_source,
        dtype=dreambooth_dtype,
    script:
        "../../scripts/dreambooth_sample.py"


rule dreambooth_metrics:
    """DINO, CLIP-I and CLIP-T of every arm of a subject (the metric models loaded once)."""
    input:
        unpack(dreambooth_metric_inputs),
    output:
        metrics=expand(dreambooth_path("{{subject}}", "{arm}", "metrics.json"), arm=dreambooth_arms()),
    log:
        dreambooth_log("{subject}", "metrics.log"),
    wildcard_constraints:
        subject=dreambooth_pattern(dreambooth_subjects()),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpus=1,
    params:
        arms=dreambooth_arms(),
        models=dreambooth_metric_models,
        batch_size=lambda wc: dreambooth_config()["batch_size"],
    script:
        "../../scripts/dreambooth_metrics.py"


rule dreambooth:
    """The target: the table of every arm (trainable parameters, metrics averaged over the subjects), a grid
    per subject and summary.json, every number read back from the files above."""
    input:
        unpack(dreambooth_summary_inputs),
    output:
        summary=dreambooth_path("summary.json"),
        grids=[
            report(
                grid,
                caption="../report/downstream.rst",
                category="Downstream",
                subcategory="DreamBooth (Figs. 7, 24)",
                labels={"figure": downstream_label("dreambooth", grid)},
            )
            for grid in [dreambooth_path(f"grid-{subject}.png") for subject in dreambooth_subjects()]
        ],
    log:
        dreambooth_log("summary.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        subjects=list(dreambooth_subjects()),
        arms=dreambooth_arms(),
        grid_prompts=lambda wc: dreambooth_config()["grid_prompts"],
        images_per_prompt=lambda wc: dreambooth_config()["images_per_prompt"],
    script:
        "../../scripts/dreambooth_summary.py"
