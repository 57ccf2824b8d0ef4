"""Anny (NAVER, Apache-2.0 code, CC0 body data), Marionette's default body: works offline, ships
inside the ``anny`` wheel.

Frames and parameters (see ``base.py`` and reference/body_models.md):

- Output: the canonical camera-ready frame, metres: x = the person's left, y down, z away from
  a camera the person faces; pelvis at the origin for ``global_orient = 0``, ``transl = 0``.
  Anny's world (z up, facing −y, left +x) maps to it by ``_C`` (rows (1,0,0), (0,0,−1), (0,1,0)).
- ``body_pose`` ``[T, J, 3]``: axis-angle per articulated bone (``joint_names``, Anny's bone
  labels), relative to Anny's neutral A-pose, with the rotation axis given in the canonical
  frame's axes (as if the body stood in the neutral pose; a child's axes turn with its parents,
  like SMPL's). Converted to Anny's ``local-ref`` deltas by ``D = Cᵀ R C``. Bones not listed
  stay at identity. ``joint_axes`` gives each bone's own axes in the same frame (columns: X =
  flexion axis of elbows, knees and fingers, Y along the bone = twist, Z), for priors.
  Swing/twist pairs: ``upperarm01`` / ``lowerarm01`` / ``upperleg01`` swing and bend, their
  ``*02`` partners twist (their ``pose_limits`` keep them near pure twist).
- ``shape`` ``[6]`` or ``[T, 6]``: Anny's phenotypes gender, age, muscle, weight, height,
  proportions, each 0..1 (values outside are clamped by Anny, so their gradient is zero there).
- Keypoints (DWPose-134): body 17 + feet 6 from Anny's COCO regressor (its interleaved feet
  reordered), neck = shoulder midpoint, hands from bone heads (``wrist``, ``finger1..5-1..3``)
  plus fingertips (mean of 4 skin vertices, reference/body_models.md; finger points only with
  ``with_fingers``). No face landmarks: nothing on Anny's mesh defines the 68 iBUG points, and
  hand-picked vertices would drift with the phenotypes, so slots 24–91 are masked out.
- ``part_labels``: SMPL-24 part of each vertex's dominant bone (table in body_models.md).

Speed: Anny's own forward (dense LBS over 104 bones, float64) takes seconds for 120 frames.
Here the skinning runs on "groups" — each articulated bone with the non-articulated bones under
it (toes, eyes, metacarpals, fingers when not articulated) folded in. The shape-dependent part
(Anny's rest model, and ``Umat``: every vertex's rest position seen from each group, weighted)
is computed once per call, and memoised across calls while the shape needs no gradient; the
per-frame part is a short kinematic chain over the groups and one matrix product
``[T·3, G·4] @ [G·4, V]``. Results match Anny's forward to ~1e-6 m (tests/body).
"""
from __future__ import annotations

import numpy as np
import torch

from .geometry import aa_to_matrix
from .base import BodyModel, BodyOutput

PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")

_SIDES = (".L", ".R")
_BODY_CENTRE = ("spine04", "spine03", "spine02", "spine01", "neck01", "neck02", "head")
_ARM = ("clavicle", "upperarm01", "upperarm02", "lowerarm01", "lowerarm02", "wrist")
_LEG = ("upperleg01", "upperleg02", "lowerleg01", "foot")
_FINGERS = tuple(f"finger{f}-{k}" for f in range(1, 6) for k in range(1, 4))
BODY_JOINTS = _BODY_CENTRE + tuple(b + s for s in _SIDES for b in _ARM) + tuple(b + s for s in _SIDES for b in _LEG)
FINGER_JOINTS = tuple(b + s for s in _SIDES for b in _FINGERS)

