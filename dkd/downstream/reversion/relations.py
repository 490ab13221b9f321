"""The data of relation inversion (:mod:`dkd.downstream.reversion.inversion`): a relation's exemplars, the prompt
templates it is generated with, and the learned token put into a sampler's text encoder.

* **Exemplars** are laid out as in ReVersion's benchmark (Huang et al., "ReVersion: Diffusion-Based
  Relation Inversion from Images", 2023; github.com/ziqihuangg/ReVersion): one folder per relation
  holding the exemplar images and ``text.json``, ``{image file name: [captions]}``, each caption with one
  ``{}`` where the relation goes (e.g. ``"cat {} box"``). :func:`read_exemplars` checks a folder,
  :func:`exemplar_pairs` turns it into the ``(image, caption)`` pairs :func:`~dkd.downstream.reversion.inversion.
  invert_relation` takes: every caption of every image is one pair, the image resized to a square
  (bicubic, no crop: ReVersion's default). ReVersion draws an image, then one of its captions; the pairs
  are drawn uniformly, which is the same when every image has as many captions.
  The benchmark is under a non-commercial licence (S-Lab) and is not shipped: :func:`read_exemplars`
  names what is missing and where it comes from (:class:`BenchmarkMissingError`).
* **Templates** have one relation slot, ``{R}`` (ours) or ``{}`` (ReVersion's benchmark scenarios):
  :func:`load_templates` reads a list, a ``.txt``/``.json``/``.yaml`` file or ReVersion's
  ``templates/benchmark_scenarios.py`` (parsed, never run); :data:`DEFAULT_TEMPLATES` are our own.
* :func:`draw_exemplars` draws a relation between two shapes, with captions: exemplars for tests and
  the tiny configuration, made in code.
* :func:`load_relation_into` adds a learned token to the text encoder of a sampler of
  :mod:`dkd.sampling` (the one-step student's ``OneStepPipeline``, the teacher's ``DiffusersSampler``).
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .inversion import PLACEHOLDER, relation_prompts

TEXT_FILE = "text.json"  # a relation folder's captions, {image file name: [captions with CAPTION_SLOT]}
CAPTION_SLOT = "{}"  # the relation's place in a benchmark caption or scenario (Python's format field)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
BENCHMARK_URL = "https://github.com/ziqihuangg/ReVersion"
# Our own templates: two entities and the relation between them (used when a config names none).
DEFAULT_TEMPLATES = (
    "cat {R} box",
    "dog {R} chair",
    "teddy bear {R} table",
    "apple {R} plate",
    "child {R} tree",
    "rabbit {R} basket",
    "book {R} shelf",
    "bird {R} branch",
    "robot {R} car",
    "flower {R} vase",
)
SCENARIOS_NAME = "inference_templates"  # the mapping assigned in ReVersion's templates/benchmark_scenarios.py


class BenchmarkMissingError(FileNotFoundError):
    """A relation's exemplar folder (or its ``text.json``) is not there."""


@dataclass(frozen=True)
class Exemplar:
    """One exemplar image and its captions (each with one ``{}``)."""

    image: Path
    captions: tuple[str, ...]


def _one_slot(text, slot: str) -> bool:
    return isinstance(text, str) and text.count(slot) == 1


