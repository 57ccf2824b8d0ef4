"""Finding model files and loading them safely.

Under ComfyUI, folders come from ``folder_paths`` (so ``extra_model_paths.yaml`` is honoured);
without it (tests, the command line) from a plain ``models`` folder set with
``set_models_dir``. Files other packs already downloaded (comfyui_controlnet_aux's ``ckpts``,
the Hugging Face hub cache) are found too, so nobody downloads twice.

Loading never executes pickled code: safetensors, ``torch.load(weights_only=True)``, ONNX, and
for SMPL-family ``.pkl``/``.npz`` files a restricted unpickler (NumPy arrays and stand-ins for
chumpy / scipy.sparse only) and ``np.load(allow_pickle=False)``.
Every failure is a ``ModelFileMissing`` / ``ModelFileInvalid`` whose message names the file,
the folders searched and what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from . import catalog
from .catalog import ModelFile

try:  # the one ComfyUI import of this module: folder lookups (DESIGN.md: files.py)
    import folder_paths as _folder_paths
except ImportError:
    _folder_paths = None


class ModelFileMissing(FileNotFoundError):
    """A model file is not where Marionette looks; the message says where to put it."""


class ModelFileInvalid(ValueError):
    """A model file is there but unusable (corrupt, truncated, or a different model)."""


_models_dir: Path | None = None
_extra_dirs: dict[str, list[Path]] = {}


def set_models_dir(path: str | os.PathLike | None) -> None:
    """Use ``path`` as the ``models`` folder when ComfyUI is absent (tests, command line).
    ``None`` restores the default guess (``<ComfyUI>/models`` when the pack sits in
    ``<ComfyUI>/custom_nodes``)."""
    global _models_dir
    _models_dir = Path(path).resolve() if path is not None else None


def add_search_dir(folder_key: str, path: str | os.PathLike) -> None:
    """Search ``path`` too for files of ``folder_key`` (used by tests and the CLI)."""
    _extra_dirs.setdefault(folder_key, []).append(Path(path))


def _pack_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def _default_models_dir() -> Path:
    if _models_dir is not None:
        return _models_dir
    pack = _pack_dir()
    if pack.parent.name == "custom_nodes":
        return pack.parent.parent / "models"
    return pack / "models"


def register_comfy_folders() -> None:
    """Register every catalog folder with ComfyUI's ``folder_paths``.

    Appends (never overwrites: ``extra_model_paths.yaml`` may already have created the key)
    and then sets the extension filter, because a new key starts with an empty set that
    lists every file, READMEs included."""
    if _folder_paths is None:
        return
    for folder in catalog.FOLDERS.values():
        default = os.path.join(_folder_paths.models_dir, folder.key)
        _folder_paths.add_model_folder_path(folder.key, default, is_default=False)
        paths, _ = _folder_paths.folder_names_and_paths[folder.key]
        _folder_paths.folder_names_and_paths[folder.key] = (paths, set(folder.extensions))


def _comfy_folder(key: str) -> list[Path]:
    """ComfyUI's folders for ``key``; an unregistered key (e.g. another pack's ``detection``)
    is ``<ComfyUI models>/<key>``, honouring ``--base-directory``."""
    if _folder_paths is None:
        return []
    try:
        return [Path(p) for p in _folder_paths.get_folder_paths(key)]
    except KeyError:
        return [Path(_folder_paths.models_dir) / key]


def folder_dirs(folder_key: str) -> list[Path]:
    """The folders searched for ``folder_key`` (and its ``also`` keys), in order."""
    keys = [folder_key, *catalog.FOLDERS[folder_key].also] if folder_key in catalog.FOLDERS else [folder_key]
    dirs: list[Path] = []
    for key in keys:
        dirs += _extra_dirs.get(key, [])
        comfy = _comfy_folder(key)
        dirs += comfy if comfy else [_default_models_dir() / key]
    return _unique(dirs)


def _custom_nodes_dirs() -> list[Path]:
    if _folder_paths is not None:
        try:
            return [Path(p) for p in _folder_paths.get_folder_paths("custom_nodes")]
        except KeyError:
            pass
    pack = _pack_dir()
    return [pack.parent] if pack.parent.name == "custom_nodes" else []


def _controlnet_aux_ckpts(custom_nodes: Path) -> list[Path]:
    """comfyui_controlnet_aux's ckpts folder, honouring its config.yaml and env override."""
    out = [custom_nodes / "comfyui_controlnet_aux" / "ckpts"]
    env = os.environ.get("AUX_ANNOTATOR_CKPTS_PATH")
    if env:
        out.append(Path(env))
    cfg = custom_nodes / "comfyui_controlnet_aux" / "config.yaml"
    if cfg.is_file():
        for line in cfg.read_text(errors="ignore").splitlines():
            if line.strip().startswith("annotator_ckpts_path:"):
                value = line.split(":", 1)[1].strip().strip("'\"")
                if value:
                    p = Path(value)
                    out.append(p if p.is_absolute() else cfg.parent / p)
    return out


