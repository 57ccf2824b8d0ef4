"""DWPose whole-body keypoints (134 points) with the official ONNX pair, frame by frame.

Reproduces the official ONNX pipeline (IDEA-Research/DWPose, ``onnx`` branch, as used by Champ,
UniAnimate and comfyui_controlnet_aux) number for number, without OpenCV:

* detector ``yolox_l.onnx``: 640×640 letterbox (smaller ratio, top-left, pad 114, raw 0–255 BGR),
  YOLOX grid decode (strides 8/16/32), multiclass NMS (IoU 0.45, score 0.1), people (class 0)
  with score > 0.3; no box → the whole image is the box;
* pose model ``dw-ll_ucoco_384.onnx``: box centre/scale padded 1.25, aspect fixed to 288/384,
  affine warp to 288×384, mean/std normalisation, SimCC argmax / 2, score = min(max_x, max_y);
* 133 COCO-WholeBody points → 134: neck inserted at 17, body reordered into OpenPose-18.

Keypoint layout (``[..., 134, 3]`` = x, y in the frame's pixels, score): 0–17 OpenPose body,
18–23 feet, 24–91 face, 92–112 left hand, 113–133 right hand. Scores are the raw SimCC maxima
(not probabilities); DWPose treats a point as visible above 0.3.

The resizes match ``cv2.resize``/``cv2.warpAffine`` with ``INTER_LINEAR`` (pixel-centre
conventions, border handling, rounding to uint8 values) within one level;
``tests/pose/test_dwpose_geometry.py`` compares them with OpenCV.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ...models_loader import cache
from ..keypoints import BODY, FACE, FEET, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND  # noqa: F401 (re-exported)
from . import tracking

MIN_IMAGE_SIZE = 32

# The official reorder after the neck is inserted at 17 (``new[:, openpose_idx] = new[:, mmpose_idx]``)
# written as one gather: output point i comes from point _FROM_INSERTED[i].
_MMPOSE_IDX = (17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3)
_OPENPOSE_IDX = (1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17)
_FROM_INSERTED = np.arange(NUM_KEYPOINTS)
_FROM_INSERTED[list(_OPENPOSE_IDX)] = _MMPOSE_IDX
# OpenPose body points that are not derived (all but the neck), used to decide "a person".
_BODY_NO_NECK = np.array([0, *range(2, 18)])

ProgressFn = Callable[..., None]


@dataclass
class DWPoseConfig:
    """The official DWPose ONNX numbers (change only to experiment).

    Args:
        det_input_size: detector input (height, width); read from the model when static.
        det_pad_value: letterbox fill value.
        strides: YOLOX output strides, in the order of the output rows.
        nms_iou / nms_score: multiclass NMS IoU threshold and minimum score (obj × cls).
        person_class / person_score: class kept after NMS and the score it must exceed.
        pose_input_size: pose model input (width, height); read from the model when static.
        bbox_padding: box scale factor before the crop.
        mean / std: per-channel normalisation of the BGR crop (0–255 values).
        simcc_split_ratio: SimCC bins per input pixel.
        keypoint_threshold: a point is visible above this score (neck rule, person test).
        min_body_keypoints: visible body points (neck excluded) a box needs to count as a person.
        batch_size: frames per detector call when the detector's batch axis is dynamic.
    """

    det_input_size: tuple[int, int] = (640, 640)
    det_pad_value: float = 114.0
    strides: tuple[int, ...] = (8, 16, 32)
    nms_iou: float = 0.45
    nms_score: float = 0.1
    person_class: int = 0
    person_score: float = 0.3
    pose_input_size: tuple[int, int] = (288, 384)
    bbox_padding: float = 1.25
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    simcc_split_ratio: float = 2.0
    keypoint_threshold: float = 0.3
    min_body_keypoints: int = 4
    batch_size: int = 8


# ------------------------------------------------------------------------------- input frames

def check_frames(frames) -> tuple[int, int, int]:
    """``(T, H, W)`` of a ComfyUI IMAGE batch ``[T, H, W, 3]`` (or one ``[H, W, 3]`` frame);
    a ``ValueError`` saying what is wrong otherwise."""
    shape = getattr(frames, "shape", None)
    if shape is None:
        raise ValueError(f"DWPose expects an IMAGE batch [frames, height, width, 3] (torch tensor or numpy "
                         f"array), got {type(frames).__name__}.")
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"DWPose expects an IMAGE batch [frames, height, width, 3], got shape {list(shape)}.")
    t, h, w, c = shape
    if t == 0:
        raise ValueError("DWPose got an empty batch (0 frames): connect a node that outputs at least one image.")
    if c != 3:
        hint = " (RGBA: remove the alpha channel first)" if c == 4 else " (a MASK? convert it to an image first)" \
            if c == 1 else ""
        raise ValueError(f"DWPose expects RGB frames with 3 channels, got {c} channels (shape {list(shape)}){hint}.")
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE:
        raise ValueError(f"DWPose needs frames of at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} pixels, got {w}×{h}; "
                         f"upscale the images first.")
    return t, h, w


def frame_to_bgr(frame) -> np.ndarray:
    """One IMAGE frame ``[H, W, 3]`` RGB (float 0..1, or uint8) → BGR uint8 ``[H, W, 3]``, what
    the official OpenCV callers feed the models.

    Floats are rounded, not truncated: ComfyUI's loaders divide uint8 by 255, so rounding gives
    back the exact file values."""
    if hasattr(frame, "detach"):  # torch tensor, possibly on the GPU
        frame = frame.detach().float().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        out = frame
    else:
        top = float(np.nanmax(frame)) if frame.size else 0.0
        if top > 2.0:
            raise ValueError(f"DWPose expects IMAGE values in 0..1, got values up to {top:.1f} (0..255 data?). "
                             f"Divide by 255 or load the images with a ComfyUI image loader.")
        out = np.rint(np.clip(np.nan_to_num(frame.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(out[..., ::-1])


# ------------------------------------------------------------------------ resize and warp (no cv2)

def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.resize`` INTER_LINEAR taps along one axis: pixel centres at +0.5, the source
    position clamped to the first/last pixel (no blending with outside)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, None)
    i0 = np.floor(src).astype(np.int64)
    frac = (src - i0).astype(np.float32)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, frac


def _blend_rows(img: np.ndarray, i0, i1, w1, axis: int, valid0=None, valid1=None) -> np.ndarray:
    """Linear blend of slices ``i0``/``i1`` along ``axis`` with weight ``w1`` on ``i1``; taps
    flagged invalid contribute zero (constant-0 border)."""
    shape = [1] * img.ndim
    shape[axis] = -1
    w0 = (1.0 - w1) if valid0 is None else (1.0 - w1) * valid0
    w1 = w1 if valid1 is None else w1 * valid1
    return (np.take(img, i0, axis=axis) * w0.reshape(shape).astype(np.float32)
            + np.take(img, i1, axis=axis) * w1.reshape(shape).astype(np.float32))


def resize_bilinear(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(img, (width, height), interpolation=INTER_LINEAR)`` on a uint8-valued image:
    ``[H, W, C]`` → ``[height, width, C]`` float32 with whole 0..255 values.

    Uses OpenCV's 8-bit arithmetic (weights in 1/2048, horizontal pass first, the vertical pass
    dropping 4 + 16 bits and rounding the last 2), which makes the result equal to OpenCV's for
    all but about one value in a thousand (off by one)."""
    y0, y1, wy = _linear_taps(img.shape[0], height)
    x0, x1, wx = _linear_taps(img.shape[1], width)
    ax1 = np.rint(wx * 2048).astype(np.int32)[None, :, None]
    by1 = np.rint(wy * 2048).astype(np.int32)[:, None, None]
    # horizontal pass once per source row the output needs, as OpenCV does
    rows, inverse = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    src = img[rows]
    src = src.astype(np.int32) if src.dtype == np.uint8 else np.rint(src).astype(np.int32)
    h = (np.take(src, x0, axis=1) * (2048 - ax1) + np.take(src, x1, axis=1) * ax1) >> 4
    h0, h1 = h[inverse[:height]], h[inverse[height:]]
    v = (((2048 - by1) * h0) >> 16) + ((by1 * h1) >> 16)
    return ((v + 2) >> 2).astype(np.float32)  # weights sum to 2048: already within 0..255