def read_exemplars(folder: str | Path) -> tuple[Exemplar, ...]:
    """The exemplars of one relation folder, by file name: every image must have captions in
    ``text.json`` and every captioned file must be there; each caption has exactly one ``{}``."""
    folder = Path(folder)
    text = folder / TEXT_FILE
    if not text.is_file():
        where = "no such folder" if not folder.is_dir() else f"no {TEXT_FILE} in it"
        raise BenchmarkMissingError(
            f"relation exemplars {folder}: {where}. A relation folder holds its exemplar images and {TEXT_FILE} "
            "({image file name: [captions with '{}' for the relation]}), as in ReVersion's benchmark "
            f"({BENCHMARK_URL}; its licence is non-commercial, so it is not shipped here): download it and put "
            "each relation's folder there, or point downstream.reversion.benchmark (or relations.<name>.exemplars) "
            "at your own folders."
        )
    try:
        captions = json.loads(text.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{text}: not valid JSON ({error}).") from None
    if not isinstance(captions, dict) or not captions:
        raise ValueError(f"{text}: expected a non-empty mapping {{image file name: [captions]}}.")
    for name, texts in captions.items():
        if isinstance(texts, str) or not isinstance(texts, list) or not texts:
            raise ValueError(f"{text}: {name!r} needs a non-empty list of captions; got {texts!r}.")
        bad = [c for c in texts if not _one_slot(c, CAPTION_SLOT)]
        if bad:
            raise ValueError(f"{text}: every caption needs exactly one '{CAPTION_SLOT}'; {name!r} has {bad}.")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    names = {p.name for p in images}
    if set(captions) - names:
        raise ValueError(f"{text} captions files that are not images of {folder}: {sorted(set(captions) - names)}.")
    if names - set(captions):
        raise ValueError(f"{folder}: images without captions in {TEXT_FILE}: {sorted(names - set(captions))}.")
    return tuple(Exemplar(p, tuple(captions[p.name])) for p in images)


def exemplar_image(path: str | Path, resolution: int):
    """An image as a ``(3, resolution, resolution)`` float32 tensor in [-1, 1] (RGB, bicubic resize)."""
    import numpy as np
    import torch
    from PIL import Image

    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1; got {resolution!r}.")
    with Image.open(path) as image:
        image = image.convert("RGB").resize((resolution, resolution), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def exemplar_pairs(exemplars: Sequence[Exemplar], token: str, resolution: int) -> list[tuple]:
    """``(image, caption)`` for every caption of every exemplar, ``{}`` replaced by ``token`` (the input
    of ``invert_relation``); each image loaded once."""
    pairs = []
    for exemplar in exemplars:
        image = exemplar_image(exemplar.image, resolution)
        pairs += [(image, caption.replace(CAPTION_SLOT, token)) for caption in exemplar.captions]
    if not pairs:
        raise ValueError("no exemplars.")
    return pairs


def _template(text) -> str:
    """A template with its slot as ``{R}`` (one ``{R}`` or one ``{}``, not both)."""
    if _one_slot(text, PLACEHOLDER) and CAPTION_SLOT not in text:
        return text
    if _one_slot(text, CAPTION_SLOT) and PLACEHOLDER not in text:
        return text.replace(CAPTION_SLOT, PLACEHOLDER)
    raise ValueError(f"a template needs exactly one '{PLACEHOLDER}' or one '{CAPTION_SLOT}'; got {text!r}.")


def _read_template_file(path: Path):
    if path.suffix == ".py":  # ReVersion's scenarios: read the literal, run nothing
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == SCENARIOS_NAME for t in node.targets):
                try:
                    return ast.literal_eval(node.value)
                except ValueError:
                    raise ValueError(f"{path}: {SCENARIOS_NAME} is not a plain literal.") from None
        raise ValueError(f"{path}: no `{SCENARIOS_NAME} = {{relation: [templates]}}` (ReVersion's scenarios file).")
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if path.suffix in (".yaml", ".yml"):
        from ...io import read_yaml

        return read_yaml(path)
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise ValueError(f"{path}: templates come from a .py (ReVersion's scenarios), .json, .yaml or .txt file.")


def load_templates(source, relation: str) -> tuple[str, ...]:
    """The prompt templates of ``relation``, each with one ``{R}``: ``source`` None (our
    :data:`DEFAULT_TEMPLATES`), a list (for every relation), or a file holding a list or a mapping
    ``{relation: [templates]}``: ``.txt`` (one per line), ``.json``, ``.yaml``, or ReVersion's
    ``benchmark_scenarios.py`` (its ``inference_templates``). ``{}`` slots become ``{R}``."""
    if source is None:
        templates = DEFAULT_TEMPLATES
    elif isinstance(source, list | tuple):
        templates = source
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"templates file {path} does not exist (ReVersion's benchmark scenarios are its repository's "
                f"templates/benchmark_scenarios.py, {BENCHMARK_URL}; not shipped here, as its licence is "
                "non-commercial); or give a list of templates with '{R}'."
            )
        table = _read_template_file(path)
        if isinstance(table, dict):
            if relation not in table:
                raise ValueError(f"{path} has no templates for relation {relation!r}; it has {sorted(table)}.")
            templates = table[relation]
        else:
            templates = table
    else:
        raise ValueError(f"templates must be None, a list or a file; got {source!r}.")
    if isinstance(templates, str) or not isinstance(templates, list | tuple) or not templates:
        raise ValueError(f"templates of {relation!r} must be a non-empty list; got {templates!r}.")
    return tuple(_template(t) for t in templates)


