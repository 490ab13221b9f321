"""Prompt sets from Hugging Face Hub datasets: the HPSv2 benchmark and JourneyDB training prompts.

Sources, for each file (searched in this order):

1. ``local`` (``--local DIR``): ``DIR/<file name>`` or ``DIR/<path in the repository>``;
2. ``<out>/downloads/<dataset>/`` the same way (where the offline message says to put it);
3. the Hub: ``huggingface_hub.hf_hub_download(repo_type="dataset")`` into the Hugging Face
   cache, which resumes, checks the hub's ETag/SHA-256 and renames atomically. Offline
   (``HF_HUB_OFFLINE``, see :func:`dkd.data.download.is_offline`) only the cache is looked at
   (``local_files_only=True``). Every file not found raises ONE
   :class:`~dkd.data.download.DataUnavailableError` listing URL, file name, directory and flag.

HPSv2 (``docs/reference.md`` section 4): ``zhwang/HPDv2``, ``benchmark/<style>.json``, a JSON
list of prompts (800 per style) -> ``<out>/hpsv2/<style>.txt``, prompt i on line i (its image
is ``<style>/<i:05d>.jpg``). Whitespace runs become one space; an empty prompt is an error,
since dropping it would shift every later index.

JourneyDB (section 5): the gated ``JourneyDB/JourneyDB`` (accept its terms on the Hub; the
token comes from ``HF_TOKEN`` or ``huggingface-cli login``),
``data/train/train_anno_realease_repath.jsonl.tgz``: a tar.gz with one JSON Lines file, a
``"prompt"`` per line. Each prompt is whitespace-normalised as above and kept verbatim
otherwise (Midjourney flags such as ``--ar 16:9`` are not removed). Blank lines and
empty/``null`` prompts are skipped and counted; exact duplicates (after normalisation) are
skipped and counted, the first occurrence kept (``dedupe=False`` keeps them). ``count`` prompts
are then sampled with ``seed`` (:func:`sample_prompts`; the paper trains on 1.4M) or, with
``count=None``, all are kept in file order. Output: ``<out>/journeydb/prompts.txt`` and
``info.json`` with the counts, which are also printed.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from ..io import atomic_write_text
from ..vocabulary import HPSV2_STYLES  # the workflow's data:hpsv2/<style> too
from .download import DataUnavailableError, is_offline, placement_message
from .prompts import write_prompts

HPSV2_REPO = "zhwang/HPDv2"
HPSV2_PROMPTS_PER_STYLE = 800
JOURNEYDB_REPO = "JourneyDB/JourneyDB"
JOURNEYDB_FILE = "data/train/train_anno_realease_repath.jsonl.tgz"
JOURNEYDB_COUNT = 1_400_000  # the paper's training prompts (section 4.1)
_GATED = (
    f"JourneyDB is gated: accept its terms at https://huggingface.co/datasets/{JOURNEYDB_REPO} "
    "and export HF_TOKEN=<a read token of that account>"
)


def hub_url(repo_id: str, filename: str, repo_type: str = "dataset") -> str:
    kind = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{kind}{repo_id}/resolve/main/{filename}"


HUB_SCHEME = "hf://"  # hf://<owner>/<repo>/<path>: a file of a hub model repo


def hub_file(spec: str, *, local: str | os.PathLike | None, downloads: str | os.PathLike, hint: str) -> Path:
    """The local path of ``hf://<owner>/<repo>/<path in the repo>`` (a model repo, e.g. DMD2's
    ``hf://tianweiy/DMD2/data/coco/captions_coco14_test.pkl``), searched as :func:`hub_files` does."""
    parts = spec.removeprefix(HUB_SCHEME).split("/", 2)
    if not spec.startswith(HUB_SCHEME) or len(parts) != 3 or not all(parts):
        raise ValueError(f"{spec!r}: a hub file is hf://<owner>/<repo>/<path in the repo>")
    repo_id, filename = "/".join(parts[:2]), parts[2]
    return hub_files(repo_id, [filename], local=local, downloads=downloads, hint=hint, repo_type="model")[filename]


def _hub_error_types() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError

    types: tuple[type[BaseException], ...] = (EntryNotFoundError, OSError)
    for module in ("httpx2", "httpx"):  # the HTTP client of huggingface_hub (2.x: httpx2)
        try:
            types += (__import__(module).HTTPError,)
        except (ImportError, AttributeError):
            pass
    return types