def letterbox(img: np.ndarray, size: tuple[int, int] = (640, 640), pad_value: float = 114.0
              ) -> tuple[np.ndarray, float]:
    """The detector input: ``img`` ``[H, W, 3]`` scaled by ``r = min(h_in/H, w_in/W)`` into the
    top-left corner of a ``size`` = (height, width) canvas filled with ``pad_value``.

    Returns ``(chw [3, h_in, w_in] float32, r)``; a point (x, y) of ``img`` lands at (x·r, y·r)
    (pixel corners; pixel centres shift by r/2 − 1/2 as in any resize)."""
    h_in, w_in = size
    r = min(h_in / img.shape[0], w_in / img.shape[1])
    nh, nw = int(img.shape[0] * r), int(img.shape[1] * r)  # int() truncates, as the official code
    out = np.full((h_in, w_in, img.shape[2]), pad_value, np.float32)
    out[:nh, :nw] = resize_bilinear(img, nw, nh)
    return np.ascontiguousarray(out.transpose(2, 0, 1)), r


def bbox_xyxy_to_cs(boxes: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[N, 4]`` xyxy → centres ``[N, 2]`` and scales ``[N, 2]`` (w, h) × ``padding``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, :2] + boxes[:, 2:]) * 0.5, (boxes[:, 2:] - boxes[:, :2]) * padding


