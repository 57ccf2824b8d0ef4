"""Fitting a parametric body to a person's keypoints (and, optionally, masks) over a whole
sequence: ``fit_sequence``.

One optimisation for the whole clip: one shape for the person, per-frame body pose, global
orientation and root translation, seen by a fixed pinhole camera (principal point at the image
centre, focal length per ``FitConfig.focal``). The energy (SMPLify-style, Bogo et al. 2016,
reference/champ_spec.md §12, with no licensed prior):

* confidence²-weighted Geman–McClure reprojection of every DWPose-134 point the model has
  (body 1; feet, hands and face with their own weights), against keypoint tracks denoised by a
  local-quadratic temporal filter,
* a pose prior toward the model's neutral pose, per joint scaled by its range (stiff joints are
  held harder) and 20× stronger for joints whose keypoints are unseen (legs out of frame stay
  standing), plus the joint limits (``model.pose_limits``) as a soft quadratic barrier,
* temporal coupling of the joint angles (30× stronger where a joint's keypoints are missing in
  a frame, so a limb's dropout is bridged from its neighbours),
* with masks, a silhouette term (``silhouette.py``: a robust chamfer between the projected
  vertices and the mask's outline on precomputed distance fields) that fits the outline,
* a shape prior toward the model's average body.

Stages (``fit_solver.Fitter``): (1) initialisation from the torso (``fit_init.py``: depth from
the torso's pixel size, 8 headings per frame, a Viterbi choice over the sequence); (2) pose:
Adam on pose, orientation and camera-space position of all frames at once, the robustifier
annealed from wide to tight; (3) repair: frames stuck in a poor local minimum restart from a
better-fitting neighbour; (4) shape + pose: the shape joins, through the model linearised in
the shape (finite differences, refreshed every few steps; a shape change that grows the body
also moves it away, so that size never trades against depth); (5) with masks, the same with the
silhouette term; (6) a local-quadratic low-pass of the fitted motion, kept only where it does
not worsen a frame (frames without any torso point get their placement from their
neighbours). Batched torch throughout: CPU and CUDA alike.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..types import BodySequence
from . import fit_terms as terms
from .base import BodyModel
from .fit_solver import Fitter
from .geometry import FOCAL_MODES, default_focal, project
from .silhouette import mask_iou, render_silhouettes

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Settings of ``fit_sequence``. Energies are in normalised pixels² (pixels divided by
    ``max(W, H) / 1000``), so the weights hold at any resolution.

    Camera:
        focal: ``"diagonal"`` (default: ``sqrt(W² + H²)``, a ~53° diagonal field of view like
            phone and consumer video, the assumption of CLIFF/WHAM/TRAM), ``"hmr2"``
            (``5000/256 · max(W, H)``, the near-orthographic lens of HMR2.0 and Champ's data), or
            a number of pixels. ``fit_sequence``'s ``focal`` argument overrides it.
    Iterations (Adam steps over all frames at once):
        init_iters: rigid torso fit per heading; body_iters: pose stage; repair_rounds /
        repair_iters: restarts of badly fitting frames from good neighbours; shape_iters:
        pose + shape stage; silhouette_iters: pose + shape + silhouette stage (with masks);
        lr: pose learning rate (radians per step; orientation 0.7×; image position 0.1× and
        log-depth 0.5×), cosine-decayed to 10% within each stage; shape_lr; jacobian_every:
        steps between relinearisations of the shape.
    Data:
        min_confidence: points below are ignored (DWPose's 0.3); sigma / sigma_final:
        Geman–McClure scale at the start / end of the pose stage (wide first to pull far limbs
        in, tighter to shrug off outliers); feet_weight, hand_weight, face_weight: per point
        (body points weigh 1); keypoint_smoothing: σ in frames of the local-quadratic
        denoising of keypoint tracks before fitting (0 = off; ``fit_init.smooth_keypoints``).
    Priors and smoothness:
        pose_prior: weight of ``Σ (θ / half-range)²`` toward the neutral pose; unseen_prior: its
        multiplier for a joint none of whose keypoints (those it moves > 8 cm per radian) is
        seen within 3 frames (legs out of frame stay neutral instead of drifting);
        unseen_velocity: pose_velocity's multiplier for a joint with none of its keypoints in
        the frame (a limb's dropout is bridged from the frames around it); limit_weight: soft
        joint-limit barrier (per radian² outside); shape_prior: weight of the squared distance
        to the average body in units of shape_scale; shape_step: finite-difference step;
        pose_velocity: joint angle change per frame (radians²); motion_smoothing: σ in frames
        of the final low-pass of the fitted motion (0 = off; a frame keeps its own fit where
        smoothing would worsen it); smooth_velocity / smooth_acceleration / smooth_sigma:
        robust penalties on the 3D keypoints' velocity and acceleration (px at the body's
        depth), off by default: they couple all frames stiffly, which Adam handles poorly, and
        the two filters above remove jitter better.
    Silhouette (with masks):
        silhouette_weight, silhouette_sigma (normalised px), silhouette_points (vertices used),
        contour_points (outline points per frame).
    Reporting:
        bad_frame_px: frames whose mean body-keypoint error exceeds this and 3× the median
        are reported as badly fitted (a warning and ``extras["bad_frames"]``).
    """

    focal: str | float = "diagonal"
    init_iters: int = 60
    body_iters: int = 160
    repair_rounds: int = 3
    repair_iters: int = 30
    shape_iters: int = 120
    silhouette_iters: int = 60
    lr: float = 0.03
    shape_lr: float = 0.01
    jacobian_every: int = 20
    min_confidence: float = 0.3
    sigma: float = 150.0
    sigma_final: float = 60.0
    feet_weight: float = 0.8
    hand_weight: float = 0.25
    face_weight: float = 0.1
    keypoint_smoothing: float = 2.0
    pose_prior: float = 0.5
    unseen_prior: float = 20.0
    unseen_velocity: float = 30.0
    limit_weight: float = 100.0
    shape_prior: float = 5.0
    shape_scale: float = 0.25
    shape_step: float = 0.05
    smooth_velocity: float = 0.0
    smooth_acceleration: float = 0.0
    smooth_sigma: float = 15.0
    pose_velocity: float = 2.0
    motion_smoothing: float = 2.0
    silhouette_weight: float = 2.0
    silhouette_sigma: float = 30.0
    silhouette_points: int = 2000
    contour_points: int = 256
    bad_frame_px: float = 15.0


ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def _as_numpy(x, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
        raise ValueError(f"{name}: expected an array, got {type(x).__name__} ({exc}).") from None


def check_inputs(model: BodyModel, keypoints, width: int, height: int, masks=None):
    """Validate and normalise ``fit_sequence``'s inputs.

    Returns ``(keypoints [T, 134, 3] float64, masks [T, H, W] bool or None)``. Raises
    ``ValueError`` naming the problem."""
    if not isinstance(model, BodyModel):
        raise ValueError(f"model must be a loaded BodyModel (BODY_MODEL), got {type(model).__name__}.")
    for name, v in (("width", width), ("height", height)):
        if not float(v).is_integer() or int(v) <= 0:
            raise ValueError(f"{name} must be a positive whole number of pixels, got {v!r}.")
    width, height = int(width), int(height)
    kps = _as_numpy(keypoints, "keypoints").astype(np.float64)
    if kps.ndim == 4:
        if kps.shape[1] != 1:
            raise ValueError(f"keypoints hold {kps.shape[1]} people per frame ({list(kps.shape)}); the fitter "
                             f"fits one person: pick one (e.g. keypoints[:, i]) first.")
        kps = kps[:, 0]
    if kps.ndim != 3 or kps.shape[1:] != (134, 3):
        raise ValueError(f"keypoints must be [frames, 134, 3] (x, y in pixels, score; DWPose-134 order), "
                         f"got shape {list(kps.shape)}.")
    if kps.shape[0] == 0:
        raise ValueError("keypoints are empty (0 frames): nothing to fit.")
    kps = np.where(np.isfinite(kps), kps, 0.0)
    present = (kps[..., 2] > 0) & np.asarray(model.keypoint_mask, bool)[None]
    if not present.any():
        raise ValueError(f"no person in any of the {kps.shape[0]} frames: every keypoint the body model uses "
                         f"has score 0. Check the pose estimation (is a person detected?).")
    xy = kps[..., :2][present]
    if xy.size and ((xy[:, 0] > 4 * width).any() or (xy[:, 1] > 4 * height).any()):
        raise ValueError(f"keypoints reach ({xy[:, 0].max():.0f}, {xy[:, 1].max():.0f}) px, far outside the "
                         f"{width}x{height} image: the image size does not match the keypoints' canvas.")
    if masks is not None:
        m = _as_numpy(masks, "masks")
        if m.ndim == 4 and m.shape[-1] == 1:
            m = m[..., 0]
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise ValueError(f"masks must be [frames, height, width], got shape {list(m.shape)}.")
        if m.shape[0] != kps.shape[0]:
            raise ValueError(f"masks have {m.shape[0]} frames but the keypoints have {kps.shape[0]}: give one "
                             f"mask per frame (or none).")
        if m.shape[1:] != (height, width):
            raise ValueError(f"masks are {m.shape[2]}x{m.shape[1]} (WxH) but the image is {width}x{height}: "
                             f"resize the masks to the frames the keypoints were taken on.")
        masks = m > 0.5 if m.dtype.kind == "f" else m.astype(bool)
    return kps, masks


def _focal(config: FitConfig, focal, width: int, height: int) -> float:
    f = config.focal if focal is None else focal
    if isinstance(f, str):
        if f not in FOCAL_MODES:
            raise ValueError(f"focal must be a number of pixels or one of {FOCAL_MODES}, got {f!r}.")
        return default_focal(width, height, f)
    f = float(f)
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"focal must be a positive number of pixels, got {f!r}.")
    return f