def hub_files(
    repo_id: str,
    filenames: Sequence[str],
    *,
    local: str | os.PathLike | None,
    downloads: str | os.PathLike,
    hint: str,
    token: str | None = None,
    repo_type: str = "dataset",
) -> dict[str, Path]:
    """``{filename: path}`` of files of the hub dataset (or ``repo_type``) ``repo_id`` (see the module
    doc for the search).

    Raises one :class:`DataUnavailableError` for every file found nowhere.
    """
    import huggingface_hub

    if local is not None and not Path(local).is_dir():
        raise FileNotFoundError(f"--local directory {local} does not exist")
    candidates = [Path(d) for d in (local, downloads) if d is not None]
    found, failed = {}, []
    for filename in filenames:
        base = PurePosixPath(filename).name
        here = [d / name for d in candidates for name in (base, filename)]
        path = next((p for p in here if p.is_file()), None)
        if path is None:
            try:
                path = Path(
                    huggingface_hub.hf_hub_download(
                        repo_id, filename, repo_type=repo_type, token=token, local_files_only=is_offline()
                    )
                )
            except _hub_error_types() as error:
                failed.append((filename, error))
                continue
        found[filename] = path
    if failed:
        reasons = "; ".join(
            f"{name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            for name, error in failed
        )
        reason = f"offline: HF_HUB_OFFLINE is set; {reasons}" if is_offline() else reasons
        listed = [(hub_url(repo_id, name, repo_type), PurePosixPath(name).name, Path(downloads)) for name, _ in failed]
        raise DataUnavailableError(placement_message(listed, reason=reason, hint=hint))
    return found


def normalize_prompt(text: str) -> str:
    """Collapse every whitespace run (line breaks too) to one space and strip the ends."""
    return " ".join(text.split())


def read_hpsv2_style(path: str | os.PathLike) -> list[str]:
    """The normalised prompts of one ``benchmark/<style>.json`` (a JSON list of strings), in order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the HPSv2 prompt list ({error})") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of prompts, got {type(data).__name__}")
    prompts = []
    for i, entry in enumerate(data):
        text = normalize_prompt(entry) if isinstance(entry, str) else ""
        if not text:
            raise ValueError(f"{path}: entry {i} is {entry!r}, not a non-empty prompt (prompt i must be image i)")
        prompts.append(text)
    return prompts


def prepare_hpsv2(
    *,
    out: str | os.PathLike,
    local: str | os.PathLike | None = None,
    styles: Sequence[str] = HPSV2_STYLES,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``<out>/hpsv2/<style>.txt`` for each style; return ``{style: path}``.

    Prints one summary line per style to stderr (``progress`` is accepted for a uniform
    signature; the hub shows its own bars).
    """
    styles = tuple(styles)
    unknown = [s for s in styles if s not in HPSV2_STYLES]
    if unknown or not styles:
        raise ValueError(f"styles must be a non-empty subset of {HPSV2_STYLES}, got {list(styles)}")
    out = Path(out)
    downloads = out / "downloads" / "hpsv2"
    names = [f"benchmark/{style}.json" for style in styles]
    hint = "or pass --local DIR with a directory holding them (DIR/anime.json or DIR/benchmark/anime.json)"
    sources = hub_files(HPSV2_REPO, names, local=local, downloads=downloads, hint=hint)
    written = {}
    for style, name in zip(styles, names):
        prompts = read_hpsv2_style(sources[name])
        if len(prompts) != HPSV2_PROMPTS_PER_STYLE:
            print(
                f"note: {sources[name]} has {len(prompts)} prompts, the benchmark has {HPSV2_PROMPTS_PER_STYLE}",
                file=sys.stderr,
            )
        written[style] = write_prompts(out / "hpsv2" / f"{style}.txt", prompts)
        print(f"hpsv2 {style}: {len(prompts)} prompts -> {written[style]}", file=sys.stderr)
    return written


def jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, bytes)`` of a ``.jsonl``, ``.jsonl.gz`` or of the first ``*.jsonl``
    member of a ``.tgz`` / ``.tar.gz``, streamed."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".tgz", ".tar.gz")):
            with tarfile.open(path, mode="r|gz") as archive:
                for member in archive:
                    if member.isfile() and member.name.lower().endswith(".jsonl"):
                        yield from enumerate(archive.extractfile(member), start=1)
                        return
            raise ValueError(f"{path}: the archive holds no .jsonl file")
        with (gzip.open if name.endswith(".gz") else open)(path, "rb") as handle:
            yield from enumerate(handle, start=1)
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error, OSError) as error:
        raise ValueError(f"{path}: cannot read ({type(error).__name__}: {error})") from None


