"""The one cache that owns every loaded model.

A model file is loaded once per process and device/dtype (keyed by path, size and mtime, so a
replaced file is reloaded) and shared by every node. Under ComfyUI each torch module is wrapped
in a ``ModelPatcher`` and brought to the GPU through ``comfy.model_management.load_models_gpu``
right before use, so ComfyUI offloads it like its own models when another model needs the
memory. ONNX sessions cannot be moved between devices; on CUDA, room is made for them through
``free_memory`` before they are created, and they are dropped when the cache is cleared.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import files
from .catalog import ModelFile

try:
    import comfy.model_management as _mm
    import comfy.model_patcher as _patcher
except ImportError:  # tests and command line
    _mm = None
    _patcher = None


def comfy_present() -> bool:
    return _mm is not None


def torch_device():
    """The device ComfyUI runs models on, or CUDA/CPU without ComfyUI."""
    import torch

    if _mm is not None:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device():
    import torch

    if _mm is not None:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device():
    """Where node outputs (IMAGE, MASK) live: ComfyUI's intermediate device, else CPU."""
    import torch

    if _mm is not None:
        return _mm.intermediate_device()
    return torch.device("cpu")


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (no-op elsewhere)."""
    if _mm is not None:
        _mm.throw_exception_if_processing_interrupted()


def onnx_providers(device=None) -> list[str]:
    """CUDA for onnxruntime when the pack runs on CUDA and onnxruntime-gpu is installed,
    otherwise CPU."""
    import onnxruntime as ort

    device = device if device is not None else torch_device()
    available = ort.get_available_providers()
    if getattr(device, "type", str(device)) == "cuda" and "CUDAExecutionProvider" in available:
        index = getattr(device, "index", None) or 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _holder(module):
    """A plain ``nn.Module`` around ``module`` for ComfyUI's ModelPatcher, which writes
    bookkeeping attributes (``device``, ``model_loaded_weight_memory`` …) onto the model it
    manages: diffusers' and transformers' models define ``device`` as a read-only property, so
    they cannot be patched directly. Moving the holder moves the module."""
    import torch

    class ManagedModule(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

    return ManagedModule(module)


@dataclass
class LoadedModel:
    """A cache entry. ``model`` is the torch module or ONNX session; ``patcher`` the ComfyUI
    ModelPatcher that manages a torch module's residency (``None`` without ComfyUI)."""

    key: tuple
    model: Any
    patcher: Any = None
    device: Any = None
    dtype: Any = None
    nbytes: int = 0

    def on_device(self, memory_required: int = 0):
        """The module, resident on its compute device (through ComfyUI's memory manager when
        present). Call right before every use: ComfyUI may have offloaded it since."""
        if self.patcher is not None:
            _mm.load_models_gpu([self.patcher], memory_required=memory_required, force_full_load=True)
            return self.patcher.model.inner
        if hasattr(self.model, "to") and self.device is not None:
            self.model.to(self.device)
        return self.model


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


class ModelCache:
    """Loaded models by key, least recently used first out when ``max_entries`` is passed."""

    def __init__(self, max_entries: int = 32):
        self._items: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self.max_entries = max_entries
        self.loads = 0  # how many times a loader really ran (tests check sharing with it)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple, load: Callable[[], LoadedModel]) -> LoadedModel:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            item = load()
            self.loads += 1
            item.key = key
            self._items[key] = item
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
            return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    # ------------------------------------------------------------ typed helpers

    def onnx_session(self, entry: ModelFile, path: Path, device=None) -> LoadedModel:
        """One onnxruntime session per file and provider set."""
        providers = onnx_providers(device)
        key = ("onnx", entry.id, *_file_key(path), repr(providers))

        def load() -> LoadedModel:
            if _mm is not None and providers[0] != "CPUExecutionProvider":
                dev = torch_device()
                _mm.free_memory(int(path.stat().st_size * 3) + (512 << 20), dev)
            sess = files.open_onnx(path, entry, providers=providers)
            return LoadedModel(key=key, model=sess, device=device, nbytes=path.stat().st_size)

        return self.get(key, load)

    def torch_module(self, entry: ModelFile, path: Path, build: Callable[[], Any], dtype=None,
                     device=None, extra_key: tuple = ()) -> LoadedModel:
        """A torch module built by ``build()`` (weights already loaded, on the CPU), wrapped for
        ComfyUI's memory manager when present."""
        import torch

        device = device if device is not None else torch_device()
        key = ("torch", entry.id, *_file_key(path), str(device), str(dtype), *extra_key)

        def load() -> LoadedModel:
            module = build().eval()
            if dtype is not None:
                module.to(dtype)
            nbytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
            patcher = None
            if _patcher is not None:
                patcher = _patcher.ModelPatcher(_holder(module), load_device=device,
                                                offload_device=offload_device(), size=nbytes)
            return LoadedModel(key=key, model=module, patcher=patcher, device=device, dtype=dtype or torch.float32,
                               nbytes=nbytes)

        return self.get(key, load)


CACHE = ModelCache()
"""The process-wide cache every stage uses."""


def onnx_model(model_id_or_entry, name: str | None = None, device=None) -> LoadedModel:
    """Find ``model_id``'s file (or ``name``) and return its shared ONNX session."""
    from . import catalog

    entry = catalog.model(model_id_or_entry) if isinstance(model_id_or_entry, str) else model_id_or_entry
    path = files.find(entry, name)
    return CACHE.onnx_session(entry, path, device=device)


def cpu_threads() -> int:
    return max(1, os.cpu_count() or 1)