# Local (bone-axes) limits in radians, left side (checked on the rig, tests/body): +X bends
# elbows, knees, fingers, the spine, neck and head forward; hip flexion is −X, hip abduction −Z;
# arm swing forward +X, arm abduction +Z; foot plantar-flexion +X. Right bones mirror (X, −Y, −Z).
_LOCAL_LIMITS = {
    "spine": ((-0.3, 0.45), (-0.3, 0.3), (-0.25, 0.25)), "neck": ((-0.5, 0.6), (-0.6, 0.6), (-0.4, 0.4)),
    "head": ((-0.5, 0.5), (-0.6, 0.6), (-0.4, 0.4)), "clavicle": ((-0.3, 0.3), (-0.3, 0.3), (-0.3, 0.3)),
    "upperarm01": ((-1.0, 2.6), (-0.5, 0.5), (-0.9, 2.4)), "upperarm02": ((-0.1, 0.1), (-1.4, 1.4), (-0.1, 0.1)),
    "lowerarm01": ((-0.7, 1.9), (-0.2, 0.2), (-0.15, 0.15)), "lowerarm02": ((-0.1, 0.1), (-1.4, 1.4), (-0.1, 0.1)),
    "wrist": ((-1.2, 1.2), (-0.4, 0.4), (-0.6, 0.6)),
    "upperleg01": ((-2.2, 0.5), (-0.6, 0.6), (-1.0, 0.4)), "upperleg02": ((-0.1, 0.1), (-0.6, 0.6), (-0.1, 0.1)),
    "lowerleg01": ((-0.05, 2.6), (-0.15, 0.15), (-0.1, 0.1)), "foot": ((-0.6, 0.9), (-0.3, 0.3), (-0.4, 0.4)),
    "finger1-1": ((-0.9, 0.9), (-0.9, 0.9), (-0.9, 0.9)), "finger1-2": ((-0.4, 1.2), (-0.3, 0.3), (-0.3, 0.3)),
    "finger1-3": ((-0.3, 1.4), (-0.1, 0.1), (-0.2, 0.2)), "finger-1": ((-0.4, 1.6), (-0.2, 0.2), (-0.4, 0.4)),
    "finger-2": ((-0.1, 1.9), (-0.1, 0.1), (-0.1, 0.1)), "finger-3": ((-0.1, 1.5), (-0.1, 0.1), (-0.1, 0.1)),
}

# Bone → SMPL-24 part (reference/body_models.md); (left, right) where sided.
_PART_OF = {"root": 0, "pelvis": (0, 0), "spine05": 0, "upperleg01": (1, 2), "upperleg02": (1, 2),
            "spine04": 3, "spine03": 3, "lowerleg01": (4, 5), "lowerleg02": (4, 5), "spine02": 6,
            "foot": (7, 8), "spine01": 9, "toe": (10, 11), "neck01": 12, "neck02": 12, "neck03": 12,
            "clavicle": (13, 14), "shoulder01": (13, 14), "head": 15, "eye": (15, 15),
            "upperarm01": (16, 17), "upperarm02": (16, 17), "lowerarm01": (18, 19), "lowerarm02": (18, 19),
            "wrist": (20, 21), "metacarpal": (22, 23), "finger": (22, 23)}

# Fingertips: mean of 4 skin vertices at each distal phalanx's end (anny topology), thumb..pinky.
_TIP_VERTICES = {
    ".L": ((9316, 9384, 9410, 9403), (8563, 8566, 8674, 8675), (8755, 8866, 8758, 8781),
           (8950, 9059, 8947, 9078), (9139, 9142, 9165, 9279)),
    ".R": ((2664, 2732, 2758, 2751), (1911, 1914, 2022, 2023), (2103, 2214, 2106, 2129),
           (2298, 2407, 2295, 2426), (2487, 2490, 2513, 2627)),
}
_COCO_TO_DWPOSE = {"nose": 0, "right_shoulder": 2, "right_elbow": 3, "right_wrist": 4, "left_shoulder": 5,
                   "left_elbow": 6, "left_wrist": 7, "right_hip": 8, "right_knee": 9, "right_ankle": 10,
                   "left_hip": 11, "left_knee": 12, "left_ankle": 13, "right_eye": 14, "left_eye": 15,
                   "right_ear": 16, "left_ear": 17, "left_big_toe": 18, "left_small_toe": 19, "left_heel": 20,
                   "right_big_toe": 21, "right_small_toe": 22, "right_heel": 23}

