"""Shape alignment keeps the driving poses and takes the reference shape; the body and render
nodes run end to end on Anny through the V3 stand-in (fit → align → save/load → render)."""
import numpy as np
import pytest
import torch

from marionette.nodes import comfy_bridge
from marionette.nodes.body import align
from marionette.nodes.body import node as body_node
from marionette.nodes.render import node as render_node
from marionette.nodes.types import BodySequence

pytestmark = pytest.mark.anny


def _sequence(model, shape, T=4, z=3.0, x_shift=0.0):
    g = torch.Generator().manual_seed(1)
    pose = (torch.rand(T, model.num_joints, 3, generator=g, dtype=model.dtype) - 0.5) * 0.3
    orient = torch.zeros(T, 3, dtype=model.dtype)
    transl = torch.tensor([[x_shift + 0.05 * t, 0.0, z] for t in range(T)], dtype=model.dtype)
    shape_t = torch.as_tensor(shape, dtype=model.dtype)
    with torch.no_grad():
        out = model(shape_t, pose, orient, transl)
    K = np.array([[900.0, 0, 255.5], [0, 900.0, 383.5], [0, 0, 1]], np.float32)
    return BodySequence(model=model.name, shape=np.asarray(shape, np.float32), body_pose=pose.float().numpy(),
                        global_orient=orient.float().numpy(), transl=transl.float().numpy(),
                        K=np.repeat(K[None], T, 0), width=512, height=768, vertices=out.vertices.float().numpy(),
                        faces=np.asarray(model.faces, np.int32), part_labels=np.asarray(model.part_labels),
                        keypoints2d=np.zeros((T, 134, 2), np.float32), fit_error=np.zeros(T, np.float32),
                        shape_names=tuple(model.shape_names), joint_names=tuple(model.joint_names))


def test_align_takes_reference_shape_and_keeps_driving_pose(anny_body):
    heavy = [0.1, 0.6, 0.3, 1.0, 0.5, 0.5]
    thin = [0.9, 0.5, 0.3, 0.0, 0.5, 0.5]
    ref = _sequence(anny_body, heavy, T=1, z=4.0, x_shift=0.3)
    drv = _sequence(anny_body, thin, T=4)
    out = align.align_shape(ref, drv, anny_body)
    assert np.allclose(out.shape, heavy) and np.allclose(out.body_pose, drv.body_pose)
    assert np.allclose(out.transl, drv.transl) and out.width == 512
    # a heavier body: wider at the waist than the thin driving body in the same pose
    def waist(v):  # per frame: x extent of the vertices at the body's middle height
        return np.array([np.ptp(f[np.abs(f[:, 1] - np.median(f[:, 1])) < 0.05, 0]) for f in v])

    assert (waist(out.vertices) > waist(drv.vertices) * 1.1).all()
    assert np.isfinite(out.keypoints2d[:, :18]).all()

    moved = align.align_shape(ref, drv, anny_body, placement="match reference")
    assert np.allclose(moved.transl[0], ref.transl[0])  # starts where the reference stands
    step = (drv.transl[1] - drv.transl[0]) * (ref.transl[0, 2] / drv.transl[0, 2])
    assert np.allclose(moved.transl[1] - moved.transl[0], step, atol=1e-5)


def test_align_smoothing_and_errors(anny_body):
    ref = _sequence(anny_body, [0.5] * 6, T=1)
    drv = _sequence(anny_body, [0.5] * 6, T=12)
    smooth = align.align_shape(ref, drv, anny_body, smooth=1.0)
    rough = np.abs(np.diff(drv.body_pose, 2, axis=0)).mean()
    assert np.abs(np.diff(smooth.body_pose, 2, axis=0)).mean() < 0.5 * rough
    with pytest.raises(ValueError, match="placement"):
        align.align_shape(ref, drv, anny_body, placement="sideways")
    other = BodySequence(**{**drv.__dict__, "model": "smpl"})
    with pytest.raises(ValueError, match="fitted with 'smpl'"):
        align.align_shape(ref, other, anny_body)


