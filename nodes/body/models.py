"""Loading body models: Anny (embedded, offline) or SMPL / SMPL-X from the user's files, each
loaded once per process and device through the shared cache (``models_loader.cache.CACHE``).

    model = load_body_model("anny")                       # default, no files needed
    model = load_body_model("smpl", variant="female")     # models/smpl/basicmodel_f_lbs_...pkl
    model = load_body_model("smplx", with_fingers=False)  # models/smplx/SMPLX_NEUTRAL.npz

Errors: a missing SMPL/SMPL-X file raises ``files.ModelFileMissing`` naming the accepted file
names, the folders searched and where to register and download; an unusable file (truncated,
another model, e.g. an SMPL-X file given for SMPL) raises ``files.ModelFileInvalid`` saying what
is wrong. Anny missing from the environment raises ``ImportError`` with the install command.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from ...models_loader import catalog, files
from ...models_loader.cache import CACHE, LoadedModel, torch_device
from .base import BodyModel

log = logging.getLogger(__name__)

BODY_MODELS = ("anny", "smpl", "smplx")
VARIANTS = ("neutral", "male", "female")
ANNY_REQUIREMENT = "anny==0.6.2"


def load_body_model(name: str = "anny", variant: str = "neutral", device=None, dtype: torch.dtype = torch.float32,
                    with_fingers: bool = True, file_name: str | None = None) -> BodyModel:
    """A loaded body model, shared by every caller with the same arguments.

    Args:
        name: ``"anny"``, ``"smpl"`` or ``"smplx"``.
        variant: SMPL/SMPL-X gender, ``"neutral"``, ``"male"`` or ``"female"`` (Anny: ignored,
            gender is a shape parameter).
        device: where ``forward`` computes; default: ComfyUI's device, else CUDA when available.
        dtype: float32 (default) or float64.
        with_fingers: articulate the finger joints (Anny, SMPL-X); off = faster body-only fits.
        file_name: a file the user picked instead of the catalog's names (SMPL/SMPL-X).
    """
    name = name.lower().replace("-", "")
    if name not in BODY_MODELS:
        raise ValueError(f"unknown body model {name!r}; choose one of {', '.join(BODY_MODELS)}")
    device = torch.device(device) if device is not None else torch_device()
    if name == "anny":
        return _load_anny(device, dtype, with_fingers)
    variant = variant.lower()
    if variant not in VARIANTS:
        raise ValueError(f"unknown {name} variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return _load_smpl(name, variant, device, dtype, with_fingers, file_name)


# ------------------------------------------------------------------------------------ Anny

def _build_anny():
    try:
        import anny
    except ImportError as exc:
        raise ImportError(f"The Anny body model needs the 'anny' package: pip install {ANNY_REQUIREMENT} "
                          f"(Apache-2.0 code, CC0 body data; no download at run time)") from exc
    # The first construction builds Anny's model cache (~3 minutes on a laptop CPU, once).
    log.info("Marionette: loading the Anny body model (the first run builds its cache, ~3 minutes)")
    return anny.Anny(skinning_method="lbs")  # plain torch LBS: same vertices, no Warp banners


def anny_core(device=None, dtype: torch.dtype = torch.float32):
    """The shared ``anny.Anny`` module on ``device`` in ``dtype``. Built once per process (on
    the CPU, float64, as Anny computes), copied per device and dtype."""
    device = torch.device(device) if device is not None else torch_device()
    base = CACHE.get(("body", "anny-core", "cpu", str(torch.float64)),
                     lambda: LoadedModel(key=(), model=_build_anny(), device=torch.device("cpu"),
                                         dtype=torch.float64))
    if device.type == "cpu" and dtype == torch.float64:
        return base.model

    def load() -> LoadedModel:
        core = copy.deepcopy(base.model).to(device=device, dtype=dtype)
        return LoadedModel(key=(), model=core, device=device, dtype=dtype)

    return CACHE.get(("body", "anny-core", str(device), str(dtype)), load).model


def _load_anny(device, dtype, with_fingers) -> BodyModel:
    from .anny_model import AnnyBody

    def load() -> LoadedModel:
        return LoadedModel(key=(), model=AnnyBody(anny_core(device, dtype), with_fingers=with_fingers),
                           device=device, dtype=dtype)

    return CACHE.get(("body", "anny", str(device), str(dtype), bool(with_fingers)), load).model


# -------------------------------------------------------------------------------- SMPL(-X)

def _load_smpl(name, variant, device, dtype, with_fingers, file_name) -> BodyModel:
    from .smpl_model import SMPLBody, read_model_file

    entry = catalog.model(f"{name}_{variant}")
    try:
        path = files.find(entry, file_name)
    except files.ModelFileMissing as exc:
        raise files.ModelFileMissing(
            f"{exc}\nAccepted file names: {', '.join(entry.names)}. The {entry.title} is under a "
            f"non-commercial licence: register at {entry.url}, download it yourself (Marionette "
            f"never bundles or downloads it), or use the built-in Anny body instead.") from None
    path = Path(path)
    st = path.stat()
    key = ("body", name, variant, str(path.resolve()), st.st_size, st.st_mtime_ns, str(device), str(dtype),
           bool(with_fingers))

    def load() -> LoadedModel:
        arrays = read_model_file(path, name, entry)
        model = SMPLBody(arrays, family=name, variant=variant, with_fingers=with_fingers, device=device,
                         dtype=dtype)
        return LoadedModel(key=(), model=model, device=device, dtype=dtype)

    return CACHE.get(key, load).model
