"""models_loader.cache: one load per file/device/dtype, reload when the file changes, and the
ComfyUI memory-manager path (ModelPatcher + load_models_gpu) when ComfyUI is present."""
import os
import types

import torch

from marionette.models_loader import cache as cache_mod
from marionette.models_loader import catalog
from marionette.models_loader.cache import LoadedModel, ModelCache

ENTRY = catalog.model("dwpose_detector")


def test_get_loads_once_and_evicts_least_recent():
    c = ModelCache(max_entries=2)
    calls = []

    def loader(name):
        def load():
            calls.append(name)
            return LoadedModel(key=(), model=name)
        return load

    assert c.get(("a",), loader("a")).model == "a"
    assert c.get(("a",), loader("a")).model == "a"
    assert calls == ["a"] and c.loads == 1
    c.get(("b",), loader("b"))
    c.get(("a",), loader("a"))  # a becomes most recent
    c.get(("c",), loader("c"))  # evicts b
    c.get(("b",), loader("b"))
    assert calls == ["a", "b", "c", "b"]


def test_torch_module_is_shared_and_reloaded_when_file_changes(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"v1")
    c = ModelCache()
    built = []

    def build():
        built.append(1)
        return torch.nn.Linear(2, 2)

    m1 = c.torch_module(ENTRY, path, build, device=torch.device("cpu"))
    m2 = c.torch_module(ENTRY, path, build, device=torch.device("cpu"))
    assert m1 is m2 and len(built) == 1
    m3 = c.torch_module(ENTRY, path, build, device=torch.device("cpu"), dtype=torch.float64)
    assert m3 is not m1 and m3.model.weight.dtype == torch.float64  # another dtype, another entry
    path.write_bytes(b"v2-longer")
    os.utime(path, ns=(1, 1))
    m4 = c.torch_module(ENTRY, path, build, device=torch.device("cpu"))
    assert m4 is not m1 and len(built) == 3
    assert m4.nbytes == sum(t.numel() * 4 for t in m4.model.state_dict().values())
    assert m4.patcher is None and m4.on_device() is m4.model  # no ComfyUI here


def test_comfy_path_uses_model_patcher_and_load_models_gpu(tmp_path, monkeypatch):
    calls = {}

    class FakePatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size

    def load_models_gpu(patchers, memory_required=0, force_full_load=False):
        calls["load"] = (patchers, memory_required, force_full_load)

    fake_mm = types.SimpleNamespace(
        get_torch_device=lambda: torch.device("cpu"), unet_offload_device=lambda: torch.device("cpu"),
        intermediate_device=lambda: torch.device("cpu"), load_models_gpu=load_models_gpu,
        throw_exception_if_processing_interrupted=lambda: None, free_memory=lambda *a, **k: None)
    monkeypatch.setattr(cache_mod, "_mm", fake_mm)
    monkeypatch.setattr(cache_mod, "_patcher", types.SimpleNamespace(ModelPatcher=FakePatcher))
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    item = ModelCache().torch_module(ENTRY, path, lambda: torch.nn.Linear(3, 3))
    assert isinstance(item.patcher, FakePatcher) and item.patcher.size == item.nbytes == 12 * 4
    assert item.patcher.model.inner is item.model  # wrapped: diffusers models have a read-only .device
    item.patcher.model.device = torch.device("cpu")  # what ModelPatcher writes; must not fail
    module = item.on_device(memory_required=1234)
    assert module is item.model
    patchers, mem, force = calls["load"]
    assert patchers == [item.patcher] and mem == 1234 and force is True


def test_onnx_providers_fall_back_to_cpu():
    assert cache_mod.onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]
