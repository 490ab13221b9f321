"""DreamBooth's subjects and evaluation prompts (paper F.2, Fig. 7/24): the data side of the dreambooth target.

* The subject photos of the DreamBooth data set (Ruiz et al., 2023): 30 subjects of 15 classes, 4-6 photos
  each, on the hub as the dataset ``google/dreambooth`` (folders ``dataset/<subject>/``; licence CC-BY-4.0 on
  its dataset card; the photos were taken by the paper's authors or come from unsplash.com under the Unsplash
  licence, per the data set's ``references_and_licenses.txt``). :data:`SUBJECT_CLASSES` is the class of each
  subject as the data set's ``prompts_and_classes.txt`` gives it; cats and dogs are the "live" subjects.
  :func:`fetch_subject_photos` copies one subject's photos out of the Hugging Face cache.
* :func:`evaluation_prompts`: the data set's 25 evaluation prompts of a subject's kind (objects: places,
  backgrounds and property changes; live subjects: places, outfits and accessories, property changes), kept
  here as templates of our own (:data:`OBJECT_PROMPTS`, :data:`LIVE_PROMPTS`), each given as the prompt with
  the rare identifier and the text CLIP-T scores (the same prompt without the identifier).
* :func:`draw_subject`: a synthetic subject drawn in code (a coloured shape at varied positions on varied
  backgrounds), the tiny configuration's stand-in for the photos (no download).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ...metrics.images import list_images
from ...vocabulary import SYNTHETIC_SUBJECTS as SYNTHETIC_NAMES
from .method import class_prompt, instance_prompt

DATASET_REPO = "google/dreambooth"
DATASET_REVISION = None  # the commit to pin (None: main); none recorded here, never a guessed hash
KINDS = ("object", "live")
LIVE_CLASSES = ("cat", "dog")
SUBJECT_CLASSES = {
    "backpack": "backpack", "backpack_dog": "backpack", "bear_plushie": "stuffed animal", "berry_bowl": "bowl",
    "can": "can", "candle": "candle", "cat": "cat", "cat2": "cat", "clock": "clock", "colorful_sneaker": "sneaker",
    "dog": "dog", "dog2": "dog", "dog3": "dog", "dog5": "dog", "dog6": "dog", "dog7": "dog", "dog8": "dog",
    "duck_toy": "toy", "fancy_boot": "boot", "grey_sloth_plushie": "stuffed animal", "monster_toy": "toy",
    "pink_sunglasses": "glasses", "poop_emoji": "toy", "rc_car": "toy", "red_cartoon": "cartoon",
    "robot_toy": "toy", "shiny_sneaker": "sneaker", "teapot": "teapot", "vase": "vase",
    "wolf_plushie": "stuffed animal",
}  # fmt: skip
# Synthetic subjects (tiny configuration): name -> (RGB colour, shape), drawn by draw_subject; class "toy".
SYNTHETIC_SUBJECTS = dict(zip(SYNTHETIC_NAMES, (((220, 40, 40), "disc"), ((40, 70, 220), "square")), strict=True))
SYNTHETIC_CLASS = "toy"

# The evaluation prompts, "{}" standing for "<identifier> <class>" (e.g. "sks dog"): the first ten (places
# and backgrounds) and the last five (property changes) are shared by both kinds.
_PLACES = (
    "a {} in the jungle", "a {} in the snow", "a {} on the beach", "a {} on a cobblestone street",
    "a {} on top of pink fabric", "a {} on top of a wooden floor", "a {} with a city in the background",
    "a {} with a mountain in the background", "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
)  # fmt: skip
_PROPERTIES = ("a red {}", "a purple {}", "a shiny {}", "a wet {}", "a cube shaped {}")
OBJECT_PROMPTS = _PLACES + (
    "a {} with a wheat field in the background", "a {} with a tree and autumn leaves in the background",
    "a {} with the Eiffel Tower in the background", "a {} floating on top of water",
    "a {} floating in an ocean of milk", "a {} on top of green grass with sunflowers around it",
    "a {} on top of a mirror", "a {} on top of the sidewalk in a crowded street", "a {} on top of a dirt road",
    "a {} on top of a white rug",
) + _PROPERTIES  # fmt: skip
LIVE_PROMPTS = _PLACES + (
    "a {} wearing a red hat", "a {} wearing a santa hat", "a {} wearing a rainbow scarf",
    "a {} wearing a black top hat and a monocle", "a {} in a chef outfit", "a {} in a firefighter outfit",
    "a {} in a police outfit", "a {} wearing pink glasses", "a {} wearing a yellow shirt",
    "a {} in a purple wizard outfit",
) + _PROPERTIES  # fmt: skip


@dataclass(frozen=True)
class Subject:
    """One subject: its ``name`` (the data set's folder), ``class_name`` and ``kind`` (object or live)."""

    name: str
    class_name: str
    kind: str

    @property
    def synthetic(self) -> bool:
        return self.name in SYNTHETIC_SUBJECTS

    @property
    def instance_prompt(self) -> str:
        return instance_prompt(self.class_name)

    @property
    def class_prompt(self) -> str:
        return class_prompt(self.class_name)


def subject(name: str) -> Subject:
    """The :class:`Subject` named ``name``: a DreamBooth data set subject or a synthetic one."""
    if name in SYNTHETIC_SUBJECTS:
        return Subject(name, SYNTHETIC_CLASS, "object")
    if name not in SUBJECT_CLASSES:
        known = sorted(SUBJECT_CLASSES) + sorted(SYNTHETIC_SUBJECTS)
        raise ValueError(f"unknown DreamBooth subject {name!r}; one of {known}.")
    class_name = SUBJECT_CLASSES[name]
    return Subject(name, class_name, "live" if class_name in LIVE_CLASSES else "object")


def class_slug(class_name: str) -> str:
    """A class name as a path part (``"stuffed animal"`` -> ``"stuffed_animal"``)."""
    return "_".join(class_name.split())


def evaluation_prompts(item: Subject, count: int | None = None, identifier: str = "sks") -> list[tuple[str, str]]:
    """The first ``count`` (None: all 25) evaluation prompts of ``item``'s kind as ``(prompt, scored text)``:
    the prompt names the subject ``"<identifier> <class>"``, the scored text (CLIP-T) ``"<class>"``."""
    templates = LIVE_PROMPTS if item.kind == "live" else OBJECT_PROMPTS
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 25):
        raise ValueError(f"count must be an integer in [1, {len(templates)}] or None; got {count!r}.")
    subject_words = instance_prompt(item.class_name, identifier).removeprefix("a photo of ")
    chosen = templates[: count or len(templates)]
    return [(t.format(subject_words), t.format(item.class_name)) for t in chosen]


