# Config validation and the helpers every rule file uses.
import importlib.util
import re
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

RESULTS = Path(config["results"])


def _vocabulary():
    """dkd/vocabulary.py loaded by its path, not as part of dkd (the rules load where dkd is not
    importable): the names the workflow and the package share, from dkd/vocabulary.yaml."""
    spec = importlib.util.spec_from_file_location("dkd_vocabulary", Path(workflow.basedir, "dkd", "vocabulary.py"))
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


vocabulary = _vocabulary()


def _expand_seeds():
    """distill.seeds N > 1: every run, merge, analysed or swapped run and curve run of the config also as
    <name>-seed1 .. <name>-seed{N-1} (the same settings, their seed plus K), so that every rule makes
    them like the plain ones; report tables and claims keep naming the plain models (the report
    summarises over the seeds)."""
    seeds = config["distill"]["seeds"]
    if seeds == 1:
        return
    distill, analysis = config["distill"], config["analysis"]
    seeded = lambda names: vocabulary.seeded(names, seeds)
    distill["runs"] = {backbone: seeded(names) for backbone, names in distill["runs"].items()}
    distill["merges"] = {
        backbone: {
            vocabulary.with_seed(f"{vocabulary.MERGED_PREFIX}{name}", k)[len(vocabulary.MERGED_PREFIX) :]: {
                **spec,
                "first": vocabulary.with_seed(spec["first"], k),
                "second": vocabulary.with_seed(spec["second"], k),
            }
            for name, spec in merges.items()
            for k in range(seeds)
        }
        for backbone, merges in distill["merges"].items()
    }
    if distill.get("curves"):
        distill["curves"]["runs"] = {b: seeded(names) for b, names in distill["curves"]["runs"].items()}
    for part in ("weights", "swaps"):
        analysis[part] = {backbone: seeded(names) for backbone, names in analysis[part].items()}
    for spec in config["evaluation"]["sets"].values():
        if spec.get("models"):
            spec["models"] = {backbone: seeded(names) for backbone, names in spec["models"].items()}


_expand_seeds()


def results(*parts):
    """A path under the results folder (config key `results`)."""
    return str(RESULTS.joinpath(*parts))


def log_path(*parts):
    """The log file of a rule, under <results>/logs/."""
    return str(RESULTS.joinpath("logs", *parts))


# -- data: prompt sets and reference folders ---------------------------------------------
DATA = Path(config["data"]["root"])
HPSV2_STYLES, COCO_COUNTS = vocabulary.HPSV2_STYLES, vocabulary.COCO_COUNTS
DATA_KEYS = {"captions": "captions_file"}  # config key -> dkd.data argument


def data_path(*parts):
    """A path under the data folder (config `data.root`, default `data`)."""
    return str(DATA.joinpath(*parts))


def data_settings(name):
    """Keyword arguments of dkd.data's prepare function for a data set, from config `data.<name>`."""
    settings = dict(config["data"].get(name) or {})
    return {DATA_KEYS.get(key, key): value for key, value in settings.items()}


def _coco_folder(split):
    count = (config["data"].get(split) or {}).get("count", COCO_COUNTS[split])
    return data_path(f"{split}-{count // 1000}k" if count % 1000 == 0 else f"{split}-{count}")


def _data_set(path):
    """ "data:coco2014" -> (folder, prompt file); "data:hpsv2/<style>", "data:journeydb" likewise."""
    name = path.removeprefix("data:")
    if name in COCO_COUNTS:
        return _coco_folder(name), str(Path(_coco_folder(name), "prompts.txt"))
    style = name.removeprefix("hpsv2/")
    if style != name and style in HPSV2_STYLES:
        return None, data_path("hpsv2", f"{style}.txt")
    if name == "journeydb":
        return None, data_path("journeydb", "prompts.txt")
    raise ValueError(
        f"unknown data set {path!r}: use data:coco2014, data:coco2017, data:journeydb or "
        f"data:hpsv2/<style> with a style of {HPSV2_STYLES}"
    )