def _hf_cache_dirs(repo: str) -> list[Path]:
    base = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    snapshots = Path(base) / ("models--" + repo.replace("/", "--")) / "snapshots"
    return sorted(snapshots.glob("*")) if snapshots.is_dir() else []


def search_dirs(entry: ModelFile) -> list[Path]:
    """Every folder searched for ``entry``, in the order searched."""
    dirs = folder_dirs(entry.folder)
    for cn in _custom_nodes_dirs():
        for rel in entry.foreign_dirs:
            dirs.append(cn / rel)
            if rel.startswith("comfyui_controlnet_aux/ckpts/"):
                sub = rel.split("ckpts/", 1)[1]
                dirs += [c / sub for c in _controlnet_aux_ckpts(cn)[1:]]
    if entry.hf_repo:
        dirs += _hf_cache_dirs(entry.hf_repo)
    if entry.torch_hub_checkpoint:
        dirs.append(torch_hub_dir() / "checkpoints")
    return _unique(dirs)


def torch_hub_dir() -> Path:
    """torch.hub's folder (``$TORCH_HOME/hub``, or what ``torch.hub.set_dir`` chose)."""
    import torch

    return Path(torch.hub.get_dir())


def hub_repo_dirs(repo: catalog.HubRepo) -> list[Path]:
    """Where a torch.hub repository's local copy is looked for, in order (explicit folders and
    ``repo.env_var`` aside): ``models/<folder>/<dir_name>`` in every folder of ``repo.folder``,
    then torch.hub's cache (``<owner>_<name>_<branch>``, ``main`` first)."""
    dirs = [d / repo.dir_name for d in folder_dirs(repo.folder)]
    hub = torch_hub_dir()
    stem = repo.hub_repo.replace("/", "_")
    dirs.append(hub / f"{stem}_main")
    if hub.is_dir():
        dirs += sorted(hub.glob(f"{stem}_*"))
    return _unique(dirs)


def find_hub_repo(repo: catalog.HubRepo | str, folder: str | os.PathLike | None = None) -> Path:
    """The local copy of a torch.hub repository (the folder holding ``hubconf.py``).

    ``folder`` (or, when not given, the environment variable ``repo.env_var``) names it
    explicitly and must hold ``hubconf.py``; otherwise the folders of ``hub_repo_dirs`` are
    searched. Raises ``ModelFileMissing`` saying where to clone it."""
    if isinstance(repo, str):
        repo = catalog.HUB_REPOS[repo]
    explicit = folder or (os.environ.get(repo.env_var) if repo.env_var else None)
    if explicit:
        path = Path(explicit).expanduser()
        if (path / "hubconf.py").is_file():
            return path
        source = "the folder given" if folder else f"{repo.env_var}"
        raise hub_missing_error(repo, [path], why=f"{source} ({path}) holds no hubconf.py")
    dirs = hub_repo_dirs(repo)
    for d in dirs:
        if (d / "hubconf.py").is_file():
            return d
    raise hub_missing_error(repo, dirs)


def hub_missing_error(repo: catalog.HubRepo, dirs: list[Path], why: str = "") -> ModelFileMissing:
    target = (folder_dirs(repo.folder) or [_default_models_dir() / repo.folder])[0] / repo.dir_name
    looked = "\n".join(f"  - {d}" for d in dirs)
    return ModelFileMissing(
        f"Marionette needs the {repo.title} and could not find it"
        + (f": {why}" if why else "") + ".\n"
        f"Looked for hubconf.py in:\n{looked}\n"
        f"Fix: git clone {repo.url} {target}"
        + (f" (or set {repo.env_var} to a checkout)" if repo.env_var else "")
        + f". Licence: {repo.licence}. Marionette never downloads code."
    )


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        k = str(p)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def _find_in(directory: Path, names: tuple[str, ...], max_depth: int = 3) -> Path | None:
    """``directory/name`` or the same name up to ``max_depth`` folders down (ComfyUI lists
    sub-folders too)."""
    if not directory.is_dir():
        return None
    for name in names:
        p = directory / name
        if p.is_file():
            return p
    for depth in range(1, max_depth + 1):
        pattern = "/".join(["*"] * depth)
        for name in names:
            hits = sorted(directory.glob(f"{pattern}/{name}"))
            if hits:
                return hits[0]
    return None


