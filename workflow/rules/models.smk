# Pretrained files the jobs load (hub teachers, the evaluation models, published checkpoints):
# fetched on the login node by the local rule fetch_model (data.smk, dkd.fetch), one marker per
# group that every loading job waits for. Helpers only, included after common.smk.
import functools
from pathlib import Path

INCEPTION_DIR = data_path("models", "inception")  # clean-fid's Inception file, loaded from here


def _is_hub_id(source):
    """``owner/name`` that is no existing path (dkd.backbones.load.resolve_source's rule)."""
    path = Path(source)
    return (
        not path.expanduser().exists()
        and not path.is_absolute()
        and not source.startswith((".", "~"))
        and len(path.parts) == 2
    )


@functools.cache  # computed once: every loading job's input function asks
def model_groups():
    """{group: dkd.fetch.files_for arguments} of every pretrained file set the config loads from the
    hub: hub teachers, the paper evaluator's Inception and CLIP, the clamped CLIP loss's models, HPS,
    published checkpoints, the released models of the weight analysis and their teachers."""
    groups = {
        f"teacher-{name}": {"what": "teacher", "source": backbone["source"], "backbone": name}
        for name, backbone in config["backbones"].items()
        if name not in BUILT_BACKBONES and _is_hub_id(backbone["source"])
    }
    evaluation = config["evaluation"]
    if evaluation["evaluator"] == "paper" and evaluation["sets"]:
        groups.update({"inception": {"what": "inception", "folder": INCEPTION_DIR}, "clip": {"what": "clip"}})
    runs = [(backbone, run) for backbone, names in config["distill"]["runs"].items() for run in names]
    scorer = evaluation["evaluator"] == "paper" and config["distill"]["scorer"] == "paper"
    if scorer and any(scored_run(run) for _, run in runs):
        groups["scorer"] = {"what": "scorer"}  # the clamped CLIP loss's TAESD and ViT-B-32
    for backbone, run in runs:  # a student started from another hub checkpoint (SwiftBrush v2: SD-Turbo)
        start = student_init(run)
        if start and _is_hub_id(start):
            groups[student_init_group(start)] = {"what": "denoiser", "source": start, "backbone": backbone}
    if hps_sets() and not evaluation["hps"].get("checkpoint"):
        groups["hps"] = {"what": "hps", "version": evaluation["hps"]["version"]}
    published = [
        f"{vocabulary.PUBLISHED_PREFIX}{name}" for names in evaluation["published"]["models"].values() for name in names
    ]
    published += [model for models in evaluation["timing"]["models"].values() for model in models]
    published += [
        row["model"]
        for table in config.get("report", {}).get("tables", {}).values()
        for row in table["rows"]
        if row.get("model")
    ]
    published += [model for backbone in config["analysis"]["swaps"] for model in evaluated_models(backbone)]
    names = dict.fromkeys(vocabulary.published_name(catalog_model(m)) for m in published if catalog_model(m))
    groups.update(
        {f"published-{name}": {"what": "published", "name": name, "catalog": published_catalog()} for name in names}
    )
    groups.update(
        {
            f"released-{name}": {"what": "released", "name": name, "catalog": released_catalog()}
            for name in released_pairs()
            if released_fetched(name)
        }
    )
    if "controlnet" in config["downstream"]:  # the controlnet target: each hub ControlNet and hf:// source image
        for kind, control in config["downstream"]["controlnet"]["controls"].items():
            if _is_hub_id(control["controlnet"]) or control["image"].startswith("hf://"):
                groups[f"controlnet-{kind}"] = {
                    "what": "controlnet",
                    "source": control["controlnet"],
                    "revision": control.get("revision"),
                    "image": control["image"],
                }
    if "dreambooth" in config["downstream"]:  # the dreambooth target: its subjects' photos, DINO and CLIP
        dreambooth = config["downstream"]["dreambooth"]
        photos = [name for name in dreambooth["subjects"] if name not in vocabulary.SYNTHETIC_SUBJECTS]
        if photos:
            groups["dreambooth-photos"] = {"what": "dreambooth", "subjects": photos, "dataset": dreambooth["dataset"]}
        if dreambooth["metric_models"] != "tiny":
            groups["dreambooth-metrics"] = {"what": "dreambooth", "metric_models": dreambooth["metric_models"]}
    return groups


def model_marker(group, key):
    """{key: the marker file of ``group``'s fetched files}, or {} when the config loads nothing from the hub
    there. ancient(): fetching again (a newer marker) does not make the jobs that load the files rerun."""
    return {key: ancient(data_path("models", f"{group}.json"))} if group in model_groups() else {}


def download_targets():
    """What `snakemake downloads` fetches where there is network: every prompt set, reference folder
    and pretrained file the config uses; the rest of the workflow can then run with HF_HUB_OFFLINE=1."""
    names = [config["distill"].get("prompts") or ""]
    for spec in config["evaluation"]["sets"].values():
        names += [spec.get("prompts") or "", spec.get("reference") or ""]
    files = []
    for name in dict.fromkeys(n for n in names if isinstance(n, str) and n.startswith("data:")):
        folder, prompts = _data_set(name)
        files += [prompts] + ([str(Path(folder, "info.json"))] if folder else [])
    return list(dict.fromkeys(files)) + [data_path("models", f"{group}.json") for group in model_groups()]
