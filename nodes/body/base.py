"""The interface every parametric body model in Marionette implements (Anny, SMPL, SMPL-X), so
fitting, shape alignment and the node code never depend on which one is loaded.

Canonical frame: every model returns vertices and joints in one "camera-ready" frame, the
OpenCV camera's axes — x to the image right (the person's left when they face the camera),
y down, z away from the camera — in metres. With ``global_orient = 0`` a body stands upright
facing the camera (its front looks toward −z), pelvis at the origin; ``transl`` then moves it
in camera space. This is what makes a fit start well: identity means "standing, facing us".

Pose: ``body_pose`` is ``[T, J, 3]`` axis-angle rotations of the model's articulated joints
(``joint_names``), each relative to the model's neutral pose; which neutral pose that is
(T-pose for SMPL, A-pose for Anny) is the model's business. ``global_orient`` ``[T, 3]``
axis-angle rotates the whole body about the pelvis in the canonical frame.

Shape: ``shape`` ``[S]`` (one person) or ``[T, S]``, in the model's own parameters
(SMPL betas; Anny phenotypes in 0..1), with ``shape_names`` naming them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# SMPL's 24 parts, the labels of Champ's semantic map (champ_spec.md §8.2).
SMPL_PARTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)


@dataclass
class BodyOutput:
    """One forward pass, canonical frame, metres.

    vertices:  [T, V, 3]
    keypoints: [T, 134, 3] 3D points in DWPose-134 order; rows where ``keypoint_mask`` is False
               are zeros (the model has no such point).
    joints:    [T, J+1, 3] the articulated joints' centres (root first), for priors and drawing.
    """

    vertices: torch.Tensor
    keypoints: torch.Tensor
    joints: torch.Tensor


class BodyModel:
    """A loaded parametric body. Subclasses set the attributes and implement ``forward``.

    Attributes:
        name: ``"anny"``, ``"smpl"`` or ``"smplx"`` (plus ``variant``, e.g. the gender).
        faces: ``[F, 3]`` int64 triangle indices.
        part_labels: ``[V]`` int64, SMPL 24-part label of every vertex (``SMPL_PARTS``).
        shape_names: names of the shape parameters; ``shape_dim = len(shape_names)``.
        joint_names: names of the articulated joints ``body_pose`` rotates.
        keypoint_mask: ``[134]`` bool, which DWPose-134 points the model provides.
        pose_limits: ``[J, 3, 2]`` plausible axis-angle ranges per joint (radians) for the
            joint-limit prior, or ``None``.
        device / dtype: where ``forward`` computes.
    """

    name: str = "body"
    variant: str = ""
    faces: np.ndarray
    part_labels: np.ndarray
    shape_names: tuple[str, ...] = ()
    joint_names: tuple[str, ...] = ()
    keypoint_mask: np.ndarray
    pose_limits: np.ndarray | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    def shape_dim(self) -> int:
        return len(self.shape_names)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_vertices(self) -> int:
        return int(self.part_labels.shape[0])

    def default_shape(self) -> torch.Tensor:
        """``[S]`` the average body's shape parameters."""
        return torch.zeros(self.shape_dim, device=self.device, dtype=self.dtype)

    def forward(self, shape: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                transl: torch.Tensor | None = None) -> BodyOutput:
        """Differentiable body for ``T`` frames (see the module docstring for frames/units)."""
        raise NotImplementedError

    def __call__(self, *args, **kwargs) -> BodyOutput:
        return self.forward(*args, **kwargs)

    def to(self, device=None, dtype=None) -> "BodyModel":
        """Move the model's tensors; returns self."""
        raise NotImplementedError
