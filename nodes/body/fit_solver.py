"""The optimisation behind ``fit.fit_sequence``: state, energy and stages (see ``fit.py`` for
the method). Everything is batched over frames on the model's device and dtype."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from . import fit_terms as terms
from .base import BodyModel
from .fit_init import initial_orientation, initial_translation, local_quadratic, smooth_keypoints
from .geometry import aa_to_matrix, intrinsics, matrix_to_aa, project
from .silhouette import SilhouetteTarget, farthest_point_sample, silhouette_energy

log = logging.getLogger(__name__)


def shape_bounds(model: BodyModel) -> tuple[np.ndarray, np.ndarray] | None:
    """Box of valid shape values, from ``model.shape_limits`` ``[S, 2]`` when the model has one;
    Anny's phenotypes are 0..1."""
    lim = getattr(model, "shape_limits", None)
    if lim is not None:
        lim = np.asarray(lim, float)
        return lim[:, 0], lim[:, 1]
    if model.name == "anny":
        return np.zeros(model.shape_dim), np.ones(model.shape_dim)
    return None


class Progress:
    """Counts optimisation steps and reports ``fn(done, total)``; exceptions from ``fn``
    propagate (a node's cancel)."""

    def __init__(self, fn, total: int):
        self.fn, self.total, self.done = fn, max(int(total), 1), 0

    def step(self, n: int = 1):
        self.done = min(self.done + n, self.total)
        if self.fn is not None:
            self.fn(self.done, self.total)


@dataclass
class _ShapeJacobian:
    """Finite-difference derivatives, with respect to the shape at the current body, of the
    keypoints ``[T, 134, 3, S]``, of the silhouette vertices ``[T, M, 3, S]`` (or None) and of
    the neutral body's size ``[S]`` (``size`` at the current shape, metres).

    A shape change that grows the body by a factor also moves it away from the camera by that
    factor (``scale``): the image size stays, and the shape is judged by its proportions and
    outline, not by a size the depth can trade against (monocular scale ambiguity)."""

    keypoints: torch.Tensor
    vertices: torch.Tensor | None
    size: float
    size_grad: torch.Tensor

    def scale(self, dshape: torch.Tensor) -> torch.Tensor:
        return 1.0 + (self.size_grad @ dshape) / self.size


