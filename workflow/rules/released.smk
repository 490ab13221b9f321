# Released one-step models against their teachers (config analysis.released; dkd.analysis.released):
# the models rel-<pair> whose only result is the weight analysis of Fig. 2a/2b and Figs. 10-13.
# Helpers only, included after common.smk. The catalog is read here for the pairs' results folders
# (backbone) and sources; dkd validates it in the jobs.
import functools

import yaml

RELEASED_PREFIX, RELEASED_PATTERN = vocabulary.RELEASED_PREFIX, vocabulary.RELEASED_PATTERN


def released_catalog():
    """The (released model, teacher) pairs (config analysis.released.catalog; default the shipped one)."""
    return config["analysis"]["released"]["catalog"]


@functools.cache  # read once per workflow parse (the config does not change)
def released_pairs():
    """{pair: its catalog entry} of the pairs config analysis.released.pairs names; a name the catalog
    lacks, or lists as unavailable, is one error saying so."""
    names = config["analysis"]["released"]["pairs"]
    if not names:
        return {}
    with open(released_catalog(), encoding="utf-8") as handle:
        catalog = yaml.safe_load(handle) or {}
    pairs, unavailable = catalog.get("pairs") or {}, catalog.get("unavailable") or {}
    for name in names:
        if name in unavailable:
            raise ValueError(f"analysis.released.pairs: {name!r} cannot be analysed: {unavailable[name].get('reason')}")
        if name not in pairs:
            raise ValueError(
                f"analysis.released.pairs: no pair {name!r} in {released_catalog()}; known: {sorted(pairs)}"
            )
    return {name: pairs[name] for name in names}


def released_models():
    """[(backbone, rel-<pair>)] of the analysed pairs."""
    return [(entry["backbone"], f"{RELEASED_PREFIX}{name}") for name, entry in released_pairs().items()]


def released_outputs():
    """The result file and the Fig. 2a/2b plots of every analysed pair."""
    return [
        results(backbone, model, *parts)
        for backbone, model in released_models()
        for parts in (["weights.json"], ["weights", "weights.png"], ["weights", "energy.png"])
    ]


def released_fetched(name):
    """Whether a pair loads anything from the hub (then its files are fetched first: group released-<pair>)."""
    entry = released_pairs()[name]
    return any(_is_hub_id(part["repo"]) for part in (entry["teacher"], entry["one_step"]))


def released_inputs(wildcards):
    """The catalog and, for hub sources, the marker of the pair's fetched files."""
    name = vocabulary.released_name(wildcards.model)
    return {"catalog": released_catalog(), **model_marker(f"released-{name}", "released_files")}


def released_claims():
    """One claim per analysed pair: direction change >> norm change (direction mean at least
    analysis.released.min_ratio times the norm mean), decided from its weights.json."""
    ratio = config["analysis"]["released"]["min_ratio"]
    return [
        {
            "claim": f"{model}: the direction changes far more than the norm (direction mean >= {ratio:g}x norm mean)",
            "kind": "ratio",
            "backbone": backbone,
            "model": model,
            "numerator": "dir_mean_pct",
            "denominator": "norm_mean_pct",
            "at_least": ratio,
        }
        for backbone, model in released_models()
    ]