def fix_aspect_ratio(scales: np.ndarray, aspect: float) -> np.ndarray:
    """Grow each (w, h) ``[N, 2]`` to the aspect ``w/h = aspect`` (never shrinks)."""
    w, h = scales[..., :1], scales[..., 1:]
    return np.where(w > h * aspect, np.concatenate([w, w / aspect], -1), np.concatenate([h * aspect, h], -1))


def get_warp_matrix(center, scale, rot: float, output_size: tuple[int, int], inv: bool = False) -> np.ndarray:
    """The 2×3 affine matrix taking the box (``center`` (x, y), ``scale`` (w, h), rotated by
    ``rot`` degrees) to an ``output_size`` = (w, h) image, or back when ``inv``.

    As mmpose: three point pairs (centre, centre + half-width "up", and that vector turned 90°);
    only the box width sets the scale, so ``scale`` must already have the output's aspect."""
    center = np.asarray(center, np.float64)
    src_w = float(scale[0])
    dst_w, dst_h = output_size
    a = np.deg2rad(rot)
    src_dir = np.array([np.sin(a) * src_w * 0.5, -np.cos(a) * src_w * 0.5])  # (0, -w/2) rotated by rot
    dst_dir = np.array([0.0, -dst_w * 0.5])

    def third(p, q):
        d = p - q
        return q + np.array([-d[1], d[0]])

    src = np.stack([center, center + src_dir, third(center, center + src_dir)])
    dst_c = np.array([dst_w * 0.5, dst_h * 0.5])
    dst = np.stack([dst_c, dst_c + dst_dir, third(dst_c, dst_c + dst_dir)])
    if inv:
        src, dst = dst, src
    # solve [x y 1] @ M.T = [x' y'] for the three pairs
    return np.linalg.solve(np.hstack([src, np.ones((3, 1))]), dst).T


