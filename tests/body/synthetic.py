"""A deterministic synthetic test set for body fitting, made with Anny: known shape, pose and
camera, keypoints in the comfyui_controlnet_aux JSON format, true silhouettes.

Clips (512×768 portrait frames, any frame count; motion is a function of the clip's phase):

``adult_turn``   average woman turning from the front to past profile (100°) and back, raising
                 and lowering her arms, bending the elbows and a knee.
``child_cross``  a child (~8 y) crossing the hands over the midline in front of the chest and
                 lifting one knee, then the other.
``heavy_pan``    a heavy older man walking in place, turning slightly, seen by a camera panning
                 ±5° (all clips look 5° down).
``half_body``    a muscular man seen from the head to the hips (legs out of frame), gesturing:
                 hands to the face, arms crossed, torso twisting and leaning.

Variants: ``clean`` (exact projections; only points out of frame or on the far side of the head
are missing), ``noisy`` (Gaussian noise σ = 3 px on each coordinate, 10% of the points dropped
at random, one 5-frame dropout of a whole limb every 20 frames, scores 0.5..1).

The camera's focal length is 0.9 × the image diagonal (830.7 px), deliberately not the
fitter's default (the full diagonal): the fitter must cope with not knowing it.

Usage::

    from synthetic import make_clip
    clip = make_clip(body, "adult_turn", frames=48, variant="noisy")
    clip.pose_keypoint      # POSE_KEYPOINT list (what a DWPose node would give)
    clip.masks              # [T, H, W] bool true silhouettes
    clip.keypoints2d        # [T, 134, 2] true projections (NaN where Anny has no point)
    clip.save(folder)       # <name>_<variant>.json + <name>_masks.npz
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from marionette.nodes import keypoints as kpmod
from marionette.nodes.body.geometry import intrinsics
from marionette.nodes.body.silhouette import render_silhouettes

WIDTH, HEIGHT = 512, 768
FOCAL = 0.9 * math.hypot(WIDTH, HEIGHT)
CLIPS = ("adult_turn", "child_cross", "heavy_pan", "half_body")
VARIANTS = ("clean", "noisy")

# phenotypes: gender (0 male .. 1 female), age (1/3 ≈ 11 y, 2/3 ≈ 25 y), muscle, weight, height, proportions
SHAPES = {
    "adult_turn": (0.85, 0.55, 0.45, 0.50, 0.55, 0.50),
    "child_cross": (0.30, 0.22, 0.40, 0.45, 0.40, 0.50),
    "heavy_pan": (0.05, 0.80, 0.10, 1.00, 0.50, 0.60),
    "half_body": (0.15, 0.50, 0.75, 0.55, 0.60, 0.50),
}
# limbs for the 5-frame dropouts: DWPose indices of an arm (elbow, wrist, hand) or a leg (knee, ankle, foot)
LIMBS = {
    "left_arm": [6, 7] + list(range(92, 113)),
    "right_arm": [3, 4] + list(range(113, 134)),
    "left_leg": [12, 13, 18, 19, 20],
    "right_leg": [9, 10, 21, 22, 23],
}


@dataclass
class SyntheticClip:
    """One clip of the synthetic set (see the module docstring).

    keypoints: ``[T, 134, 3]`` observed keypoints (pixels, score), as decoded back from
    ``pose_keypoint``; ``keypoints2d`` ``[T, 134, 2]`` the true projections; ``vertices``
    ``[T, V, 3]`` the true camera-space mesh.
    """

    name: str
    variant: str
    width: int
    height: int
    K: np.ndarray
    shape: np.ndarray
    body_pose: np.ndarray
    global_orient: np.ndarray
    transl: np.ndarray
    vertices: np.ndarray
    keypoints2d: np.ndarray
    keypoint_mask: np.ndarray
    masks: np.ndarray
    pose_keypoint: list
    keypoints: np.ndarray
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vertices.shape[0])

    def save(self, folder) -> tuple[Path, Path]:
        """Write ``<name>_<variant>.json`` (POSE_KEYPOINT) and ``<name>_masks.npz`` (``masks``)."""
        folder = Path(folder)
        js = kpmod.save_json(self.pose_keypoint, folder / f"{self.name}_{self.variant}.json")
        mk = folder / f"{self.name}_masks.npz"
        np.savez_compressed(mk, masks=self.masks)
        return js, mk


# ---------------------------------------------------------------------------------------------
# Motion
# ---------------------------------------------------------------------------------------------

def _bump(s, a, b):
    """Smooth 0 → 1 → 0 over [a, b] (0 outside)."""
    x = np.clip((np.asarray(s) - a) / (b - a), 0.0, 1.0)
    return np.sin(np.pi * x) ** 2


def _motion(name: str, s: np.ndarray) -> tuple[dict, np.ndarray]:
    """Local bone angles (left-side convention: X forward swing / flexion, Z abduction for the
    left arm) per joint name and body yaw (radians), for phases ``s`` in [0, 1]."""
    T = len(s)
    z = np.zeros(T)
    spec: dict[str, list] = {}

    def arm(side, fwd, abd, elbow, twist=0.0):
        spec["upperarm01" + side] = [fwd, z, abd]
        spec["lowerarm01" + side] = [elbow, z, z]
        spec["upperarm02" + side] = [z, twist + z, z]

    def leg(side, flex, knee, abd=0.0, foot=0.0):
        spec["upperleg01" + side] = [-np.asarray(flex) + z, z, -np.asarray(abd) + z]
        spec["lowerleg01" + side] = [knee + z, z, z]
        spec["foot" + side] = [foot + z, z, z]

    def fingers(curl):
        for side in (".L", ".R"):
            for f in range(2, 6):
                for k in (1, 2, 3):
                    spec[f"finger{f}-{k}{side}"] = [curl * (0.6 if k == 1 else 1.0), z, z]

    if name == "adult_turn":
        yaw = np.radians(100) * _bump(s, 0.0, 1.0)
        up = _bump(s, 0.0, 0.5) + _bump(s, 0.5, 1.0)
        arm(".L", 0.3 * up, -0.2 + 1.5 * up, 0.2 + 0.8 * _bump(s, 0.25, 0.75))
        arm(".R", 0.2 * up, -0.2 + 1.2 * _bump(s, 0.1, 0.6), 0.3 + 0.6 * up)
        leg(".L", 0.3 * _bump(s, 0.3, 0.7), 0.6 * _bump(s, 0.3, 0.7), foot=0.2 * _bump(s, 0.3, 0.7))
        leg(".R", z, z, abd=0.1 * up)
        spec["spine02"] = [0.1 * up, z, 0.05 * np.sin(2 * np.pi * s)]
        spec["head"] = [z, 0.3 * np.sin(2 * np.pi * s), z]
        fingers(0.3 + 0.5 * up)
    elif name == "child_cross":
        yaw = np.radians(15) * np.sin(2 * np.pi * s)
        cross = _bump(s, 0.05, 0.5) + _bump(s, 0.55, 0.95)
        # forward to horizontal and across the midline (negative abduction = adduction)
        arm(".L", 1.1 * cross, -0.3 - 0.7 * cross, 0.2 + 0.2 * cross)
        arm(".R", 1.2 * cross, -0.3 - 0.6 * cross, 0.2 + 0.1 * cross)
        leg(".L", 1.1 * _bump(s, 0.0, 0.45), 1.4 * _bump(s, 0.0, 0.45))
        leg(".R", 1.0 * _bump(s, 0.5, 0.95), 1.3 * _bump(s, 0.5, 0.95))
        spec["spine03"] = [z, 0.15 * np.sin(2 * np.pi * s), z]
        fingers(0.8 * cross)
    elif name == "heavy_pan":
        yaw = np.radians(30) * np.sin(np.pi * s)
        ph = 4 * np.pi * s
        leg(".L", 0.5 * np.maximum(np.sin(ph), 0), 0.9 * np.maximum(np.sin(ph), 0))
        leg(".R", 0.5 * np.maximum(-np.sin(ph), 0), 0.9 * np.maximum(-np.sin(ph), 0))
        arm(".L", -0.5 * np.sin(ph), -0.25 + z, 0.4 + 0.2 * np.maximum(-np.sin(ph), 0))
        arm(".R", 0.5 * np.sin(ph), -0.25 + z, 0.4 + 0.2 * np.maximum(np.sin(ph), 0))
        spec["spine02"] = [0.05 + z, 0.1 * np.sin(ph), z]
        fingers(0.4 + z)
    elif name == "half_body":
        yaw = np.radians(25) * np.sin(2 * np.pi * s)
        face = _bump(s, 0.0, 0.4)
        cross = _bump(s, 0.45, 0.8)
        wave = _bump(s, 0.8, 1.0)
        arm(".L", 0.6 * face + 1.2 * cross, -0.2 + 0.4 * face - 0.5 * cross + 1.6 * wave,
            0.3 + 1.9 * face + 1.0 * cross + 0.8 * wave)
        arm(".R", 0.8 * face + 1.2 * cross, -0.2 + 0.2 * face - 0.5 * cross, 0.3 + 1.8 * face + 1.2 * cross)
        spec["spine02"] = [0.2 * cross, 0.25 * np.sin(2 * np.pi * s), 0.1 * np.sin(4 * np.pi * s)]
        spec["neck01"] = [0.15 * face, z, z]
        fingers(0.2 + 0.7 * wave)
    else:
        raise ValueError(f"unknown clip {name!r}; choose from {CLIPS}")
    return spec, yaw


def _pose_array(model, spec: dict, T: int) -> np.ndarray:
    """Canonical axis-angle ``[T, J, 3]`` from local (bone-axes) angles: a right-side bone takes
    the left-side convention mirrored (X, −Y, −Z)."""
    pose = np.zeros((T, model.num_joints, 3))
    axes = np.asarray(model.joint_axes, dtype=np.float64)
    for name, (x, y, zz) in spec.items():
        if name not in model.joint_names:
            continue
        j = model.joint_names.index(name)
        local = np.stack([np.broadcast_to(x, (T,)), np.broadcast_to(y, (T,)), np.broadcast_to(zz, (T,))], -1)
        if name.endswith(".R"):
            local = local * np.array([1.0, -1.0, -1.0])
        pose[:, j] = local @ axes[j].T
    return pose


# ---------------------------------------------------------------------------------------------
# Camera and visibility
# ---------------------------------------------------------------------------------------------

def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _aa_from_matrix(R: np.ndarray) -> np.ndarray:
    from marionette.nodes.body.geometry import matrix_to_aa

    return matrix_to_aa(torch.as_tensor(R, dtype=torch.float64)).numpy()


def _face_visibility(k3: np.ndarray) -> np.ndarray:
    """``[T, 134]`` bool: which head points a camera at the origin sees (nose, eyes, ears hidden
    when on the far side of the head)."""
    T = k3.shape[0]
    vis = np.ones((T, 134), bool)
    ears = 0.5 * (k3[:, 16] + k3[:, 17])
    eyes = 0.5 * (k3[:, 14] + k3[:, 15])
    to_cam = -ears / np.linalg.norm(ears, axis=1, keepdims=True)
    fwd = k3[:, 0] - ears
    fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    facing = (fwd * to_cam).sum(1)
    vis[:, 0] = facing > -0.2
    for i in (14, 15):
        side = k3[:, i] - eyes
        side /= np.linalg.norm(side, axis=1, keepdims=True)
        vis[:, i] = (facing > -0.1) & ((side * to_cam).sum(1) > -0.75)
    for i in (16, 17):
        side = k3[:, i] - ears
        side /= np.linalg.norm(side, axis=1, keepdims=True)
        vis[:, i] = (side * to_cam).sum(1) > -0.5
    return vis


def make_clip(model, name: str, frames: int = 120, variant: str = "clean", seed: int = 0,
              phase: tuple[float, float] = (0.0, 1.0)) -> SyntheticClip:
    """Generate one clip (deterministic for a given ``seed``) with the Anny body ``model``.

    The whole motion takes 120 frames (4 s at 30 fps); ``phase`` picks the part of it shown, so
    a short clip at natural speed is e.g. ``frames=30, phase=(0.35, 0.6)``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    T = int(frames)
    s = np.linspace(phase[0], phase[1], T) if T > 1 else np.full(1, float(phase[0]))
    spec, yaw = _motion(name, s)
    dt = model.dtype
    shape = np.array(SHAPES[name], dtype=np.float64)
    body_pose = _pose_array(model, spec, T)
    shape_t = torch.as_tensor(shape, dtype=dt, device=model.device)
    with torch.no_grad():
        neutral = model(shape_t, torch.zeros(1, model.num_joints, 3, dtype=dt, device=model.device),
                        torch.zeros(1, 3, dtype=dt, device=model.device)).vertices[0].cpu().numpy()
    top, bottom = neutral[:, 1].min(), neutral[:, 1].max()
    # the framing is that of the first frame's body (the standing, neutral body of the shape)
    # camera: f = 0.9·diagonal, slightly tilted down (5°); the person framed at ~78% of the height
    if name == "half_body":
        span_bottom = 0.30  # 30 cm below the pelvis: mid-thigh
        depth = FOCAL * (span_bottom - top) / (0.92 * HEIGHT)
        centre_y = 0.5 * (top + span_bottom)
    else:
        depth = FOCAL * (bottom - top) / (0.78 * HEIGHT)
        centre_y = 0.5 * (top + bottom)
    tilt = np.radians(5.0)
    pan = np.radians(5.0) * np.sin(2 * np.pi * s) if name == "heavy_pan" else np.zeros(T)
    # world: camera centre at the origin, y down; the body stands upright (turned by ``yaw``)
    # with its framing centre on the optical axis of the unpanned camera at ``depth``; the
    # camera (camera→world rotation R_cam = R_y(pan) R_x(−tilt)) sees X_cam = R_camᵀ X_world.
    p_world = depth * (_rot_x(-tilt) @ np.array([0.0, 0.0, 1.0])) - np.array([0.0, centre_y, 0.0])
    orient = np.zeros((T, 3))
    transl = np.zeros((T, 3))
    for t in range(T):
        R_cam = _rot_y(pan[t]) @ _rot_x(-tilt)
        orient[t] = _aa_from_matrix(R_cam.T @ _rot_y(yaw[t]))
        transl[t] = R_cam.T @ p_world
    with torch.no_grad():
        out = model(shape_t, torch.as_tensor(body_pose, dtype=dt, device=model.device),
                    torch.as_tensor(orient, dtype=dt, device=model.device),
                    torch.as_tensor(transl, dtype=dt, device=model.device))
    verts = out.vertices.cpu().numpy()
    k3 = out.keypoints.cpu().numpy()
    K = intrinsics(FOCAL, WIDTH, HEIGHT)
    kmask = np.asarray(model.keypoint_mask, bool)
    k2 = np.full(k3.shape[:-1] + (2,), np.nan)
    k2[:, kmask] = k3[:, kmask, :2] / k3[:, kmask, 2:3] * FOCAL + K[:2, 2]
    masks = render_silhouettes(verts, model.faces, K, HEIGHT, WIDTH)

    # observed keypoints
    rng = np.random.default_rng(1000 * seed + CLIPS.index(name) if name in CLIPS else seed)
    vis = np.broadcast_to(kmask, (T, 134)).copy()
    vis &= _face_visibility(k3)
    obs = np.nan_to_num(k2.copy())
    score = np.ones((T, 134))
    if variant == "noisy":
        obs += rng.normal(0.0, 3.0, obs.shape)
        vis &= rng.random((T, 134)) >= 0.10
        limbs = list(LIMBS)
        for start in range(int(rng.integers(0, 8)), T - 4, 20):
            limb = limbs[int(rng.integers(0, len(limbs)))]
            vis[start:start + 5, LIMBS[limb]] = False
        score = rng.uniform(0.5, 1.0, (T, 134))
    inside = (obs[..., 0] >= 0) & (obs[..., 0] <= WIDTH - 1) & (obs[..., 1] >= 0) & (obs[..., 1] <= HEIGHT - 1)
    vis &= inside
    dense = np.zeros((T, 1, 134, 3), np.float32)
    dense[:, 0, :, :2] = np.where(vis[..., None], obs, 0.0)
    dense[:, 0, :, 2] = np.where(vis, score, 0.0)
    frames_pk = kpmod.dense_to_pose_keypoint(dense, WIDTH, HEIGHT)
    decoded = kpmod.pose_keypoint_to_dense(frames_pk).keypoints[:, 0]
    return SyntheticClip(
        name=name, variant=variant, width=WIDTH, height=HEIGHT, K=np.repeat(K[None], T, 0),
        shape=shape, body_pose=body_pose, global_orient=orient, transl=transl, vertices=verts,
        keypoints2d=k2, keypoint_mask=kmask, masks=masks, pose_keypoint=frames_pk, keypoints=decoded,
        extras={"yaw": yaw, "pan": pan, "focal": FOCAL},
    )


