"""Champ's parametric shape alignment: the driving video's poses with the reference person's
body shape (champ_spec.md §8.1: every driving frame gets the reference's shape parameters; with
view transfer the body is also placed where the reference person stands).
"""
from __future__ import annotations

import numpy as np
import torch

from ..types import BodySequence
from .base import BodyModel
from .geometry import project

PLACEMENTS = ("keep driving camera", "match reference")


def check_inputs(reference: BodySequence, driving: BodySequence, model: BodyModel, placement: str,
                 smooth: float) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
    if not 0.0 <= smooth <= 1.0:
        raise ValueError(f"smooth must be between 0 and 1, got {smooth}")
    if len(reference) < 1 or len(driving) < 1:
        raise ValueError("align needs a fitted reference (one frame) and at least one fitted driving frame")
    for name, seq in (("reference", reference), ("driving", driving)):
        if seq.model != model.name:
            raise ValueError(f"the {name} bodies were fitted with {seq.model!r} but the body model given is "
                             f"{model.name!r}: fit both with the same Load Body Model node.")
    if np.asarray(reference.shape).shape != np.asarray(driving.shape).shape:
        raise ValueError(f"reference and driving shapes differ in size ({np.asarray(reference.shape).shape} vs "
                         f"{np.asarray(driving.shape).shape}): fit both with the same body model settings.")
    if np.asarray(driving.body_pose).shape[1:] != (model.num_joints, 3):
        raise ValueError(f"the driving poses have {np.asarray(driving.body_pose).shape[1]} joints but the body model "
                         f"has {model.num_joints} (another with_fingers setting?): use the same Load Body Model node.")


def _smooth(x: np.ndarray, strength: float) -> np.ndarray:
    """Gaussian smoothing over frames (axis 0); strength 1 = sigma of 3 frames. Edges are
    padded by reflection so the first and last frames do not drift toward zero."""
    if strength <= 0 or len(x) < 3:
        return x
    sigma = 3.0 * strength
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="reflect" if len(x) > r else "edge")
    return np.stack([np.tensordot(k, pad[t:t + 2 * r + 1], axes=(0, 0)) for t in range(len(x))]).astype(x.dtype)


def align_shape(reference: BodySequence, driving: BodySequence, model: BodyModel,
                placement: str = "keep driving camera", smooth: float = 0.0,
                chunk_frames: int = 120) -> BodySequence:
    """Driving poses with the reference's shape.

    Args:
        reference: fitted reference (its first frame is used).
        driving: fitted driving video.
        model: the body model both were fitted with (recomputes the vertices).
        placement: ``"keep driving camera"`` keeps the driving camera and the body's path through
            it; ``"match reference"`` (Champ's view transfer) uses the reference's camera and image
            size and starts the body where the reference person stands, keeping the driving motion
            relative to its first frame (scaled by the depth ratio, so it covers the same part of
            the picture).
        smooth: extra temporal smoothing of pose, orientation and path (0 none … 1 strong).
        chunk_frames: frames per forward pass (bounded memory on long videos).

    Returns:
        A ``BodySequence`` with ``reference.shape``, recomputed camera-space vertices and projected
        keypoints; ``fit_error`` is the driving fit's.
    """
    check_inputs(reference, driving, model, placement, smooth)
    T = len(driving)
    pose = _smooth(np.asarray(driving.body_pose, np.float32), smooth)
    orient = _smooth(np.asarray(driving.global_orient, np.float32), smooth)
    transl = _smooth(np.asarray(driving.transl, np.float32), smooth)
    K = np.asarray(driving.K, np.float32).reshape(-1, 3, 3)
    K = np.repeat(K, T, 0) if len(K) == 1 else K
    width, height = driving.width, driving.height
    if placement == "match reference":
        ref_t = np.asarray(reference.transl, np.float32)[0]
        ratio = float(ref_t[2] / max(transl[0, 2], 1e-6))
        transl = ref_t[None] + (transl - transl[:1]) * ratio
        K = np.repeat(np.asarray(reference.K, np.float32).reshape(-1, 3, 3)[:1], T, 0)
        width, height = reference.width, reference.height

    dev, dt = model.device, model.dtype
    shape = torch.as_tensor(np.asarray(reference.shape), device=dev, dtype=dt)
    verts, k2d = [], []
    with torch.no_grad():
        for s in range(0, T, chunk_frames):
            e = min(T, s + chunk_frames)
            out = model(shape, torch.as_tensor(pose[s:e], device=dev, dtype=dt),
                        torch.as_tensor(orient[s:e], device=dev, dtype=dt),
                        torch.as_tensor(transl[s:e], device=dev, dtype=dt))
            verts.append(out.vertices.float().cpu().numpy())
            k2d.append(project(out.keypoints, torch.as_tensor(K[s:e], device=dev, dtype=dt)).float().cpu().numpy())
    keypoints2d = np.concatenate(k2d)
    keypoints2d[:, ~np.asarray(model.keypoint_mask, bool)] = np.nan
    extras = {k: v for k, v in driving.extras.items() if k not in ("silhouette_iou",)}
    extras["aligned_to_reference"] = np.asarray(reference.shape, np.float32)
    return BodySequence(
        model=model.name, variant=model.variant, shape=np.asarray(reference.shape, np.float32),
        body_pose=pose, global_orient=orient, transl=transl.astype(np.float32), K=K.astype(np.float32),
        width=int(width), height=int(height), vertices=np.concatenate(verts), faces=np.asarray(driving.faces),
        part_labels=np.asarray(driving.part_labels), keypoints2d=keypoints2d.astype(np.float32),
        fit_error=np.asarray(driving.fit_error, np.float32), shape_names=tuple(driving.shape_names),
        joint_names=tuple(driving.joint_names), extras=extras)