def _poses(anny_body):
    """POSE_KEYPOINT of 3 frames of a known Anny body (exact projections)."""
    from marionette.nodes import keypoints as kp_format

    drv = _sequence(anny_body, [0.5] * 6, T=3)
    with torch.no_grad():
        out = anny_body(torch.as_tensor(drv.shape, dtype=anny_body.dtype),
                        torch.as_tensor(drv.body_pose, dtype=anny_body.dtype),
                        torch.as_tensor(drv.global_orient, dtype=anny_body.dtype),
                        torch.as_tensor(drv.transl, dtype=anny_body.dtype))
    k3 = out.keypoints.float().numpy()
    mask = np.asarray(anny_body.keypoint_mask, bool)
    uv = np.zeros(k3.shape[:2] + (2,), np.float32)
    uv[:, mask] = k3[:, mask, :2] / k3[:, mask, 2:] * 900.0 + np.array([255.5, 383.5])
    dense = np.zeros((3, 1, 134, 3), np.float32)
    dense[:, 0, mask, :2] = uv[:, mask]
    dense[:, 0, mask, 2] = 1.0
    return kp_format.dense_to_pose_keypoint(dense, 512, 768)


def test_fit_runs_under_comfyui_inference_mode(anny_body):
    """ComfyUI executes every node inside torch.inference_mode(); fitting needs gradients."""
    poses = _poses(anny_body)
    with torch.inference_mode():
        model = body_node.MarionetteLoadBodyModel.execute(model="anny", variant="neutral", with_fingers=False).args[0]
        seq = body_node.MarionetteFitBody.execute(pose_keypoint=poses, body_model=model, person=0,
                                                  focal_length="diagonal", quality="fast").args[0]
    assert len(seq) == 3 and np.isfinite(seq.vertices).all()


def test_nodes_fit_align_save_load_render(anny_body, tmp_path, monkeypatch):
    monkeypatch.setattr(comfy_bridge, "input_dir", lambda: tmp_path)
    monkeypatch.setattr(comfy_bridge, "output_dir", lambda: tmp_path)
    poses = _poses(anny_body)

    res = body_node.MarionetteFitBody.execute(pose_keypoint=poses, body_model=anny_body, person=0,
                                              focal_length="diagonal", quality="fast")
    seq = res.args[0]
    assert len(seq) == 3 and np.nanmean(seq.fit_error) < 10.0
    assert "3 frames fitted" in res.ui["text"][0]
    with pytest.raises(ValueError, match="person 2"):
        body_node.MarionetteFitBody.execute(pose_keypoint=poses, body_model=anny_body, person=2,
                                            focal_length="diagonal", quality="fast")
    with pytest.raises(ValueError, match="2 masks for 3"):
        body_node.MarionetteFitBody.execute(pose_keypoint=poses, body_model=anny_body, person=0,
                                            focal_length="diagonal", quality="fast", masks=torch.ones(2, 768, 512))

    reference = _sequence(anny_body, [0.1, 0.6, 0.3, 1.0, 0.5, 0.5], T=1)
    aligned = body_node.MarionetteAlignBodyShape.execute(reference=reference, driving=seq, body_model=anny_body,
                                                         placement="keep driving camera", smooth=0.0).args[0]
    saved = body_node.MarionetteSaveBodySequence.execute(body_sequence=aligned, filename_prefix="bodies/run")
    entry = saved.ui["npz"][0]
    rel = f"{entry['subfolder']}/{entry['filename']}"
    assert body_node.MarionetteLoadBodySequence.validate_inputs(file=rel) is True
    loaded = body_node.MarionetteLoadBodySequence.execute(file=rel).args[0]
    assert np.allclose(loaded.vertices, aligned.vertices)

    maps = render_node.MarionetteRenderBodyGuidance.execute(body_sequence=loaded, width=256, height=384,
                                                            skeleton_hands=True, skeleton_face=True).args
    depth, normal, semantic, mask_out, skel, pose_kp = maps
    assert depth.shape == normal.shape == semantic.shape == skel.shape == (3, 384, 256, 3)
    assert mask_out.shape == (3, 384, 256) and 0.02 < float(mask_out.mean()) < 0.6
    assert float(depth[mask_out < 0.5].max()) == 0.0 and float(depth.max()) == 1.0  # background 0, nearest 255
    assert pose_kp[0]["canvas_width"] == 256 and len(pose_kp) == 3
    assert float(skel.max()) > 0.5
