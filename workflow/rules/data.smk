# Prompt sets and FID reference folders (`python -m dkd data ...`, dkd.data): COCO2014 val 30k and
# COCO2017 val 5k captions with their reference images, the HPSv2 benchmark prompts, the JourneyDB
# training prompts. They live under the data folder (config `data.root`), shared by every results
# folder; downloads resume and are checksummed. Local rules: compute nodes often have no network.
# Without network each rule fails with one message naming the files to fetch and where to put them
# (or set data.<set>.local to a folder that holds them). The pretrained weights the jobs load are
# fetched the same way, by the local rule fetch_model (one group per hub teacher, evaluation model and
# published checkpoint: workflow/rules/models.smk model_groups, dkd.fetch).


rule data_coco:
    output:
        prompts=data_path("{split}-{label}/prompts.txt"),
        info=data_path("{split}-{label}/info.json"),
    log:
        log_path("data/{split}-{label}.log"),
    wildcard_constraints:
        split="coco2014|coco2017",
    localrule: True
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        root=lambda wc: data_path(),
        settings=lambda wc: data_settings(wc.split),
    script:
        "../../scripts/data.py"


rule data_hpsv2:
    output:
        prompts=[data_path("hpsv2", f"{style}.txt") for style in HPSV2_STYLES],
    log:
        log_path("data/hpsv2.log"),
    localrule: True
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        root=lambda wc: data_path(),
        settings=lambda wc: data_settings("hpsv2"),
    script:
        "../../scripts/data.py"


rule data_journeydb:
    output:
        prompts=data_path("journeydb", "prompts.txt"),
    log:
        log_path("data/journeydb.log"),
    localrule: True
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        root=lambda wc: data_path(),
        settings=lambda wc: data_settings("journeydb"),
    script:
        "../../scripts/data.py"


rule fetch_model:
    """The pretrained files of one group of model_groups() (a hub teacher, a published checkpoint,
    the evaluation models) into the Hugging Face cache, or clean-fid's Inception into
    data/models/inception/; the marker lists the local paths (dkd.fetch)."""
    output:
        marker=data_path("models/{group}.json"),
    log:
        log_path("models/{group}.log"),
    wildcard_constraints:
        group=r"[A-Za-z0-9_.-]+",
    localrule: True
    conda:
        "../../envs/dkd.yaml"
    resources:
        mem_mb=4000,
        runtime=600,
    params:
        group=lambda wc: model_groups()[wc.group],
    script:
        "../../scripts/fetch_model.py"


rule downloads:
    """Every prompt set, reference folder and pretrained file the config uses (download_targets):
    `snakemake downloads` where there is network, then the rest with HF_HUB_OFFLINE=1."""
    input:
        download_targets(),
    localrule: True
