"""SMPL and SMPL-X bodies from the user's own model files (``.pkl`` as published or ``.npz``).

Files are read without chumpy and without running pickled code (``models_loader.files``), checked
against the family's layout, and evaluated with the ``smplx`` package's LBS helpers (rodrigues,
rigid chain, landmark interpolation). ``smplx`` is imported only when such a model is built.

Frames and parameters (see ``base.py``):

- Output: the canonical camera-ready frame (x = the person's left, y down, z away from a camera
  the person faces), metres, pelvis at the origin for ``global_orient = 0`` and ``transl = 0``.
  SMPL's own frame (y up, facing +z, left +x) maps to it by a 180° turn about x:
  ``v_canonical = R(global_orient) · diag(1, -1, -1) · (v_smpl - pelvis) + transl``.
- ``body_pose`` ``[T, J, 3]`` is SMPL's own axis-angle convention, joint by joint, relative to
  the T-pose (SMPL-X: flat hands, i.e. ``flat_hand_mean=True``), so values copy to and from
  other SMPL tools unchanged. Only ``global_orient`` lives in the canonical frame. A camera-frame
  SMPL orientation from an OpenCV-convention regressor (HMR2, 4D-Humans) converts with
  ``canonical_orient_from_camera_smpl``.
- ``shape`` ``[S]`` or ``[T, S]``: the first ``num_betas`` betas.
- Keypoints (DWPose-134), as SMPLify-X maps SMPL to OpenPose: body from the SMPL joints plus
  smplx's vertex ids for nose, eyes, ears, toes and heels; neck = shoulder-joint midpoint (as
  DWPose defines it). Hands: SMPL has no fingers, so only the wrists; SMPL-X the 15 finger
  joints per hand plus fingertip vertices (with ``with_fingers``). Face: SMPL-X's landmark
  embedding when the file has it (51 static points = iBUG 17–67, the 17 yaw-dependent contour
  points = iBUG 0–16; a 68-point embedding maps directly); none for SMPL.
- ``part_labels``: argmax of the skinning weights; SMPL-X's extra joints fold into SMPL's 24
  parts (jaw, eyes → head; fingers → left/right hand).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...models_loader import files
from .base import SMPL_PARTS, BodyModel, BodyOutput

SMPLX_JOINT_NAMES = SMPL_PARTS[:22] + ("jaw", "left_eye", "right_eye") + tuple(
    f"{side}_{finger}{k}" for side in ("left", "right")
    for finger in ("index", "middle", "pinky", "ring", "thumb") for k in (1, 2, 3))

# vertex ids smplx uses for OpenPose points (smplx/vertex_ids.py); SMPL shares SMPL-H's mesh
_TIPS = ("thumb", "index", "middle", "ring", "pinky")


@dataclass(frozen=True)
class Family:
    name: str
    num_vertices: int
    num_joints: int
    joint_names: tuple[str, ...]


FAMILIES = {
    "smpl": Family("smpl", 6890, 24, SMPL_PARTS),
    "smplx": Family("smplx", 10475, 55, SMPLX_JOINT_NAMES),
}
# (vertices, joints) of related models, to name a wrong file in the error message
_KNOWN_LAYOUTS = {(6890, 24): "an SMPL model", (6890, 52): "an SMPL-H model", (10475, 55): "an SMPL-X model",
                  (778, 16): "a MANO hand model", (5023, 5): "a FLAME head model"}
_REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")

# SMPL's own axes → canonical: 180° about x
_C = np.diag([1.0, -1.0, -1.0])


def read_model_file(path: str | Path, family: str, entry=None) -> dict[str, np.ndarray]:
    """The arrays of an SMPL (``family="smpl"``) or SMPL-X file, checked: ``ModelFileInvalid``
    names what is wrong (another model, a missing key, a bad shape)."""
    path = Path(path)
    fam = FAMILIES[family]
    if path.suffix.lower() == ".npz":
        data = files.load_npz_arrays(path, entry)
    else:
        data = files.load_pickle_arrays(path, entry)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise files.invalid_error(path, entry, f"it lacks {', '.join(missing)} — not an SMPL-family model file")
    arrays = {}
    for k, v in data.items():  # plain numeric arrays only (SMPL-X .pkl files hold some as lists)
        if isinstance(v, (list, tuple)):
            try:
                v = np.asarray(v)
            except ValueError:  # ragged
                continue
        if isinstance(v, np.ndarray) and v.dtype != object:
            arrays[k] = v
    try:
        n_v, n_j = arrays["v_template"].shape[0], arrays["weights"].shape[-1]
    except (IndexError, ValueError, KeyError) as exc:
        raise files.invalid_error(path, entry, f"its arrays are malformed ({exc})") from exc
    if (n_v, n_j) != (fam.num_vertices, fam.num_joints):
        what = _KNOWN_LAYOUTS.get((n_v, n_j), "an unknown model")
        want = _KNOWN_LAYOUTS[(fam.num_vertices, fam.num_joints)]
        raise files.invalid_error(
            path, entry, f"it is {what} ({n_v} vertices, {n_j} joints) but {want} "
            f"({fam.num_vertices} vertices, {fam.num_joints} joints) was expected — pick the matching model type")
    V, J = n_v, n_j
    expect = {"v_template": (V, 3), "posedirs": (V, 3, 9 * (J - 1)), "J_regressor": (J, V), "weights": (V, J),
              "kintree_table": (2, J)}
    bad = [f"{k} {arrays[k].shape} (expected {s})" for k, s in expect.items() if arrays[k].shape != s]
    sd, f = arrays["shapedirs"], arrays["f"]
    if sd.ndim != 3 or sd.shape[:2] != (V, 3) or sd.shape[2] < 10:
        bad.append(f"shapedirs {sd.shape} (expected ({V}, 3, >=10))")
    if f.ndim != 2 or f.shape[1] != 3 or f.size == 0 or f.max() >= V:
        bad.append(f"f {f.shape} (expected [F, 3] indices below {V})")
    if bad:
        raise files.invalid_error(path, entry, "unexpected array shapes: " + "; ".join(bad))
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.isfinite(arrays[k]).all():
            raise files.invalid_error(path, entry, f"{k} holds NaN or infinite values")
    return arrays


def canonical_orient_from_camera_smpl(global_orient: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` SMPL ``global_orient`` that puts the body in an OpenCV camera frame (as HMR2
    and 4D-Humans output it) → this module's canonical ``global_orient``.

    SMPL gives ``R_cam (v - pelvis)``; here ``R_g · diag(1,-1,-1) · (v - pelvis)``, so
    ``R_g = R_cam · diag(1,-1,-1)``."""
    from smplx.lbs import batch_rodrigues

    R = batch_rodrigues(global_orient.reshape(-1, 3)) @ torch.as_tensor(_C, dtype=global_orient.dtype,
                                                                        device=global_orient.device)
    return _rotmat_to_axis_angle(R).reshape(global_orient.shape)