_C = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # Anny world → canonical


def _family(bone: str) -> tuple[str, int]:
    """('upperarm01', side index) for 'upperarm01.L'; side −1 for centre bones."""
    for i, s in enumerate(_SIDES):
        if bone.endswith(s):
            return bone[: -len(s)], i
    return bone, -1


def _part_of_bone(bone: str) -> int:
    base, side = _family(bone)
    key = next((k for k in _PART_OF if base == k or (k in ("toe", "finger", "metacarpal") and base.startswith(k))),
               None)
    if key is None:
        raise KeyError(f"Anny bone {bone!r} has no SMPL part")
    part = _PART_OF[key]
    return part[max(side, 0)] if isinstance(part, tuple) else part


def _limit_key(base: str) -> str:
    if base.startswith("spine"):
        return "spine"
    if base.startswith("neck"):
        return "neck"
    if base.startswith("finger") and not base.startswith("finger1"):
        return "finger-" + base[-1]
    return base


_axis_angle_to_matrix = aa_to_matrix  # one Rodrigues for the whole body stage (geometry.py)


class AnnyBody(BodyModel):
    """Anny behind Marionette's ``BodyModel`` interface (see the module docstring).

    Args:
        core: a loaded ``anny.Anny`` (rig ``anny``, topology ``anny``, ``local-ref`` pose
            parameters), already on ``device`` in ``dtype``; share one per process
            (``models.load_body_model`` does).
        with_fingers: also articulate the 30 finger bones (else they keep the neutral pose
            and the finger keypoints are masked out; body-only fitting is faster).
    """

    name = "anny"

    def __init__(self, core, with_fingers: bool = True):
        from anny import KeypointsRegressor

        if core.pose_parameterization != "local-ref" or len(core.bone_labels) != 104:
            raise ValueError("AnnyBody needs anny.Anny() with its defaults: rig 'anny' (104 bones), "
                             "pose_parameterization='local-ref'")
        self.core = core
        self.variant = ""
        self.with_fingers = bool(with_fingers)
        self.shape_names = PHENOTYPES
        self.joint_names = BODY_JOINTS + (FINGER_JOINTS if self.with_fingers else ())
        labels = list(core.bone_labels)
        parents = list(core.bone_parents)
        self._bones = [labels.index(n) for n in self.joint_names]
        # group = nearest articulated ancestor (self included), root (0) if none
        art = set(self._bones)
        group_bone = []
        for b in range(len(labels)):
            a = b
            while a > 0 and a not in art:
                a = parents[a]
            group_bone.append(max(a, 0))
        self._group_bones = [0] + self._bones
        slot = {b: i for i, b in enumerate(self._group_bones)}
        self._group_of_bone = np.array([slot[g] for g in group_bone])
        self._group_root_bone = np.array(group_bone)
        # the group tree: each joint's parent group, and its depth levels for the pose chain
        parent_group = [group_bone[parents[b]] for b in self._bones]
        self._parent_group_bone = np.array(parent_group)
        pg_of = dict(zip(self._bones, parent_group))

        def depth(b):
            return 0 if b == 0 else depth(pg_of[b]) + 1

        depths = [depth(b) for b in self._bones]
        order, self._levels_np = [0], []
        for d in range(1, max(depths) + 1):
            members = [j for j in range(len(self._bones)) if depths[j] == d]
            self._levels_np.append((members, [order.index(slot[parent_group[j]]) for j in members]))
            order += [j + 1 for j in members]
        self._level_inverse_np = np.argsort(order)
        # constant tables (CPU numpy; tensors made in _load_tensors)
        idx = core.vertex_bone_indices.cpu().numpy()
        w = core.vertex_bone_weights.detach().cpu().double().numpy()
        dominant = idx[np.arange(len(idx)), np.argmax(w, axis=1)]
        self.part_labels = np.array([_part_of_bone(labels[b]) for b in dominant], np.int64)
        self.faces = np.ascontiguousarray(core.faces.cpu().numpy().astype(np.int64))
        reg = KeypointsRegressor.coco(core)
        self._coco_weights = reg.regression_weights.detach().cpu().double().numpy()  # [23, V]
        self._build_keypoint_plan(labels, list(reg.labels))
        U = core.reference_bone_orientations.detach().cpu().double().numpy()
        self.joint_axes = np.einsum("ij,bjk->bik", _C, U[self._bones])  # [J, 3, 3] canonical
        self.pose_limits = self._pose_limits()
        self._load_tensors()

    # ----------------------------------------------------------------------------- set-up

    def _build_keypoint_plan(self, labels, coco_labels):
        """``_kp_src`` ``[134]``: each DWPose slot's row in the point pool built by ``forward``:
        the 23 COCO-regressor points (in ``coco_labels`` order), the neck (shoulder midpoint),
        the hand bone heads (wrist, finger*-1..3), the fingertips, then a zero row."""
        n_coco = len(coco_labels)
        src = {_COCO_TO_DWPOSE[label]: i for i, label in enumerate(coco_labels)}
        src[1] = n_coco
        self._coco_rsho, self._coco_lsho = coco_labels.index("right_shoulder"), coco_labels.index("left_shoulder")
        hand_groups, tips = [], []
        for side, slot0 in ((".L", 92), (".R", 113)):
            hand_groups.append((slot0, "wrist" + side))
            if self.with_fingers:
                for f in range(5):  # OpenPose thumb, index, middle, ring, pinky = finger1..5
                    hand_groups += [(slot0 + 1 + 4 * f + k, f"finger{f + 1}-{k + 1}{side}") for k in range(3)]
                    tips.append((slot0 + 4 + 4 * f, _TIP_VERTICES[side][f]))
        base = n_coco + 1
        self._hand_groups = [1 + self.joint_names.index(name) for _, name in hand_groups]
        for i, (slot, _) in enumerate(hand_groups):
            src[slot] = base + i
        base += len(hand_groups)
        self._tips = np.array([v for _, v in tips], np.int64).reshape(-1, 4)
        self._tip_slots = [slot for slot, _ in tips]
        for i, slot in enumerate(self._tip_slots):
            src[slot] = base + i
        zero = base + len(tips)
        self._kp_src = np.array([src.get(i, zero) for i in range(134)], np.int64)
        self.keypoint_mask = self._kp_src != zero  # the face (24..91): no landmarks on Anny's mesh

    def _pose_limits(self) -> np.ndarray:
        """``[J, 3, 2]`` canonical-frame boxes holding the bone-local limits (interval
        arithmetic through ``joint_axes``); right bones mirror the left ones."""
        out = np.zeros((len(self.joint_names), 3, 2))
        for i, name in enumerate(self.joint_names):
            base, side = _family(name)
            if side == 1:
                left = out[self.joint_names.index(base + ".L")] if base + ".L" in self.joint_names else None
                if left is not None:
                    out[i, 0], out[i, 1:] = left[0], -left[1:, ::-1]
                    continue
            lim = np.array(_LOCAL_LIMITS[_limit_key(base)])
            A = self.joint_axes[i]
            lo, hi = A * lim[None, :, 0], A * lim[None, :, 1]
            out[i, :, 0], out[i, :, 1] = np.minimum(lo, hi).sum(1), np.maximum(lo, hi).sum(1)
        return out

    def _load_tensors(self):
        core = self.core
        dev, dt = core.template_vertices.device, core.template_vertices.dtype
        self.device, self.dtype = dev, dt
        G, V = len(self._group_bones), core.template_vertices.shape[0]
        t = lambda x, d=dt: torch.as_tensor(np.ascontiguousarray(x), dtype=d, device=dev)  # noqa: E731
        self._C = t(_C)
        self._group_bones_t = t(self._group_bones, torch.long)
        self._group_root_t = t(self._group_root_bone, torch.long)
        self._vbi = core.vertex_bone_indices.long()
        self._vbw = core.vertex_bone_weights.to(dt)
        # flat destination row (group * V + vertex) of every (vertex, slot) weight
        grp = t(self._group_of_bone, torch.long)[self._vbi]
        self._scatter_rows = (grp * V + torch.arange(V, device=dev)[:, None]).reshape(-1)
        self._G, self._V = G, V
        self._bones_t = t(self._bones, torch.long)
        self._parent_group_bone_t = t(self._parent_group_bone, torch.long)
        self._level_inverse = t(self._level_inverse_np, torch.long)
        self._levels = [(t(m, torch.long), t(pp, torch.long)) for m, pp in self._levels_np]
        self._axes_t = t(self.joint_axes)
        # surface keypoints are linear in the vertices: COCO regressor rows, then fingertip means
        nc = self._n_coco = len(self._coco_weights)
        lin = np.zeros((nc + len(self._tips), V))
        lin[:nc] = self._coco_weights
        for i, vs in enumerate(self._tips):
            lin[nc + i, vs] = 1.0 / len(vs)
        self._kp_linear_t = t(lin)
        self._hand_groups_t = t(self._hand_groups, torch.long)
        self._kp_src_t = t(self._kp_src, torch.long)
        self._chain = (core.kinematic_chain_levels, core.kinematic_chain_indices)
        self._rest_memo = None

    def to(self, device=None, dtype=None) -> "AnnyBody":
        """Switch to the shared Anny core on ``device`` / ``dtype`` (one per process each)."""
        from .models import anny_core

        self.core = anny_core(device if device is not None else self.device, dtype or self.dtype)
        self._load_tensors()
        return self

    def default_shape(self) -> torch.Tensor:
        """Anny's average adult: every phenotype 0.5."""
        return torch.full((self.shape_dim,), 0.5, device=self.device, dtype=self.dtype)

    # ----------------------------------------------------------------------------- forward

    def _rest(self, phenotypes: torch.Tensor):
        """Shape-dependent tables for ``[S, 6]`` phenotypes: ``Umat`` ``[S, G·4, V]`` (each
        vertex's rest position seen from each group's bone at the neutral pose, times its
        weight; every 4th row is the weight), ``Ukp`` ``[S, G·4, K]`` (the same for the K surface
        keypoints, which are linear in the vertices), the group chain's neutral-pose offsets
        ``L_R`` ``[S, J, 3, 3]`` / ``L_t`` ``[S, J, 3]`` and the groups' inverse rest poses
        ``Pinv_R`` ``[S, G, 3, 3]`` / ``Pinv_t`` ``[S, G, 3]``.

        Memoised for the last shape when no gradient w.r.t. the shape is wanted: a fitter
        that holds the shape fixed (pose stages, a known person) pays for it once."""
        if torch.is_grad_enabled() and phenotypes.requires_grad:
            return self._rest_uncached(phenotypes)
        key = (phenotypes.detach().cpu().numpy().tobytes(), tuple(phenotypes.shape), phenotypes.device)
        if self._rest_memo is None or self._rest_memo[0] != key:
            with torch.no_grad():
                self._rest_memo = (key, self._rest_uncached(phenotypes.detach()))
        return self._rest_memo[1]

    def _rest_uncached(self, phenotypes: torch.Tensor) -> dict:
        from anny.utils import kinematics

        core, S = self.core, phenotypes.shape[0]
        empty = phenotypes.new_zeros(S, 0)
        coeffs = core._get_phenotype_blendshape_coefficients(phenotypes, empty, empty)
        rest = core.get_rest_model(coeffs)
        P = rest["rest_bone_poses"]  # [S, 104, 4, 4]
        eye = torch.eye(4, dtype=self.dtype, device=self.device).expand_as(P)
        T0, W0 = kinematics.forward_kinematic(self._chain, P, eye, "local-ref", core.reference_bone_orientations)
        # K_b = T0_{group(b)}⁻¹ T0_b: bone b's transform relative to its group, the same at any pose
        Tg = T0[:, self._group_root_t]
        Rg_t = Tg[..., :3, :3].transpose(-1, -2)
        K_R = Rg_t @ T0[..., :3, :3]
        K_t = (Rg_t @ (T0[..., :3, 3] - Tg[..., :3, 3])[..., None])[..., 0]
        x = rest["rest_vertices"]  # [S, V, 3]
        R_s, t_s = K_R[:, self._vbi], K_t[:, self._vbi]  # [S, V, slots, 3, 3] / [S, V, slots, 3]
        y = (R_s @ x[:, :, None, :, None])[..., 0] + t_s
        w = self._vbw[None, :, :, None]
        u = torch.cat([y * w, w.expand(S, -1, -1, -1)], -1).reshape(S, -1, 4)
        U = x.new_zeros(S, self._G * self._V, 4).index_add_(1, self._scatter_rows, u)
        # chain over groups only: W_c = W_g · L_c · [Aᵀ R A | 0] with L_c = W0_g⁻¹ W0_c (the
        # neutral-pose offset from the parent group; bones in between are at identity)
        Wg, Wc = W0[:, self._parent_group_bone_t], W0[:, self._bones_t]
        Wg_rt = Wg[..., :3, :3].transpose(-1, -2)
        L_R = Wg_rt @ Wc[..., :3, :3]
        L_t = (Wg_rt @ (Wc[..., :3, 3] - Wg[..., :3, 3])[..., None])[..., 0]
        Pg = P[:, self._group_bones_t]
        Pinv_R = Pg[..., :3, :3].transpose(-1, -2)
        Pinv_t = -(Pinv_R @ Pg[..., :3, 3:])[..., 0]
        Umat = U.view(S, self._G, self._V, 4).permute(0, 1, 3, 2).reshape(S, self._G * 4, self._V)
        # the surface keypoints are linear in the vertices, so they get their own small table
        Ukp = Umat @ self._kp_linear_t.T  # [S, G·4, K]
        return dict(Umat=Umat, Ukp=Ukp, L_R=L_R, L_t=L_t, Pinv_R=Pinv_R, Pinv_t=Pinv_t)

    def _chain_pose(self, X: torch.Tensor, rest: dict):
        """Posed group frames ``W`` (rotation ``[T, G, 3, 3]``, head ``[T, G, 3]``) for bone-local
        rotations ``X`` ``[T, J, 3, 3]``; group 0 (root) is the identity."""
        T = X.shape[0]
        LX = rest["L_R"] @ X  # [T, J, 3, 3]
        L_t = rest["L_t"].expand(T, -1, -1)
        eye = torch.eye(3, dtype=X.dtype, device=X.device)
        Rs, ts = [eye.expand(T, 1, 3, 3)], [X.new_zeros(T, 1, 3)]
        for members, parents in self._levels:  # members: joint indices; parents: positions so far
            Rp = torch.cat(Rs, 1)[:, parents]
            tp = torch.cat(ts, 1)[:, parents]
            Rs.append(Rp @ LX[:, members])
            ts.append((Rp @ L_t[:, members, :, None])[..., 0] + tp)
        R, t = torch.cat(Rs, 1)[:, self._level_inverse], torch.cat(ts, 1)[:, self._level_inverse]
        return R, t

    def forward(self, shape: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                transl: torch.Tensor | None = None) -> BodyOutput:
        """``shape`` [6] or [T, 6] phenotypes, ``body_pose`` [T, J, 3], ``global_orient`` [T, 3],
        ``transl`` [T, 3] → canonical ``BodyOutput`` (vertices [T, 13718, 3], keypoints
        [T, 134, 3], joints [T, J+1, 3])."""
        dev, dt = self.device, self.dtype
        body_pose = body_pose.to(dev, dt)
        T, J = body_pose.shape[0], self.num_joints
        if body_pose.shape[1:] != (J, 3):
            raise ValueError(f"body_pose must be [T, {J}, 3] (Anny bones {', '.join(self.joint_names[:3])}, ...; "
                             f"with_fingers={self.with_fingers}), got {tuple(body_pose.shape)}")
        pheno = shape.to(dev, dt)
        pheno = pheno[None] if pheno.dim() == 1 else pheno
        if pheno.shape[-1] != self.shape_dim or pheno.shape[0] not in (1, T):
            raise ValueError(f"shape must be [6] or [T, 6] ({', '.join(PHENOTYPES)}), got {tuple(shape.shape)}")
        # canonical-axes rotation R about a bone → the bone's own axes: Aᵀ R A (A = joint_axes)
        A = self._axes_t
        X = A.transpose(-1, -2) @ _axis_angle_to_matrix(body_pose) @ A
        Mr = _axis_angle_to_matrix(global_orient.to(dev, dt).reshape(T, 3)) @ self._C  # [T, 3, 3]
        Mt = transl.to(dev, dt).reshape(T, 1, 3) if transl is not None else None
        chunks = [(0, T)] if pheno.shape[0] == 1 else [(i, min(i + 8, T)) for i in range(0, T, 8)]
        verts, surface, heads = [], [], []
        for a, b in chunks:  # per-frame shapes go 8 frames at a time (Umat is [S, G·4, V])
            rest = self._rest(pheno if pheno.shape[0] == 1 else pheno[a:b])
            n = b - a
            WR, Wt = self._chain_pose(X[a:b], rest)
            # skinning transforms T_g = M · W_g · P_g⁻¹, as [n, 3, G·4] against U [G·4, V]
            TR = Mr[a:b, None] @ WR @ rest["Pinv_R"]
            Tt = (Mr[a:b, None] @ (WR @ rest["Pinv_t"][..., None] + Wt[..., None]))[..., 0]
            h = (Mr[a:b, None] @ Wt[..., None])[..., 0]
            if Mt is not None:
                Tt, h = Tt + Mt[a:b], h + Mt[a:b]
            Tg = torch.cat([TR, Tt[..., None]], -1).permute(0, 2, 1, 3).reshape(n, 3, self._G * 4)
            Umat, Ukp = rest["Umat"], rest["Ukp"]  # [S, G·4, V], [S, G·4, K]
            if Umat.shape[0] == 1:
                v = (Tg.reshape(n * 3, -1) @ Umat[0]).view(n, 3, self._V)
                k = (Tg.reshape(n * 3, -1) @ Ukp[0]).view(n, 3, -1)
            else:
                v, k = torch.bmm(Tg, Umat), torch.bmm(Tg, Ukp)
            verts.append(v.transpose(1, 2))
            surface.append(k.transpose(1, 2))
            heads.append(h)
        verts = (verts[0] if len(verts) == 1 else torch.cat(verts)).contiguous()  # [T, V, 3]
        surface = surface[0] if len(surface) == 1 else torch.cat(surface)  # [T, K, 3] COCO points, fingertips
        heads = heads[0] if len(heads) == 1 else torch.cat(heads)  # [T, G, 3] root + joint_names heads
        nc = self._n_coco
        pool = torch.cat([surface[:, :nc], surface[:, [self._coco_rsho, self._coco_lsho]].mean(1, keepdim=True),
                          heads[:, self._hand_groups_t], surface[:, nc:], verts.new_zeros(T, 1, 3)], 1)
        return BodyOutput(vertices=verts, keypoints=pool[:, self._kp_src_t], joints=heads)

