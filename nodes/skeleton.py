"""Draw DWPose keypoints as the ControlNet / Champ skeleton image, in plain numpy.

The picture is the one the DWPose annotator draws (Champ's ``dwpose`` guidance, ControlNet
openpose, champ_spec §9.4): body limbs as filled ellipses (half-width 4) in an 18-colour table
at 60 % brightness, joints as discs of radius 4 in full colour; hands as 2-pixel lines coloured
HSV(e/20, 1, 1) with blue discs of radius 4; face points as white discs of radius 3.

OpenCV is not a runtime dependency of the pack, so the OpenCV primitives the annotator calls
(``ellipse2Poly`` + ``fillConvexPoly``, filled ``circle``, ``line`` with thickness 2, all
LINE_8) are re-implemented from OpenCV's integer algorithms, batched in numpy. The output is
pixel-identical to the reference drawings (tests/pose/test_draw.py; goldens from
tests/golden/make_pose_goldens.py, drawn with OpenCV 5.0; OpenCV 4.14 draws the same).

Two layer orders exist in the wild; they differ only where people overlap:

* ``style="dwpose"`` (default): the original DWPose annotator Champ's training data was drawn
  with (IDEA-Research/DWPose, huggingface controlnet_aux): every limb of every person, then the
  canvas × 0.6, every joint, all left hands, all right hands, all faces. Body points count when
  their score is > threshold, the others when >= threshold, as there.
* ``style="controlnet_aux"``: comfyui_controlnet_aux (its DWPose node and "Render Pose JSON"):
  person by person (limbs in colour × 0.6, joints, hands, face), every point >= threshold, and
  the face also gets the two body eyes as white dots (its 70-point face repeats them).

Hand and face points with ``int(x)`` or ``int(y)`` below 1 are skipped (the reference compares
the truncated pixel with eps = 0.01). Coordinates are pixels, OpenCV convention (pixel centres
at integers); beyond ±10^7 px they are clamped.
"""
from __future__ import annotations

import math
import numpy as np

from .keypoints import BODY, BODY_EYES, FACE, LEFT_HAND, RIGHT_HAND, pose_keypoint_to_dense

# ---------------------------------------------------------------------------------------------
# Conventions (champ_spec §9.4). Indices are 0-based into the DWPose-134 layout.
# ---------------------------------------------------------------------------------------------

#: The 17 drawn limbs, OpenPose-18 ids (neck=1). The annotator's table has two more
#: (shoulder-ear) that its loop never reaches.
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
              (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
#: RGB colour of limb i and of joint i.
BODY_COLORS = np.array([
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)],
    dtype=np.uint8)
#: Limb colours as painted: ``int(c * 0.6)``, which is also what multiplying a canvas holding
#: only limbs by 0.6 and casting to uint8 gives.
LIMB_COLORS = (BODY_COLORS.astype(np.float64) * 0.6).astype(np.uint8)
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
              (18, 19), (19, 20))
STICK_WIDTH = 4          # half-width of a limb ellipse, pixels
JOINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
HAND_POINT_RADIUS = 4
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_RADIUS = 3
FACE_POINT_COLOR = (255, 255, 255)


def _hand_edge_colors() -> np.ndarray:
    """HSV(e/20, 1, 1) × 255 per hand edge, computed like ``matplotlib.colors.hsv_to_rgb`` in
    float64 and rounded half-to-even as OpenCV's ``saturate_cast<uchar>`` does."""
    h = np.arange(len(HAND_EDGES), dtype=np.float64) / len(HAND_EDGES)
    i = (h * 6.0).astype(int)
    f = h * 6.0 - i
    v, p, q, t = np.ones_like(h), np.zeros_like(h), 1.0 - f, 1.0 - (1.0 - f)
    table = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    rgb = np.stack([np.stack(table[k % 6])[:, e] for e, k in enumerate(i)])
    return np.rint(rgb * 255).astype(np.uint8)


HAND_EDGE_COLORS = _hand_edge_colors()

