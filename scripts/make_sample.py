"""Write the bundled sample, made from the free Anny body so nothing licensed is involved:

* ``marionette_sample_pose.json``  — the driving clip's keypoints (48 frames, 512×768,
  comfyui_controlnet_aux JSON): an average woman turning and raising her arms (the
  ``adult_turn`` clip of tests/body/synthetic.py).
* ``marionette_sample.mp4``        — the same clip rendered as a shaded figure (half size, for
  the pose workflow's video input; real DWPose weights detect it as a person).
* ``marionette_reference.png``     — the reference person: a heavier man standing, RGBA (alpha =
  person mask, which the guidance workflow uses), 512×768.
* ``marionette_reference_pose.json`` — the reference's keypoints.
* ``marionette_guidance/{depth,normal,semantic_map,mask,dwpose}/0000.png…`` — Champ's guidance
  maps of the first 16 driving frames at 256×384, in the official folder layout, for the
  animate_from_maps workflow.

    python scripts/make_sample.py [OUT_DIR]     (default: workflows/inputs)

Deterministic; the committed files in workflows/inputs were made by this script. Real pose
weights cannot ship, so the sample carries its own keypoints.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAMES, FPS = 48, 24
REFERENCE_SHAPE = (0.10, 0.60, 0.35, 0.85, 0.55, 0.55)  # gender, age, muscle, weight, height, proportions
LIGHT = np.array([-0.4, 0.5, 0.77])  # camera space with y up (the normal map's axes), toward the viewer


def shade(seq, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Lambert-shaded figure (clothes coloured by body part) over ``background``:
    uint8 frames ``[T,H,W,3]`` and masks ``[T,H,W]``."""
    from marionette.nodes.render.maps import render_guidance

    maps = render_guidance(seq, maps=("normal", "semantic", "mask"))
    n = maps["normal"] * 2 - 1
    light = LIGHT / np.linalg.norm(LIGHT)
    lambert = np.clip((n * light).sum(-1, keepdims=True), 0, 1)
    albedo = 0.35 + 0.55 * maps["semantic"][..., ::-1]  # a calmer palette than raw viridis
    rgb = albedo * (0.3 + 0.7 * lambert)
    m = maps["mask"][..., None]
    out = rgb * m + background[None] * (1 - m)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), maps["mask"] > 0.5


def backdrop(width: int, height: int) -> np.ndarray:
    y = np.linspace(0, 1, height)[:, None, None]
    wall = np.array([0.55, 0.62, 0.70]) * (1.05 - 0.25 * y)
    floor = np.array([0.48, 0.42, 0.36]) * (0.8 + 0.2 * y)
    img = np.where(y < 0.72, wall, floor)
    return np.broadcast_to(img, (height, width, 3)).astype(np.float32)


GUIDANCE_FRAMES, GUIDANCE_SIZE = 16, (256, 384)


def write_guidance_folders(seq, out_dir: Path) -> None:
    """Champ's ``<motion>/{depth,normal,semantic_map,mask,dwpose}/<frame>.png`` folders."""
    from PIL import Image

    from marionette.nodes import skeleton
    from marionette.nodes.render.maps import render_guidance
    from marionette.nodes.render.node import body_keypoints

    w, h = GUIDANCE_SIZE
    maps = render_guidance(seq, w, h)
    maps["dwpose"] = skeleton.draw_frames(body_keypoints(seq, w, h), width=w, height=h)
    folders = {"depth": "depth", "normal": "normal", "semantic": "semantic_map", "mask": "mask", "dwpose": "dwpose"}
    for key, folder in folders.items():
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(maps[key]):
            img = (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)
            Image.fromarray(img, "L" if img.ndim == 2 else "RGB").save(out_dir / folder / f"{t:04d}.png", optimize=True)


