"""Reading the tensors of pickled network snapshots without running any code from the file.

SiD-LSG (like EDM and SiD) saves its one-step generators as plain pickles of whole ``torch.nn.Module``
objects, e.g. ``network-snapshot-*.pkl`` = ``{"ema": <diffusers UNet2DConditionModel>}``. Loading them with
``pickle.load`` imports and runs the pickled classes (EDM's ``torch_utils.persistence`` even ``exec``\\ s
source code stored in the file). :func:`read_pickle_tensors` instead unpickles with :class:`SafeUnpickler`:
only torch's tensor rebuild functions (the allow-list of ``torch.load(weights_only=True)``) are real; the
classes of ``torch.nn``, ``diffusers``, ``transformers``, ``torch_utils``, ``training`` and ``dnnlib``
become inert :class:`Stub` records of their pickled state; every other global is refused.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import os
import pickle
import zipfile
from collections.abc import Iterable
from typing import Any

import torch

STUB_MODULES = ("torch.nn", "diffusers", "transformers", "torch_utils", "training", "dnnlib")
PERSISTENT_OBJ = "torch_utils.persistence._reconstruct_persistent_obj"
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a torch.save file in the legacy format


class Stub:
    """Inert stand-in for an object of a class that is never imported: it only records what pickle gives it."""

    stub_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.list_items = args, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Do nothing: the arguments were recorded by ``__new__``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.list_items.extend(values)

    def __repr__(self) -> str:
        return f"<Stub {self.stub_class}>"


def _stub_class(qualname: str) -> type[Stub]:
    return type(qualname.rsplit(".", 1)[-1], (Stub,), {"stub_class": qualname, "__module__": __name__})


def _persistent_record(meta: Any) -> Stub:
    """Stand-in for EDM's ``_reconstruct_persistent_obj``: keeps ``class_name`` and ``state``, never ``module_src``."""
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(f"{PERSISTENT_OBJ} expects a meta dict, got {type(meta).__name__}")
    record = Stub.__new__(Stub)
    record.stub_class, record.state = f"persistent {meta.get('class_name')}", meta.get("state")
    return record


def _stub_only(name: str):
    """Stand-in for a ``copyreg`` reconstructor: makes an inert object, and only of a :class:`Stub` class."""

    def reconstruct(cls: Any, *args: Any) -> Stub:
        if not (isinstance(cls, type) and issubclass(cls, Stub)):
            raise pickle.UnpicklingError(f"refused copyreg.{name} of {cls!r}: only stubbed classes are rebuilt")
        return cls.__new__(cls)

    return reconstruct


def _load_from_bytes(data: Any) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes`` (a storage saved with torch.save), with weights_only."""
    if not isinstance(data, bytes | bytearray):
        raise pickle.UnpicklingError("torch.storage._load_from_bytes expects bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _torch_allowed() -> dict[str, Any]:
    """The only real globals a network snapshot may name: dense tensor and parameter rebuilding, storages read
    back by ``torch.load(weights_only=True)``, dtypes, sizes, devices and plain containers. (Not torch's whole
    ``weights_only`` list: its sparse, quantized, nested and subclass rebuilds need checks that only
    ``torch.load`` itself makes afterwards.)"""
    from torch import _utils

    allowed = {f"torch._utils.{name}": getattr(_utils, name) for name in ("_rebuild_tensor_v2", "_rebuild_parameter")}
    allowed |= {f"torch.{name}": value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
    allowed |= {
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.object": object,  # the ``base`` argument of copyreg._reconstructor
        "_codecs.encode": codecs.encode,  # how protocols 0-2 store bytes
        "torch.storage._load_from_bytes": _load_from_bytes,
        "copyreg._reconstructor": _stub_only("_reconstructor"),
        "copyreg.__newobj__": _stub_only("__newobj__"),
        "copyreg.__newobj_ex__": _stub_only("__newobj_ex__"),
        PERSISTENT_OBJ: _persistent_record,
    }
    return allowed


def _check_dense(name: str, tensor: torch.Tensor, file: Any) -> torch.Tensor:
    """A plain dense CPU tensor, or one clear error (no sparse, quantized, meta or nested tensor is read)."""
    if tensor.layout is not torch.strided or tensor.is_quantized or tensor.is_meta or tensor.is_nested:
        raise pickle.UnpicklingError(f"{file}: {name!r} is not a dense tensor ({tensor.layout}); refused")
    return tensor


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves globals from an explicit allow-list only, and never imports the file's classes.

    ``stub_modules`` adds module prefixes whose globals become inert :class:`Stub` classes.
    """

    def __init__(self, file: Any, *, stub_modules: Iterable[str] = ()) -> None:
        super().__init__(file)
        self.allowed = _torch_allowed()
        self.stub_modules = (*STUB_MODULES, *stub_modules)
        self.stubs: dict[str, type[Stub]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # Python 2 names
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualname = f"{module}.{name}"
        if qualname in self.allowed:
            return self.allowed[qualname]
        if any(module == prefix or module.startswith(prefix + ".") for prefix in self.stub_modules):
            return self.stubs.setdefault(qualname, _stub_class(qualname))
        raise pickle.UnpicklingError(f"refused global {qualname!r}: not a tensor rebuild function or a stubbed class")


def _state(obj: Any) -> dict | None:
    """The pickled ``__dict__`` of a stub (merging a ``(dict, slots)`` state), or None."""
    state = obj.state if isinstance(obj, Stub) else None
    if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, dict | None) for s in state):
        state = {**(state[0] or {}), **(state[1] or {})}
    return state if isinstance(state, dict) else None