def prompt_file(path):
    """A prompt file of the config: a path; "toy:train" / "toy:eval" / "toy:val" for the prompts the rule
    toy_data writes under the results folder; "data:<set>" for a set the data rules prepare."""
    toy = {"toy:train": "toy-train.txt", "toy:eval": "toy-eval.txt", "toy:val": "toy-val.txt"}
    if path in toy:
        return results("data", toy[path])
    return _data_set(path)[1] if path.startswith("data:") else path


# -- distillation runs -------------------------------------------------------------------
RUN_PATTERN, MODEL_PATTERN, model_kind = vocabulary.RUN_PATTERN, vocabulary.MODEL_PATTERN, vocabulary.model_kind
swapped_parts, SWAP_PREFIXES, catalog_model = (
    vocabulary.swapped_parts,
    vocabulary.SWAP_PREFIXES,
    vocabulary.catalog_model,
)
run_objective = vocabulary.run_objective
BUILT_BACKBONES = ("tiny-sd", "tiny-pixart", "toy")  # folders written by a rule, not downloaded


def teacher_source(wildcards):
    """The folder or hub id of a backbone's teacher (tiny ones and the toy: the folder built by a rule)."""
    if wildcards.backbone in BUILT_BACKBONES:
        return results("backbones", wildcards.backbone)
    return config["backbones"][wildcards.backbone]["source"]


def teacher_inputs(wildcards):
    """The built teacher's index file as an input, or the marker of a hub teacher's fetched files."""
    if wildcards.backbone in BUILT_BACKBONES:
        return {"teacher": results("backbones", wildcards.backbone, "model_index.json")}
    return model_marker(f"teacher-{wildcards.backbone}", "teacher_files")


def curve_settings(wildcards):
    """The evaluation hook of a run listed under distill.curves (Fig. 16), else None."""
    curves = config["distill"].get("curves")
    if not curves or wildcards.run not in curves["runs"].get(wildcards.backbone, []):
        return None
    evalset = curves["evalset"]
    return {
        "evaluator": evaluator_settings(),
        "prompts": prompt_file(_evalset(evalset)["prompts"]),
        "count": curves["count"],
        "every": curves["every"],
        "seed": _evalset(evalset)["seed"],
        "stats": results("reference-stats", f"{evalset}.npz"),
        "features": results("reference-stats", f"{evalset}-features.npy"),
    }


# -- evaluation images -------------------------------------------------------------------
def _evalset(name):
    return config["evaluation"]["sets"][name]