def image_prompts(templates: Sequence[str], token: str, *, samples: int = 1, count: int | None = None) -> list[str]:
    """The prompt of every image: ``count`` prompts (None: one per template; see
    :func:`~dkd.downstream.reversion.inversion.relation_prompts`), each repeated ``samples`` times in a row
    (image ``k`` shows prompt ``k // samples``)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1; got {samples!r}.")
    return [p for p in relation_prompts(templates, token, per_relation=count) for _ in range(samples)]


# ----------------------------------------------------------------------------------------- drawn exemplars

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60), "yellow": (235, 200, 30),
           "purple": (140, 50, 190), "orange": (245, 130, 20)}  # fmt: skip
DRAWN_RELATIONS = ("on", "inside", "hanging_from")  # what draw_exemplars can draw


def _layout(relation: str, size: int, rng: random.Random):
    """Boxes ``(x0, y0, x1, y1)`` (corners included, as PIL draws them) of the small thing and the large
    one, and an optional line."""
    big_w, big_h = rng.randint(size // 2, 3 * size // 4), rng.randint(size // 4, size // 3)
    x0 = rng.randint(2, size - big_w - 2)
    if relation == "on":  # the small square rests on the top of the box
        y0 = rng.randint(size // 2, size - big_h - 2)
        side = rng.randint(size // 6, size // 4)
        sx = rng.randint(x0, x0 + big_w - side)
        return (sx, y0 - side, sx + side - 1, y0 - 1), (x0, y0, x0 + big_w, y0 + big_h), None
    if relation == "inside":  # the small square within a tall open box
        big_h = rng.randint(size // 2, 3 * size // 4)
        y0 = rng.randint(2, size - big_h - 2)
        side = rng.randint(size // 8, min(big_w, big_h) // 2)
        sx, sy = x0 + (big_w - side) // 2, y0 + (big_h - side) // 2
        return (sx, sy, sx + side, sy + side), (x0, y0, x0 + big_w, y0 + big_h), None
    if relation == "hanging_from":  # a bar at the top, the square below it on a string
        y0, side = rng.randint(2, size // 6), rng.randint(size // 6, size // 4)
        bar = (x0, y0, x0 + big_w, y0 + max(size // 16, 2))
        sx, sy = rng.randint(x0, x0 + big_w - side), rng.randint(size // 2, size - side - 2)
        return (sx, sy, sx + side, sy + side), bar, ((sx + side // 2, bar[3]), (sx + side // 2, sy))
    raise ValueError(f"draw_exemplars draws the relations {DRAWN_RELATIONS}; got {relation!r}.")


def draw_exemplars(folder: str | Path, relation: str, *, count: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write ``count`` exemplar images of ``relation`` (one of :data:`DRAWN_RELATIONS`) between a small
    square and a box (or bar), random colours and places, and their ``text.json`` (two captions each,
    e.g. ``"red square {} blue box"``) into ``folder``; return the text file. Same seed, same files."""
    from PIL import Image, ImageDraw

    if isinstance(count, bool) or not isinstance(count, int) or count < 1 or not isinstance(size, int) or size < 16:
        raise ValueError(f"need count >= 1 and size >= 16 pixels; got {count!r}, {size!r}.")
    if relation not in DRAWN_RELATIONS:
        raise ValueError(f"draw_exemplars draws the relations {DRAWN_RELATIONS}; got {relation!r}.")
    folder, rng = Path(folder), random.Random(f"{relation}/{seed}")
    folder.mkdir(parents=True, exist_ok=True)
    large = "bar" if relation == "hanging_from" else "box"
    captions = {}
    for i in range(count):
        small_colour, large_colour = rng.sample(sorted(COLOURS), 2)
        small, big, line = _layout(relation, size, rng)
        image = Image.new("RGB", (size, size), (245, 245, 240))
        draw = ImageDraw.Draw(image)
        outline = relation == "inside"  # an open box: its outline, so the square shows
        draw.rectangle(big, outline=COLOURS[large_colour] if outline else None,
                       fill=None if outline else COLOURS[large_colour], width=max(size // 32, 1))  # fmt: skip
        if line:
            draw.line(line, fill=(30, 30, 30), width=max(size // 64, 1))
        draw.rectangle(small, fill=COLOURS[small_colour])
        name = f"{i}.png"
        image.save(folder / name)
        article = "an" if large_colour[0] in "aeiou" else "a"
        captions[name] = [
            f"{small_colour} square {CAPTION_SLOT} {large_colour} {large}",
            f"{'an' if small_colour[0] in 'aeiou' else 'a'} {small_colour} square {CAPTION_SLOT} {article} "
            f"{large_colour} {large}",
        ]
    text = folder / TEXT_FILE
    text.write_text(json.dumps(captions, indent=2) + "\n", encoding="utf-8")
    return text


# ----------------------------------------------------------------------------------------- samplers


def sampler_text_parts(sampler) -> tuple:
    """``(tokenizer, text_encoder)`` of a sampler: a diffusers pipeline's (``sampler.pipe``, e.g.
    ``DiffusersSampler``) or a ``Teacher``'s (``sampler.teacher``, e.g. ``OneStepPipeline``)."""
    owner = getattr(sampler, "pipe", None) or getattr(sampler, "teacher", None)
    tokenizer, encoder = getattr(owner, "tokenizer", None), getattr(owner, "text_encoder", None)
    if tokenizer is None or encoder is None:
        raise ValueError(f"{type(sampler).__name__} has no tokenizer and text encoder (in .pipe or .teacher).")
    return tokenizer, encoder


def embedding_token(path: str | Path) -> str:
    """The token a relation-embedding file (``save_relation_embedding``'s) is for, as written (the CLIP
    tokenizer lower-cases the added token it reports back)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        token = (handle.metadata() or {}).get("token")
    if not token:
        raise ValueError(f"{path}: no token in its metadata; not a relation-embedding file.")
    return token


def load_relation_into(sampler, path: str | Path) -> int:
    """Add the learned token of ``path`` (``save_relation_embedding``'s file) to the sampler's tokenizer
    and text encoder, its row set to the saved vector; return the token id."""
    from .inversion import load_relation_embedding

    return load_relation_embedding(path, *sampler_text_parts(sampler))


def word_cosine(tokenizer, text_encoder, vector, word: str) -> float:
    """Cosine between ``vector`` and the input-embedding row of ``word`` (one token)."""
    import torch.nn.functional as F

    from .inversion import preposition_ids

    (word_id,) = preposition_ids(tokenizer, [word])
    row = text_encoder.get_input_embeddings().weight.detach()[word_id].float()
    return float(F.cosine_similarity(row, vector.detach().float().to(row.device), dim=0))


def teacher_resolution(teacher) -> int:
    """The image size an SD teacher is made for: its U-Net's sample size times the VAE's downsampling."""
    if teacher.vae is None:
        raise ValueError("the teacher was loaded without its VAE.")
    return teacher.latent_shape[-1] * 2 ** (len(teacher.vae.config.block_out_channels) - 1)