def list_candidates(entry: ModelFile) -> list[str]:
    """File choices for a node's combo: the published names first, then other files with the
    right extension in the model's own folder (relative paths, as ComfyUI lists them)."""
    out = list(entry.names)
    ext = catalog.FOLDERS[entry.folder].extensions if entry.folder in catalog.FOLDERS else ()
    for d in folder_dirs(entry.folder)[:1] + folder_dirs(entry.folder)[1:]:
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.is_file() and p.suffix in ext:
                    rel = p.relative_to(d).as_posix()
                    if rel not in out and p.name not in out:
                        out.append(rel)
    return out


def find(entry: ModelFile | str, name: str | None = None) -> Path:
    """The path of ``entry``'s file (or of ``name``, a file the user picked instead).

    Raises ``ModelFileMissing`` naming the file, every folder searched and where to get it."""
    if isinstance(entry, str):
        entry = catalog.model(entry)
    if name is not None and os.path.isabs(name):
        if os.path.isfile(name):
            return Path(name)
        raise missing_error(entry, [Path(name).parent], wanted=Path(name).name)
    names = (name,) if name and name not in entry.names else entry.names
    dirs = search_dirs(entry)
    for d in dirs:
        if name and name not in entry.names:
            p = d / name
            if p.is_file():
                return p
            continue
        p = _find_in(d, names)
        if p is not None:
            return p
    raise missing_error(entry, dirs, wanted=names[0])


def find_dir(entry: ModelFile | str, name: str | None = None) -> Path:
    """The folder of a model published as a folder (the Champ release): the folder that holds
    ``entry``'s file at one of its names, which are paths inside that folder
    (``champ/denoising_unet.pth``). Found like ``find`` (the searched folders themselves, or up to
    three levels below them); ``name`` picks one folder, absolute or relative to the searched
    folders. Raises ``ModelFileMissing`` naming the file, every folder searched and where to get
    it."""
    if isinstance(entry, str):
        entry = catalog.model(entry)

    def holds(folder: Path) -> bool:
        return any((folder / n).is_file() for n in entry.names)

    if name is not None:
        candidates = [Path(name)] if os.path.isabs(name) else [d / name for d in search_dirs(entry)]
        for folder in candidates:
            if holds(folder):
                return folder
        raise missing_error(entry, candidates, wanted=entry.names[0])
    path = find(entry)
    for n in entry.names:
        depth = len(Path(n).parts)
        if path.as_posix().endswith("/" + Path(n).as_posix()):
            return path.parents[depth - 1]
    return path.parent


def missing_error(entry: ModelFile, dirs: list[Path], wanted: str) -> ModelFileMissing:
    first = dirs[0] if dirs else _default_models_dir() / entry.folder
    looked = "\n".join(f"  - {d}" for d in dirs)
    return ModelFileMissing(
        f"Marionette needs the {entry.title} file '{wanted}' and could not find it.\n"
        f"Looked in:\n{looked}\n"
        f"Fix: download it from {entry.url} ({entry.licence}) and put it in {first}{os.sep} "
        f"(or any folder listed for '{entry.folder}' in extra_model_paths.yaml)."
    )


# ---------------------------------------------------------------- safe loading

def load_state_dict(path: str | os.PathLike, entry: ModelFile | None = None) -> dict:
    """Tensors of a weight file, never running pickled code.

    ``.safetensors`` through safetensors; ``.pth/.pt/.bin/.ckpt`` through
    ``torch.load(weights_only=True)``; a top-level ``state_dict``/``model`` key is unwrapped."""
    import torch

    path = Path(path)
    what = entry.title if entry else "model"
    if not path.is_file():
        raise ModelFileMissing(f"{what} file {path} does not exist")
    try:
        if path.suffix in (".safetensors", ".sft"):
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated downloads end up here in many forms
        raise invalid_error(path, entry, f"it could not be read ({type(exc).__name__}: {str(exc)[:200]})") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict) and len(sd) <= 3:
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise invalid_error(path, entry, "it holds no plain dictionary of tensors")
    return sd


