"""The custom link types between Marionette's nodes.

Each id is the string ComfyUI matches links by. Payloads:

``POSE_KEYPOINT``
    Exactly comfyui_controlnet_aux's payload, so its nodes and ours link both ways: a list with
    one dict per frame, ``{"people": [person, ...], "canvas_width": W, "canvas_height": H}``,
    each person holding flat ``[x, y, c] * n`` lists in pixels (OpenPose-18 body, 70 face
    points, 21 per hand, plus our ``foot_keypoints_2d`` (6) and ``marionette_confidence``
    (134 raw scores in DWPose order)). Converters to the dense ``[T, P, 134, 3]`` array used
    inside stages live in ``nodes/keypoints.py``.

``BODY_MODEL``
    A loaded parametric body (``nodes/body/base.py: BodyModel``): Anny, SMPL or SMPL-X.

``BODY_SEQUENCE``
    ``BodySequence`` below: a fitted body per frame, with everything a renderer or another tool
    needs (camera-space vertices, faces, part labels, intrinsics), so the render stage never
    needs the body model. Saved and loaded as ``.npz`` (``nodes/body/io.py``).

Later stages add ``POINT_TRACKS``, ``CHAMP_MODEL``, ``GUIDANCE_FEATURES`` and ``STITCHING``
here (see DESIGN.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

POSE_KEYPOINT = "POSE_KEYPOINT"
BODY_MODEL = "BODY_MODEL"
BODY_SEQUENCE = "BODY_SEQUENCE"


@dataclass
class BodySequence:
    """A body fitted to ``T`` frames.

    Coordinates: OpenCV camera space (x right, y down, z forward), metres; pixels with centres
    at integers.

    model:        body model name (``"anny"``, ``"smpl"``, ``"smplx"``), ``variant`` e.g. gender.
    shape:        ``[S]`` the person's shape parameters (one set for the whole sequence).
    body_pose:    ``[T, J, 3]`` axis-angle per articulated joint (the model's ``joint_names``).
    global_orient:``[T, 3]`` axis-angle of the whole body in camera space.
    transl:       ``[T, 3]`` body translation in camera space, metres.
    K:            ``[T, 3, 3]`` camera intrinsics per frame, pixels.
    width/height: image size in pixels.
    vertices:     ``[T, V, 3]`` float32 camera-space vertices.
    faces:        ``[F, 3]`` int32.
    part_labels:  ``[V]`` int SMPL 24-part label per vertex (Champ's semantic colours).
    keypoints2d:  ``[T, 134, 2]`` the fitted body's projected DWPose-134 keypoints, NaN where the
                  model has no such point.
    fit_error:    ``[T]`` mean reprojection error of the fit in pixels (NaN when not fitted).
    shape_names / joint_names: names of the parameters (saved so other tools can read them).
    """

    model: str
    shape: np.ndarray
    body_pose: np.ndarray
    global_orient: np.ndarray
    transl: np.ndarray
    K: np.ndarray
    width: int
    height: int
    vertices: np.ndarray
    faces: np.ndarray
    part_labels: np.ndarray
    keypoints2d: np.ndarray
    fit_error: np.ndarray
    variant: str = ""
    shape_names: tuple[str, ...] = ()
    joint_names: tuple[str, ...] = ()
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vertices.shape[0])


# ------------------------------------------------------------------ sampler (Champ)

CHAMP_MODEL = "CHAMP_MODEL"
GUIDANCE_FEATURES = "GUIDANCE_FEATURES"


@dataclass
class ChampModelHandle:
    """A loaded Champ release (``CHAMP_MODEL``): handles into the shared model cache, never the
    weights themselves, so ComfyUI's memory manager keeps deciding where they live.

    release:    the release folder (``nodes/sampler/champ_files.py: ChampRelease``).
    components: component name (``denoising_unet``, ``reference_unet``, ``vae``,
                ``image_encoder``, ``guidance_encoder_<type>``) -> ``models_loader.cache.LoadedModel``;
                call ``.on_device(bytes)`` right before each use.
    dtype:      the weights' torch dtype (fp32 on CPU; fp16/bf16 on GPU by default).
    """

    release: object
    components: dict
    dtype: object

    def __repr__(self) -> str:
        return f"ChampModelHandle({getattr(self.release, 'root', self.release)}, dtype={self.dtype})"


@dataclass
class GuidanceFeatures:
    """Champ's guidance (``GUIDANCE_FEATURES``): the guidance encoders' outputs, weighted by each
    map's strength and summed, at the latent size of the animation.

    features: ``[1, C, F, height/8, width/8]`` float tensor (C = 320 for the official release),
              on the CPU or the compute device.
    frames:   F, the number of video frames.
    width/height: the animation size in pixels the features were encoded for (multiples of 8).
    maps:     which guidance maps went in (``depth``, ``normal``, ``semantic_map``, ``dwpose``).
    strengths: map -> the weight its features were summed with (official: 1.0 each).
    """

    features: object
    frames: int
    width: int
    height: int
    maps: tuple[str, ...]
    strengths: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames)
