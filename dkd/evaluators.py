"""Which models measure an image set: the paper's (Inception for FID and precision/recall,
open_clip ViT-g-14 for the CLIP score, on 256-pixel center crops) or the toy's (the digit
classifier of ``dkd.toy.evaluator`` for all three, on the 8x8 images as generated).

The metric code is the same for both (``dkd.metrics``); only the feature extractor, the
text-image scorer and the preprocessing differ. The reference set is read once
(:func:`reference`: FID statistics and the features precision/recall needs); each model's
metric then reads only its own images. Each metric returns the values a result file holds
and where they came from (``(values, provenance)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("paper", "toy")


@dataclass(frozen=True)
class Evaluator:
    """``kind`` "paper" or "toy"; ``classifier``: the toy classifier's folder (toy only);
    ``inception_dir``: the folder holding clean-fid's Inception file (paper; None: clean-fid
    downloads it to /tmp)."""

    kind: str = "paper"
    classifier: str | None = None
    device: str | None = None
    inception_dir: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"evaluator kind must be one of {KINDS}; got {self.kind!r}.")
        if self.kind == "toy" and not self.classifier:
            raise ValueError("the toy evaluator needs the classifier folder (classifier=...).")

    def feature_extractor(self):
        """clean-fid's custom extractor (toy) or clean-fid's Inception-v3 (paper)."""
        from .metrics.fid import build_extractor

        if self.kind == "paper":
            return build_extractor(None, device=self.device, inception_dir=self.inception_dir)
        from .toy.evaluator import DigitFeatures, load_classifier

        return build_extractor(DigitFeatures(load_classifier(self.classifier)), device=self.device)

    def weights_sha256(self, metric: str) -> str | None:
        """The digest of the weights that compute ``metric`` ("features": FID and precision/recall; else the
        text-image score): the toy classifier's for both, clean-fid's Inception file for the features;
        None where the weights are named by model and tag instead (open_clip, HPS)."""
        from .provenance import weights_sha256

        if self.kind == "toy":
            return weights_sha256(self.classifier)
        return weights_sha256(self.inception_dir) if metric == "features" else None

    @property
    def extractor_name(self) -> str:
        from .metrics.fid import DEFAULT_EXTRACTOR
        from .toy.evaluator import NAME

        return DEFAULT_EXTRACTOR if self.kind == "paper" else NAME

    def prepared(self, folder: str | os.PathLike, scratch: str | os.PathLike) -> Path:
        """The folder features are read from: the 256-pixel center crops (paper; written once
        into ``scratch``, resumable) or the images themselves (toy)."""
        if self.kind == "toy":
            return Path(folder)
        from .metrics.images import preprocess_folder

        preprocess_folder(folder, scratch, recursive=True)
        return Path(scratch)

    def features(self, folder: str | os.PathLike, scratch: str | os.PathLike) -> tuple[np.ndarray, Path]:
        from .metrics.fid import folder_features

        prepared = self.prepared(folder, scratch)
        return folder_features(prepared, model=self.feature_extractor(), device=self.device), prepared


def reference(
    evaluator: Evaluator,
    folder: str | os.PathLike,
    *,
    stats: str | os.PathLike,
    features: str | os.PathLike,
    scratch: str | os.PathLike,
) -> dict:
    """Read the reference set once: FID statistics (``stats``, clean-fid's cache format) and the
    raw features (``features``, ``.npy``) for precision/recall."""
    from .io import atomic_open
    from .metrics.fid import save_stats

    array, prepared = evaluator.features(folder, scratch)
    with atomic_open(features, "wb") as handle:
        np.save(handle, array)
    saved = save_stats(array, stats, folder=prepared, feature_extractor=evaluator.extractor_name)
    return {"count": saved["count"], "feature_extractor": saved["feature_extractor"], "folder": str(folder)}


def image_metrics(
    evaluator: Evaluator,
    images: str | os.PathLike,
    *,
    stats: str | os.PathLike,
    features: str | os.PathLike,
    scratch: str | os.PathLike,
    bootstrap: Mapping | None = None,
) -> dict[str, tuple[dict, dict]]:
    """FID (clean-fid's Fréchet distance against the cached reference statistics ``stats``) and
    precision/recall (Kynkäänniemi et al., k = 3, via prdc, against the reference ``features``, on
    equal-size sets: ``dkd.metrics.prdc.equal_size_subsets``), from one pass of the feature extractor
    over ``images``: ``{"fid": (values, provenance), "pr": (values, provenance)}``.

    ``bootstrap`` ``{"samples", "level", "seed"}`` (config ``evaluation.bootstrap``) with samples > 0
    adds FID's bootstrap interval over the generated images (``dkd.metrics.bootstrap``) as
    ``fid_low``, ``fid_high`` and its settings as the provenance's ``bootstrap``; None or samples 0:
    no interval."""
    from .metrics.fid import check_stats, clean_fid_version, feature_stats, frechet_distance, load_stats
    from .metrics.prdc import precision_recall_equal_sizes

    ref = load_stats(stats)
    check_stats(ref, feature_extractor=evaluator.extractor_name, mode="clean", source=f"reference stats {stats}")
    array, _ = evaluator.features(images, scratch)
    common = {
        "feature_extractor": evaluator.extractor_name,
        "evaluator": evaluator.kind,
        "mode": "clean",
        "clean_fid_version": clean_fid_version(),
    }
    mu, sigma = feature_stats(array)
    fid = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    fid_values, fid_provenance = {"fid": fid}, {**common, "count_gen": int(array.shape[0]), "count_ref": ref["count"]}
    interval = _bootstrap_settings(bootstrap)
    if interval:
        from .metrics.bootstrap import fid_interval

        low, high = fid_interval(array, ref["mu"], ref["sigma"], **interval)
        fid_values |= {"fid_low": low, "fid_high": high}
        fid_provenance["bootstrap"] = {**interval, "method": BOOTSTRAP_METHOD}
    pr = precision_recall_equal_sizes(np.load(features), array, seed=0)
    return {
        "fid": (fid_values, fid_provenance),
        "pr": ({"precision": pr.pop("precision"), "recall": pr.pop("recall")}, {**common, **pr}),
    }


BOOTSTRAP_METHOD = (
    "percentile interval shifted by the resamples' mean minus the FID; generated images resampled, reference fixed"
)


def _bootstrap_settings(bootstrap: Mapping | None) -> dict | None:
    """``{"samples", "level", "seed"}`` of ``bootstrap`` (the schema's defaults 0, 0.95, 0 for missing
    keys); None for no interval (None or samples 0)."""
    if bootstrap is None:
        return None
    unknown = sorted(set(bootstrap) - {"samples", "level", "seed"})
    if unknown:
        raise ValueError(f"bootstrap takes samples, level and seed; got also {unknown}.")
    settings = {"samples": 0, "level": 0.95, "seed": 0, **bootstrap}
    return settings if settings["samples"] != 0 else None


def text_image(evaluator: Evaluator, images: str | os.PathLike, prompts: Sequence[str]) -> tuple[dict, dict]:
    """The CLIP score (paper) or its toy counterpart: the classifier's probability of the digit
    each prompt names (``digit_prob``) and how often it is the top class (``digit_accuracy``)."""
    from .metrics.clip import folder_pairs

    files, captions = folder_pairs(images, prompts)
    if evaluator.kind == "paper":
        from .metrics.clip import clip_score, load_clip

        model, preprocess, tokenizer = load_clip(device=evaluator.device)
        result = clip_score(
            files, captions, model=model, preprocess=preprocess, tokenizer=tokenizer, device=evaluator.device
        )
        return {"clip": result.pop("clip_score")}, {**result, "evaluator": "paper"}
    from .toy.evaluator import load_classifier, prompt_agreement, read_images

    result = prompt_agreement(load_classifier(evaluator.classifier), read_images(files), captions)
    values = {"digit_prob": result.pop("digit_prob"), "digit_accuracy": result.pop("digit_accuracy")}
    return values, {
        **result,
        "evaluator": "toy",
        "scorer": "toy_digit_classifier",
        "classifier": str(evaluator.classifier),
    }


HPS_COLUMNS = {"anime": "anime", "photo": "photo", "concept-art": "concept_art", "paintings": "paintings"}


def hps(
    evaluator: Evaluator,
    styles,
    *,
    version: str = "v2.0",
    checkpoint: str | None = None,
    scorer=None,
    batch_size: int = 20,
) -> tuple[dict, dict]:
    """Table 6: the HPSv2 score of a model's images for each benchmark style and their average.

    ``styles``: ``{style: (images folder, prompts)}`` for the styles of ``HPS_COLUMNS`` (each an
    evaluation set of the workflow, image ``i`` for prompt ``i``); ``scorer``: an
    ``dkd.metrics.hps.HPSModel`` (default: :func:`dkd.metrics.hps.load_hps` of ``version``). The
    values are the per-style means under the report's column names and ``average``, the mean of
    the style means, as hpsv2's benchmark computes them."""
    if evaluator.kind != "paper":
        raise ValueError("HPSv2 is a metric of the paper's evaluator; the toy has no counterpart.")
    unknown = sorted(set(styles) - set(HPS_COLUMNS))
    if unknown or not styles:
        raise ValueError(f"HPSv2 styles must be a non-empty subset of {sorted(HPS_COLUMNS)}; got {sorted(styles)}.")
    from .metrics.clip import folder_pairs
    from .metrics.hps import hps_scores, load_hps, style_summary

    scorer = scorer or load_hps(version, checkpoint, device=evaluator.device)
    values, counts, chunk_std = {}, {}, {}
    for style, (folder, prompts) in styles.items():
        files, captions = folder_pairs(folder, prompts)
        summary = style_summary(
            hps_scores(
                files,
                captions,
                **scorer.scoring,
                batch_size=batch_size,
                device=evaluator.device,
                progress=True,
                desc=f"HPSv2 {style}",
            )
        )
        values[HPS_COLUMNS[style]], counts[style], chunk_std[style] = (
            summary["mean"],
            summary["count"],
            summary["chunk_std"],
        )
    values["average"] = float(np.mean([values[HPS_COLUMNS[style]] for style in styles]))
    provenance = {
        **scorer.labels,
        "count": counts,
        "chunk_std": chunk_std,
        "evaluator": "paper",
        "scale": 100,
        "images": {style: str(folder) for style, (folder, _) in styles.items()},
    }
    return values, provenance


def training_curve(
    evaluator: Evaluator,
    teacher,
    *,
    prompts: Sequence[str],
    seed: int,
    folder: str | os.PathLike,
    stats: str | os.PathLike,
    features: str | os.PathLike,
    t_init: int = 999,
    scaled_input: bool = False,
    batch_size: int = 50,
):
    """The evaluation hook of ``dkd.train.loop.distill`` for the convergence curves of Fig. 16.

    ``evaluate(step, student)`` generates one image per prompt with the student in one step (its
    input: ``t_init``, ``scaled_input``; image
    ``i`` from seed ``seed + i``, the same images at every step), writes them under ``folder``, and
    measures them with exactly the code of the final metrics (:func:`image_metrics`,
    :func:`text_image`). The images of a step are removed once measured.
    """
    import shutil

    from .io import image_path
    from .sampling.pipeline import seeded_noise, to_pil
    from .train.step import generate

    seeds = [seed + i for i in range(len(prompts))]

    def evaluate(step: int, student) -> dict:
        images = Path(folder) / f"step-{step:08d}"
        device = next(student.parameters()).device
        images.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            noise = seeded_noise(
                seeds[start : start + batch_size], teacher.latent_shape, device=device, dtype=student.dtype
            )
            latents = generate(teacher, student, noise, teacher.encode(chunk).to(device), t_init, scaled_input)
            for offset, image in enumerate(to_pil(teacher.decode(latents))):
                image.save(image_path(images, start + offset))
        measured = image_metrics(evaluator, images, stats=stats, features=features, scratch=images.with_suffix(".256"))
        values = {**measured["fid"][0], **measured["pr"][0], **text_image(evaluator, images, prompts)[0]}
        shutil.rmtree(images)
        shutil.rmtree(images.with_suffix(".256"), ignore_errors=True)
        return values

    return evaluate