def _result(fitter: Fitter) -> BodySequence:
    """The fitted sequence, its per-frame errors and the bad-frame report."""
    model, cfg = fitter.model, fitter.cfg
    with torch.no_grad():
        out = model(fitter.shape, fitter.pose, fitter.orient, fitter.transl)
        kp2 = project(out.keypoints, fitter.K).double().cpu().numpy()
    kmask = np.asarray(model.keypoint_mask, bool)
    kp2[:, ~kmask] = np.nan
    err = np.linalg.norm(kp2 - fitter.kps_np[..., :2], axis=-1)[:, terms.ERROR_POINTS]
    use = fitter.ok_np[:, terms.ERROR_POINTS]
    fit_error = np.array([err[t, use[t]].mean() if use[t].any() else np.nan for t in range(fitter.T)])
    finite = fit_error[np.isfinite(fit_error)]
    limit = max(cfg.bad_frame_px, 3.0 * float(np.median(finite))) if finite.size else cfg.bad_frame_px
    bad = np.flatnonzero(np.isfinite(fit_error) & (fit_error > limit))
    extras = {"bad_frames": bad.astype(np.int64), "focal": float(fitter.K_np[0, 0])}
    if bad.size:
        msg = (f"body fit: {bad.size} of {fitter.T} frames fit badly (mean body keypoint error > {limit:.1f} px): "
               f"frames {', '.join(map(str, bad[:20]))}{' ...' if bad.size > 20 else ''}. Check their keypoints "
               f"(a wrong person, swapped left/right) or give masks.")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
    verts = out.vertices.float().cpu().numpy()
    if fitter.masks is not None:
        sil = render_silhouettes(verts, model.faces, fitter.K_np, fitter.height, fitter.width)
        extras["silhouette_iou"] = mask_iou(sil, fitter.masks).astype(np.float32)
    return BodySequence(
        model=model.name, variant=model.variant,
        shape=fitter.shape.float().cpu().numpy(),
        body_pose=fitter.pose.float().cpu().numpy(),
        global_orient=fitter.orient.float().cpu().numpy(),
        transl=fitter.transl.float().cpu().numpy(),
        K=np.repeat(fitter.K_np[None], fitter.T, 0).astype(np.float32),
        width=fitter.width, height=fitter.height,
        vertices=verts, faces=np.asarray(model.faces).astype(np.int32),
        part_labels=np.asarray(model.part_labels).astype(np.int64),
        keypoints2d=kp2.astype(np.float32), fit_error=fit_error.astype(np.float32),
        shape_names=tuple(model.shape_names), joint_names=tuple(model.joint_names), extras=extras,
    )