def journeydb_prompts(
    lines: Iterable[tuple[int, bytes]], *, source: str, dedupe: bool = True
) -> tuple[list[str], dict]:
    """``(prompts in file order, counts)`` from JSON Lines ``(line number, bytes)``.

    Counts: ``lines``, ``empty`` (blank lines, empty or ``null`` prompts), ``duplicates``,
    ``kept``. A line that is not a JSON object with a ``"prompt"`` string (or ``null``) raises
    ``ValueError`` naming ``source`` and the line.
    """
    prompts: list[str] = []
    seen: set[str] = set()
    counts = {"lines": 0, "empty": 0, "duplicates": 0}
    for lineno, raw in lines:
        counts["lines"] += 1
        text = raw.strip()
        record = None
        if text:
            try:
                record = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{source}, line {lineno}: invalid JSON ({error})") from None
            if not isinstance(record, dict) or "prompt" not in record:
                raise ValueError(f'{source}, line {lineno}: expected a JSON object with a "prompt" field')
            if record["prompt"] is not None and not isinstance(record["prompt"], str):
                kind = type(record["prompt"]).__name__
                raise ValueError(f'{source}, line {lineno}: "prompt" is {kind}, not a string')
        prompt = normalize_prompt(record["prompt"] or "") if record else ""
        if not prompt:
            counts["empty"] += 1
        elif dedupe and prompt in seen:
            counts["duplicates"] += 1
        else:
            seen.add(prompt)
            prompts.append(prompt)
    counts["kept"] = len(prompts)
    return prompts, counts


def sample_prompts(prompts: Sequence[str], *, count: int, seed: int) -> list[str]:
    """``count`` of ``prompts`` without replacement: the first ``count`` positions of the
    ``argsort`` of ``PCG64(SeedSequence([seed, 0]))`` raw draws (a smaller count is a prefix)."""
    for key, value in (("count", count), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    if not 1 <= count <= len(prompts):
        raise ValueError(f"count must be between 1 and the {len(prompts)} prompts available, got {count}")
    keys = np.random.PCG64(np.random.SeedSequence([int(seed), 0])).random_raw(len(prompts))
    return [prompts[i] for i in np.argsort(np.asarray(keys, dtype=np.uint64), kind="stable")[:count].tolist()]


def prepare_journeydb(
    *,
    out: str | os.PathLike,
    local: str | os.PathLike | None = None,
    count: int | None = JOURNEYDB_COUNT,
    seed: int = 0,
    dedupe: bool = True,
    token: str | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``<out>/journeydb/prompts.txt`` and ``info.json`` (see the module doc); return their paths.

    ``token`` defaults to huggingface_hub's (``HF_TOKEN``). A local ``train_anno_realease_repath.jsonl``
    (already extracted) is accepted too. ``count`` larger than the prompts kept is an error
    naming how many there are.
    """
    out = Path(out)
    downloads = out / "downloads" / "journeydb"
    plain = PurePosixPath(JOURNEYDB_FILE).name.removesuffix(".tgz")
    if local is not None and not Path(local).is_dir():
        raise FileNotFoundError(f"--local directory {local} does not exist")
    extracted = [Path(d) / plain for d in (local, downloads) if d is not None]
    source = next((p for p in extracted if p.is_file()), None)
    if source is None:
        hint = f"or pass --local DIR with a directory holding it (or the extracted {plain}). {_GATED}"
        source = hub_files(JOURNEYDB_REPO, [JOURNEYDB_FILE], local=local, downloads=downloads, hint=hint, token=token)[
            JOURNEYDB_FILE
        ]
    lines = tqdm(jsonl_lines(source), desc=f"read {source.name}", unit=" lines", disable=not progress, leave=False)
    prompts, counts = journeydb_prompts(lines, source=str(source), dedupe=dedupe)
    if not prompts:
        raise ValueError(f"{source}: no prompts ({counts['empty']} empty line(s))")
    if count is not None and count > len(prompts):
        raise ValueError(
            f"{source}: {len(prompts)} prompts kept ({counts['duplicates']} duplicates, "
            f"{counts['empty']} empty skipped), fewer than --count {count}; pass a smaller --count"
        )
    chosen = prompts if count is None else sample_prompts(prompts, count=count, seed=seed)
    dest = out / "journeydb"
    written = {"prompts": write_prompts(dest / "prompts.txt", chosen)}
    info = {
        "source": str(source.resolve()),
        **counts,
        "dedupe": dedupe,
        "count": len(chosen),
        "seed": None if count is None else seed,
    }
    written["info"] = atomic_write_text(dest / "info.json", json.dumps(info, indent=2) + "\n")
    print(
        f"journeydb: {counts['lines']} lines, {counts['empty']} empty, {counts['duplicates']} duplicate(s) "
        f"skipped, {counts['kept']} kept, {len(chosen)} written -> {written['prompts']}",
        file=sys.stderr,
    )
    return written
