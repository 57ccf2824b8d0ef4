"""Shape alignment (Champ's shape / view transfer) on true synthetic Anny bodies: the driving
joint angles are kept exactly, the reference shape is taken, vertices and keypoints follow."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.nodes.body import align
from marionette.nodes.body.geometry import aa_to_matrix, project
from marionette.nodes.types import BodySequence

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402

pytestmark = pytest.mark.anny


def _truth(model, clip, frames=slice(None), width=None, height=None) -> BodySequence:
    """The clip's true bodies as a BodySequence (as a perfect fit would give)."""
    pose = clip.body_pose[frames]
    T = len(pose)
    dt = model.dtype
    with torch.no_grad():
        out = model(torch.as_tensor(clip.shape, dtype=dt), torch.as_tensor(pose, dtype=dt),
                    torch.as_tensor(clip.global_orient[frames], dtype=dt),
                    torch.as_tensor(clip.transl[frames], dtype=dt))
        kp2 = project(out.keypoints, torch.as_tensor(clip.K[0], dtype=dt)).numpy()
    kp2[:, ~np.asarray(model.keypoint_mask, bool)] = np.nan
    return BodySequence(
        model=model.name, shape=clip.shape.astype(np.float32), body_pose=pose.astype(np.float32),
        global_orient=clip.global_orient[frames].astype(np.float32), transl=clip.transl[frames].astype(np.float32),
        K=clip.K[frames].astype(np.float32), width=width or clip.width, height=height or clip.height,
        vertices=out.vertices.float().numpy(), faces=np.asarray(model.faces, np.int32),
        part_labels=np.asarray(model.part_labels), keypoints2d=kp2.astype(np.float32),
        fit_error=np.zeros(T, np.float32), shape_names=tuple(model.shape_names),
        joint_names=tuple(model.joint_names))


@pytest.fixture(scope="module")
def bodies(anny_body):
    child = syn.make_clip(anny_body, "child_cross", frames=1, variant="clean")
    adult = syn.make_clip(anny_body, "heavy_pan", frames=8, variant="clean", phase=(0.2, 0.3))
    ref = _truth(anny_body, child)
    ref.width, ref.height = 600, 800  # a reference image of another size
    ref.K = ref.K.copy()
    ref.K[:, :2, 2] = [299.5, 399.5]
    ref.keypoints2d = ref.keypoints2d + np.array([299.5 - 255.5, 399.5 - 383.5], np.float32)
    return ref, _truth(anny_body, adult), child, adult


def test_keep_driving_camera(anny_body, bodies):
    ref, drv, child, _ = bodies
    out = align.align_shape(ref, drv, anny_body)
    assert np.allclose(out.shape, child.shape)
    assert np.array_equal(out.body_pose, drv.body_pose)  # joint angles equal
    assert np.allclose(out.global_orient, drv.global_orient, atol=1e-5)
    assert np.allclose(out.transl, drv.transl) and np.allclose(out.K, drv.K)
    assert (out.width, out.height) == (drv.width, drv.height)
    # the child is much shorter than the heavy man: vertex heights change with the shape
    height = lambda v: np.ptp(v[..., 1], axis=-1)  # noqa: E731
    assert (height(out.vertices) < 0.8 * height(drv.vertices)).all()
    # keypoints follow the new body
    assert not np.allclose(out.keypoints2d[:, :18], drv.keypoints2d[:, :18], atol=5)
    assert np.isnan(out.keypoints2d[:, 24:92]).all() and np.isfinite(out.keypoints2d[:, :24]).all()
    assert np.isnan(out.fit_error).all() and np.array_equal(out.extras["driving_fit_error"], drv.fit_error)
    assert out.vertices.dtype == np.float32 and out.vertices.shape == drv.vertices.shape
    # same shape → the driving bodies come back
    same = align.align_shape(_with(ref, shape=drv.shape), drv, anny_body)
    assert np.allclose(same.vertices, drv.vertices, atol=1e-4)


def _with(seq, **changes):
    return BodySequence(**{**seq.__dict__, **changes})


def test_match_reference(anny_body, bodies):
    ref, drv, child, _ = bodies
    out = align.align_shape(ref, drv, anny_body, placement="match reference")
    assert (out.width, out.height) == (600, 800) and np.allclose(out.K, ref.K[0])
    assert np.allclose(out.transl[0], ref.transl[0], atol=1e-5)
    assert np.allclose(out.global_orient[0], ref.global_orient[0], atol=1e-5)
    assert np.array_equal(out.body_pose, drv.body_pose)
    # turns relative to the first frame are the driving ones
    R = aa_to_matrix(torch.as_tensor(out.global_orient, dtype=torch.float64)).numpy()
    Rd = aa_to_matrix(torch.as_tensor(drv.global_orient, dtype=torch.float64)).numpy()
    assert np.allclose(R[0].T @ R[-1], Rd[0].T @ Rd[-1], atol=1e-5)
    # displacements: the driving ones, turned with the body and scaled by the depth ratio
    to_ref = R[0] @ Rd[0].T
    step = (drv.transl[-1] - drv.transl[0]) @ to_ref.T * (ref.transl[0, 2] / drv.transl[0, 2])
    assert np.allclose(out.transl[-1] - out.transl[0], step, atol=1e-4)
    # frame 0 stands where the reference person stands (its projected torso matches)
    torso = [1, 2, 5, 8, 11]
    assert np.abs(out.keypoints2d[0, torso] - ref.keypoints2d[0, torso]).max() < 12.0


def test_smoothing(anny_body, bodies):
    ref, drv, _, _ = bodies
    rng = np.random.default_rng(0)
    jitter = _with(drv, body_pose=drv.body_pose + rng.normal(0, 0.05, drv.body_pose.shape).astype(np.float32))
    rough = align.align_shape(ref, jitter, anny_body, smooth=0.0)
    smooth = align.align_shape(ref, jitter, anny_body, smooth=1.0)
    acc = lambda p: np.abs(np.diff(p, 2, axis=0)).mean()  # noqa: E731
    assert acc(smooth.body_pose) < 0.5 * acc(rough.body_pose)
    assert np.abs(smooth.body_pose - drv.body_pose).mean() < np.abs(rough.body_pose - drv.body_pose).mean()
    assert np.allclose(smooth.shape, ref.shape)


def test_errors(anny_body, bodies):
    ref, drv, _, _ = bodies
    with pytest.raises(ValueError, match="placement"):
        align.align_shape(ref, drv, anny_body, placement="centre")
    with pytest.raises(ValueError, match="smooth"):
        align.align_shape(ref, drv, anny_body, smooth=2.0)
    with pytest.raises(ValueError, match="single frame"):
        align.align_shape(drv, drv, anny_body)
    with pytest.raises(ValueError, match="same Load Body Model"):
        align.align_shape(_with(ref, model="smpl"), drv, anny_body)
    with pytest.raises(ValueError, match="joints"):
        align.align_shape(ref, _with(drv, body_pose=drv.body_pose[:, :10]), anny_body)
    with pytest.raises(ValueError, match="BodySequence"):
        align.align_shape(ref, "driving", anny_body)