def check_state_dict(sd: dict, expected: dict, path: str | os.PathLike, entry: ModelFile | None = None,
                     allow_unexpected: Iterable[str] = ()) -> None:
    """Compare a state dict with ``expected`` (name → shape); raise ``ModelFileInvalid`` listing
    missing keys, unexpected keys and shape mismatches (a few of each)."""
    allow = tuple(allow_unexpected)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected and not k.startswith(allow)]
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs expected {tuple(expected[k])}"
             for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: " + ", ".join(items[:5]) + more)
    raise invalid_error(path, entry, "its weights do not match the expected layout — " + "; ".join(parts))


def invalid_error(path: str | os.PathLike, entry: ModelFile | None, why: str) -> ModelFileInvalid:
    fix = (f"Fix: download it again from {entry.url} (it may be truncated or a different model) "
           f"and replace {path}." if entry else f"Fix: replace {path} with an intact copy.")
    title = entry.title if entry else "model"
    return ModelFileInvalid(f"The {title} file {path} is not usable: {why}.\n{fix}")


def open_onnx(path: str | os.PathLike, entry: ModelFile | None = None, providers: list[str] | None = None):
    """An onnxruntime session for ``path``, checked against the catalog's signature."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelFileMissing(f"ONNX file {path} does not exist")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        raise invalid_error(path, entry, f"onnxruntime cannot open it ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if entry is not None:
        check_onnx_signature(sess, path, entry)
    return sess


def _dims_match(found, spec) -> bool:
    if len(found) != len(spec):
        return False
    for f, s in zip(found, spec):
        if s is None or not isinstance(f, int):  # dynamic axis on either side
            continue
        if f != s:
            return False
    return True


def check_onnx_signature(sess, path: Path, entry: ModelFile) -> None:
    ins = [(i.name, tuple(i.shape)) for i in sess.get_inputs()]
    outs = [(o.name, tuple(o.shape)) for o in sess.get_outputs()]
    ok = (len(ins) == len(entry.onnx_inputs) and len(outs) == len(entry.onnx_outputs)
          and all(_dims_match(s, spec.shape) for (_, s), spec in zip(ins, entry.onnx_inputs))
          and all(_dims_match(s, spec.shape) for (_, s), spec in zip(outs, entry.onnx_outputs)))
    if not ok:
        def fmt(items):
            return ", ".join(f"'{n}' {list(s)}" for n, s in items)
        raise invalid_error(
            path, entry,
            f"it does not look like the {entry.title}: expected inputs "
            f"{fmt([(s.name, s.shape) for s in entry.onnx_inputs])} and outputs "
            f"{fmt([(s.name, s.shape) for s in entry.onnx_outputs])}, found inputs {fmt(ins)} and "
            f"outputs {fmt(outs)} (another model saved under this name?)")


# ------------------------------------------------------- body model files (.pkl / .npz)

class _PickledStandIn:
    """Records the state of an object of a known third-party class (chumpy arrays, scipy sparse
    matrices) instead of creating it: no third-party code runs while reading."""

    _pickled_as = ""

    def __setstate__(self, state):
        object.__setattr__(self, "state", state)


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (_PickledStandIn,), {"_pickled_as": f"{module}.{name}"})
    return _STAND_INS[key]


def _safe_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` restricted to our stand-ins (Python 2 pickles use it for
    new-style objects)."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledStandIn)) or base is not object:
        raise _pickle_refusal(f"copy_reg._reconstructor({cls!r}, {base!r})")
    return object.__new__(cls)


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes (latin-1 only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _pickle_refusal(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def _pickle_refusal(what: str):
    import pickle

    return pickle.UnpicklingError(f"refused to load {what}: not something a body model file contains")


def _safe_pickle_globals() -> dict:
    import numpy as np

    try:
        from numpy._core import multiarray as _ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as _ma
    allowed = {
        ("copy_reg", "_reconstructor"): _safe_reconstructor,
        ("copyreg", "_reconstructor"): _safe_reconstructor,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _ma._reconstruct
        allowed[(mod, "scalar")] = _ma.scalar
    for mod in ("__builtin__", "builtins"):
        for name, obj in (("object", object), ("set", set), ("frozenset", frozenset), ("dict", dict),
                          ("list", list), ("tuple", tuple)):
            allowed[(mod, name)] = obj
    return allowed


def _to_plain(value):
    """A stand-in turned into a NumPy array (chumpy ``Ch`` → its ``x``; scipy csc/csr/coo →
    dense); containers recursively; anything else unchanged."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if not isinstance(value, _PickledStandIn):
        return value
    state = getattr(value, "state", None) or {}
    kind = value._pickled_as
    if kind.startswith("chumpy"):
        if isinstance(state, dict) and isinstance(state.get("x"), np.ndarray):  # Ch: a plain array
            return np.asarray(state["x"])
        if kind.endswith(".Select") and isinstance(state, dict) and "a" in state and "idxs" in state:
            # reordering.Select (MANO/SMPL-H shapedirs): a.ravel()[idxs].reshape(preferred_shape)
            out = np.asarray(_to_plain(state["a"])).ravel()[np.asarray(state["idxs"])]
            shape = state.get("preferred_shape")
            return out.reshape(tuple(shape)) if shape is not None else out
        raise ValueError(f"it holds a chumpy expression ({kind}) rather than a plain array")
    if kind.startswith("scipy.sparse"):
        shape = tuple(state.get("_shape") or state.get("shape") or ())
        fmt = kind.rsplit(".", 1)[-1][:3]
        dense = np.zeros(shape, dtype=np.asarray(state.get("data", np.zeros(0))).dtype)
        data = np.asarray(state.get("data"))
        if fmt in ("csc", "csr"):
            indptr, indices = np.asarray(state["indptr"]), np.asarray(state["indices"])
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if fmt == "csc" else (major, indices)
        elif fmt == "coo":
            rows, cols = np.asarray(state["row"]), np.asarray(state["col"])
        else:
            raise ValueError(f"it holds a sparse matrix of an unsupported format ({kind})")
        np.add.at(dense, (rows, cols), data)
        return dense
    raise ValueError(f"it holds an object of class {kind}")