def _rotmat_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3]`` → ``[..., 3]`` through a quaternion (Shepperd: divide by the largest
    component, so the result is stable at every angle including 180°)."""
    m = R
    d0, d1, d2 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    cands = torch.stack([1 + d0 + d1 + d2, 1 + d0 - d1 - d2, 1 - d0 + d1 - d2, 1 - d0 - d1 + d2], -1)
    best = cands.argmax(-1, keepdim=True)
    s = torch.sqrt(cands.gather(-1, best).clamp_min(1e-12)) * 2  # 4 × the largest component
    a, b, c = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    e, f, g = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    s = s[..., 0]
    q = torch.stack([  # (w, x, y, z) for each choice of largest component
        torch.stack([s / 4, a / s, b / s, c / s], -1), torch.stack([a / s, s / 4, e / s, f / s], -1),
        torch.stack([b / s, e / s, s / 4, g / s], -1), torch.stack([c / s, f / s, g / s, s / 4], -1)], -2)
    q = q.gather(-2, best[..., None].expand(*best.shape[:-1], 1, 4))[..., 0, :]
    q = torch.where(q[..., :1] < 0, -q, q)  # w >= 0: angle in [0, π]
    n = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(n, q[..., :1])
    return q[..., 1:] * torch.where(n > 1e-8, angle / n.clamp_min(1e-12), 2 / q[..., :1].clamp_min(1e-12))


def _pose_limits(names: tuple[str, ...]) -> np.ndarray:
    """``[J, 3, 2]`` plausible axis-angle ranges in SMPL's axes (x left, y up, z front; left-side
    values, mirrored for the right: y and z ranges flip sign). Derived from which way each joint
    bends in SMPL's T-pose frame: knee flexion +x, hip flexion −x, spine/neck forward bend +x,
    left elbow flexion −y, left arm forward −y and up +z, ankle plantar-flexion +x, jaw opening
    +x, left finger flexion −z."""
    table = {
        "hip": ((-2.3, 0.6), (-0.8, 0.8), (-0.5, 1.2)), "knee": ((-0.05, 2.6), (-0.2, 0.2), (-0.1, 0.1)),
        "ankle": ((-0.5, 0.9), (-0.4, 0.4), (-0.4, 0.4)), "foot": ((-0.6, 0.6), (-0.2, 0.2), (-0.2, 0.2)),
        "spine": ((-0.4, 0.8), (-0.5, 0.5), (-0.4, 0.4)), "neck": ((-0.6, 0.8), (-0.9, 0.9), (-0.6, 0.6)),
        "head": ((-0.5, 0.6), (-0.6, 0.6), (-0.4, 0.4)), "collar": ((-0.3, 0.3), (-0.5, 0.5), (-0.4, 0.4)),
        "shoulder": ((-1.5, 1.5), (-1.7, 1.0), (-1.6, 1.5)), "elbow": ((-1.2, 1.2), (-2.6, 0.05), (-0.15, 0.15)),
        "wrist": ((-1.0, 1.0), (-0.6, 0.6), (-1.2, 1.2)), "hand": ((-0.4, 0.4), (-0.4, 0.4), (-0.4, 0.4)),
        "jaw": ((-0.05, 0.5), (-0.1, 0.1), (-0.1, 0.1)), "eye": ((-0.3, 0.3), (-0.4, 0.4), (-0.1, 0.1)),
        "finger": ((-0.3, 0.3), (-0.35, 0.35), (-1.8, 0.3)), "thumb": ((-0.9, 0.9), (-0.9, 0.9), (-0.9, 0.9)),
    }
    out = np.zeros((len(names), 3, 2))
    for i, name in enumerate(names):
        kind = next(k for k in ("thumb", "spine", "neck", "head", "collar", "shoulder", "elbow", "wrist", "hand",
                                "hip", "knee", "ankle", "foot", "jaw", "eye") if k in name) if not any(
            f in name for f in ("index", "middle", "ring", "pinky")) else "finger"
        lim = np.array(table[kind], float)
        if name.startswith("right"):  # mirror across the sagittal plane: y, z components flip
            lim[1:] = -lim[1:, ::-1]
        out[i] = lim
    return out


class SMPLBody(BodyModel):
    """An SMPL or SMPL-X body (see the module docstring for frames and parameters).

    Args:
        arrays: ``read_model_file`` output.
        family: ``"smpl"`` or ``"smplx"``.
        variant: ``"neutral"``, ``"male"`` or ``"female"`` (only recorded).
        num_betas: shape parameters used (the first of the file's).
        with_fingers: SMPL-X: articulate the 30 finger joints (else flat hands, faster).
        device / dtype: where ``forward`` computes (float32 default; float64 works).
    """

    def __init__(self, arrays: dict, family: str = "smpl", variant: str = "neutral", num_betas: int = 10,
                 with_fingers: bool = True, device=None, dtype: torch.dtype = torch.float32):
        fam = FAMILIES[family]
        self.name, self.variant = family, variant
        self.with_fingers = bool(with_fingers) and family == "smplx"
        num_betas = min(num_betas, arrays["shapedirs"].shape[2])
        self.shape_names = tuple(f"beta{i}" for i in range(num_betas))
        self.faces = np.ascontiguousarray(arrays["f"].astype(np.int64))
        weights = arrays["weights"]
        if family == "smpl":
            self.joint_names = SMPL_PARTS[1:]
            part_of_joint = np.arange(24)
        else:
            keep = list(range(1, 23)) + (list(range(25, 55)) if self.with_fingers else [])
            self.joint_names = tuple(fam.joint_names[i] for i in keep)
            part_of_joint = np.array(list(range(22)) + [15, 15, 15] + [22] * 15 + [23] * 15)
        self.part_labels = part_of_joint[np.argmax(weights, axis=1)].astype(np.int64)
        self._articulated = [fam.joint_names.index(n) for n in self.joint_names]
        self.pose_limits = _pose_limits(self.joint_names)
        self._num_betas = num_betas
        self._family = fam
        self._build_keypoint_plan(arrays)
        self._make_tensors(arrays, torch.device(device) if device is not None else torch.device("cpu"), dtype)

    # ----------------------------------------------------------------------------- set-up

    def _build_keypoint_plan(self, arrays):
        """``self._kp_src`` ``[134]``: for each DWPose-134 slot the row of the point pool
        (joints, then named vertices, then face landmarks, then the neck, then a zero row)."""
        from smplx.vertex_ids import vertex_ids as smplx_vertex_ids

        fam = self._family
        vid = smplx_vertex_ids["smplh" if fam.name == "smpl" else "smplx"]
        names = ["nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe",
                 "RHeel"] + ([side + t for side in ("l", "r") for t in _TIPS] if self.with_fingers else [])
        self._vertex_ids = [vid[n] for n in names]
        J = fam.num_joints
        vpos = {n: J + i for i, n in enumerate(names)}
        self._lmk = None
        n_lmk = 0
        if fam.name == "smplx" and "lmk_faces_idx" in arrays and "lmk_bary_coords" in arrays:
            n_static = int(arrays["lmk_faces_idx"].shape[0])
            dynamic = n_static == 51 and "dynamic_lmk_faces_idx" in arrays and "dynamic_lmk_bary_coords" in arrays
            if n_static in (51, 68):
                self._lmk = dict(static=n_static, dynamic=dynamic)
                n_lmk = n_static + (17 if dynamic else 0)
        lmk0 = J + len(names)
        neck, zero = lmk0 + n_lmk, lmk0 + n_lmk + 1
        src = np.full(134, zero, np.int64)
        body = [vpos["nose"], neck, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7,
                vpos["reye"], vpos["leye"], vpos["rear"], vpos["lear"]]
        src[:18] = body
        src[18:24] = [vpos[n] for n in ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")]
        src[92], src[113] = 20, 21
        if self.with_fingers:  # OpenPose hand order: thumb, index, middle, ring, pinky; smplx order
            finger_base = {"index": 0, "middle": 3, "pinky": 6, "ring": 9, "thumb": 12}  # offsets from 25 / 40
            for slot0, first, side in ((93, 25, "l"), (114, 40, "r")):
                for f, tip in enumerate(_TIPS):
                    b = first + finger_base[tip]
                    src[slot0 + 4 * f: slot0 + 4 * f + 4] = [b, b + 1, b + 2, vpos[side + tip]]
        if self._lmk is not None:
            if self._lmk["static"] == 68:
                src[24:92] = lmk0 + np.arange(68)
            else:  # smplx's 51 = iBUG 17..67, the 17 dynamic contour points = iBUG 0..16
                src[24 + 17:92] = lmk0 + np.arange(51)
                if self._lmk["dynamic"]:
                    src[24:24 + 17] = lmk0 + 51 + np.arange(17)
        self._kp_src = src
        self.keypoint_mask = src != zero

    def _make_tensors(self, a: dict, device, dtype):
        """The model's tensors (attributes ``_*``), from the file's float64 arrays."""
        B, J = self._num_betas, self._family.num_joints
        t = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)  # noqa: E731
        self._v_template = t(a["v_template"])
        self._shapedirs = t(a["shapedirs"][:, :, :B])
        # pose blend shapes of the articulated joints only: the others' (R - I) is zero
        rows = np.concatenate([np.arange(9 * (j - 1), 9 * j) for j in self._articulated])
        # laid out [P, 3·V] (coordinate-major) so the offsets come out [T, 3, V], like the skinning
        self._posedirs = t(np.transpose(a["posedirs"][:, :, rows], (2, 1, 0)).reshape(len(rows), -1))
        self._J_regressor = t(a["J_regressor"])
        self._weights_t = t(a["weights"].T)  # [J, V]
        parents = a["kintree_table"][0].astype(np.int64).copy()
        parents[0] = -1
        self._parents = torch.as_tensor(parents, device=device)
        # full rotation stack = [identity, articulated...][gather]
        gather = np.zeros(J, np.int64)
        gather[self._articulated] = np.arange(1, len(self._articulated) + 1)
        self._gather = torch.as_tensor(gather, device=device)
        self._vid = torch.as_tensor(self._vertex_ids, device=device)
        self._kp_src_t = torch.as_tensor(self._kp_src, device=device)
        self._joint_rows_t = torch.as_tensor([0] + self._articulated, device=device)
        self._C = t(_C)
        self._faces_t = torch.as_tensor(self.faces, device=device)
        if self._lmk is not None:
            self._lmk_faces = torch.as_tensor(a["lmk_faces_idx"].astype(np.int64), device=device)
            self._lmk_bary = t(a["lmk_bary_coords"])
            if self._lmk["dynamic"]:
                self._dyn_faces = torch.as_tensor(a["dynamic_lmk_faces_idx"].astype(np.int64), device=device)
                self._dyn_bary = t(a["dynamic_lmk_bary_coords"])
                chain, j = [], 12
                while j != -1:
                    chain.append(j)
                    j = int(parents[j])
                self._neck_chain = torch.as_tensor(chain, device=device)
        self.device, self.dtype = device, dtype

    def to(self, device=None, dtype=None) -> "SMPLBody":
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device, dtype) if value.is_floating_point() else value.to(device))
        self.device, self.dtype = device, dtype
        return self

    # ----------------------------------------------------------------------------- forward

    def forward(self, shape: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                transl: torch.Tensor | None = None) -> BodyOutput:
        """``shape`` [S] or [T, S], ``body_pose`` [T, J, 3], ``global_orient`` [T, 3], ``transl``
        [T, 3] → canonical-frame ``BodyOutput`` (vertices [T, V, 3], keypoints [T, 134, 3],
        joints [T, J+1, 3])."""
        from smplx.lbs import batch_rigid_transform, batch_rodrigues

        dev, dt = self.device, self.dtype
        body_pose = body_pose.to(dev, dt)
        T, NA = body_pose.shape[0], len(self._articulated)
        if body_pose.shape[1:] != (NA, 3):
            raise ValueError(f"body_pose must be [T, {NA}, 3] ({self.name}: {', '.join(self.joint_names[:3])}, ...), "
                             f"got {tuple(body_pose.shape)}")
        global_orient = global_orient.to(dev, dt).reshape(T, 3)
        betas = shape.to(dev, dt)
        betas = betas[None] if betas.dim() == 1 else betas
        if betas.shape[-1] != self.shape_dim or betas.shape[0] not in (1, T):
            raise ValueError(f"shape must be [{self.shape_dim}] or [T, {self.shape_dim}], got {tuple(shape.shape)}")
        V = self._v_template.shape[0]
        v_shaped = self._v_template + torch.einsum("sb,vcb->svc", betas, self._shapedirs)  # [S, V, 3]
        J_rest = torch.einsum("jv,svc->sjc", self._J_regressor, v_shaped)  # [S, J, 3]
        eye = torch.eye(3, device=dev, dtype=dt)
        rot = batch_rodrigues(body_pose.reshape(-1, 3)).view(T, NA, 3, 3)
        full = torch.cat([eye.expand(T, 1, 3, 3), rot], 1)[:, self._gather]  # [T, J, 3, 3], root = I
        # everything below works in a [T, 3, V] layout: contiguous along the vertices
        v_posed = v_shaped.transpose(1, 2) + ((rot - eye).reshape(T, -1) @ self._posedirs).view(T, 3, V)
        joints, A = batch_rigid_transform(full, J_rest.expand(T, -1, -1).contiguous(), self._parents, dtype=dt)
        # canonical placement folded into the bone transforms: [M | transl - M·pelvis] · A, with
        # M = R_g · C (root rotation is identity, so the posed pelvis is the rest one)
        R_g = batch_rodrigues(global_orient)
        M = R_g @ self._C  # [T, 3, 3]
        pelvis = J_rest[:, 0].expand(T, 3)
        shift = -(M @ pelvis[..., None])[..., 0]
        if transl is not None:
            shift = shift + transl.to(dev, dt).reshape(T, 3)
        Ar = M[:, None] @ A[:, :, :3, :3]
        At = (M[:, None] @ A[:, :, :3, 3:])[..., 0] + shift[:, None]
        # per-vertex blended transforms [T, 4, 3, V] (column k of the 3×4, row i, vertex)
        A43 = torch.cat([Ar, At[..., None]], -1).permute(0, 3, 2, 1).reshape(T * 12, -1)  # [(t, k, i), J]
        B = (A43 @ self._weights_t).view(T, 4, 3, V)
        b0, b1, b2, b3 = B.unbind(1)  # unbind, not indexing: one gradient buffer, not four
        x0, x1, x2 = v_posed.unsqueeze(2).unbind(1)
        verts = b3 + b0 * x0 + b1 * x1 + b2 * x2
        verts = verts.transpose(1, 2).contiguous()  # canonical [T, V, 3]
        joints = joints @ M.transpose(1, 2) + shift[:, None]
        pool = [joints, verts[:, self._vid]]
        if self._lmk is not None:
            pool.append(self._landmarks(verts, full, R_g))
        pool = torch.cat(pool, 1)
        pool = torch.cat([pool, pool[:, [16, 17]].mean(1, keepdim=True), torch.zeros_like(pool[:, :1])], 1)
        keypoints = pool[:, self._kp_src_t]
        return BodyOutput(vertices=verts, keypoints=keypoints, joints=joints[:, self._joint_rows_t])


    def _landmarks(self, verts, full, R_g):
        """SMPL-X face landmarks [T, L, 3] in SMPL's frame: the static ones, then the 17 contour
        points chosen by head yaw (smplx's lookup, which wants the camera-relative root rotation
        in SMPL's frame: C · R_g · C)."""
        from smplx.lbs import find_dynamic_lmk_idx_and_bcoords, vertices2landmarks

        T = verts.shape[0]
        faces_idx = self._lmk_faces.expand(T, -1)
        bary = self._lmk_bary.expand(T, -1, -1)
        if self._lmk["dynamic"]:
            with torch.no_grad():  # the lookup is a table index: no gradient through it
                posed = full.detach().clone()
                posed[:, 0] = self._C @ R_g.detach() @ self._C
                dyn_faces, dyn_bary = find_dynamic_lmk_idx_and_bcoords(
                    verts.detach(), posed, self._dyn_faces, self._dyn_bary, self._neck_chain, pose2rot=False)
            faces_idx = torch.cat([faces_idx, dyn_faces], 1)
            bary = torch.cat([bary, dyn_bary], 1)
        return vertices2landmarks(verts, self._faces_t, faces_idx, bary)
