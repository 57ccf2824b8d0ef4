"""Write the bundled sample: a 2-second clip of a procedurally animated figure (walking in
place and waving), as DWPose-134 keypoints in the comfyui_controlnet_aux JSON format and as a
small video of a flat-shaded figure for the pose workflow's video input.

    python scripts/make_sample.py [OUT_DIR]     (default: workflows/inputs)

Deterministic; the committed files in workflows/inputs were made by this script. Real pose
weights cannot ship, so the sample carries its own keypoints.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FRAMES, FPS = 512, 768, 48, 24


def _rot(v, angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _chain(start, angles, lengths):
    """Joint positions of a 2D chain; angles are absolute, 0 = straight down (+y)."""
    pts, p = [], np.asarray(start, float)
    for a, length in zip(angles, lengths):
        p = p + _rot(np.array([0.0, length]), a)
        pts.append(p)
    return pts


def _hand(wrist, direction, size, curl):
    """21 OpenPose hand points: wrist, then thumb, index, middle, ring, pinky (4 each)."""
    pts = [wrist]
    base = math.atan2(direction[1], direction[0])
    for f, spread in enumerate((-0.9, -0.35, 0.0, 0.3, 0.6)):
        a = base + spread
        p = wrist + size * 0.35 * np.array([math.cos(a), math.sin(a)])
        seg = size * (0.22 if f else 0.2)
        for j in range(4):
            p = p + seg * np.array([math.cos(a + curl * j), math.sin(a + curl * j)])
            pts.append(p)
    return pts


def _face(nose, scale):
    """68 points in the iBUG layout around the nose: jaw, brows, nose, eyes, mouth."""
    nose = np.asarray(nose, float)
    pts = []
    for i in range(17):  # jaw from the right ear round the chin to the left ear (image left to right)
        a = math.pi * (1.0 - i / 16.0)
        pts.append(nose + scale * np.array([-math.cos(a), 0.2 + 0.9 * math.sin(a)]))
    for x0 in (-0.67, 0.15):  # brows, image left to right
        for i in range(5):
            pts.append(nose + scale * np.array([x0 + 0.13 * i, -0.55 - 0.05 * math.sin(i / 4 * math.pi)]))
    for i in range(4):  # nose bridge
        pts.append(nose + scale * np.array([0.0, -0.4 + 0.13 * i]))
    for i in range(5):  # nostrils
        pts.append(nose + scale * np.array([-0.2 + 0.1 * i, 0.15]))
    for side in (-1, 1):  # eyes, 6 each
        c = nose + scale * np.array([side * 0.38, -0.3])
        for i in range(6):
            a = math.pi * i / 3.0
            pts.append(c + scale * np.array([0.14 * math.cos(a), 0.06 * math.sin(a)]))
    m = nose + scale * np.array([0.0, 0.5])
    for i in range(12):  # outer lip
        a = 2 * math.pi * i / 12.0
        pts.append(m + scale * np.array([0.35 * math.cos(a + math.pi), 0.14 * math.sin(a + math.pi)]))
    for i in range(8):  # inner lip
        a = 2 * math.pi * i / 8.0
        pts.append(m + scale * np.array([0.22 * math.cos(a + math.pi), 0.06 * math.sin(a + math.pi)]))
    return pts


def make_keypoints() -> np.ndarray:
    """Dense keypoints ``[FRAMES, 1, 134, 3]`` (x, y, confidence) in pixels."""
    out = np.zeros((FRAMES, 1, 134, 3), np.float32)
    for t in range(FRAMES):
        ph = 2 * math.pi * t / FRAMES
        hip = np.array([WIDTH / 2 + 6 * math.sin(ph), 430 + 4 * math.sin(2 * ph)])
        neck = hip + np.array([3 * math.sin(ph), -175])
        nose = neck + np.array([4 * math.sin(ph), -62])
        r_sh, l_sh = neck + [-58, 4], neck + [58, 4]  # the person faces us: their right is image left
        r_hip, l_hip = hip + [-36, 0], hip + [36, 0]
        # right arm waves overhead, left arm swings
        r_el, r_wr = _chain(r_sh, [math.radians(140 + 10 * math.sin(2 * ph)), math.radians(175 + 35 * math.sin(2 * ph))], [92, 84])
        l_el, l_wr = _chain(l_sh, [math.radians(-12 - 14 * math.sin(ph)), math.radians(-25 - 20 * math.sin(ph))], [92, 84])
        swing = 0.35 * math.sin(ph)
        r_kn, r_an = _chain(r_hip, [swing, swing - 0.25 * max(0.0, math.sin(ph))], [122, 116])
        l_kn, l_an = _chain(l_hip, [-swing, -swing - 0.25 * max(0.0, -math.sin(ph))], [122, 116])
        body = [nose, neck, r_sh, r_el, r_wr, l_sh, l_el, l_wr, r_hip, r_kn, r_an, l_hip, l_kn, l_an,
                nose + [-13, -12], nose + [13, -12], nose + [-30, -4], nose + [30, -4]]
        feet = [l_an + [14, 22], l_an + [28, 18], l_an + [-6, 10], r_an + [-14, 22], r_an + [-28, 18], r_an + [6, 10]]
        face = _face(nose + [0, -2], 32)
        l_hand = _hand(l_wr, l_wr - l_el, 40, 0.15)
        r_hand = _hand(r_wr, r_wr - r_el, 40, 0.35 + 0.2 * math.sin(2 * ph))
        pts = body + feet + face + l_hand + r_hand
        assert len(pts) == 134
        out[t, 0, :, :2] = np.round(np.asarray(pts) * 8) / 8  # eighths: exact in float32, short in JSON
        out[t, 0, :, 2] = 0.95
    return out


def render_figure(kps: np.ndarray) -> np.ndarray:
    """A flat-shaded figure drawn from the keypoints (limbs as thick capsules), uint8 frames."""
    from PIL import Image, ImageDraw

    limbs = [(1, 2, 30), (1, 5, 30), (2, 3, 22), (3, 4, 18), (5, 6, 22), (6, 7, 18), (1, 8, 40), (1, 11, 40),
             (8, 11, 40), (8, 9, 30), (9, 10, 24), (11, 12, 30), (12, 13, 24), (2, 8, 34), (5, 11, 34)]
    frames = []
    for t in range(len(kps)):
        img = Image.new("RGB", (WIDTH, HEIGHT), (92, 120, 150))
        d = ImageDraw.Draw(img)
        d.rectangle([0, 560, WIDTH, HEIGHT], fill=(118, 104, 88))
        p = kps[t, 0]
        for a, b, w in limbs:
            colour = (60, 70, 140) if a in (8, 9, 11, 12) or b in (9, 10, 12, 13) else (200, 80, 60)
            d.line([tuple(p[a, :2]), tuple(p[b, :2])], fill=colour, width=w, joint="curve")
            for q in (p[a, :2], p[b, :2]):
                d.ellipse([q[0] - w / 2, q[1] - w / 2, q[0] + w / 2, q[1] + w / 2], fill=colour)
        torso = [tuple(p[i, :2]) for i in (2, 5, 11, 8)]
        d.polygon(torso, fill=(200, 80, 60))
        n = p[0, :2]
        d.ellipse([n[0] - 34, n[1] - 44, n[0] + 34, n[1] + 36], fill=(236, 192, 160))
        for hand in (p[92:113, :2], p[113:134, :2]):
            c = hand.mean(0)
            d.ellipse([c[0] - 16, c[1] - 16, c[0] + 16, c[1] + 16], fill=(236, 192, 160))
        frames.append(np.asarray(img))
    return np.stack(frames)


def main(out_dir: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    import conftest  # noqa: F401  (imports the repository as the package ``marionette``)
    from marionette.nodes import keypoints as kp_format
    from marionette.nodes.media import write_video

    out_dir.mkdir(parents=True, exist_ok=True)
    kps = make_keypoints()
    kp_format.save_json(kp_format.dense_to_pose_keypoint(kps, WIDTH, HEIGHT), out_dir / "marionette_sample_pose.json")
    frames = render_figure(kps)
    # Half size keeps the committed video small; the pose workflow works at any size.
    from PIL import Image
    small = np.stack([np.asarray(Image.fromarray(f).resize((WIDTH // 2, HEIGHT // 2), Image.BILINEAR)) for f in frames])
    write_video(small, out_dir / "marionette_sample.mp4", fps=FPS, crf=28)
    print(f"wrote {out_dir / 'marionette_sample_pose.json'} and {out_dir / 'marionette_sample.mp4'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "workflows" / "inputs")
