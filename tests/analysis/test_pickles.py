"""Reading pickled snapshots without running their code (dkd.analysis.pickles)."""

from __future__ import annotations

import builtins
import contextlib
import copyreg
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from dkd.analysis.pickles import load_torch_file, read_pickle_tensors

PROTOCOLS = (0, 2, pickle.DEFAULT_PROTOCOL)


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        cross_attention_dim=8,
        norm_num_groups=4,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )


class Evil:
    """Unpickling runs ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class SiDGenerator(torch.nn.Module):
    """A generator that holds a U-Net; pickled under a module name that does not exist at load time."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet
        self.register_buffer("sigma", torch.tensor([0.5, 2.0]))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)


class PersistentGenerator(SiDGenerator):
    """Pickles itself like EDM's ``torch_utils.persistence`` classes: source code + class name + state."""

    module_src = ""

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name="PersistentGenerator")
        meta["state"] = self.__getstate__()
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


@contextlib.contextmanager
def fake_modules(**attributes):
    """Register importable modules (``"pkg.mod": {name: object}``) while pickling only, then remove them."""
    names = {part for name in attributes for part in [name.split(".")[0], name]}
    saved = {name: sys.modules.get(name) for name in names}
    where = {obj: (obj.__module__, obj.__qualname__) for members in attributes.values() for obj in members.values()}
    try:
        for name in names:
            sys.modules[name] = types.ModuleType(name)
        for name, members in attributes.items():
            for attr, obj in members.items():
                obj.__module__, obj.__qualname__ = name, attr
                setattr(sys.modules[name], attr, obj)
        yield
    finally:
        for obj, (module_name, qualname) in where.items():
            obj.__module__, obj.__qualname__ = module_name, qualname
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def dump(path: Path, obj, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["os.system", "eval", "exec", "getattr", "subprocess", "reconstructor", "nested"])
def test_malicious_globals_are_refused(tmp_path, kind, protocol):
    pwned = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(pwned)!r}).touch()"
    payload = {
        "os.system": Evil(os.system, f"touch {pwned}"),
        "eval": Evil(builtins.eval, code),
        "exec": Evil(builtins.exec, code),
        "getattr": Evil(builtins.getattr, object, "__subclasses__"),
        "subprocess": Evil(__import__("subprocess").call, ["touch", str(pwned)]),
        "reconstructor": Evil(copyreg._reconstructor, torch.Size, object, None),
        "nested": {"ok": torch.ones(2), "bad": [Evil(os.system, f"touch {pwned}")]},
    }[kind]
    path = dump(tmp_path / "evil.pkl", payload, protocol)
    with pytest.raises(pickle.UnpicklingError, match=r"refused|copyreg") as error:
        read_pickle_tensors(path)
    if kind in ("os.system", "nested"):
        assert "system" in str(error.value)  # names the refused global (posix.system on Linux)
    assert not pwned.exists()


def test_copyreg_newobj_only_rebuilds_stubs(tmp_path):
    # GLOBAL copyreg.__newobj__, GLOBAL torch.Size, TUPLE1, REDUCE: a real class through copyreg is refused
    path = tmp_path / "newobj.pkl"
    path.write_bytes(b"\x80\x02ccopyreg\n__newobj__\nctorch\nSize\n\x85R.")
    with pytest.raises(pickle.UnpicklingError, match="only stubbed classes"):
        read_pickle_tensors(path)
    # the same with a stubbed class gives an inert object (which holds no tensors)
    path.write_bytes(b"\x80\x02ccopyreg\n__newobj__\ncdiffusers.models\nUNet2DConditionModel\n\x85R.")
    with pytest.raises(ValueError, match="no tensors found.*Stub diffusers.models.UNet2DConditionModel"):
        read_pickle_tensors(path)