def make_set(model, frames: int = 120, variants=VARIANTS, clips=CLIPS, seed: int = 0,
             phase: tuple[float, float] = (0.0, 1.0)) -> list[SyntheticClip]:
    """Every clip in every variant."""
    return [make_clip(model, c, frames, v, seed, phase) for c in clips for v in variants]


def body_keypoint_error(pred2d: np.ndarray, true2d: np.ndarray, indices=tuple(range(24))) -> np.ndarray:
    """``[T, k]`` pixel distances between predicted and true keypoints (body and feet by
    default), NaN where either is missing."""
    idx = list(indices)
    return np.linalg.norm(np.asarray(pred2d)[:, idx] - np.asarray(true2d)[:, idx], axis=-1)


def acceleration_error(pred2d: np.ndarray, true2d: np.ndarray, indices=tuple(range(24))) -> float:
    """Mean ‖a_pred − a_true‖ (pixels/frame²) over frames and keypoints (second differences)."""
    idx = list(indices)
    p, q = np.asarray(pred2d)[:, idx], np.asarray(true2d)[:, idx]
    if p.shape[0] < 3:
        return float("nan")
    ap = p[2:] - 2 * p[1:-1] + p[:-2]
    aq = q[2:] - 2 * q[1:-1] + q[:-2]
    return float(np.nanmean(np.linalg.norm(ap - aq, axis=-1)))