def fetch_subject_photos(
    name: str, out: str | os.PathLike, *, source: str = DATASET_REPO, revision: str | None = DATASET_REVISION
) -> list[Path]:
    """Copy the photos of subject ``name`` (``dataset/<name>/`` of the hub dataset ``source`` at
    ``revision``) into the folder ``out``; from the Hugging Face cache only when ``HF_HUB_OFFLINE`` is set
    (the rule ``fetch_model`` fetched them). Returns the copies, sorted by name."""
    from huggingface_hub import snapshot_download

    from ...data.download import DataUnavailableError, is_offline

    subject(name)  # a known subject
    try:
        root = snapshot_download(
            source,
            repo_type="dataset",
            revision=revision,
            allow_patterns=[f"dataset/{name}/*"],
            local_files_only=is_offline(),
        )
    except Exception as error:  # noqa: BLE001 - one clear error whatever the hub client raises
        raise DataUnavailableError(
            f"the photos of DreamBooth subject {name!r} (hub dataset {source}, dataset/{name}/) are not here: "
            f"{type(error).__name__}: {error}. Fetch them where there is network (snakemake downloads)."
        ) from error
    photos = list_images(Path(root, "dataset", name))
    if not photos:
        raise DataUnavailableError(f"hub dataset {source} has no images under dataset/{name}/.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(photo, out / photo.name)) for photo in photos]


def draw_subject(name: str, out: str | os.PathLike, *, count: int = 4, size: int = 24, seed: int = 0) -> list[Path]:
    """``count`` PNG photos ``size`` x ``size`` of the synthetic subject ``name``: its coloured shape (a
    third of the image wide) at a seeded position on a seeded light background, written to ``out``."""
    if name not in SYNTHETIC_SUBJECTS:
        raise ValueError(f"{name!r} is not a synthetic subject; one of {sorted(SYNTHETIC_SUBJECTS)}.")
    for key, value, low in (("count", count, 1), ("size", size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}; got {value!r}.")
    colour, shape = SYNTHETIC_SUBJECTS[name]
    rng = np.random.default_rng(seed)
    extent = max(2, math.ceil(size / 3))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        background = tuple(int(v) for v in rng.integers(150, 256, 3))
        image = Image.new("RGB", (size, size), background)
        left, top = (int(v) for v in rng.integers(0, size - extent + 1, 2))
        box = (left, top, left + extent - 1, top + extent - 1)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "disc" else draw.rectangle)(box, fill=colour)
        path = out / f"{i:02d}.png"
        image.save(path)
        paths.append(path)
    return paths


def prepare_photos(name: str, class_name: str, out: str | os.PathLike, *, dataset: dict, seed: int = 0) -> dict:
    """The photos of subject ``name`` into ``out``: drawn (a synthetic subject: ``dataset["photos"]`` photos
    of ``dataset["size"]`` pixels, from ``seed``) or copied from the data set (``dataset["source"]`` at
    ``dataset["revision"]``). ``class_name`` must be the subject's. Returns the subject's record: ``subject``,
    ``class``, ``kind`` and ``photos`` (file names)."""
    item = subject(name)
    if class_name != item.class_name:
        raise ValueError(f"subject {name!r} is a {item.class_name!r}, not a {class_name!r}.")
    if item.synthetic:
        paths = draw_subject(name, out, count=dataset.get("photos", 4), size=dataset.get("size", 24), seed=seed)
    else:
        source, revision = dataset.get("source", DATASET_REPO), dataset.get("revision", DATASET_REVISION)
        paths = fetch_subject_photos(name, out, source=source, revision=revision)
    return {"subject": name, "class": item.class_name, "kind": item.kind, "photos": [p.name for p in paths]}


def dreambooth_files(
    subjects: list[str] | None = None, dataset: dict | None = None, metric_models: dict | None = None
) -> list:
    """The hub files of the dreambooth target (``dkd.fetch``, ``what="dreambooth"``): each subject's photo
    folder of ``dataset`` (``{source, revision}``; default the DreamBooth data set at
    :data:`DATASET_REVISION`) and each of ``metric_models`` (``{name: {source, revision}}``, transformers
    repos: DINO, CLIP)."""
    from ...fetch import ModelFiles

    dataset = dataset or {}
    source, revision = dataset.get("source", DATASET_REPO), dataset.get("revision", DATASET_REVISION)
    files = []
    for name in subjects or []:
        if subject(name).synthetic:
            raise ValueError(f"{name!r} is a synthetic subject: drawn by the workflow, nothing to fetch.")
        files.append(ModelFiles("hub_dataset", source, subfolder=f"dataset/{name}", revision=revision))
    for model in (metric_models or {}).values():
        files.append(ModelFiles("transformers", model["source"], revision=model.get("revision")))
    return files