def warp_affine_bilinear(img: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.warpAffine(img, matrix, (width, height), flags=INTER_LINEAR)`` (constant-0 border):
    output pixel (x, y) samples ``img`` at ``inv(matrix) @ (x, y, 1)``, taps outside the image
    count as 0. ``[H, W, C]`` → ``[height, width, C]`` float32 with whole 0..255 values.

    Sampling positions are exact, as in current OpenCV (5.x); older OpenCV builds rounded them
    to 1/32 pixel, which moves values by a level or two at sharp edges, well below what the
    pose model notices."""
    m = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)[:2]
    h, w = img.shape[:2]  # uint8 stays uint8: only the sampled pixels become float32

    def taps(src: np.ndarray, n: int):
        i0 = np.floor(src).astype(np.int64)
        frac = (src - i0).astype(np.float32)
        i1 = i0 + 1
        v0, v1 = ((i0 >= 0) & (i0 < n)).astype(np.float32), ((i1 >= 0) & (i1 < n)).astype(np.float32)
        return np.clip(i0, 0, n - 1), np.clip(i1, 0, n - 1), frac, v0, v1

    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    if abs(inv[0, 1]) < 1e-12 and abs(inv[1, 0]) < 1e-12:  # axis-aligned (DWPose: no rotation): separable
        y0, y1, wy, vy0, vy1 = taps(inv[1, 1] * ys + inv[1, 2], h)
        x0, x1, wx, vx0, vx1 = taps(inv[0, 0] * xs + inv[0, 2], w)
        rows = _blend_rows(img, y0, y1, wy, 0, vy0, vy1)
        out = _blend_rows(rows, x0, x1, wx, 1, vx0, vx1)
    else:
        gx, gy = np.meshgrid(xs, ys)
        x0, x1, wx, vx0, vx1 = taps(inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2], w)
        y0, y1, wy, vy0, vy1 = taps(inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2], h)
        out = np.zeros((height, width, img.shape[2]), np.float32)
        for yi, wyi, vyi in ((y0, 1 - wy, vy0), (y1, wy, vy1)):
            for xi, wxi, vxi in ((x0, 1 - wx, vx0), (x1, wx, vx1)):
                out += img[yi, xi] * (wyi * wxi * vyi * vxi)[..., None]
    return np.clip(np.rint(out), 0, 255)


def pose_inputs(img: np.ndarray, boxes: np.ndarray, input_size: tuple[int, int], config: DWPoseConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose-model inputs for ``boxes`` ``[N, 4]`` (xyxy pixels) of ``img`` (BGR 0..255).

    Returns ``(crops [N, 3, h, w] float32 normalised, centres [N, 2], scales [N, 2])`` with
    ``input_size`` = (w, h); scales are the aspect-fixed box sizes that map keypoints back."""
    w, h = input_size
    centres, scales = bbox_xyxy_to_cs(boxes, config.bbox_padding)
    scales = fix_aspect_ratio(scales, w / h)
    mean = np.asarray(config.mean, np.float32)
    std = np.asarray(config.std, np.float32)
    crops = np.empty((len(centres), 3, h, w), np.float32)
    for i, (c, s) in enumerate(zip(centres, scales)):
        crop = warp_affine_bilinear(img, get_warp_matrix(c, s, 0.0, (w, h)), w, h)
        crops[i] = ((crop - mean) / std).transpose(2, 0, 1)
    return crops, centres, scales


# ----------------------------------------------------------------------------------- decoding

@functools.lru_cache(maxsize=8)
def _yolox_grid(input_size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    grids, steps = [], []
    for s in strides:
        hs, ws = input_size[0] // s, input_size[1] // s
        gx, gy = np.meshgrid(np.arange(ws), np.arange(hs))  # rows in row-major (y, x) order
        grids.append(np.stack([gx, gy], -1).reshape(-1, 2))
        steps.append(np.full((hs * ws, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(steps).astype(np.float32)


def decode_yolox(raw: np.ndarray, input_size: tuple[int, int] = (640, 640), strides=(8, 16, 32)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX raw predictions ``[A, 5 + C]`` (xy offsets, log wh, objectness, class scores after
    sigmoid) → boxes ``[A, 4]`` cx, cy, w, h in detector-input pixels and scores ``[A, C]`` =
    objectness × class."""
    raw = np.asarray(raw, np.float32).reshape(-1, raw.shape[-1])
    grid, step = _yolox_grid(tuple(input_size), tuple(strides))
    if len(grid) != len(raw):
        raise ValueError(f"detector output has {len(raw)} rows; a {input_size[1]}×{input_size[0]} YOLOX input with "
                         f"strides {tuple(strides)} gives {len(grid)}")
    xy = (raw[:, :2] + grid) * step
    wh = np.exp(raw[:, 2:4]) * step
    return np.concatenate([xy, wh], 1), raw[:, 4:5] * raw[:, 5:]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS, highest score first; areas use the official ``+1`` pixel convention.
    Returns kept indices into ``boxes`` ``[N, 4]``."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou_threshold]
    return keep


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float,
                   classes: Sequence[int] | None = None) -> np.ndarray:
    """Class-wise NMS: ``boxes`` ``[N, 4]``, ``scores`` ``[N, C]`` → detections ``[M, 6]``
    (x1, y1, x2, y2, score, class), class by class, each by decreasing score. ``classes``
    restricts the work to some classes (results for those are unchanged)."""
    out = []
    for c in range(scores.shape[1]) if classes is None else classes:
        s = scores[:, c]
        valid = s > score_threshold
        if not valid.any():
            continue
        keep = nms(boxes[valid], s[valid], iou_threshold)
        out.append(np.concatenate([boxes[valid][keep], s[valid][keep, None],
                                   np.full((len(keep), 1), c, boxes.dtype)], 1))
    return np.concatenate(out) if out else np.zeros((0, 6), np.float32)


def detections_from_raw(raw: np.ndarray, ratio: float, config: DWPoseConfig,
                        input_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """People boxes ``[N, 4]`` xyxy in frame pixels and scores ``[N]`` from one image's raw
    YOLOX output ``[A, 85]`` and its letterbox ``ratio``."""
    cxcywh, scores = decode_yolox(raw, input_size or config.det_input_size, config.strides)
    boxes = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1) / ratio
    dets = multiclass_nms(boxes, scores, config.nms_iou, config.nms_score, classes=[config.person_class])
    keep = (dets[:, 4] > config.person_score) & (dets[:, 5] == config.person_class)
    return dets[keep, :4].astype(np.float32), dets[keep, 4].astype(np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """SimCC ``[N, K, Wx]``, ``[N, K, Wy]`` → locations ``[N, K, 2]`` in model-input pixels and
    scores ``[N, K]`` = min(max_x, max_y). As the official code, a location is set to −1 where
    the score is ≤ 0 *before* dividing by the split ratio (so it ends up at −1/split)."""
    locs = np.stack([np.argmax(simcc_x, -1), np.argmax(simcc_y, -1)], -1).astype(np.float32)
    scores = np.minimum(np.max(simcc_x, -1), np.max(simcc_y, -1)).astype(np.float32)
    locs[scores <= 0] = -1
    return locs / split_ratio, scores


def to_dwpose134(keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """COCO-WholeBody points ``[N, 133, 2]`` + scores ``[N, 133]`` → DWPose-134 ``[N, 134, 3]``:
    neck (mean of the shoulders, score 1 if both shoulders > ``threshold`` else 0) inserted at
    17, then the body reordered into OpenPose-18."""
    if keypoints.shape[-2] != 133:
        raise ValueError(f"the pose model gives {keypoints.shape[-2]} keypoints; DWPose whole-body needs 133 "
                         f"(COCO-WholeBody). Use dw-ll_ucoco_384.onnx.")
    info = np.concatenate([keypoints, scores[..., None]], -1).astype(np.float32)
    neck = info[:, [5, 6]].mean(1)
    neck[:, 2] = ((info[:, 5, 2] > threshold) & (info[:, 6, 2] > threshold)).astype(np.float32)
    info = np.concatenate([info[:, :17], neck[:, None], info[:, 17:]], 1)
    return np.ascontiguousarray(info[:, _FROM_INSERTED])


def body_keypoint_counts(keypoints: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """Visible body points (OpenPose 18 without the derived neck) per person of ``[N, 134, 3]``."""
    return (keypoints[:, _BODY_NO_NECK, 2] > threshold).sum(1)


# ---------------------------------------------------------------------------------- estimator

@dataclass
class FramePeople:
    """What DWPose found in one frame.

    Attributes:
        boxes: ``[N, 4]`` float32 xyxy frame pixels (the whole frame when ``fallback``).
        box_scores: ``[N]`` float32 detector scores (0 for the fallback box).
        keypoints: ``[N, 134, 3]`` float32 (x, y frame pixels, score), DWPose-134 order.
        fallback: the detector found nobody and, as the official code does, the pose model ran
            on the whole frame; those keypoints are kept but are never "a person".
        is_person: ``[N]`` bool: a detected box whose pose has at least ``min_body_keypoints``
            visible body points (the only candidates tracking follows).
    """

    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: np.ndarray
    fallback: bool = False
    is_person: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.is_person is None:
            self.is_person = np.full(len(self.boxes), not self.fallback)


def _onnx_dtype(sess) -> type:
    return np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32


def _static_batch(sess) -> bool:
    return sess.get_inputs()[0].shape[0] == 1


def _static_hw(sess) -> tuple[int, int] | None:
    shape = sess.get_inputs()[0].shape
    return (shape[2], shape[3]) if len(shape) == 4 and all(isinstance(s, int) for s in shape[2:]) else None


class DWPoseEstimator:
    """The official DWPose pipeline on two onnxruntime sessions.

    Args:
        detector_session: YOLOX session (input ``[B, 3, 640, 640]``, output ``[B, 8400, 85]``).
        pose_session: DWPose session (input ``[B, 3, 384, 288]``, SimCC outputs x ``[B, 133, 576]``
            and y ``[B, 133, 768]``, told apart by name or by size).
        config: :class:`DWPoseConfig`.

    A static batch axis (the official files) runs one image / crop per call; a dynamic one runs
    a frame's crops, and ``config.batch_size`` frames for the detector, per call.
    """

    def __init__(self, detector_session, pose_session, config: DWPoseConfig | None = None):
        self.det, self.pose = detector_session, pose_session
        self.config = config or DWPoseConfig()
        self.det_size = _static_hw(self.det) or tuple(self.config.det_input_size)
        hw = _static_hw(self.pose)
        self.pose_size = (hw[1], hw[0]) if hw else tuple(self.config.pose_input_size)  # (w, h)
        self._det_name, self._pose_name = self.det.get_inputs()[0].name, self.pose.get_inputs()[0].name
        self._det_dtype, self._pose_dtype = _onnx_dtype(self.det), _onnx_dtype(self.pose)
        self._det_batched, self._pose_batched = not _static_batch(self.det), not _static_batch(self.pose)
        self._simcc_names = self._find_simcc_names()

    def _find_simcc_names(self) -> tuple[str, str] | None:
        outs = self.pose.get_outputs()
        names = [o.name for o in outs]
        if "simcc_x" in names and "simcc_y" in names:
            return "simcc_x", "simcc_y"
        sizes = {o.name: o.shape[-1] for o in outs if o.shape and isinstance(o.shape[-1], int)}
        wx, wy = (round(self.pose_size[i] * self.config.simcc_split_ratio) for i in (0, 1))
        nx = [n for n, s in sizes.items() if s == wx]
        ny = [n for n, s in sizes.items() if s == wy]
        return (nx[0], ny[0]) if len(nx) == 1 and len(ny) == 1 and nx != ny else None  # else decide on arrays

    # -- model calls
    def _run_detector(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.det.run(None, {self._det_name: batch.astype(self._det_dtype)})[0], np.float32)

    def _run_pose(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        names = list(self._simcc_names) if self._simcc_names else None
        x_bins = round(self.pose_size[0] * self.config.simcc_split_ratio)
        chunks = [crops] if self._pose_batched else [crops[i:i + 1] for i in range(len(crops))]
        xs, ys = [], []
        for chunk in chunks:
            a, b = (np.asarray(o, np.float32) for o in
                    self.pose.run(names, {self._pose_name: chunk.astype(self._pose_dtype)})[:2])
            if names is None and a.shape[-1] != x_bins:  # outputs not told apart by metadata
                a, b = b, a
            xs.append(a)
            ys.append(b)
        return np.concatenate(xs), np.concatenate(ys)

    # -- public steps
    def detect(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """People in one BGR frame ``[H, W, 3]`` (uint8, or floats holding 0..255): boxes
        ``[N, 4]`` float32 xyxy pixels and scores ``[N]``, best first; ``N`` may be 0."""
        inp, ratio = letterbox(frame_bgr, self.det_size, self.config.det_pad_value)
        return detections_from_raw(self._run_detector(inp[None])[0], ratio, self.config, self.det_size)

    def estimate(self, frame_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Keypoints ``[N, 134, 3]`` (x, y frame pixels, score) for ``boxes`` ``[N, 4]`` of one
        BGR frame; no box → one pose on the whole frame (the official fallback)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            boxes = np.array([[0, 0, frame_bgr.shape[1], frame_bgr.shape[0]]], np.float64)
        crops, centres, scales = pose_inputs(frame_bgr, boxes, self.pose_size, self.config)
        simcc_x, simcc_y = self._run_pose(crops)
        locs, scores = decode_simcc(simcc_x, simcc_y, self.config.simcc_split_ratio)
        size = np.asarray(self.pose_size, np.float64)
        xy = locs / size * scales[:, None] + centres[:, None] - scales[:, None] / 2
        return to_dwpose134(xy.astype(np.float32), scores, self.config.keypoint_threshold)

    def frame_people(self, frame_bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> FramePeople:
        """Pose every box of a frame and decide which are people (see :class:`FramePeople`)."""
        keypoints = self.estimate(frame_bgr, boxes)
        fallback = len(boxes) == 0
        if fallback:
            h, w = frame_bgr.shape[:2]
            boxes, scores = np.array([[0, 0, w, h]], np.float32), np.zeros(1, np.float32)
        counts = body_keypoint_counts(keypoints, self.config.keypoint_threshold)
        is_person = (counts >= self.config.min_body_keypoints) & (not fallback)
        return FramePeople(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), keypoints,
                           fallback, is_person)

    def __call__(self, images, progress: ProgressFn | None = None) -> list[FramePeople]:
        """Run on a video: ``images`` is a ComfyUI IMAGE ``[T, H, W, 3]`` RGB 0..1 (torch or
        numpy). ``progress(done, total)`` is called after every frame; an exception it raises
        (ComfyUI's cancel) stops the run."""
        t_total, _, _ = check_frames(images)
        if getattr(images, "ndim", 4) == 3:
            images = images[None]
        out: list[FramePeople] = []
        step = self.config.batch_size if self._det_batched else 1
        for start in range(0, t_total, step):
            frames = [frame_to_bgr(images[t]) for t in range(start, min(start + step, t_total))]
            boxed = [letterbox(f, self.det_size, self.config.det_pad_value) for f in frames]
            raw = self._run_detector(np.stack([b[0] for b in boxed]))
            for frame, (_, ratio), r in zip(frames, boxed, raw):
                boxes, scores = detections_from_raw(r, ratio, self.config, self.det_size)
                out.append(self.frame_people(frame, boxes, scores))
                if progress is not None:
                    progress(len(out), t_total)
        return out


# ------------------------------------------------------------------------------- whole video

@dataclass
class PoseEstimate:
    """DWPose keypoints of the followed person over a video.

    Attributes:
        keypoints: ``[T, P, 134, 3]`` float32 (x, y in frame pixels, score), DWPose-134 order;
            P = 1 (the followed person); (0, 0, 0) rows where nobody.
        width, height: frame size in pixels.
        person_found: ``[T]`` bool, frames where the followed person was detected.
        filled: ``[T]`` bool, frames filled by interpolating neighbours (gap ≤ max_gap_frames).
        missing_frames: frames with neither (their keypoints are all 0).
        all_people: every frame's detections (including the whole-frame fallback poses).
        person_index: ``[T]`` int, index of the followed person in ``all_people[t]``, −1 if none.
    """

    keypoints: np.ndarray
    width: int
    height: int
    person_found: np.ndarray
    filled: np.ndarray
    missing_frames: list[int]
    all_people: list[FramePeople] = field(default_factory=list, repr=False)
    person_index: np.ndarray | None = None

    def summary(self) -> str:
        """One line for the node's preview text."""
        t = len(self.person_found)
        text = f"DWPose: person found in {int(self.person_found.sum())}/{t} frames"
        if self.filled.any():
            text += f", {int(self.filled.sum())} filled by interpolation"
        if self.missing_frames:
            shown = ", ".join(map(str, self.missing_frames[:12])) + (" ..." if len(self.missing_frames) > 12 else "")
            text += f", {len(self.missing_frames)} without a person (frames {shown})"
        return text + f" ({self.width}×{self.height})."


def estimate_video(frames, detector_file: str | None = None, pose_model_file: str | None = None,
                   follow: str = "largest", max_gap_frames: int = 8, progress: ProgressFn | None = None,
                   config: DWPoseConfig | None = None, device=None) -> PoseEstimate:
    """Whole-body keypoints of one person through a video: the node's single call.

    Args:
        frames: ComfyUI IMAGE ``[T, H, W, 3]`` RGB 0..1 (torch or numpy), or one ``[H, W, 3]``.
        detector_file / pose_model_file: file names the user picked (``None``: the published
            names), found through the catalog (models/dwpose, comfyui_controlnet_aux's ckpts...).
        follow: ``"largest"`` or ``"centre"``: who to follow when several people are visible.
        max_gap_frames: longest run of frames without the person that is interpolated.
        progress: ``progress(done, total)`` after each frame; may raise to cancel.
        config: :class:`DWPoseConfig` (official numbers by default).
        device: torch device the sessions should run on (default: the pack's device).

    A frame "has the person" when the detector found a box whose pose has at least
    ``config.min_body_keypoints`` body points above ``config.keypoint_threshold``; whole-frame
    fallback poses never count (on frames without a person they are noise).

    Raises:
        ValueError: bad frames, or no frame with a person.
        models_loader.files.ModelFileMissing / ModelFileInvalid: model file absent or unusable.
    """
    config = config or DWPoseConfig()
    n_frames, height, width = check_frames(frames)
    track_cfg = tracking.TrackConfig(follow=follow, max_gap_frames=int(max_gap_frames),
                                     keypoint_threshold=config.keypoint_threshold)
    det = cache.onnx_model("dwpose_detector", name=detector_file, device=device)
    pose = cache.onnx_model("dwpose_pose", name=pose_model_file, device=device)
    people = DWPoseEstimator(det.model, pose.model, config)(frames, progress=progress)

    track = tracking.follow_person([p.boxes[p.is_person] for p in people],
                                   [p.keypoints[p.is_person] for p in people], width, height, track_cfg)
    if not track.found.any():
        empty = sum(p.fallback for p in people)
        why = ("the detector found no person box in any frame" if empty == n_frames else
               f"the detector found no person box in {empty} frames, and the boxes it found in the others had fewer "
               f"than {config.min_body_keypoints} body keypoints above {config.keypoint_threshold}")
        raise ValueError(
            f"DWPose found no person in any of the {n_frames} frames ({width}×{height}): {why}. Check that the input "
            f"is the video you meant (not a mask, a skeleton or a blank image) and shows the person's body; if the "
            f"person is small in the frame, crop or upscale the video around them; check that the detector file is "
            f"the official yolox_l.onnx (picked: {detector_file or 'yolox_l.onnx'}).")
    # map the index among people back to the index among all detections of the frame
    person_index = np.full(n_frames, -1, np.int64)
    for t, i in enumerate(track.index):
        if i >= 0:
            person_index[t] = int(np.flatnonzero(people[t].is_person)[i])
    return PoseEstimate(keypoints=track.keypoints[:, None].astype(np.float32), width=width, height=height,
                        person_found=track.found.copy(), filled=track.filled.copy(),
                        missing_frames=track.missing_frames, all_people=people, person_index=person_index)