def fit_sequence(model: BodyModel, keypoints, width: int, height: int, masks=None, focal=None,
                 config: FitConfig | None = None, progress: ProgressFn | None = None) -> BodySequence:
    """Fit ``model`` to one person's keypoints over a whole sequence (or one image, T = 1).

    Args:
        model: a loaded ``BodyModel`` (Anny, SMPL, SMPL-X); its device and dtype are used.
        keypoints: ``[T, 134, 3]`` (or ``[T, 1, 134, 3]``) x, y in pixels and score, DWPose-134
            order (``keypoints.pose_keypoint_to_dense(...).keypoints[:, person]``), numpy or torch.
            Score 0 = missing.
        width, height: the frames' size in pixels.
        masks: optional ``[T, H, W]`` person masks (bool, or float > 0.5); adds the silhouette term.
        focal: focal length in pixels, or ``"diagonal"`` / ``"hmr2"``; default ``config.focal``.
        config: ``FitConfig``.
        progress: called as ``progress(done, total)`` after each optimisation step block; an
            exception it raises stops the fit (that is how a node cancels).

    Returns:
        ``BodySequence`` with camera-space vertices, intrinsics, the fitted 2D keypoints,
        ``fit_error`` (mean px over confident body and foot keypoints per frame, NaN for frames
        without any) and ``extras``: ``bad_frames`` (also warned about), ``focal``, and with
        masks ``silhouette_iou`` per frame.

    Raises:
        ValueError: malformed keypoints, masks of another frame count or size, no person in any
            frame, a bad focal length.
    """
    config = config or FitConfig()
    kps, masks = check_inputs(model, keypoints, width, height, masks)
    f = _focal(config, focal, int(width), int(height))
    c = config
    fitter = Fitter(model, kps, int(width), int(height), masks, f, c, progress)
    with torch.enable_grad():
        fitter.initialise()
        fitter.body_stage(c.body_iters, c.sigma, c.sigma_final, c.lr)
        fitter.repair(c.repair_rounds, c.repair_iters)
        fitter.body_stage(c.shape_iters, c.sigma_final, c.sigma_final, c.lr * 0.5, with_shape=True)
        if masks is not None:
            fitter.body_stage(c.silhouette_iters, c.sigma_final, c.sigma_final, c.lr * 0.3, with_shape=True,
                              with_sil=True)
    fitter.smooth_motion(c.motion_smoothing)
    fitter.progress.step(fitter.progress.total)
    return _result(fitter)
