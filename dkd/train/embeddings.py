"""A disk cache of prompt embeddings for long runs (``DistillConfig.embedding_cache``).

The loop encodes every micro-batch's prompts with the frozen text encoder, once per epoch.
With a cache folder, each prompt's encoder states are computed once and read back afterwards.

Layout. ``<folder>/<encoder key>/`` holds ``encoder.json`` (what the key stands for) and one
safetensors shard per block of ``block_size`` consecutive prompts of the run's prompt list,
``<block:07d>-<hash of the block's texts>.safetensors`` (tensors ``hidden_states`` and, for
T5, ``attention_mask``; metadata: format, encoder key, texts hash, a BLAKE2b digest per row).

Why these choices:

* Blocks of the prompt list, not one file per prompt: 1.4M files would exhaust a cluster's
  inode quota; 1.4M / 256 = 5.5k shards of 30 MB (bf16 CLIP) are ordinary files. A block is
  encoded as a whole the first time one of its prompts is asked for (the first epoch pays at
  most one extra encoding pass, front-loaded; ``fill`` precomputes everything instead).
* Keys from content, not from positions only: a shard's name carries the hash of its texts, so
  another prompt list (or an edited one) never reads a stale shard; the folder carries the
  encoder key (SHA-256 of the text encoder's parameter bytes, its class and config, the
  tokenizer's vocabulary, ``max_length``, the dtype and the device model), so embeddings of
  another encoder, precision or kind of device are never used.
* Not a memory-mapped array: rows written in place by several processes are neither atomic
  nor coherent on network file systems, and numpy has no bfloat16. Each shard here is written
  to a temporary file and renamed (``dkd.io.atomic_open``), so DDP ranks may fill the same
  folder at once (the last identical rename wins; a reader holds either complete file).
* Each row's digest is checked when read: a truncated or damaged shard is detected, encoded
  again and rewritten (with a warning).

Bit-identity. A shard stores exactly the tensors ``teacher.encode`` returned (no dtype change).
Read back, a prompt's row equals a direct encoding wherever the encoder's output for a prompt
does not depend on the other prompts of its batch: true of CLIP and T5 on the CPU (tested);
on a GPU, kernels chosen per batch size may differ in the last bit, as with
``channels_last`` (hence ``embedding_cache`` is one of ``models.RESULT_NEUTRAL``).

Size. A full cache is prompts x tokens x width x bytes: 1.4M x 77 x 768 x 2 (bf16) ~ 165 GB for
SD (CLIP-L; 1024 wide for SD2.1's OpenCLIP-H: ~220 GB); 1.4M x 120 x 4096 x 2 ~ 1.4 TB for
PixArt-alpha (T5-XXL), which is only sensible on a very large scratch space. The saving is the
text encoder's forward pass per prompt and epoch, small next to the three denoisers' work for
CLIP: enable the cache where disk is cheap and the encoder is not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from ..backbones import PromptEmbeds, Teacher
from ..io import atomic_open, atomic_write_text

FORMAT = "dkd-prompt-embeddings-1"
ENCODER_INFO = "encoder.json"
log = logging.getLogger(__name__)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor`` (any dtype, bfloat16 included), on the CPU."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def encoder_info(teacher: Teacher) -> dict:
    """What makes two text encoders give the same embeddings: the parameter bytes (SHA-256, in
    name order), class and config, the tokenizer's vocabulary, ``max_length``, the dtype and the
    device model (``torch.cuda.get_device_name`` or "cpu"). Hashing reads every parameter once
    (CLIP-L: 0.5 GB, about a second; T5-XXL: 9.5 GB)."""
    encoder, tokenizer = teacher.text_encoder, teacher.tokenizer
    if encoder is None or tokenizer is None:
        raise RuntimeError(f"{teacher.spec.name} was loaded without its text encoder: nothing to cache.")
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(_tensor_bytes(tensor))
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    parameter = next(encoder.parameters())
    device = torch.cuda.get_device_name(parameter.device) if parameter.device.type == "cuda" else parameter.device.type
    config = {k: v for k, v in encoder.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    return {
        "format": FORMAT,
        "family": teacher.family,
        "max_length": teacher.spec.text_max_length,
        "encoder_class": type(encoder).__name__,
        "encoder_config": config,
        "parameters_sha256": digest.hexdigest(),
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_sha256": hashlib.sha256(vocab.encode()).hexdigest(),
        "dtype": str(parameter.dtype),
        "device": device,
    }


def encoder_key(info: dict) -> str:
    """The cache subfolder of an encoder: 16 hex digits of the SHA-256 of ``encoder_info``."""
    return hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:16]


def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 (16 hex digits) of a block's prompts, in order."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()[:16]


def _row_digests(hidden: torch.Tensor, mask: torch.Tensor | None) -> list[str]:
    digests = []
    for row in range(hidden.shape[0]):
        h = hashlib.blake2b(_tensor_bytes(hidden[row]), digest_size=16)
        if mask is not None:
            h.update(_tensor_bytes(mask[row]))
        digests.append(h.hexdigest())
    return digests


class CorruptShardError(ValueError):
    """A shard that cannot be read, or whose content does not match its metadata."""


class EmbeddingCache:
    """``encode(prompts)`` like ``Teacher.encode``, through a disk cache of ``prompts``' embeddings.

    ``folder``: the cache root (shared by runs and processes; each encoder gets its own
    subfolder). ``prompts``: the run's prompt list (block ``b`` holds prompts
    ``b * block_size`` to ``(b + 1) * block_size - 1``). ``encode_batch``: prompts per text-encoder
    call when a block is encoded. Counters: ``blocks_read`` and ``blocks_written``.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        teacher: Teacher,
        prompts: Sequence[str],
        *,
        block_size: int = 256,
        encode_batch: int = 64,
    ):
        for name, value in (("block_size", block_size), ("encode_batch", encode_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"embedding cache: {name} must be a positive integer; got {value!r}.")
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("embedding cache: prompts must be a list of strings.")
        self.teacher, self.prompts = teacher, list(prompts)
        self.block_size, self.encode_batch = block_size, encode_batch
        self.info = encoder_info(teacher)
        self.key = encoder_key(self.info)
        self.folder = Path(folder) / self.key
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"embedding cache: {self.folder} exists and is not a folder.")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / ENCODER_INFO).is_file():
            atomic_write_text(self.folder / ENCODER_INFO, json.dumps(self.info, indent=2, default=str))
        self._index: dict[str, int] = {}
        for i, prompt in enumerate(self.prompts):
            self._index.setdefault(prompt, i)
        self._names: dict[int, str] = {}
        self.blocks_read = self.blocks_written = 0
        log.info(
            "embedding cache %s: %d prompts in %d blocks of %d",
            self.folder,
            len(self.prompts),
            self.num_blocks,
            block_size,
        )

    @property
    def num_blocks(self) -> int:
        return -(-len(self.prompts) // self.block_size)

    def _texts(self, block: int) -> list[str]:
        return self.prompts[block * self.block_size : (block + 1) * self.block_size]

    def shard_path(self, block: int) -> Path:
        """Where block ``block`` is stored (whether or not it has been written)."""
        if block not in self._names:
            self._names[block] = f"{block:07d}-{texts_hash(self._texts(block))}.safetensors"
        return self.folder / self._names[block]

    # -- one block -------------------------------------------------------------------------
    def _write_block(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode block ``block`` (``encode_batch`` prompts per call) and write its shard atomically."""
        texts = self._texts(block)
        parts = [self.teacher.encode(texts[k : k + self.encode_batch]) for k in range(0, len(texts), self.encode_batch)]
        hidden = torch.cat([p.hidden_states for p in parts]).cpu().contiguous()
        mask = (
            None if parts[0].attention_mask is None else torch.cat([p.attention_mask for p in parts]).cpu().contiguous()
        )
        tensors = {"hidden_states": hidden, **({"attention_mask": mask} if mask is not None else {})}
        metadata = {
            "format": FORMAT,
            "encoder": self.key,
            "texts": texts_hash(texts),
            "rows": json.dumps(_row_digests(hidden, mask)),
        }
        with atomic_open(self.shard_path(block), "wb") as handle:
            handle.write(safetensors_bytes(tensors, metadata=metadata))
        self.blocks_written += 1
        return hidden, mask

    def _read_rows(self, block: int, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows ``rows`` of a written shard, each checked against its digest; ``CorruptShardError``
        (or ``FileNotFoundError``) otherwise."""
        path = self.shard_path(block)
        expected = texts_hash(self._texts(block))
        try:
            with safe_open(str(path), framework="pt") as shard:
                meta = shard.metadata() or {}
                if (meta.get("format"), meta.get("encoder"), meta.get("texts")) != (FORMAT, self.key, expected):
                    raise CorruptShardError(f"{path}: metadata of another format, encoder or prompt block.")
                digests = json.loads(meta["rows"])
                names = set(shard.keys())
                hidden_slice = shard.get_slice("hidden_states")
                mask_slice = shard.get_slice("attention_mask") if "attention_mask" in names else None
                if len(digests) != len(self._texts(block)) or hidden_slice.get_shape()[0] != len(digests):
                    raise CorruptShardError(f"{path}: {len(digests)} rows for {len(self._texts(block))} prompts.")
                hidden = torch.cat([hidden_slice[r : r + 1] for r in rows])
                mask = None if mask_slice is None else torch.cat([mask_slice[r : r + 1] for r in rows])
        except (FileNotFoundError, CorruptShardError):
            raise
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
            raise CorruptShardError(f"{path}: unreadable ({type(err).__name__}: {err}).") from None
        if _row_digests(hidden, mask) != [digests[r] for r in rows]:
            raise CorruptShardError(f"{path}: a row does not match its digest (damaged file).")
        self.blocks_read += 1
        return hidden, mask

    def _rows(self, block: int, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of block ``block``, from its shard, or encoded (and written) if missing or damaged."""
        try:
            return self._read_rows(block, rows)
        except FileNotFoundError:
            pass
        except CorruptShardError as err:
            warnings.warn(f"embedding cache: {err} Encoding the block again.", RuntimeWarning, stacklevel=3)
        hidden, mask = self._write_block(block)
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return hidden[index], None if mask is None else mask[index]

    # -- the public calls ------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """The embeddings of ``prompts`` (each one of the cache's prompt list), on the text
        encoder's device; a request with a prompt outside the list is encoded directly, uncached."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings.")
        indices = [self._index.get(p) for p in prompts]
        if not prompts or any(i is None for i in indices):
            return self.teacher.encode(list(prompts))
        wanted: dict[int, list[int]] = {}
        for i in indices:
            wanted.setdefault(i // self.block_size, []).append(i % self.block_size)
        found: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for block, rows in wanted.items():
            rows = sorted(set(rows))
            hidden, mask = self._rows(block, rows)
            for k, row in enumerate(rows):
                found[block * self.block_size + row] = (hidden[k], None if mask is None else mask[k])
        device = next(self.teacher.text_encoder.parameters()).device
        hidden = torch.stack([found[i][0] for i in indices]).to(device)
        masks = [found[i][1] for i in indices]
        return PromptEmbeds(hidden, None if masks[0] is None else torch.stack(masks).to(device))

    def fill(self, *, rank: int = 0, world: int = 1, progress: bool = True) -> int:
        """Encode every missing or damaged block of this process's share (blocks ``rank``,
        ``rank + world``, ...), so that training only reads; returns the number written."""
        from tqdm.auto import tqdm

        if not 0 <= rank < world:
            raise ValueError(f"embedding cache: need 0 <= rank < world; got rank={rank}, world={world}.")
        written = self.blocks_written
        for block in tqdm(range(rank, self.num_blocks, world), desc="embedding cache", disable=not progress):
            self._rows(block, range(len(self._texts(block))))
        return self.blocks_written - written