def _to_camera_params(transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Translation ``[T, 3]`` → (image-plane direction ``x/z, y/z`` ``[T, 2]``, log-depth ``[T]``):
    the parametrisation the optimiser sees, so that a change of depth (or of body size through
    the shape) keeps the body where it is in the image."""
    z = transl[:, 2].clamp(min=1e-3)
    return transl[:, :2] / z[:, None], torch.log(z)


def _from_camera_params(uv: torch.Tensor, logz: torch.Tensor) -> torch.Tensor:
    z = torch.exp(logz)
    return torch.cat([uv * z[:, None], z[:, None]], -1)


class Fitter:
    """One fit: holds the targets, the current parameters (``shape``, ``pose``, ``orient``,
    ``transl``) and runs the stages."""

    def __init__(self, model: BodyModel, kps: np.ndarray, width: int, height: int, masks, focal: float,
                 config, progress=None):
        self.model, self.cfg = model, config
        self.dev, self.dt = model.device, model.dtype
        self.T = kps.shape[0]
        self.width, self.height = width, height
        self.scale = max(width, height) / 1000.0
        self.K_np = intrinsics(focal, width, height)
        self.K = self._t(self.K_np)
        kmask = np.asarray(model.keypoint_mask, bool)
        self.point_w = self._t(terms.keypoint_weights(kmask, config.feet_weight, config.hand_weight,
                                                      config.face_weight))
        self.kps_np = kps
        smoothed = smooth_keypoints(kps, config.min_confidence, config.keypoint_smoothing,
                                    keep_beyond=12.0 * self.scale)
        self.target = self._t(smoothed[..., :2])
        self.obs_w = terms.observation_weights(self._t(kps[..., 2]), self.point_w, config.min_confidence)
        self.ok_np = (kps[..., 2] >= config.min_confidence) & kmask[None]
        self.masks = masks
        self.sil = SilhouetteTarget(masks, self.dev, self.dt, config.contour_points) if masks is not None else None
        lim = model.pose_limits
        if lim is not None:
            lim = np.asarray(lim, float)
            self.lo, self.hi = self._t(lim[..., 0]), self._t(lim[..., 1])
            half = np.clip((lim[..., 1] - lim[..., 0]) / 2, 0.1, 1.5)
        else:
            self.lo = self.hi = None
            half = np.ones((model.num_joints, 3))
        self.prior_scale = self._t(half)
        bounds = shape_bounds(model)
        self.shape_lo = self._t(bounds[0]) if bounds else None
        self.shape_hi = self._t(bounds[1]) if bounds else None
        self.shape0 = model.default_shape().detach().to(self.dev, self.dt)
        self.shape = self.shape0.clone()
        c = config
        sil_iters = c.silhouette_iters if masks is not None else 0
        repair = c.repair_rounds * 2 if self.T > 1 else 0
        self.progress = Progress(progress, 1 + c.body_iters + repair + c.shape_iters + sil_iters)
        self._sil_idx = None

    def _t(self, x, dtype=None):
        return torch.as_tensor(np.asarray(x), dtype=dtype or self.dt, device=self.dev)

    # ------------------------------------------------------------------ initialisation
    def initialise(self):
        """Neutral body placed and turned per frame (``fit_init``), joint prior weights."""
        J = self.model.num_joints
        with torch.no_grad():
            out = self.model(self.shape0, torch.zeros(1, J, 3, dtype=self.dt, device=self.dev),
                             torch.zeros(1, 3, dtype=self.dt, device=self.dev))
        neutral = out.keypoints[0].double().cpu().numpy()
        self.neutral_vertices = out.vertices[0]
        kp2 = self.kps_np[..., :2]
        t0, _ = initial_translation(neutral, kp2, self.ok_np, self.K_np, self.width, self.height)
        R, t = initial_orientation(neutral, kp2, self.kps_np[..., 2], self.ok_np, self.K_np, t0, self.scale,
                                   self.cfg.sigma, iters=self.cfg.init_iters, device=self.dev)
        self.pose = torch.zeros(self.T, J, 3, dtype=self.dt, device=self.dev)
        self.orient = matrix_to_aa(torch.as_tensor(R)).to(self.dev, self.dt)
        self.transl = self._t(t)
        self._joint_weights()
        self.progress.step()

    def _joint_weights(self, window: int = 3, reach: float = 0.08):
        """Per frame and joint: the pose-prior multiplier (``unseen_prior`` for a joint none of
        whose keypoints — those it moves by more than ``reach`` m/rad at the neutral pose — is
        seen within ``window`` frames) and the pose-velocity multiplier (``unseen_velocity``
        for a joint with none of its keypoints seen in the frame itself)."""
        J, eps = self.model.num_joints, 0.1
        pose = torch.zeros(3 * J + 1, J, 3, dtype=self.dt, device=self.dev)
        for j in range(J):
            for a in range(3):
                pose[1 + 3 * j + a, j, a] = eps
        with torch.no_grad():
            kp = self.model(self.shape0, pose, torch.zeros(3 * J + 1, 3, dtype=self.dt, device=self.dev)).keypoints
        move = (kp[1:] - kp[:1]).norm(dim=-1).view(J, 3, 134).amax(1) / eps  # [J, 134] m/rad
        moved = (move > reach).double().cpu().numpy()
        free = moved.sum(1) == 0  # joints that move no keypoint keep the plain weights
        seen_now = (self.obs_w > 0).double().cpu().numpy()  # [T, 134]
        seen = seen_now
        if self.T > 1:
            pad = np.pad(seen_now, ((window, window), (0, 0)))
            seen = np.max(np.stack([pad[i:i + self.T] for i in range(2 * window + 1)]), 0)
        prior = np.where(seen @ moved.T > 0, 1.0, self.cfg.unseen_prior)
        prior[:, free] = 1.0
        vel = np.where(seen_now @ moved.T > 0, 1.0, self.cfg.unseen_velocity)
        vel[:, free] = 1.0
        self.prior_weight = self._t(prior)[..., None]
        self.velocity_weight = self._t(vel)[..., None]

    # ------------------------------------------------------------------ energy
    def _pix_per_m(self, transl):
        """Normalised pixels per metre at each frame's body depth ``[T]``."""
        return self.K[0, 0] / transl[:, 2].detach().clamp(min=0.1) / self.scale

    def sil_index(self):
        """A farthest-point sample of the vertices: the silhouette term's points."""
        if self._sil_idx is None:
            self._sil_idx = farthest_point_sample(self.neutral_vertices, self.cfg.silhouette_points)
        return self._sil_idx

    def energy(self, pose, orient, transl, sigma, with_sil=False, frames=None, dshape=None, jac=None,
               update_nearest=True):
        """Per-frame energy ``[T]``. ``frames`` (indices): only those frames, each on its own (no
        temporal or silhouette terms). ``dshape`` with ``jac``: the shape offset from
        ``self.shape``, applied through the linearised model."""
        cfg = self.cfg
        if dshape is not None:
            transl = transl * jac.scale(dshape)
        out = self.model(self.shape, pose, orient, transl)
        kp = out.keypoints
        if dshape is not None:
            kp = kp + jac.keypoints @ dshape
        sel = slice(None) if frames is None else frames
        e = terms.reprojection(kp, self.K, self.target[sel], self.obs_w[sel], self.scale, sigma)
        e = e + cfg.pose_prior * terms.pose_prior(pose, self.prior_scale / self.prior_weight[sel].sqrt(),
                                                  self.lo, self.hi, cfg.limit_weight)
        if frames is not None:
            return e
        if self.T > 1:
            if cfg.smooth_velocity > 0 or cfg.smooth_acceleration > 0:
                e = e + terms.temporal(kp[:, self.point_w > 0], self._pix_per_m(transl), cfg.smooth_velocity,
                                       cfg.smooth_acceleration, cfg.smooth_sigma)
            e = e + cfg.pose_velocity * terms.param_velocity(pose, self.velocity_weight)
        if with_sil and self.sil is not None:
            v = out.vertices[:, self.sil_index()]
            if dshape is not None and jac.vertices is not None:
                v = v + jac.vertices @ dshape
            sil = silhouette_energy(self.sil, project(v, self.K), cfg.silhouette_sigma * self.scale,
                                    update_nearest=update_nearest)
            e = e + cfg.silhouette_weight * sil / self.scale ** 2
        return e

    def shape_energy(self, shape):
        """Shape prior (toward the average body, in units of ``shape_scale``) plus a stiff
        barrier at the shape bounds."""
        e = self.cfg.shape_prior * (((shape - self.shape0) / self.cfg.shape_scale) ** 2).sum()
        if self.shape_lo is not None:
            out = torch.relu(self.shape_lo - shape) + torch.relu(shape - self.shape_hi)
            e = e + 1e4 * (out * out).sum()
        return e

    def _size(self, shape: torch.Tensor) -> torch.Tensor:
        """RMS spread (metres) of the neutral body's body and foot keypoints for ``shape`` [S]."""
        J = self.model.num_joints
        kp = self.model(shape, torch.zeros(1, J, 3, dtype=self.dt, device=self.dev),
                        torch.zeros(1, 3, dtype=self.dt, device=self.dev)).keypoints[0]
        kp = kp[terms.ERROR_POINTS][torch.as_tensor(np.asarray(self.model.keypoint_mask, bool)[terms.ERROR_POINTS],
                                                    device=self.dev)]
        return ((kp - kp.mean(0)) ** 2).sum(-1).mean().sqrt()

    def shape_jacobian(self, pose, orient, transl, with_vertices: bool) -> _ShapeJacobian:
        """Forward differences in each shape parameter (``shape_step``, stepping inward at a
        bound): per parameter one no-gradient pass over all frames and one of the neutral body
        (same shape back to back, so a model that caches its shape-dependent part builds it
        once)."""
        h = self.cfg.shape_step
        with torch.no_grad():
            base = self.model(self.shape, pose, orient, transl)
            size0 = self._size(self.shape)
            idx = self.sil_index() if with_vertices else None
            dk, dv, dsize = [], [], []
            for i in range(self.model.shape_dim):
                s = self.shape.clone()
                step = -h if self.shape_hi is not None and s[i] + h > self.shape_hi[i] else h
                s[i] += step
                out = self.model(s, pose, orient, transl)
                dk.append((out.keypoints - base.keypoints) / step)
                if with_vertices:
                    dv.append((out.vertices[:, idx] - base.vertices[:, idx]) / step)
                dsize.append((self._size(s) - size0) / step)
        return _ShapeJacobian(torch.stack(dk, -1), torch.stack(dv, -1) if with_vertices else None,
                              float(size0), torch.stack(dsize))

    # ------------------------------------------------------------------ stages
    def body_stage(self, iters: int, sigma0: float, sigma1: float, lr: float, with_shape: bool = False,
                   with_sil: bool = False):
        """Adam over pose, orientation and translation of every frame (and the shape, through
        the model linearised in the shape and relinearised every ``jacobian_every`` steps),
        with the robustifier's scale annealed from ``sigma0`` to ``sigma1``."""
        if iters <= 0:
            return
        cfg = self.cfg
        with_shape = with_shape and self.model.shape_dim > 0
        with_sil = with_sil and self.sil is not None
        pose = self.pose.clone().requires_grad_(True)
        orient = self.orient.clone().requires_grad_(True)
        uv, logz = (x.clone().requires_grad_(True) for x in _to_camera_params(self.transl))
        groups = [{"params": [pose], "lr": lr}, {"params": [orient], "lr": lr * 0.7},
                  {"params": [uv], "lr": lr * 0.1}, {"params": [logz], "lr": lr * 0.5}]
        dshape = None
        if with_shape:
            dshape = torch.zeros(self.model.shape_dim, dtype=self.dt, device=self.dev, requires_grad=True)
            groups.append({"params": [dshape], "lr": cfg.shape_lr})
        opt = torch.optim.Adam(groups)
        base_lr = [g["lr"] for g in opt.param_groups]
        jac = None
        for i in range(iters):
            if with_shape and i % cfg.jacobian_every == 0:
                if jac is not None:
                    with torch.no_grad():
                        logz += torch.log(jac.scale(dshape))
                self._commit_shape(dshape)
                with torch.no_grad():
                    jac = self.shape_jacobian(pose, orient, _from_camera_params(uv, logz), with_sil)
            sigma = sigma0 * (sigma1 / sigma0) ** (i / max(iters - 1, 1))
            opt.zero_grad(set_to_none=True)
            transl = _from_camera_params(uv, logz)
            e = self.energy(pose, orient, transl, sigma, with_sil, dshape=dshape, jac=jac,
                            update_nearest=(i % 3 == 0)).sum()
            if with_shape:
                e = e + self.shape_energy(self.shape + dshape)
            e.backward()
            opt.step()
            frac = (i + 1) / iters  # cosine decay to 10% of each group's rate
            for g, lr0 in zip(opt.param_groups, base_lr):
                g["lr"] = lr0 * (0.1 + 0.45 * (1 + np.cos(np.pi * frac)))
            self.progress.step()
        if with_shape:
            with torch.no_grad():
                logz += torch.log(jac.scale(dshape))
            self._commit_shape(dshape)
        with torch.no_grad():
            self.pose, self.orient, self.transl = pose.detach(), orient.detach(), _from_camera_params(uv, logz)

    def _commit_shape(self, dshape):
        """Fold the linearised offset into ``self.shape`` (clamped to the bounds) and reset it."""
        with torch.no_grad():
            shape = self.shape + dshape
            if self.shape_lo is not None:
                shape = torch.minimum(torch.maximum(shape, self.shape_lo), self.shape_hi)
            self.shape = shape.detach().clone()
            dshape.zero_()

    def frame_errors(self) -> np.ndarray:
        """``[T]`` mean pixel distance of the body and foot keypoints to the (smoothed) targets,
        NaN for frames with none."""
        with torch.no_grad():
            kp = project(self.model(self.shape, self.pose, self.orient, self.transl).keypoints, self.K)
            d = (kp - self.target).norm(dim=-1).double().cpu().numpy()
        use = self.ok_np[:, terms.ERROR_POINTS]
        d = d[:, terms.ERROR_POINTS]
        return np.array([d[t, use[t]].mean() if use[t].any() else np.nan for t in range(self.T)])

    def repair(self, rounds: int, iters: int, window: int = 5):
        """Frames stuck in a poor local minimum (an arm folded the wrong way...) restart from a
        better-fitting neighbour's pose and orientation (within ``window`` frames) and keep the
        result where it lowers their own energy. Over ``rounds``, good fits spread through a
        run of bad frames."""
        if self.T < 2:
            return
        sigma, lr = self.cfg.sigma_final, self.cfg.lr
        for _ in range(rounds):
            err = self.frame_errors()
            finite = np.isfinite(err)
            if not finite.any():
                break
            med = float(np.median(err[finite]))
            bad = np.flatnonzero(finite & (err > max(1.5 * med, 4.0 * self.scale)))
            starts = []
            for t in bad:
                near = [n for n in range(max(0, t - window), min(self.T, t + window + 1))
                        if n != t and np.isfinite(err[n]) and err[n] < 0.7 * err[t]]
                if near:
                    starts.append((t, min(near, key=lambda n: err[n])))
            if not starts:
                break
            idx = torch.as_tensor([t for t, _ in starts], device=self.dev)
            src = torch.as_tensor([n for _, n in starts], device=self.dev)
            with torch.no_grad():
                old = self.energy(self.pose[idx], self.orient[idx], self.transl[idx], sigma, frames=idx)
            pose = self.pose[src].clone().requires_grad_(True)
            orient = self.orient[src].clone().requires_grad_(True)
            uv, logz = (x.clone().requires_grad_(True) for x in _to_camera_params(self.transl[idx]))
            opt = torch.optim.Adam([{"params": [pose], "lr": lr}, {"params": [orient], "lr": lr * 0.7},
                                    {"params": [uv], "lr": lr * 0.1}, {"params": [logz], "lr": lr * 0.5}])
            for _ in range(iters):
                opt.zero_grad(set_to_none=True)
                self.energy(pose, orient, _from_camera_params(uv, logz), sigma, frames=idx).sum().backward()
                opt.step()
            with torch.no_grad():
                transl = _from_camera_params(uv, logz)
                better = self.energy(pose, orient, transl, sigma, frames=idx) < old
                keep = idx[better]
                self.pose[keep] = pose.detach()[better]
                self.orient[keep] = orient.detach()[better]
                self.transl[keep] = transl.detach()[better]
            log.debug("body fit repair: %d of %d restarted frames improved", int(better.sum()), len(starts))
            self.progress.step(2)

    def smooth_motion(self, sigma_frames: float):
        """Low-pass the fitted motion (joint angles, root rotation, image position and
        log-depth) with ``local_quadratic``: removes the frame-to-frame jitter the fit picks up
        from noisy keypoints, keeps accelerating motion. The root of a frame without any torso
        keypoint (nothing placed it) is interpolated from its neighbours even when
        ``sigma_frames`` is 0."""
        if self.T < 5:
            return
        placed = self.ok_np[:, terms.TORSO + terms.HEAD].any(1).astype(np.float64)[:, None]
        if sigma_frames <= 0:
            if placed.all() or not placed.any():
                return
            sigma_frames, joints = 2.0, False
        else:
            joints = True
        T = self.T
        pose = self.pose.double().cpu().numpy().reshape(T, -1, 1)
        if joints:
            pose, _ = local_quadratic(pose, np.ones(pose.shape[:2]), sigma_frames)
        R = aa_to_matrix(self.orient.double()).cpu().numpy().reshape(T, 1, 9)
        R_s, _ = local_quadratic(R, placed, sigma_frames, fill=True)
        U, _, Vt = np.linalg.svd(R_s.reshape(T, 3, 3))
        D = np.ones((T, 3))
        D[:, 2] = np.sign(np.linalg.det(U @ Vt))
        R_s = (U * D[:, None, :]) @ Vt  # nearest rotation
        uv, logz = _to_camera_params(self.transl.double())
        cam = torch.cat([uv, logz[:, None]], -1).cpu().numpy()[:, None]
        cam_s, _ = local_quadratic(cam, placed, sigma_frames, fill=True)
        if not joints:  # only fill the unplaced frames
            keep = placed[:, 0] > 0
            R_s[keep] = R.reshape(T, 3, 3)[keep]
            cam_s[keep] = cam[keep]
        cam_s = torch.as_tensor(cam_s[:, 0])
        new = (self._t(pose.reshape(T, -1, 3)), matrix_to_aa(torch.as_tensor(R_s)).to(self.dev, self.dt),
               _from_camera_params(cam_s[:, :2], cam_s[:, 2]).to(self.dev, self.dt))
        # keep a frame's own fit where smoothing would blend two different solutions (an arm
        # that flips between neighbouring frames): its keypoint error must stay close
        before = self.frame_errors()
        old = (self.pose, self.orient, self.transl)
        self.pose, self.orient, self.transl = new
        after = self.frame_errors()
        revert = torch.as_tensor(np.isfinite(before) & (after > before + 2.0 * self.scale + 0.25 * before),
                                 device=self.dev)
        for name, o in zip(("pose", "orient", "transl"), old):
            cur = getattr(self, name)
            cur[revert] = o[revert]