def test_plain_dict_of_tensors_is_bit_identical(tmp_path):
    base = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    state = {
        "a.weight": base,
        "a.half": base.half(),
        "a.bf16": base.bfloat16(),
        "view": base.t()[1:3],  # non-contiguous view of a larger storage
        "ids": torch.arange(5),
        "mask": base > 0,
        "scalar": torch.tensor(3.5, dtype=torch.float64),
    }
    for protocol in PROTOCOLS:
        assert_same(read_pickle_tensors(dump(tmp_path / f"sd{protocol}.pkl", state, protocol)), state)
    nested = {"ema": {"w": base, "sub": {"b": base.half()}}, "step": 7}
    got = read_pickle_tensors(dump(tmp_path / "nested.pkl", nested))
    assert_same(got, {"ema.w": base, "ema.sub.b": base.half()})
    assert_same(read_pickle_tensors(tmp_path / "nested.pkl", key="ema", module="sub"), {"b": base.half()})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sid_lsg_snapshot_of_a_diffusers_unet(tmp_path, protocol):
    """SiD-LSG saves ``pickle.dump({"ema": unet})``: the names are diffusers' own."""
    unet = tiny_unet().eval().requires_grad_(False)
    path = dump(tmp_path / "network-snapshot.pkl", {"ema": unet}, protocol)
    assert_same(read_pickle_tensors(path, key="ema"), unet.state_dict())
    assert_same(read_pickle_tensors(path, key="ema", module="mid_block.resnets"), unet.mid_block.resnets.state_dict())
    got = read_pickle_tensors(path)
    assert list(got) == [f"ema.{name}" for name in unet.state_dict()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generator_class_is_never_imported(tmp_path, protocol):
    """A wrapper pickled under ``training.networks.SiDGenerator``, a module that is gone at load time."""
    generator = SiDGenerator(tiny_unet())
    with fake_modules(**{"training.networks": {"SiDGenerator": SiDGenerator}}):
        path = dump(tmp_path / "snapshot.pkl", {"ema": generator, "kimg": 12}, protocol)
    assert "training.networks" not in sys.modules
    assert_same(read_pickle_tensors(path, key="ema", module="unet"), generator.unet.state_dict())
    whole = read_pickle_tensors(path, key="ema")
    assert_same(whole, generator.state_dict())
    assert "scratch" not in whole and "sigma" in whole  # non-persistent buffers are left out, as by state_dict
    assert "training.networks" not in sys.modules and "training" not in sys.modules


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_edm_persistence_source_is_never_run(tmp_path, protocol):
    ran = tmp_path / "exec_ran"
    generator = PersistentGenerator(tiny_unet())
    generator.module_src = f"import pathlib\npathlib.Path({str(ran)!r}).touch()\nclass PersistentGenerator: pass\n"

    def _reconstruct_persistent_obj(meta):  # what EDM would call (it execs meta["module_src"])
        raise AssertionError("the real reconstruct function must not be called")

    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj}}):
        data = pickle.dumps({"ema": generator}, protocol=protocol)
    assert b"torch_utils.persistence" in data and b"exec_ran" in data
    path = tmp_path / "network-snapshot-000100.pkl"
    path.write_bytes(data)
    assert_same(read_pickle_tensors(path, key="ema", module="unet"), generator.unet.state_dict())
    assert_same(read_pickle_tensors(path, key="ema"), generator.state_dict())
    assert not ran.exists()
    assert "torch_utils.persistence" not in sys.modules


def test_shared_sub_module_is_listed_under_each_name(tmp_path):
    linear = torch.nn.Linear(2, 3)
    model = torch.nn.Sequential(linear, torch.nn.ReLU(), linear)
    assert_same(read_pickle_tensors(dump(tmp_path / "tied.pkl", {"ema": model}), key="ema"), model.state_dict())


def test_clear_errors(tmp_path):
    with fake_modules(**{"training.networks": {"SiDGenerator": SiDGenerator}}):
        path = dump(tmp_path / "snapshot.pkl", {"ema": SiDGenerator(tiny_unet())})
    with pytest.raises(ValueError, match=r"no key 'G_ema'.*'ema'"):
        read_pickle_tensors(path, key="G_ema")
    with pytest.raises(ValueError, match=r"no module 'model'.*'unet'"):
        read_pickle_tensors(path, key="ema", module="model")
    with pytest.raises(ValueError, match=r"no module 'unet.nope'.*'conv_in'"):
        read_pickle_tensors(path, key="ema", module="unet.nope")
    with pytest.raises(ValueError, match="no tensors found"):
        read_pickle_tensors(dump(tmp_path / "empty.pkl", {"ema": {"step": 3}}), key="ema")
    torch.save({"w": torch.ones(1)}, tmp_path / "zip.pt")
    with pytest.raises(ValueError, match="load_torch_file"):
        read_pickle_tensors(tmp_path / "zip.pt")


def test_load_torch_file(tmp_path):
    state = tiny_unet().state_dict()
    torch.save(state, tmp_path / "diffusion_pytorch_model.bin")
    assert_same(load_torch_file(tmp_path / "diffusion_pytorch_model.bin"), state)
    torch.save({"net": {"w": torch.arange(3)}}, tmp_path / "nested.pt")
    assert_same(load_torch_file(tmp_path / "nested.pt"), {"net.w": torch.arange(3)})


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_load_torch_file_refuses_code(tmp_path):
    pwned = tmp_path / "pwned"
    torch.save({"w": torch.ones(1), "x": Evil(os.system, f"touch {pwned}")}, tmp_path / "evil.bin")
    with pytest.raises(pickle.UnpicklingError, match="evil.bin"):
        load_torch_file(tmp_path / "evil.bin")
    dump(tmp_path / "plain.bin", Evil(os.system, f"touch {pwned}"))
    with pytest.raises(pickle.UnpicklingError, match=r"plain\.bin is not a torch.save zip.*read_pickle_tensors"):
        load_torch_file(tmp_path / "plain.bin")
    assert not pwned.exists()
    plain = dump(tmp_path / "plain_tensors.bin", {"w": torch.ones(2)})
    with pytest.raises(pickle.UnpicklingError, match="read_pickle_tensors"):
        load_torch_file(plain)
    with pytest.raises(pickle.UnpicklingError, match="read_pickle_tensors"):  # no tensors: torch sees a bad magic
        load_torch_file(dump(tmp_path / "ints.bin", [1, 2]))
    assert_same(read_pickle_tensors(plain), {"w": torch.ones(2)})


def test_sparse_or_unchecked_tensor_rebuilds_are_refused(tmp_path):
    """torch's weights_only list rebuilds sparse tensors unchecked (torch.load validates them afterwards): a
    snapshot is read through dense tensor rebuilds only, so an out-of-range sparse index cannot get through."""
    bad = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 2.0]), (4, 4))
    path = tmp_path / "sparse.pkl"
    path.write_bytes(pickle.dumps({"ema": {"weight": bad}}))
    with pytest.raises(pickle.UnpicklingError, match="refused global 'torch._utils._rebuild_sparse_tensor'"):
        read_pickle_tensors(path, key="ema")