def _is_module(obj: Any) -> bool:
    state = _state(obj)
    return state is not None and ("_parameters" in state or "_modules" in state)


def _children(obj: Any) -> dict | None:
    """The named children of a node: sub-modules of a module, items of a dict (or of a stubbed dict)."""
    if _is_module(obj):
        return dict(_state(obj).get("_modules") or {})
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, Stub) and obj.items:
        return obj.items
    return None


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], ancestors: set[int]) -> None:
    """Collect tensors into ``out`` in ``state_dict`` order: own parameters, persistent buffers, then children."""
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj.detach()
        return
    if id(obj) in ancestors:  # a reference cycle; shared sub-modules are listed under each name, as by state_dict
        return
    ancestors.add(id(obj))
    if _is_module(obj):
        state = _state(obj)
        skip = set(state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, tensor in (state.get(group) or {}).items():
                if isinstance(tensor, torch.Tensor) and not (group == "_buffers" and name in skip):
                    out[prefix + name] = tensor.detach()
    if isinstance(obj, list | tuple) or (isinstance(obj, Stub) and obj.list_items):
        children = dict(enumerate(obj.list_items if isinstance(obj, Stub) else obj))
    else:
        children = _children(obj) or {}
    for name, child in children.items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", out, ancestors)
    ancestors.discard(id(obj))


def flatten_tensors(obj: Any) -> dict[str, torch.Tensor]:
    """A flat ``{dotted name: tensor}`` of a (stubbed) module tree or of nested dicts/lists of tensors."""
    out: dict[str, torch.Tensor] = {}
    _flatten(obj, "", out, set())
    return out


def _descend(obj: Any, path: str, file: Any) -> Any:
    """The sub-module (or dict item) at a dotted path."""
    node = obj
    for i, part in enumerate(path.split(".")):
        children = _children(node)
        if children is None or part not in children or children[part] is None:
            where = ".".join(path.split(".")[:i]) or "the top level"
            there = sorted(map(str, children)) if children else []
            raise ValueError(f"{file}: no module {path!r} (no {part!r} under {where}; there: {there})")
        node = children[part]
    return node


def read_pickle_tensors(
    path: str | os.PathLike, *, key: str | None = None, module: str | None = None, stub_modules: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """The tensors of a plain (EDM-style) pickle, e.g. a SiD-LSG ``.pkl`` snapshot, without running its code.

    ``key`` picks ``obj[key]`` first (``"ema"`` for SiD-LSG/EDM snapshots); ``module`` keeps only the sub-module
    at that dotted path and strips it from the names, so that they match that module's own ``state_dict()``.
    The names are those of ``model.state_dict()`` (parameters, persistent buffers); a pickled dict of tensors
    (nested dicts too) gives its dotted keys. ``stub_modules`` stubs the classes of more module prefixes.
    """
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK\x03\x04"):
            raise ValueError(f"{path} is a torch.save zip archive, not a plain pickle: read it with load_torch_file")
        f.seek(0)
        obj = SafeUnpickler(f, stub_modules=stub_modules).load()
    if isinstance(obj, int) and obj == TORCH_LEGACY_MAGIC:
        raise ValueError(f"{path} is a legacy torch.save file, not a plain pickle: read it with load_torch_file")
    if key is not None:
        children = _children(obj)
        if children is None or key not in children:
            there = sorted(map(str, children)) if children else f"a {type(obj).__name__}, not a dict"
            raise ValueError(f"{path}: no key {key!r} at the top level (there: {there})")
        obj = children[key]
    if module:
        obj = _descend(obj, module, path)
    tensors = {name: _check_dense(name, tensor, path) for name, tensor in flatten_tensors(obj).items()}
    if not tensors:
        what = f" under {key!r}" if key else ""
        what += f" in module {module!r}" if module else ""
        raise ValueError(f"{path}: no tensors found{what} (object: {obj!r:.200})")
    return tensors


def load_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` file (``.bin``/``.pt``/``.pth``), loaded with ``weights_only=True``.

    Nested dicts are flattened with dots. A plain pickle (not a torch.save archive) that weights_only refuses
    gets one clear error suggesting :func:`read_pickle_tensors`.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        if zipfile.is_zipfile(path):
            if isinstance(error, RuntimeError):
                raise
            raise pickle.UnpicklingError(f"{path}: torch.load(weights_only=True) refused it: {error}") from error
        raise pickle.UnpicklingError(
            f"{path} is not a torch.save zip archive, and torch.load(weights_only=True) refused it: if it is a plain "
            "pickle (an EDM or SiD-LSG .pkl network snapshot), read it with read_pickle_tensors(path, key='ema')"
        ) from error
    tensors = flatten_tensors(obj)
    if not tensors:
        raise ValueError(f"{path}: no tensors found (object: {obj!r:.200})")
    return tensors
