# Weight analysis of Fig. 2 and Table 2's NM/DM columns: a run's merged student (rule weights) or a
# released one-step model (rule released_weights, config analysis.released) against its teacher, per
# layer (CSV, Fig. 2a plot), the SVD of the direction residual (Fig. 2b curve) and over all layers (the
# result file results/<backbone>/<model>/weights.json). CPU jobs: the weights only, no images.


rule weights:
    input:
        unpack(teacher_inputs),
        student=results("{backbone}/{run}/pipeline/model_index.json"),
    output:
        result=results("{backbone}/{run}/weights.json"),
        plot=report(
            results("{backbone}/{run}/weights/weights.png"),
            caption="../report/weights.rst",
            category="Figures",
            subcategory="Fig. 2a: weight change per layer",
            labels={"backbone": "{backbone}", "model": "{run}"},
        ),
        energy=report(
            results("{backbone}/{run}/weights/energy.png"),
            caption="../report/energy.rst",
            category="Figures",
            subcategory="Fig. 2b: energy of the direction residual",
            labels={"backbone": "{backbone}", "model": "{run}"},
        ),
    log:
        log_path("{backbone}/{run}/weights.log"),
    wildcard_constraints:
        run=RUN_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=60,
    params:
        teacher=teacher_source,
        include_conv=config["analysis"]["include_conv"],
    script:
        "../../scripts/weights.py"


rule released_weights:
    input:
        unpack(released_inputs),
    output:
        result=results("{backbone}/{model}/weights.json"),
        plot=report(
            results("{backbone}/{model}/weights/weights.png"),
            caption="../report/weights.rst",
            category="Figures",
            subcategory="Fig. 2a: weight change per layer",
            labels={"backbone": "{backbone}", "model": "{model}"},
        ),
        energy=report(
            results("{backbone}/{model}/weights/energy.png"),
            caption="../report/energy.rst",
            category="Figures",
            subcategory="Fig. 2b: energy of the direction residual",
            labels={"backbone": "{backbone}", "model": "{model}"},
        ),
    log:
        log_path("{backbone}/{model}/weights.log"),
    wildcard_constraints:
        model=RELEASED_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,  # two fp32 SD U-Nets (3.4 GB each) and, for a LoRA, the merged U-Net
        runtime=60,
    params:
        include_conv=config["analysis"]["include_conv"],
    script:
        "../../scripts/released_weights.py"


# `snakemake fig2_released`: the analysis of every released pair alone (no distillation, no GPU).
rule fig2_released:
    input:
        released_outputs(),
    localrule: True


# Fig. 2c/d: a run, merge or published checkpoint of analysis.swaps given its teacher's norms (model
# tnorm-<model>) or its teacher's directions (tdir-<model>), evaluated like the model itself: a run's as an
# exported student (rule swap), a published checkpoint's as the denoiser its card's pipeline loads (swap_published).
rule swap:
    input:
        unpack(teacher_inputs),
        student=lambda wc: results(wc.backbone, swapped_parts(wc.model)[1], "pipeline", "model_index.json"),
    output:
        pipeline=results("{backbone}/{model}/pipeline/model_index.json"),
    log:
        log_path("{backbone}/{model}/swap.log"),
    wildcard_constraints:
        model=vocabulary.SWAPPED_STUDENT_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=60,
    params:
        teacher=teacher_source,
        part=lambda wc: swapped_parts(wc.model)[0],
        include_conv=config["analysis"]["include_conv"],
    script:
        "../../scripts/swap.py"


rule swap_published:
    input:
        unpack(teacher_inputs),
        unpack(swapped_published_inputs),
    output:
        denoiser=results("{backbone}/{model}/denoiser/diffusion_pytorch_model.safetensors"),
    log:
        log_path("{backbone}/{model}/swap.log"),
    wildcard_constraints:
        model=vocabulary.SWAPPED_PUBLISHED_PATTERN,
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=60,
    params:
        teacher=teacher_source,
        part=lambda wc: swapped_parts(wc.model)[0],
        published=lambda wc: swapped_parts(wc.model)[1],
        include_conv=config["analysis"]["include_conv"],
    script:
        "../../scripts/swap_published.py"


# Fig. 2c's numbers: the change of each metric of a swapped model against its one-step model.
rule swap_delta:
    input:
        swapped=lambda wc: swap_metric_files(wc, wc.model),
        student=lambda wc: swap_metric_files(wc, swapped_parts(wc.model)[1]),
    output:
        result=results("{backbone}/{model}/{evalset}/delta.json"),
    log:
        log_path("{backbone}/{model}/{evalset}/delta.log"),
    wildcard_constraints:
        model=vocabulary.SWAPPED_PATTERN,
    localrule: True
    conda:
        "../../envs/dkd.yaml"
    script:
        "../../scripts/swap_delta.py"