# ---------------------------------------------------------------------------------------------
# OpenCV's integer rasterisation (imgproc/src/drawing.cpp), LINE_8 only, batched: each helper
# rasterises many shapes at once and returns the flat pixel indices (y * W + x) it paints,
# clipped to the image, with the index of the shape each pixel belongs to.
# ---------------------------------------------------------------------------------------------

_SHIFT = 16              # OpenCV's XY_SHIFT: fixed-point fraction bits
_HALF = 1 << (_SHIFT - 1)
# OpenCV's 1-degree sine table is float32 of sin rounded to 7 decimals; ellipse2Poly multiplies
# these floats in double precision.
_SIN_TABLE = np.round(np.sin(np.deg2rad(np.arange(451))), 7).astype(np.float32).astype(np.float64)
_ARC_COS = _SIN_TABLE[450 - np.arange(361)]
_ARC_SIN = _SIN_TABLE[np.arange(361)]
_NONE = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C integer division (rounds toward zero) of int64 arrays, b > 0."""
    q = np.abs(a) // b
    return np.where(a < 0, -q, q)


def _ranges(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts [n0, n1, ...]: the owner i and rank k (0 .. n_i - 1) of every element of
    the concatenated ranges; a vectorised ``for i: for k in range(counts[i])``."""
    counts = np.maximum(counts, 0)
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    return owner, np.arange(owner.size) - first[owner]


def _clip_lines(width: int, height: int, x1, y1, x2, y2):
    """``cv::clipLine`` on a width×height rectangle for int64 arrays: Cohen-Sutherland with
    double-precision intercepts truncated toward zero, the ends moved in OpenCV's order (rows
    first, then columns; the second end uses the first one's new position).
    Returns the clipped ends and whether each segment touches the rectangle."""
    right, bottom = width - 1, height - 1

    def xcode(x):
        return (x < 0) * 1 + (x > right) * 2

    def code(x, y):
        return xcode(x) + (y < 0) * 4 + (y > bottom) * 8

    def moved(start, num, den):
        return start + np.trunc(num / den).astype(np.int64)  # (int64)(double / int64)

    c1, c2 = code(x1, y1), code(x2, y2)
    todo = ((c1 & c2) == 0) & ((c1 | c2) != 0)
    if not todo.any():
        return x1, y1, x2, y2, (c1 | c2) == 0
    with np.errstate(divide="ignore", invalid="ignore"):  # lanes masked out may divide by zero
        m = todo & ((c1 & 12) != 0)
        row = np.where(c1 < 8, 0, bottom)
        x1 = np.where(m, moved(x1, (row - y1) * 1.0 * (x2 - x1), y2 - y1), x1)
        y1, c1 = np.where(m, row, y1), np.where(m, xcode(x1), c1)
        m = todo & ((c2 & 12) != 0)
        row = np.where(c2 < 8, 0, bottom)
        x2 = np.where(m, moved(x2, (row - y2) * 1.0 * (x2 - x1), y2 - y1), x2)
        y2, c2 = np.where(m, row, y2), np.where(m, xcode(x2), c2)
        todo &= ((c1 & c2) == 0) & ((c1 | c2) != 0)
        m = todo & (c1 != 0)
        col = np.where(c1 == 1, 0, right)
        y1 = np.where(m, moved(y1, (col - x1) * 1.0 * (y2 - y1), x2 - x1), y1)
        x1, c1 = np.where(m, col, x1), np.where(m, 0, c1)
        m = todo & (c2 != 0)
        col = np.where(c2 == 1, 0, right)
        y2 = np.where(m, moved(y2, (col - x2) * 1.0 * (y2 - y1), x2 - x1), y2)
        x2, c2 = np.where(m, col, x2), np.where(m, 0, c2)
    return x1, y1, x2, y2, (c1 | c2) == 0