def shard_range(wildcards):
    """[start, end) of one shard of an evaluation set (shards split the count evenly)."""
    spec = _evalset(wildcards.evalset)
    count, shards, shard = spec["count"], spec["shards"], int(wildcards.shard)
    size = -(-count // shards)
    return [shard * size, min((shard + 1) * size, count)]


def shard_markers(wildcards):
    shards = _evalset(wildcards.evalset)["shards"]
    return [
        results(wildcards.backbone, wildcards.model, wildcards.evalset, "shards", f"{k}.json") for k in range(shards)
    ]


def teacher_sampling(wildcards):
    """Multi-step sampling settings of the teacher row (None for students and the one-step teacher)."""
    if model_kind(wildcards.model) != "teacher":
        return None
    return config["evaluation"]["teachers"][wildcards.backbone]


def published_catalog():
    """The published-checkpoint list (config evaluation.published.catalog; default the shipped one)."""
    return config["evaluation"]["published"]["catalog"]


def model_source(wildcards):
    """What a model's images come from: the teacher, a run's exported pipeline folder, (pub-<name>) the
    published checkpoint, named by its catalog entry, or (a swapped pub-<name>) its swapped denoiser folder."""
    kind = model_kind(wildcards.model)
    if kind in ("teacher", "teacher-1step"):
        return teacher_source(wildcards)
    if kind == "published":
        return f"{published_catalog()}:{wildcards.model}"
    if catalog_model(wildcards.model):
        return results(wildcards.backbone, wildcards.model, "denoiser")
    return results(wildcards.backbone, wildcards.model, "pipeline")


def published_inputs(model):
    """The published-checkpoint list and the marker of the fetched files of ``model`` (pub-<name>)."""
    name = vocabulary.published_name(model)
    return {"catalog": published_catalog(), **model_marker(f"published-{name}", "published_files")}


def swapped_published_inputs(wildcards):
    """The inputs of the published checkpoint a tnorm-/tdir-pub-<name> model swaps (rule swap_published)."""
    return published_inputs(catalog_model(wildcards.model))


def model_inputs(wildcards):
    """The files a model is loaded from: a built teacher's index, the published-checkpoint list, a
    run's exported pipeline, or a swapped published checkpoint's denoiser."""
    kind = model_kind(wildcards.model)
    if kind in ("teacher", "teacher-1step"):
        return teacher_inputs(wildcards)
    if kind == "published":
        return published_inputs(wildcards.model)
    if catalog_model(wildcards.model):
        denoiser = results(wildcards.backbone, wildcards.model, "denoiser", "diffusion_pytorch_model.safetensors")
        return {**swapped_published_inputs(wildcards), "denoiser": denoiser}
    return {"student": results(wildcards.backbone, wildcards.model, "pipeline", "model_index.json")}


def generate_inputs(wildcards):
    return {"prompts": prompt_file(_evalset(wildcards.evalset)["prompts"]), **model_inputs(wildcards)}


def evaluated_models(backbone, evalset=None):
    """The models of a backbone that are evaluated: its runs, its teacher rows, published checkpoints,
    merges, and the swapped models of analysis.swaps (on ``evalset``: those its `models` setting lists,
    if it has one)."""
    evaluation = config["evaluation"]
    models = list(config["distill"]["runs"].get(backbone, []))
    if backbone in evaluation["teachers"]:
        models.append(vocabulary.TEACHER)
    if backbone in evaluation["one_step_teachers"]:
        models.append(vocabulary.ONE_STEP_TEACHER)
    models += [f"{vocabulary.PUBLISHED_PREFIX}{name}" for name in evaluation["published"]["models"].get(backbone, [])]
    models += [model for b, model in merged_models() if b == backbone]
    models += [
        f"{prefix}-{model}" for model in config["analysis"]["swaps"].get(backbone, []) for prefix in SWAP_PREFIXES
    ]
    chosen = _evalset(evalset).get("models") if evalset else None
    return models if chosen is None else [m for m in models if m in chosen.get(backbone, [])]


def swap_metric_files(wildcards, model):
    """The metric files of ``model`` on the evaluation set that a swapped model's delta.json compares."""
    return [
        results(wildcards.backbone, model, wildcards.evalset, f"{metric}.json")
        for metric in _evalset(wildcards.evalset)["metrics"]
    ]


def evaluated_backbones():
    evaluation = config["evaluation"]
    names = list(config["distill"]["runs"]) + list(evaluation["teachers"]) + list(evaluation["published"]["models"])
    names += list(config["distill"]["merges"]) + list(config["analysis"]["swaps"])
    return list(dict.fromkeys(names + list(evaluation["one_step_teachers"])))


def image_targets():
    """images.json of every evaluated model on every evaluation set."""
    return [
        results(backbone, model, evalset, "images.json")
        for evalset in config["evaluation"]["sets"]
        for backbone in evaluated_backbones()
        for model in evaluated_models(backbone, evalset)
    ]


# -- evaluation metrics ------------------------------------------------------------------
def evaluator_settings(wildcards=None):
    """dkd.evaluators.Evaluator fields: the paper's models, or the toy classifier built by a rule."""
    kind = config["evaluation"]["evaluator"]
    if kind == "toy":
        return {"kind": kind, "classifier": results("evaluator")}
    return {"kind": kind, "classifier": None, "inception_dir": INCEPTION_DIR}


def fid_evaluator_inputs(wildcards):
    """What FID and precision/recall load: the toy classifier, or clean-fid's fetched Inception."""
    if config["evaluation"]["evaluator"] == "toy":
        return {"classifier": results("evaluator", "classifier.json")}
    return model_marker("inception", "inception")


def text_image_evaluator_inputs(wildcards):
    """What the text-image score loads (CLIP score; the toy: digit probability): the toy classifier, or the fetched open_clip model."""
    if config["evaluation"]["evaluator"] == "toy":
        return {"classifier": results("evaluator", "classifier.json")}
    return model_marker("clip", "clip_model")


def evaluator_inputs(wildcards):
    """Both (the evaluation hook of a run's training curve)."""
    return {**fid_evaluator_inputs(wildcards), **text_image_evaluator_inputs(wildcards)}


def reference_folder(wildcards):
    reference = _evalset(wildcards.evalset).get("reference")
    if reference is None:
        raise ValueError(f"evaluation set {wildcards.evalset!r} has no reference folder (evaluation.sets.*.reference)")
    if reference == "toy":
        return results("data", "reference")
    return str(Path(_data_set(reference)[0], "reference")) if reference.startswith("data:") else reference


def reference_mode(wildcards):
    """The FID reference mode a COCO set's data rule uses (data.<split>.reference, else its default), or
    None; the rule reference_stats refuses a set folder made with another one (dkd.data.check_reference_mode)."""
    reference = _evalset(wildcards.evalset).get("reference") or ""
    name = reference.removeprefix("data:")
    if not reference.startswith("data:") or name not in COCO_COUNTS:
        return None
    settings = data_settings(name)  # dkd.data.prepare_coco's default: the captions' images, unless a caption file
    return settings.get("reference") or (None if settings.get("captions_file") else "selected")  # may name none


def reference_inputs(wildcards):
    """The file that marks a built reference folder complete (toy digits, a COCO set), as an input."""
    inputs = fid_evaluator_inputs(wildcards)
    reference = _evalset(wildcards.evalset).get("reference") or ""
    if reference == "toy":
        inputs["reference"] = results("data", "reference.json")
    elif reference.startswith("data:"):
        inputs["reference"] = str(Path(_data_set(reference)[0], "info.json"))
    return inputs


def metric_targets():
    """Every configured metric of every evaluated model on every evaluation set, and the
    model-level files (parameter counts of each run, weight analysis)."""
    evaluation = config["evaluation"]
    targets = []
    for evalset, spec in evaluation["sets"].items():
        for backbone in evaluated_backbones():
            for model in evaluated_models(backbone, evalset):
                targets += [results(backbone, model, evalset, f"{metric}.json") for metric in spec["metrics"]]
    targets += [results(backbone, model, "hpsv2", "hps.json") for backbone, model in hps_models()]
    timed = evaluation["timing"]["models"]
    targets += [results(backbone, model, "timing.json") for backbone, models in timed.items() for model in models]
    for backbone, names in config["distill"]["runs"].items():
        targets += [results(backbone, run, name) for run in names for name in ("params.json", "train.json")]
    for backbone, names in config["analysis"]["weights"].items():
        targets += [results(backbone, run, "weights.json") for run in names]
    targets += [results(backbone, model, "weights.json") for backbone, model in released_models()]
    return targets


def hps_sets():
    """{style: evaluation set} of the HPSv2 benchmark (config evaluation.hps.sets)."""
    return config["evaluation"]["hps"]["sets"]


def hps_models():
    """(backbone, model) pairs evaluated on every HPSv2 style set: their hps.json (Table 6)."""
    sets = list(hps_sets().values())
    if not sets:
        return []
    return [
        (backbone, model)
        for backbone in evaluated_backbones()
        for model in evaluated_models(backbone, sets[0])
        if all(model in evaluated_models(backbone, evalset) for evalset in sets)
    ]


def hps_styles(wildcards):
    """{style: [images folder, prompt file, count]} of one model, for the rule hps."""
    return {
        style: [
            results(wildcards.backbone, wildcards.model, evalset, "images"),
            prompt_file(_evalset(evalset)["prompts"]),
            _evalset(evalset)["count"],
        ]
        for style, evalset in hps_sets().items()
    }