def load_pickle_arrays(path: str | os.PathLike, entry: ModelFile | None = None) -> dict:
    """The dictionary of arrays in a body model ``.pkl`` (the official SMPL/SMPL-X files),
    without executing pickled code and without ``chumpy``.

    Only NumPy arrays/dtypes, builtin containers, and stand-ins for chumpy (``chumpy.*``) and
    scipy sparse matrices (``scipy.sparse.*``) may appear; chumpy arrays become their value
    ``x`` (``Select`` gathers are evaluated), sparse matrices dense arrays. Anything else
    (``os.system``, ``builtins.eval`` ...) is refused: ``ModelFileInvalid``."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise ModelFileMissing(f"{entry.title if entry else 'model'} file {path} does not exist")
    allowed = _safe_pickle_globals()

    class _Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            if module == "chumpy" or module.startswith("chumpy."):
                return _stand_in(module, name)
            if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
                return _stand_in(module, name)
            raise _pickle_refusal(f"{module}.{name}")

    try:
        with open(path, "rb") as f:
            data = _Restricted(f, encoding="latin1").load()
        if not isinstance(data, dict):
            raise ValueError(f"it holds a {type(data).__name__}, not a dictionary of arrays")
        return _to_plain(data)
    except pickle.UnpicklingError as exc:
        raise invalid_error(path, entry, f"it could not be read safely ({exc})") from exc
    except ValueError as exc:
        raise invalid_error(path, entry, str(exc)) from exc
    except Exception as exc:  # truncated or corrupt pickles fail in many ways (EOFError, ...)
        raise invalid_error(path, entry, f"it could not be read ({type(exc).__name__}: {str(exc)[:200]})") from exc


def load_npz_arrays(path: str | os.PathLike, entry: ModelFile | None = None) -> dict:
    """The plain arrays of an ``.npz`` file, read with ``allow_pickle=False``. Entries stored
    as pickled objects (e.g. SMPL-X's ``joint2num``) are skipped, never unpickled."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ModelFileMissing(f"{entry.title if entry else 'model'} file {path} does not exist")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError:  # an object array: would need pickle
                    continue
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise invalid_error(path, entry, f"it could not be read ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return out
