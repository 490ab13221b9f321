# The scalecrafter target (config downstream.scalecrafter; docs/downstream.md; paper 4.3, Fig. 14/25):
# ScaleCrafter's re-dilation (dkd.downstream.scalecrafter.redilation) with the one-step student above its native
# resolution. Per resolution (<height>x<width>) and arm (dkd.downstream.scalecrafter.compare.ARMS: the
# student plain and re-dilated, with FreeU if `freeu` is given, and the re-dilated multi-step teacher if
# `teacher` is given) the images of every prompt x seed, then `scalecrafter`: a grid per resolution (rows =
# arms), the table and summary.json. Helpers in downstream.smk and scalecrafter_helpers.smk.


include: "scalecrafter_helpers.smk"


rule scalecrafter_images:
    """One arm at one resolution: the image of every prompt x seed, the U-Net evaluations per image and
    the seconds per image at batch 1 (images.json)."""
    input:
        unpack(scalecrafter_inputs),
    output:
        images=directory(downstream_path("scalecrafter", "{resolution}", "{arm}", "images")),
        info=downstream_path("scalecrafter", "{resolution}", "{arm}", "images.json"),
    log:
        downstream_log("scalecrafter", "{resolution}", "{arm}.log"),
    wildcard_constraints:
        resolution=r"\d+x\d+",
        arm="student|student-redilated|student-redilated-freeu|teacher-redilated",
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=32000,
        runtime=lambda wc: 360 if wc.arm.startswith("teacher") else 60,  # DDIM 50 with CFG at 2048²: minutes an image
        gpus=1,
    params:
        backbone=lambda wc: _scalecrafter()["backbone"],
        source=scalecrafter_source,
        schedule=lambda wc: scalecrafter_resolutions()[wc.resolution],
        prompts=lambda wc: _scalecrafter()["prompts"],
        seeds=lambda wc: scalecrafter_seeds(),
        freeu=lambda wc: _scalecrafter().get("freeu"),
        teacher=lambda wc: _scalecrafter().get("teacher"),
        timing=lambda wc: _scalecrafter()["timing"],
        batch_size=lambda wc: _scalecrafter()["batch_size"],
        dtype=lambda wc: config["backbones"][_scalecrafter()["backbone"]]["dtype"],
    script:
        "../../scripts/scalecrafter_images.py"


rule scalecrafter:
    """The target's last files: a grid per resolution (rows = arms), table.csv and summary.json, every
    number read back from the arms' images.json."""
    input:
        arms=scalecrafter_arm_files,
    output:
        summary=downstream_path("scalecrafter", "summary.json"),
        table=downstream_path("scalecrafter", "table.csv"),
        grids=[
            report(
                grid,
                caption="../report/downstream.rst",
                category="Downstream",
                subcategory="ScaleCrafter (Figs. 14, 25)",
                labels={"figure": downstream_label("scalecrafter", grid)},
            )
            for grid in expand(
                downstream_path("scalecrafter", "grid-{resolution}.png"),
                resolution=scalecrafter_resolutions() if "scalecrafter" in config["downstream"] else [],
            )
        ],
    log:
        downstream_log("scalecrafter", "summary.log"),
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        backbone=lambda wc: _scalecrafter()["backbone"],
        student=lambda wc: _scalecrafter()["student"],
    script:
        "../../scripts/scalecrafter.py"