def _int_lines(x1, y1, x2, y2, width: int, height: int):
    """1-pixel lines between integer points: OpenCV's 8-connected ``LineIterator`` (clipped,
    then walked left to right, Bresenham)."""
    x1, y1, x2, y2, ok = _clip_lines(width, height, x1, y1, x2, y2)
    seg = np.flatnonzero(ok)
    x1, y1, x2, y2 = x1[ok], y1[ok], x2[ok], y2[ok]
    swap = x2 < x1
    x1, x2 = np.where(swap, x2, x1), np.where(swap, x1, x2)
    y1, y2 = np.where(swap, y2, y1), np.where(swap, y1, y2)
    dx, dy = x2 - x1, y2 - y1
    steep = np.abs(dy) > dx
    major = np.where(steep, np.abs(dy), dx)
    minor = np.where(steep, dx, np.abs(dy))
    o, k = _ranges(major + 1)
    big, small, sy = major[o], minor[o], np.where(dy[o] < 0, -1, 1)
    # Bresenham with err = major - 2*minor, stepping the minor axis while err < 0, puts the
    # minor offset at ceil((2k*minor - major) / (2*major)).
    off = -((big - 2 * k * small) // np.maximum(2 * big, 1))
    xs = np.where(steep[o], x1[o] + off, x1[o] + k)
    ys = np.where(steep[o], y1[o] + sy * k, y1[o] + sy * off)
    return ys * width + xs, seg[o]


def _fixed_lines(x1, y1, x2, y2, width: int, height: int):
    """1-pixel lines between 16.16 fixed-point points: OpenCV's ``Line2`` (clipped, then a DDA
    along the major axis from the rounded start, plus the rounded end point)."""
    x1, y1, x2, y2, ok = _clip_lines(width << _SHIFT, height << _SHIFT, x1, y1, x2, y2)
    seg = np.flatnonzero(ok)
    x1, y1, x2, y2 = x1[ok], y1[ok], x2[ok], y2[ok]
    ax, ay = np.abs(x2 - x1), np.abs(y2 - y1)
    xmajor = ax > ay
    swap = np.where(xmajor, x2 < x1, y2 < y1)  # walk the major axis upwards
    x1, x2 = np.where(swap, x2, x1), np.where(swap, x1, x2)
    y1, y2 = np.where(swap, y2, y1), np.where(swap, y1, y2)
    step = np.where(xmajor, _trunc_div((y2 - y1) << _SHIFT, ax | 1), _trunc_div((x2 - x1) << _SHIFT, ay | 1))
    o, k = _ranges(np.where(xmajor, (x2 - x1) >> _SHIFT, (y2 - y1) >> _SHIFT) + 1)
    sx, sy, major = x1[o] + _HALF, y1[o] + _HALF, xmajor[o]
    xs = np.concatenate([(x2 + _HALF) >> _SHIFT, np.where(major, (sx >> _SHIFT) + k, (sx + k * step[o]) >> _SHIFT)])
    ys = np.concatenate([(y2 + _HALF) >> _SHIFT, np.where(major, (sy + k * step[o]) >> _SHIFT, (sy >> _SHIFT) + k)])
    seg = np.concatenate([seg, seg[o]])
    keep = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return ys[keep] * width + xs[keep], seg[keep]


def _walk(fx, ry, imin, direction: int, owner, rows):
    """One side of OpenCV's convex scan: walking from each polygon's top vertex ``imin`` in
    ``direction``, the fixed-point x of the active edge at each (owner, row), and how many
    vertices the walk has examined by then."""
    n = fx.shape[1]
    order = (imin[:, None] + direction * np.arange(n + 1)) % n
    ty = np.take_along_axis(ry, order, axis=1)
    reach = np.maximum.accumulate(ty, axis=1)
    # Active edge at row y: it ends at the first vertex after the top one lying below y, i.e.
    # pos = count of reach[1:] <= y. One searchsorted for all polygons: offset each by a span.
    low, span = ty.min(), ty.max() - ty.min() + 2
    keys = (np.arange(len(fx))[:, None] * span + (reach[:, 1:] - low)).ravel()
    pos = np.searchsorted(keys, owner * span + (rows - low), side="right") - owner * n
    examined = pos + 1
    pos = np.minimum(pos, n - 1)
    y_start = reach[owner, pos]  # the row where the walk took this edge
    dy = np.maximum(ty[owner, pos + 1] - y_start, 1)
    xs, xe = fx[owner, order[owner, pos]], fx[owner, order[owner, pos + 1]]
    return xs + (rows - y_start) * _trunc_div((xe - xs) * 2 + dy, 2 * dy), examined


def _fill_convex(vx: np.ndarray, vy: np.ndarray, shift: int, width: int, height: int):
    """``cv2.fillConvexPoly(img, pts, color, LINE_8, shift)`` for L polygons of n vertices.

    Args:
        vx, vy: int64 ``[L, n]`` vertices with ``shift`` fraction bits (0 or 16). Repeated
            consecutive vertices are allowed (OpenCV fills such polygons identically).
    """
    n = vx.shape[1]
    prev_x, prev_y = np.roll(vx, 1, axis=1).ravel(), np.roll(vy, 1, axis=1).ravel()
    lines = _int_lines if shift == 0 else _fixed_lines
    pix, seg = lines(prev_x, prev_y, vx.ravel(), vy.ravel(), width, height)
    outline = (pix, seg // n)
    delta = (1 << shift) >> 1
    imin = np.argmin(vy, axis=1)
    ymin = (np.take_along_axis(vy, imin[:, None], axis=1)[:, 0] + delta) >> shift
    ymax = (vy.max(axis=1) + delta) >> shift
    xmin, xmax = (vx.min(axis=1) + delta) >> shift, (vx.max(axis=1) + delta) >> shift
    live = (n >= 3) & (xmax >= 0) & (ymax >= 0) & (xmin < width) & (ymin < height)
    # OpenCV also walks the rows above the image; here each row's edges come in closed form,
    # so only the visible rows are computed.
    top = np.maximum(ymin, 0)
    owner, k = _ranges(np.where(live, np.minimum(ymax, height - 1) - top + 1, 0))
    if owner.size == 0:
        return outline
    rows = top[owner] + k
    ry, fx = (vy + delta) >> shift, vx << (_SHIFT - shift)
    x_a, used_a = _walk(fx, ry, imin, 1, owner, rows)
    x_b, used_b = _walk(fx, ry, imin, -1, owner, rows)
    left = np.maximum((np.minimum(x_a, x_b) + _HALF) >> _SHIFT, 0)
    right = np.minimum((np.maximum(x_a, x_b) + _HALF) >> _SHIFT, width - 1)
    # OpenCV leaves a polygon at the first row where the two walks have used up its vertices
    # (the bottom row, which only the outline paints); the count grows with the row.
    ok = (used_a + used_b <= n) & (left <= right)
    rows, left, right, owner = rows[ok], left[ok], right[ok], owner[ok]
    o, k = _ranges(right - left + 1)
    spans = (rows[o] * width + left[o] + k, owner[o])
    return np.concatenate([outline[0], spans[0]]), np.concatenate([outline[1], spans[1]])


def _disc_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) offsets of a filled ``cv2.circle`` (its midpoint-circle spans, LINE_8)."""
    half_width: dict[int, int] = {}
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        for oy, hw in ((-dy, dx), (dy, dx), (-dx, dy), (dx, dy)):
            half_width[oy] = max(half_width.get(oy, -1), hw)
        dy, err, plus = dy + 1, err + plus, plus + 2
        if err > 0:
            err, dx, minus = err - minus, dx - 1, minus - 2
    oys, oxs = zip(*[(oy, ox) for oy, hw in half_width.items() for ox in range(-hw, hw + 1)])
    return np.array(oys, dtype=np.int64), np.array(oxs, dtype=np.int64)


_DISCS = {r: _disc_offsets(r) for r in (1, 3, 4)}


def _discs(cx, cy, radius: int, width: int, height: int):
    """Filled circles (``cv2.circle(..., thickness=-1)``) at integer centres."""
    oy, ox = _DISCS[radius] if radius in _DISCS else _disc_offsets(radius)
    ys = (np.asarray(cy, dtype=np.int64)[:, None] + oy).ravel()
    xs = (np.asarray(cx, dtype=np.int64)[:, None] + ox).ravel()
    owner = np.repeat(np.arange(len(cx)), len(oy))
    keep = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return ys[keep] * width + xs[keep], owner[keep]


def _limbs(xa, ya, xb, yb, width: int, height: int):
    """Limbs as the annotator draws them (pixel coordinates as float64 arrays): a filled
    ``ellipse2Poly`` on the segment's midpoint, half-length half the segment, half-width
    STICK_WIDTH, angle in whole degrees, every quantity truncated by ``int()``."""
    cx, cy, half, angle = [], [], [], []
    for a_x, a_y, b_x, b_y in zip(xa.tolist(), ya.tolist(), xb.tolist(), yb.tolist()):
        length = ((a_y - b_y) ** 2 + (a_x - b_x) ** 2) ** 0.5  # same expressions as the reference
        cx.append(int((a_x + b_x) / 2))
        cy.append(int((a_y + b_y) / 2))
        half.append(int(length / 2))
        angle.append(int(math.degrees(math.atan2(a_y - b_y, a_x - b_x))) % 360)
    cx, cy, half, angle = (np.array(v, dtype=np.int64) for v in (cx, cy, half, angle))
    # cv2.ellipse2Poly(centre, (half, STICK_WIDTH), angle, 0, 360, 1): 361 points rounded half
    # to even. It also drops repeated points, which changes nothing for the fill.
    alpha, beta = _SIN_TABLE[450 - angle][:, None], _SIN_TABLE[angle][:, None]
    x, y = half[:, None] * _ARC_COS, STICK_WIDTH * _ARC_SIN
    px = np.rint(cx[:, None] + x * alpha - y * beta).astype(np.int64)
    py = np.rint(cy[:, None] + x * beta + y * alpha).astype(np.int64)
    return _fill_convex(px, py, 0, width, height)


def _thick_lines(x1, y1, x2, y2, width: int, height: int):
    """``cv2.line(img, p1, p2, color, thickness=2)`` between integer points: OpenCV (4.14,
    5.0) clips the segment to the image grown by the thickness, then fills a 2-pixel-wide quad
    in 16.16 fixed point and adds round caps (radius-1 discs) at both ends."""
    t = HAND_LINE_THICKNESS
    x1, y1, x2, y2, ok = _clip_lines(width + 2 * t, height + 2 * t, x1 + t, y1 + t, x2 + t, y2 + t)
    line = np.flatnonzero(ok)
    x1, y1, x2, y2 = x1[ok] - t, y1[ok] - t, x2[ok] - t, y2[ok] - t
    dx, dy = (x1 - x2).astype(np.float64), (y2 - y1).astype(np.float64)
    r2 = dx * dx + dy * dy
    quad = r2 > np.finfo(np.float64).eps
    scale = (t << (_SHIFT - 1)) / np.sqrt(np.where(quad, r2, 1.0))
    ex, ey = np.rint(dy * scale).astype(np.int64), np.rint(dx * scale).astype(np.int64)
    p0x, p0y, p1x, p1y = x1 << _SHIFT, y1 << _SHIFT, x2 << _SHIFT, y2 << _SHIFT
    vx = np.stack([p0x + ex, p0x - ex, p1x - ex, p1x + ex], axis=1)[quad]
    vy = np.stack([p0y + ey, p0y - ey, p1y - ey, p1y + ey], axis=1)[quad]
    body, body_owner = _fill_convex(vx, vy, _SHIFT, width, height) if quad.any() else _NONE
    radius = ((t << (_SHIFT - 1)) + _HALF) >> _SHIFT
    caps, cap_owner = _discs(np.concatenate([x1, x2]), np.concatenate([y1, y2]), radius, width, height)
    owners = np.concatenate([line[quad][body_owner], np.concatenate([line, line])[cap_owner]])
    return np.concatenate([body, caps]), owners


# ---------------------------------------------------------------------------------------------
# The skeleton
# ---------------------------------------------------------------------------------------------

STYLES = ("dwpose", "controlnet_aux")
_FAR = 1e7  # pixels; coordinates beyond are clamped (OpenCV itself needs them in int32)


class _Scene:
    """The shapes of one image in painting order. Each shape gets its colour and an id that
    grows with the order; rendering gives every pixel the colour of its last shape, so the
    shapes can be rasterised in batches by kind instead of one by one."""

    def __init__(self):
        self.colors: list = []
        self.limbs: list = []    # (id, x1, y1, x2, y2), float pixels
        self.lines: list = []    # (id, x1, y1, x2, y2), integer pixels
        self.discs: dict = {}    # radius -> [(id, x, y)], integer pixels

    def _next_id(self, color) -> int:
        self.colors.append(color)
        return len(self.colors)  # ids start at 1; 0 is the black background

    def limb(self, a, b, color):
        self.limbs.append((self._next_id(color), *a, *b))

    def line(self, a, b, color):
        self.lines.append((self._next_id(color), *a, *b))

    def dots(self, points, radius: int, color):
        """Discs of one colour painted at one step (a joint, or all points of a hand or face)."""
        if len(points):
            shape_id = self._next_id(color)
            self.discs.setdefault(radius, []).extend((shape_id, x, y) for x, y in points)

    def render(self, width: int, height: int) -> np.ndarray:
        def discs(radius):
            return lambda x, y: _discs(x, y, radius, width, height)

        batches = [(self.limbs, lambda *ends: _limbs(*ends, width, height), np.float64),
                   (self.lines, lambda *ends: _thick_lines(*ends, width, height), np.int64)]
        batches += [(shapes, discs(radius), np.int64) for radius, shapes in self.discs.items()]
        pixels, ids = [], []
        for shapes, raster, dtype in batches:
            if shapes:
                columns = np.array(shapes, dtype=np.float64).T
                pix, owner = raster(*columns[1:].astype(dtype))
                pixels.append(pix)
                ids.append(columns[0].astype(np.int32)[owner])
        canvas = np.zeros((height * width, 3), dtype=np.uint8)
        if pixels:
            top = np.zeros(height * width, dtype=np.int32)
            np.maximum.at(top, np.concatenate(pixels), np.concatenate(ids))
            painted = np.flatnonzero(top)
            canvas[painted] = np.array(self.colors, dtype=np.uint8).reshape(-1, 3)[top[painted] - 1]
        return canvas.reshape(height, width, 3)


class _Person:
    """One person's points as the annotator sees them: which count, and the integer pixels of
    joints, hand and face points (``int()`` truncates toward zero)."""

    def __init__(self, kps: np.ndarray, threshold: float, style: str, size: tuple[int, int]):
        finite = np.isfinite(kps).all(axis=1)
        score = np.where(finite, kps[:, 2], -np.inf)
        self.xy = np.where(finite[:, None], kps[:, :2], 0.0)
        self.visible = score >= threshold
        self.body_visible = self.visible[BODY]
        if style == "dwpose":
            # The original annotator keeps body points scoring > 0.3 (the rest >= 0.3), and
            # gets coordinates divided by the canvas size, which it multiplies back: an exact
            # integer can come back a hair lower and truncate to the pixel before.
            self.body_visible = score[BODY] > threshold
            self.xy = self.xy / size * size
        self.xy = np.clip(self.xy, -_FAR, _FAR)  # keeps the fixed-point maths inside int64
        self.ix = np.trunc(self.xy).astype(np.int64)
        # Hand and face points are skipped when int(x) or int(y) is below 1: the reference tests
        # the truncated pixel (or normalised × size) against eps = 0.01.
        self.drawable = self.visible & (self.ix[:, 0] > 0) & (self.ix[:, 1] > 0)

    def limb(self, scene: _Scene, i: int):
        a, b = BODY_LIMBS[i]
        if self.body_visible[a] and self.body_visible[b]:
            scene.limb(self.xy[a], self.xy[b], LIMB_COLORS[i])

    def joint(self, scene: _Scene, i: int):
        if self.body_visible[i]:
            scene.dots(self.ix[i:i + 1], JOINT_RADIUS, BODY_COLORS[i])

    def hand(self, scene: _Scene, part: slice):
        if not self.visible[part].any():
            return
        ok, ix = self.drawable[part], self.ix[part]
        for e, (a, b) in enumerate(HAND_EDGES):
            if ok[a] and ok[b]:
                scene.line(ix[a], ix[b], HAND_EDGE_COLORS[e])
        scene.dots(ix[ok], HAND_POINT_RADIUS, HAND_POINT_COLOR)

    def face(self, scene: _Scene, with_eyes: bool):
        if not self.visible[FACE].any():
            return
        points = list(range(FACE.start, FACE.stop)) + (list(BODY_EYES) if with_eyes else [])
        scene.dots(self.ix[[k for k in points if self.drawable[k]]], FACE_POINT_RADIUS, FACE_POINT_COLOR)


def draw_pose(people_kps: np.ndarray, width: int, height: int, body: bool = True, hands: bool = True,
              face: bool = True, threshold: float = 0.3, style: str = "dwpose") -> np.ndarray:
    """Draw one frame's people as the DWPose / ControlNet skeleton image.

    Args:
        people_kps: ``[P, 134, 3]`` (or ``[134, 3]``) x, y in pixels of this canvas and the
            score, DWPose-134 order. Points scoring below ``threshold`` are not drawn.
        width, height: canvas size in pixels.
        body, hands, face: draw these parts (feet are never drawn, as in DWPose).
        style: ``"dwpose"`` (the annotator Champ was trained with) or ``"controlnet_aux"``
            (comfyui_controlnet_aux's layering); see the module docstring.

    Returns:
        uint8 ``[height, width, 3]`` RGB image on black.
    """
    kps = np.asarray(people_kps, dtype=np.float64)
    if kps.ndim == 2:
        kps = kps[None]
    if kps.ndim != 3 or kps.shape[1:] != (134, 3):
        raise ValueError(f"people_kps must have shape [people, 134, 3], got {list(kps.shape)}.")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}.")
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"canvas size must be positive, got {width}×{height}.")
    people = [_Person(p, threshold, style, (float(width), float(height))) for p in kps]
    scene = _Scene()
    if style == "controlnet_aux":  # person by person
        for person in people:
            for i in range(len(BODY_LIMBS) if body else 0):
                person.limb(scene, i)
            for i in range(len(BODY_COLORS) if body else 0):
                person.joint(scene, i)
            if hands:
                person.hand(scene, LEFT_HAND)
                person.hand(scene, RIGHT_HAND)
            if face:
                person.face(scene, with_eyes=True)
    else:  # part by part over all people
        for i in range(len(BODY_LIMBS) if body else 0):
            for person in people:
                person.limb(scene, i)
        for i in range(len(BODY_COLORS) if body else 0):
            for person in people:
                person.joint(scene, i)
        for part in (LEFT_HAND, RIGHT_HAND) if hands else ():
            for person in people:
                person.hand(scene, part)
        for person in people if face else ():
            person.face(scene, with_eyes=False)
    return scene.render(width, height)


def draw_frames(frames, width: int | None = None, height: int | None = None, body: bool = True,
                hands: bool = True, face: bool = True, threshold: float = 0.3,
                style: str = "dwpose") -> np.ndarray:
    """Draw a POSE_KEYPOINT list (or ``PoseArrays``) as a batch of skeleton images.

    Keypoints are scaled from each frame's canvas to ``width`` × ``height`` (default: the
    canvas size, which must then be the same for every frame) before drawing, so lines keep
    their pixel widths at any output size.

    Returns:
        float32 ``[T, height, width, 3]`` in 0..1 (ComfyUI IMAGE layout, as a numpy array).
    """
    dense = frames if hasattr(frames, "keypoints") else pose_keypoint_to_dense(frames)
    if width is None or height is None:
        sizes = set(zip(dense.widths.tolist(), dense.heights.tolist()))
        if len(sizes) > 1:
            raise ValueError(f"the frames have different canvas sizes {sorted(sizes)}; pass width and height "
                             f"to draw them all at one size.")
    if dense.num_frames == 0:
        return np.zeros((0, int(height or 1), int(width or 1), 3), dtype=np.float32)
    w = int(width) if width is not None else int(dense.widths[0])
    h = int(height) if height is not None else int(dense.heights[0])
    out = np.empty((dense.num_frames, h, w, 3), dtype=np.float32)
    for t in range(dense.num_frames):
        kps = dense.keypoints[t].astype(np.float64)
        kps[..., 0] *= w / dense.widths[t]
        kps[..., 1] *= h / dense.heights[t]
        out[t] = draw_pose(kps, w, h, body, hands, face, threshold, style)
    return np.divide(out, 255.0, out=out)
