"""Sampling: text to images with the one-step students, the multi-step teachers and the published
checkpoints, and evaluation image sets written to disk in shards (``docs/reference.md`` section 3).

* ``pipeline``: ``OneStepPipeline`` (an exported student) and ``MultiStepPipeline`` (a teacher),
  both on the training ``Teacher``; ``STUDENT_INFO``, the file an export writes beside the pipeline;
* ``specs``: ``MultiStepSpec``, how a multi-step diffusers model is sampled;
* ``samplers``: ``DiffusersSampler`` runs a spec; ``make_sampler`` builds the sampler of one
  evaluated model (student, teacher or published checkpoint);
* ``shards``: ``generate_shard`` writes image ``i`` of a prompt list with seed ``seed + i``, resumably;
* ``published``: the catalog of released checkpoints, ``config/published.yaml``.

Every name is imported from its module on first use (PEP 562): importing one module does not import
the others (the catalog's pandas, the pipelines' backbones and training code).
"""

from importlib import import_module

_LAZY = {
    "STUDENT_INFO": "pipeline",
    "MultiStepPipeline": "pipeline",
    "OneStepPipeline": "pipeline",
    "seeded_noise": "pipeline",
    "to_pil": "pipeline",
    "MultiStepSpec": "specs",
    "scheduler_class": "specs",
    "DiffusersSampler": "samplers",
    "Sampler": "samplers",
    "community_pipeline_file": "samplers",
    "community_pipeline_kwargs": "samplers",
    "make_sampler": "samplers",
    "published_spec": "samplers",
    "generate_shard": "shards",
    "sampler_fingerprint": "shards",
    "HubFile": "published",
    "PaperRow": "published",
    "PublishedModel": "published",
    "UnavailableModel": "published",
    "check_paper_rows": "published",
    "load_catalog": "published",
    "load_published": "published",
    "load_unavailable": "published",
    "paper_rows": "published",
    "published_path": "published",
    "results_path": "published",
    "unavailable_reasons": "published",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_LAZY[name]}", __name__), name)
