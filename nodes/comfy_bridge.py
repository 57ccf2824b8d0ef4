"""The node side's single doorway to ComfyUI: the V3 API (or a stand-in without ComfyUI),
progress bars that also honour Cancel, and where node outputs live.

Algorithms never import this; they take a ``progress(done, total, preview=None)`` callback
that nodes build here.
"""
from __future__ import annotations

from typing import Callable

try:
    from comfy_api.latest import ComfyExtension, io, ui

    HAVE_COMFY = True
except ImportError:
    from ._io_shim import ComfyExtension, io, ui  # noqa: F401

    HAVE_COMFY = False

try:
    import comfy.utils as _comfy_utils
except ImportError:
    _comfy_utils = None

from ..models_loader import cache as _cache

ProgressFn = Callable[..., None]


def progress_callback(total: int) -> ProgressFn:
    """A ``progress(done, total=None, preview=None)`` callback for the running node: it moves
    ComfyUI's progress bar (with an optional PIL preview) and raises when the user cancels."""
    bar = _comfy_utils.ProgressBar(total) if _comfy_utils is not None else None

    def progress(done: int, total_: int | None = None, preview=None) -> None:
        _cache.throw_if_interrupted()
        if bar is not None:
            pv = ("JPEG", preview, 512) if preview is not None else None
            bar.update_absolute(done, total_ if total_ is not None else total, pv)

    return progress


def to_output_device(t):
    """Move an IMAGE/MASK tensor to ComfyUI's intermediate device (CPU unless --gpu-only)."""
    return t.to(_cache.intermediate_device())
