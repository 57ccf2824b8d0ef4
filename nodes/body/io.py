"""BODY_SEQUENCE files: ``save_npz`` / ``load_npz``.

The ``.npz`` is meant to be read by any tool with plain NumPy (``np.load(path)``, no pickles),
so everything in it is a number or string array:

==================  ===============  ==========================================================
key                 shape / dtype    meaning
==================  ===============  ==========================================================
``format``          str              ``"marionette.body_sequence"`` (what this file is)
``format_version``  int64 scalar     ``FORMAT_VERSION``; readers refuse newer versions
``model``           str              body model name (``"anny"``, ``"smpl"``, ``"smplx"``)
``variant``         str              model variant (e.g. gender), may be empty
``image_size``      int64 [2]        (W, H) in pixels
``vertices``        float32 [T,V,3]  camera-space vertices, metres, OpenCV camera
                                     (x right, y down, z forward)
``faces``           int32 [F,3]      triangles (vertex indices)
``part_labels``     int32 [V]        SMPL 24-part label per vertex (Champ's semantic map)
``K``               float32 [T,3,3]  pinhole intrinsics per frame (pixels; pixel centres at
                                     integer coordinates)
``keypoints2d``     float32 [T,134,2] the fitted body's projected DWPose-134 keypoints in
                                     pixels, NaN where the model has no such point
``shape``           float32 [S]      the person's shape parameters (``shape_names``)
``body_pose``       float32 [T,J,3]  axis-angle per articulated joint (``joint_names``)
``global_orient``   float32 [T,3]    axis-angle of the whole body in camera space
``transl``          float32 [T,3]    body translation in camera space, metres
``fit_error``       float32 [T]      mean reprojection error of the fit, pixels (NaN: unfitted)
``shape_names``     str [S]          names of the shape parameters
``joint_names``     str [J]          names of the articulated joints
``extra__<name>``   any numeric/str  optional extra per-sequence data (``BodySequence.extras``)
==================  ===============  ==========================================================

``T`` frames, ``V`` vertices, ``F`` faces, ``S`` shape parameters, ``J`` joints.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..types import BodySequence

FORMAT = "marionette.body_sequence"
FORMAT_VERSION = 1
EXTRA_PREFIX = "extra__"

_REQUIRED = ("format", "format_version", "model", "variant", "image_size", "vertices", "faces",
             "part_labels", "K", "keypoints2d", "shape", "body_pose", "global_orient", "transl",
             "fit_error", "shape_names", "joint_names")


def _strings(values) -> np.ndarray:
    values = [str(v) for v in values]
    return np.asarray(values, dtype=np.str_) if values else np.zeros(0, dtype="<U1")


def check_body_sequence(seq: BodySequence, source: str = "body sequence") -> None:
    """Raise ``ValueError`` when the arrays of ``seq`` disagree in shape (frames, vertices...)."""
    if not isinstance(seq, BodySequence):
        raise ValueError(f"{source}: expected a BodySequence, got {type(seq).__name__}.")
    T = int(np.shape(seq.vertices)[0]) if np.ndim(seq.vertices) == 3 else -1
    if T < 1 or np.shape(seq.vertices)[2] != 3:
        raise ValueError(f"{source}: vertices must be [frames, vertices, 3] with at least one frame, "
                         f"got {list(np.shape(seq.vertices))}.")
    V = int(np.shape(seq.vertices)[1])
    expected = {
        "body_pose": (T, None, 3), "global_orient": (T, 3), "transl": (T, 3), "K": (T, 3, 3),
        "keypoints2d": (T, 134, 2), "fit_error": (T,), "faces": (None, 3), "part_labels": (V,),
        "shape": (None,),
    }
    for name, want in expected.items():
        got = np.shape(getattr(seq, name))
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            shape = ", ".join("any" if w is None else str(w) for w in want)
            raise ValueError(f"{source}: '{name}' has shape {list(got)}, expected [{shape}] "
                             f"({T} frames, {V} vertices).")
    faces = np.asarray(seq.faces)
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise ValueError(f"{source}: faces index vertices {faces.min()}..{faces.max()} but there are {V}.")
    if seq.shape_names and len(seq.shape_names) != np.shape(seq.shape)[0]:
        raise ValueError(f"{source}: {len(seq.shape_names)} shape_names for {np.shape(seq.shape)[0]} shape values.")
    if seq.joint_names and len(seq.joint_names) != np.shape(seq.body_pose)[1]:
        raise ValueError(f"{source}: {len(seq.joint_names)} joint_names for {np.shape(seq.body_pose)[1]} joints.")
    if int(seq.width) <= 0 or int(seq.height) <= 0:
        raise ValueError(f"{source}: image size must be positive, got {seq.width}x{seq.height}.")


def save_npz(seq: BodySequence, path: str | os.PathLike) -> Path:
    """Write ``seq`` to ``path`` (compressed ``.npz``, the layout in this module's docstring).

    ``path`` is used as given (no suffix is added); parent folders are created. Extras that
    are not numeric or string arrays are skipped. Returns the path written.
    """
    check_body_sequence(seq)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "format": np.asarray(FORMAT),
        "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
        "model": np.asarray(str(seq.model)),
        "variant": np.asarray(str(seq.variant or "")),
        "image_size": np.asarray([int(seq.width), int(seq.height)], dtype=np.int64),
        "vertices": np.asarray(seq.vertices, dtype=np.float32),
        "faces": np.asarray(seq.faces, dtype=np.int32),
        "part_labels": np.asarray(seq.part_labels, dtype=np.int32),
        "K": np.asarray(seq.K, dtype=np.float32),
        "keypoints2d": np.asarray(seq.keypoints2d, dtype=np.float32),
        "shape": np.asarray(seq.shape, dtype=np.float32),
        "body_pose": np.asarray(seq.body_pose, dtype=np.float32),
        "global_orient": np.asarray(seq.global_orient, dtype=np.float32),
        "transl": np.asarray(seq.transl, dtype=np.float32),
        "fit_error": np.asarray(seq.fit_error, dtype=np.float32),
        "shape_names": _strings(seq.shape_names),
        "joint_names": _strings(seq.joint_names),
    }
    for key, value in (seq.extras or {}).items():
        try:
            value = np.asarray(value)
        except Exception:  # noqa: BLE001 - unconvertible extras are documented as skipped
            continue
        if value.dtype.kind in "biufcU":
            arrays[EXTRA_PREFIX + str(key)] = value
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
    return path


def load_npz(path: str | os.PathLike) -> BodySequence:
    """Read a body sequence written by ``save_npz``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an .npz, not a Marionette body sequence, a newer format version than
            this Marionette reads, or inconsistent arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"body sequence file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path} is not a NumPy .npz file ({exc}); expected a body sequence saved by "
                         f"Marionette's 'Save Body Sequence'.") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single NumPy array, not a body sequence .npz.")
    with data:
        keys = set(data.files)
        if "format" not in keys or "format_version" not in keys:
            raise ValueError(f"{path} is an .npz but not a Marionette body sequence (it has keys "
                             f"{sorted(keys)[:10]}; expected 'format' = '{FORMAT}').")
        try:
            fmt = str(data["format"])
            version = int(data["format_version"])
        except ValueError:
            raise ValueError(f"{path}: unreadable 'format'/'format_version' entries.") from None
        if fmt != FORMAT:
            raise ValueError(f"{path} is a '{fmt}' file, not a Marionette body sequence ('{FORMAT}').")
        if version > FORMAT_VERSION:
            raise ValueError(f"{path} uses body sequence format version {version}; this Marionette reads "
                             f"up to version {FORMAT_VERSION}. Update Marionette to load it.")
        if version < 1:
            raise ValueError(f"{path}: invalid format_version {version}.")
        missing = [k for k in _REQUIRED if k not in keys]
        if missing:
            raise ValueError(f"{path} is missing {missing}; the file is damaged or was not written by "
                             f"save_npz.")
        W, H = (int(v) for v in data["image_size"])
        extras = {k[len(EXTRA_PREFIX):]: data[k] for k in data.files if k.startswith(EXTRA_PREFIX)}
        seq = BodySequence(
            model=str(data["model"]),
            variant=str(data["variant"]),
            shape=data["shape"].astype(np.float32),
            body_pose=data["body_pose"].astype(np.float32),
            global_orient=data["global_orient"].astype(np.float32),
            transl=data["transl"].astype(np.float32),
            K=data["K"].astype(np.float32),
            width=W,
            height=H,
            vertices=data["vertices"].astype(np.float32),
            faces=data["faces"].astype(np.int32),
            part_labels=data["part_labels"].astype(np.int64),
            keypoints2d=data["keypoints2d"].astype(np.float32),
            fit_error=data["fit_error"].astype(np.float32),
            shape_names=tuple(str(s) for s in data["shape_names"]),
            joint_names=tuple(str(s) for s in data["joint_names"]),
            extras=extras,
        )
    check_body_sequence(seq, source=str(path))
    return seq
