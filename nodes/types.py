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

The sampler stage adds ``CHAMP_MODEL`` and ``GUIDANCE_FEATURES``; background tracking and long videos add
``POINT_TRACKS``, ``CAMERA_MOTION`` and ``STITCHING`` (see DESIGN.md).
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
              on the CPU or the compute device; ``None`` when the features are lazy (``source``).
    frames:   F, the number of video frames.
    width/height: the animation size in pixels the features were encoded for (multiples of 8).
    maps:     which guidance maps went in (``depth``, ``normal``, ``semantic_map``, ``dwpose``).
    strengths: map -> the weight its features were summed with (official: 1.0 each).
    source:   for long videos, instead of ``features``: an on-demand encoder
              (``nodes/sampler/lazy_guidance.py: LazyGuidance``) holding references to the maps
              and the encoders' handles, with ``shape`` (the full tensor's) and ``take(frames)``
              -> ``[1, C, n, height/8, width/8]`` float32 CPU features of those frame indices,
              equal to the eager ones. ``None`` when ``features`` holds them all.

    Read features through ``take(frames)`` (works for both); ``features`` is only set when the
    whole tensor is small enough to keep (Encode Guidance's ``eager_limit_mb``).
    """

    features: object
    frames: int
    width: int
    height: int
    maps: tuple[str, ...]
    strengths: dict = field(default_factory=dict)
    source: object = None

    def __len__(self) -> int:
        return int(self.frames)

    @property
    def lazy(self) -> bool:
        """True when the features are encoded on demand (``source``), not held."""
        return self.features is None

    def take(self, frames):
        """Features ``[1, C, n, height/8, width/8]`` of the frame indices ``frames`` (a range or a
        list), from ``features`` or encoded by ``source``."""
        if self.features is not None:
            return self.features[:, :, list(frames)]
        if self.source is None:
            raise ValueError("these guidance features hold neither features nor a source; run Encode Guidance again")
        return self.source.take(frames)


# ------------------------------------------------------------------ background and long videos

POINT_TRACKS = "POINT_TRACKS"
CAMERA_MOTION = "CAMERA_MOTION"
STITCHING = "STITCHING"


@dataclass
class PointTracks:
    """Background point tracks (``POINT_TRACKS``), from CoTracker outside the person's mask.

    tracks:       ``[T, N, 2]`` float32 pixel positions (x, y), pixel centres at integers, in
                  the video's own ``width`` x ``height``.
    visibility:   ``[T, N]`` bool, the tracker's visibility (a hidden point's position is a guess).
    query_frames: ``[N]`` int, the frame each point was queried in.
    width/height: the video size in pixels.
    extras:       anything else worth keeping (tracker name, dropped-track counts, ...).
    """

    tracks: np.ndarray
    visibility: np.ndarray
    query_frames: np.ndarray
    width: int
    height: int
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tracks.shape[0])


@dataclass
class CameraMotion:
    """Per-frame background motion (``CAMERA_MOTION``) relative to the first frame.

    homographies: ``[T, 3, 3]`` float64; ``homographies[t]`` maps a pixel (x, y, 1) of frame 0 to
                  frame t (pixel centres at integers); ``homographies[0]`` is the identity.
    models:       per frame, the model that was fitted: ``homography``, ``affine``,
                  ``similarity``, ``translation`` or ``identity`` (too few points).
    inliers:      ``[T]`` int, the points that agreed with the fitted motion.
    residual:     ``[T]`` float, mean inlier reprojection error in pixels.
    width/height: the video size in pixels.
    """

    homographies: np.ndarray
    models: tuple[str, ...]
    inliers: np.ndarray
    residual: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.homographies.shape[0])


MAX_CLIP_FRAMES = 32
"""Frames one UNet window/clip may hold: the rows of the motion modules' position encoding."""


@dataclass
class Stitching:
    """How Animate joins clips (``STITCHING``, from the Clip Stitcher node).

    mode:           ``aggregate``: Champ's temporal aggregation (windows of ``clip_frames``
                    overlapping by ``overlap``, averaged at every step, the official default);
                    ``chain``: first-frame chaining, clip by clip, each clip starting from the
                    previous clip's last ``overlap`` frames, the reference features kept in every
                    clip, frames streamed out clip by clip.
    clip_frames:    frames per window / clip (at most 32: the motion modules' position encoding).
    overlap:        frames shared by neighbouring windows / clips.
    blend:          seam blending of the overlapping frames in ``chain`` mode: ``none``,
                    ``linear`` or ``pyramid``.
    color_match:    ``none`` or ``reference``: match each clip's colours to the reference image.
    color_strength: 0..1, how much of the colour correction is applied.
    """

    mode: str = "aggregate"
    clip_frames: int = 24
    overlap: int = 4
    blend: str = "linear"
    color_match: str = "reference"
    color_strength: float = 1.0


def clip_ranges(frames: int, clip_frames: int, overlap: int) -> list[range]:
    """The clips of a ``chain`` run, the one plan the sampler generates and the stitch stage
    joins: ``range(start, end)`` of frame indices, each starting ``overlap`` frames before the
    previous one ends.

    Every seam shares exactly ``overlap`` frames. The last clip is *shorter* (it ends at the
    last frame) rather than shifted back, so no seam differs from the others; it still holds at
    least ``overlap + 1`` frames, since a clip is only started when it adds a new frame. A video
    of at most ``clip_frames`` frames is one clip.
    """
    if frames < 1:
        raise ValueError(f"the video needs at least 1 frame; got {frames}")
    if clip_frames < 1 or not 0 <= overlap < clip_frames:
        raise ValueError(f"need clip_frames >= 1 and 0 <= overlap < clip_frames; got clip_frames={clip_frames}, "
                         f"overlap={overlap}")
    out = [range(0, min(clip_frames, frames))]
    while out[-1].stop < frames:
        start = out[-1].stop - overlap
        out.append(range(start, min(start + clip_frames, frames)))
    return out
