"""Champ's parametric shape alignment (reference/champ_spec.md §8.1): the driving video's motion
performed by the reference image's body.

``align_shape`` gives every driving frame the reference's shape parameters and recomputes the
mesh, and places the result either where the driving camera saw it or, with Champ's view
transfer, where the reference image shows its person.
"""
from __future__ import annotations

import numpy as np
import torch

from ..types import BodySequence
from .base import BodyModel
from .fit_init import local_quadratic
from .geometry import aa_to_matrix, matrix_to_aa, project

PLACEMENTS = ("keep driving camera", "match reference")
_CHUNK = 64  # frames per forward pass


def _check(reference: BodySequence, driving: BodySequence, model: BodyModel, placement: str, smooth: float):
    for name, seq in (("reference", reference), ("driving", driving)):
        if not isinstance(seq, BodySequence):
            raise ValueError(f"{name} must be a BodySequence (BODY_SEQUENCE), got {type(seq).__name__}.")
        if len(seq) == 0:
            raise ValueError(f"{name} body sequence has no frames.")
        if seq.model != model.name:
            raise ValueError(f"the {name} body was fitted with '{seq.model}' but the body model given is "
                             f"'{model.name}': fit both bodies and align them with the same Load Body Model.")
        if np.shape(seq.shape)[-1] != model.shape_dim or np.shape(seq.body_pose)[1:] != (model.num_joints, 3):
            raise ValueError(f"the {name} body's parameters ({np.shape(seq.shape)[-1]} shape values, "
                             f"{np.shape(seq.body_pose)[1]} joints) do not fit the loaded {model.name} "
                             f"({model.shape_dim} shape values, {model.num_joints} joints): use the same Load Body "
                             f"Model (same settings, e.g. with_fingers) as for the fits.")
    if len(reference) != 1:
        raise ValueError(f"reference must be a single frame (the reference image's body), got {len(reference)} "
                         f"frames: fit the reference image on its own.")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}.")
    if not 0.0 <= float(smooth) <= 1.0:
        raise ValueError(f"smooth must be between 0 (off) and 1 (strongest), got {smooth}.")


def _smooth_motion(pose: np.ndarray, R: np.ndarray, transl: np.ndarray, smooth: float):
    """Low-pass the driving motion (``local_quadratic``, σ = 4 frames at ``smooth`` = 1), as
    Champ's one Blender "Smooth Keys" pass does; rotations are smoothed as matrices and brought
    back to the nearest rotation."""
    T = pose.shape[0]
    sigma = 4.0 * float(smooth)
    if sigma <= 0 or T < 5:
        return pose, R, transl
    ones = np.ones((T, 1))
    pose, _ = local_quadratic(pose.reshape(T, -1, 1), np.ones((T, pose[0].size)), sigma)
    Rs, _ = local_quadratic(R.reshape(T, 1, 9), ones, sigma)
    U, _, Vt = np.linalg.svd(Rs.reshape(T, 3, 3))
    D = np.ones((T, 3))
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    transl, _ = local_quadratic(transl[:, None], ones, sigma)
    return pose.reshape(T, -1, 3), (U * D[:, None, :]) @ Vt, transl[:, 0]


def align_shape(reference: BodySequence, driving: BodySequence, model: BodyModel,
                placement: str = "keep driving camera", smooth: float = 0.0) -> BodySequence:
    """The driving motion with the reference's body shape (Champ's shape transfer).

    Args:
        reference: the reference image's fitted body (one frame).
        driving: the driving video's fitted bodies.
        model: the body model both were fitted with (vertices are recomputed).
        placement: ``"keep driving camera"``: each frame where the driving video had it, seen
            by the driving camera, output size = the driving frames' (Champ's default). ``"match
            reference"``: Champ's view transfer: the body starts where, as large as and turned as
            the reference image's person, seen by the reference camera; the driving motion is
            kept relative to its first frame: its turns, and its displacements scaled by the
            ratio of the two starting depths (so the body crosses the frame as the driving
            person did); output size = the reference image's.
        smooth: 0 (off) .. 1: temporal smoothing of the driving motion before the transfer.

    Returns:
        A ``BodySequence`` with the driving joint angles, the reference shape, new vertices and
        projected keypoints. ``fit_error`` is NaN (this body was not fitted to keypoints); the
        driving fit's errors are kept in ``extras["driving_fit_error"]``.
    """
    _check(reference, driving, model, placement, smooth)
    T = len(driving)
    pose = np.asarray(driving.body_pose, np.float64)
    R = aa_to_matrix(torch.as_tensor(np.asarray(driving.global_orient, np.float64))).numpy()
    transl = np.asarray(driving.transl, np.float64)
    pose, R, transl = _smooth_motion(pose, R, transl, smooth)
    shape = np.asarray(reference.shape, np.float64).reshape(-1)
    if placement == "match reference":
        R_ref = aa_to_matrix(torch.as_tensor(np.asarray(reference.global_orient[0], np.float64))).numpy()
        scale = float(reference.transl[0][2]) / max(float(transl[0, 2]), 1e-6)
        # motion relative to the first frame, expressed in the body's own frame, replayed from
        # the reference body's placement
        to_ref = R_ref @ R[0].T
        R = to_ref[None] @ R
        transl = np.asarray(reference.transl[0], np.float64)[None] + scale * (transl - transl[:1]) @ to_ref.T
        K = np.repeat(np.asarray(reference.K[0], np.float64)[None], T, 0)
        width, height = int(reference.width), int(reference.height)
    else:
        K = np.asarray(driving.K, np.float64)
        width, height = int(driving.width), int(driving.height)
    orient = matrix_to_aa(torch.as_tensor(R)).numpy()

    dev, dt = model.device, model.dtype
    verts, kp2 = [], []
    shape_t = torch.as_tensor(shape, dtype=dt, device=dev)
    with torch.no_grad():
        for a in range(0, T, _CHUNK):
            b = min(a + _CHUNK, T)
            out = model(shape_t, torch.as_tensor(pose[a:b], dtype=dt, device=dev),
                        torch.as_tensor(orient[a:b], dtype=dt, device=dev),
                        torch.as_tensor(transl[a:b], dtype=dt, device=dev))
            verts.append(out.vertices.float().cpu().numpy())
            kp2.append(project(out.keypoints, torch.as_tensor(K[a:b], dtype=dt, device=dev)).double().cpu().numpy())
    kp2 = np.concatenate(kp2)
    kp2[:, ~np.asarray(model.keypoint_mask, bool)] = np.nan
    extras = {"driving_fit_error": np.asarray(driving.fit_error, np.float32), "placement": placement}
    return BodySequence(
        model=model.name, variant=model.variant, shape=shape.astype(np.float32),
        body_pose=pose.astype(np.float32), global_orient=orient.astype(np.float32),
        transl=transl.astype(np.float32), K=K.astype(np.float32), width=width, height=height,
        vertices=np.concatenate(verts), faces=np.asarray(model.faces).astype(np.int32),
        part_labels=np.asarray(model.part_labels).astype(np.int64), keypoints2d=kp2.astype(np.float32),
        fit_error=np.full(T, np.nan, np.float32), shape_names=tuple(model.shape_names),
        joint_names=tuple(model.joint_names), extras=extras,
    )