def reference_sequence(body, width: int, height: int):
    """One frame: the reference shape standing, arms a little away from the body, facing us."""
    import torch

    from marionette.nodes import keypoints as kpmod  # noqa: F401
    from marionette.nodes.body.geometry import intrinsics
    from marionette.nodes.types import BodySequence

    shape = torch.tensor(REFERENCE_SHAPE, dtype=body.dtype)
    pose = torch.zeros(1, body.num_joints, 3, dtype=body.dtype)
    orient = torch.zeros(1, 3, dtype=body.dtype)
    out = body(shape, pose, orient, torch.zeros(1, 3, dtype=body.dtype))
    v = out.vertices[0].numpy()
    focal = 0.9 * math.hypot(width, height)
    top, bottom = v[:, 1].min(), v[:, 1].max()
    z = focal * (bottom - top) / (0.82 * height)  # the body fills 82% of the height
    transl = np.array([0.0, -(top + bottom) / 2, z])
    K = intrinsics(focal, width, height)
    verts = (out.vertices[0].numpy() + transl)[None].astype(np.float32)
    k3 = out.keypoints[0].numpy() + transl
    k2 = (k3 @ K.T)[:, :2] / (k3 @ K.T)[:, 2:]
    k2[~np.asarray(body.keypoint_mask)] = np.nan
    return BodySequence(
        model="anny", shape=np.asarray(REFERENCE_SHAPE, np.float32), body_pose=pose.numpy(),
        global_orient=orient.numpy(), transl=transl[None].astype(np.float32), K=K[None], width=width,
        height=height, vertices=verts, faces=np.asarray(body.faces, np.int32), part_labels=body.part_labels,
        keypoints2d=k2[None].astype(np.float32), fit_error=np.full(1, np.nan, np.float32))


def main(out_dir: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import cli

    cli._pack()  # the repository as the package ``marionette``
    sys.path.insert(0, str(ROOT / "tests" / "body"))
    import synthetic
    from PIL import Image

    from marionette.nodes import keypoints as kpmod
    from marionette.nodes.body.models import load_body_model
    from marionette.nodes.media import write_video
    from marionette.nodes.types import BodySequence

    out_dir.mkdir(parents=True, exist_ok=True)
    body = load_body_model("anny", device="cpu", with_fingers=True)
    clip = synthetic.make_clip(body, "adult_turn", frames=FRAMES, variant="clean")
    kpmod.save_json(clip.pose_keypoint, out_dir / "marionette_sample_pose.json")
    W, H = clip.width, clip.height
    driving = BodySequence(
        model="anny", shape=clip.shape, body_pose=clip.body_pose, global_orient=clip.global_orient,
        transl=clip.transl, K=np.broadcast_to(clip.K, (len(clip), 3, 3)).copy(), width=W, height=H,
        vertices=clip.vertices.astype(np.float32), faces=np.asarray(body.faces, np.int32),
        part_labels=body.part_labels, keypoints2d=clip.keypoints2d.astype(np.float32),
        fit_error=np.full(len(clip), np.nan, np.float32))
    frames, _ = shade(driving, backdrop(W, H))
    small = np.stack([np.asarray(Image.fromarray(f).resize((W // 2, H // 2), Image.BILINEAR)) for f in frames])
    write_video(small, out_dir / "marionette_sample.mp4", fps=FPS, crf=26)

    first = BodySequence(**{**driving.__dict__, **{k: getattr(driving, k)[:GUIDANCE_FRAMES] for k in
                                                   ("body_pose", "global_orient", "transl", "K", "vertices",
                                                    "keypoints2d", "fit_error")}})
    write_guidance_folders(first, out_dir / "marionette_guidance")

    ref = reference_sequence(body, W, H)
    ref_rgb, ref_mask = shade(ref, backdrop(W, H))
    rgba = np.concatenate([ref_rgb[0], (ref_mask[0] * 255).astype(np.uint8)[..., None]], -1)
    Image.fromarray(rgba, "RGBA").save(out_dir / "marionette_reference.png", optimize=True)
    k = np.zeros((1, 1, 134, 3), np.float32)
    ok = np.isfinite(ref.keypoints2d[0]).all(-1)
    k[0, 0, ok, :2] = np.round(ref.keypoints2d[0][ok] * 8) / 8
    k[0, 0, ok, 2] = 1.0
    kpmod.save_json(kpmod.dense_to_pose_keypoint(k, W, H), out_dir / "marionette_reference_pose.json")
    print(f"wrote the sample into {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "workflows" / "inputs")
