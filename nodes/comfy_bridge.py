"""The node side's single doorway to ComfyUI: the V3 API (or a stand-in without ComfyUI),
progress bars that also honour Cancel, and where node outputs live.

Algorithms never import this; they take a ``progress(done, total, preview=None)`` callback
that nodes build here.
"""
from __future__ import annotations

from pathlib import Path
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


# ------------------------------------------------------------------ input/output folders

try:
    import folder_paths as _folder_paths
except ImportError:
    _folder_paths = None


def input_dir() -> Path:
    """ComfyUI's input folder (the current folder without ComfyUI)."""
    return Path(_folder_paths.get_input_directory()) if _folder_paths is not None else Path.cwd()


def output_dir() -> Path:
    """ComfyUI's output folder (``./output`` without ComfyUI)."""
    return Path(_folder_paths.get_output_directory()) if _folder_paths is not None else Path.cwd() / "output"


def input_files(suffix: str) -> list[str]:
    """Files with ``suffix`` in the input folder and below, as relative paths (a node's combo)."""
    base = input_dir()
    if not base.is_dir():
        return []
    return sorted(p.relative_to(base).as_posix() for p in base.rglob(f"*{suffix}") if p.is_file())


def resolve_input(file: str) -> Path:
    """``file`` inside the input folder; a ``ValueError`` for paths that leave it."""
    base = input_dir().resolve()
    path = (base / file).resolve()
    if base not in path.parents:
        raise ValueError(f"'{file}' is outside ComfyUI's input folder")
    return path


def check_input_file(file: str, what: str):
    """``True`` when ``file`` exists in the input folder, else the message for validate_inputs."""
    try:
        path = resolve_input(file)
    except ValueError as exc:
        return str(exc)
    return True if path.is_file() else f"{what} '{file}' is not in the input folder {input_dir()}; put the file there"


def save_path(prefix: str, suffix: str) -> Path:
    """A new ``<output>/<prefix>_<counter><suffix>`` (ComfyUI's counter convention, never
    overwriting an earlier result); ``ValueError`` when the prefix leaves the output folder."""
    out = output_dir().resolve()
    target = (out / (prefix.strip().replace("\\", "/") or "marionette")).resolve()
    if out not in target.parents:
        raise ValueError(f"filename_prefix '{prefix}' points outside the output folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    stems = (p.stem.rsplit("_", 1) for p in target.parent.glob(f"{target.name}_*{suffix}"))
    counter = 1 + max((int(s[1]) for s in stems if len(s) == 2 and s[1].isdigit()), default=0)
    return target.parent / f"{target.name}_{counter:05d}{suffix}"


def saved_entry(path: Path) -> dict:
    """How a node reports a file it wrote (the shape ComfyUI's own savers use)."""
    sub = path.parent.relative_to(output_dir().resolve()).as_posix()
    return {"filename": path.name, "subfolder": "" if sub == "." else sub, "type": "output"}
