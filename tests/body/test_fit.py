"""Body fitting on the synthetic Anny set (tests/body/synthetic.py): short clips at natural speed
with the default settings, accuracy bounds against the true bodies; input checks."""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.nodes import keypoints as kpmod
from marionette.nodes.body import fit as fit_mod
from marionette.nodes.body.fit import FitConfig, fit_sequence
from marionette.nodes.body.geometry import default_focal
from marionette.nodes.body.silhouette import mask_iou, render_silhouettes

sys.path.insert(0, str(Path(__file__).parent))
import synthetic as syn  # noqa: E402

pytestmark = pytest.mark.anny

FIT = FitConfig()  # the defaults: a few seconds per short clip
QUICK = FitConfig(init_iters=20, body_iters=40, repair_rounds=1, repair_iters=10, shape_iters=20)


def _in_frame_error(seq, clip):
    """``[T, 24]`` px between fitted and true body/foot keypoints, NaN for true points out of frame."""
    true = clip.keypoints2d[:, :24]
    inside = ((true[..., 0] >= 0) & (true[..., 0] <= clip.width - 1) & (true[..., 1] >= 0)
              & (true[..., 1] <= clip.height - 1))
    return np.where(inside, np.linalg.norm(seq.keypoints2d[:, :24] - true, axis=-1), np.nan)


def _iou(seq, clip):
    return mask_iou(render_silhouettes(seq.vertices, seq.faces, seq.K, clip.height, clip.width),
                    clip.masks[:len(seq)])


def test_clean_clip_through_the_json_format(anny_body, tmp_path):
    clip = syn.make_clip(anny_body, "child_cross", frames=24, variant="clean", phase=(0.1, 0.3))
    path = kpmod.save_json(clip.pose_keypoint, tmp_path / "kp.json")
    assert json.loads(path.read_text())[0]["canvas_height"] == 768
    dense = kpmod.pose_keypoint_to_dense(kpmod.load_json(path))
    seq = fit_sequence(anny_body, dense.keypoints[:, 0], 512, 768, config=FIT)
    err = _in_frame_error(seq, clip)
    assert np.nanmean(err) < 3.5 and np.nanpercentile(err, 95) < 9.0  # arms crossing the midline
    assert _iou(seq, clip).mean() > 0.85
    assert seq.vertices.shape == (24, anny_body.num_vertices, 3) and seq.vertices.dtype == np.float32
    assert seq.K.shape == (24, 3, 3) and np.isclose(seq.K[0, 0, 0], default_focal(512, 768))
    assert np.isfinite(seq.fit_error).all() and seq.fit_error.mean() < 3.5
    assert np.isnan(seq.keypoints2d[:, 24:92]).all()  # Anny has no face points
    assert (seq.width, seq.height, seq.model) == (512, 768, "anny")
    assert seq.joint_names == anny_body.joint_names and seq.shape_names == anny_body.shape_names


def test_noisy_clip_with_dropouts_and_a_turn(anny_body):
    clip = syn.make_clip(anny_body, "adult_turn", frames=30, variant="noisy", phase=(0.3, 0.55))
    assert (clip.keypoints[..., 2] == 0).mean() > 0.1  # dropouts and missing points
    seq = fit_sequence(anny_body, clip.keypoints, 512, 768, config=FIT)
    err = _in_frame_error(seq, clip)
    assert np.nanmean(err) < 5.0
    assert np.nanmean(err, axis=1).max() < 12.0  # no lost frame, dropouts bridged
    assert syn.acceleration_error(seq.keypoints2d[:, :24], clip.keypoints2d[:, :24]) < 2.0


def test_half_body_legs_stay_plausible(anny_body):
    clip = syn.make_clip(anny_body, "half_body", frames=20, variant="clean", phase=(0.1, 0.27))
    assert (clip.keypoints[:, [9, 10, 12, 13], 2] == 0).all()  # knees and ankles out of frame
    seq = fit_sequence(anny_body, clip.keypoints, 512, 768, config=FIT)
    assert np.nanmean(_in_frame_error(seq, clip)) < 4.0
    # unseen legs: near the (standing) truth, knees nearly straight
    legs = np.linalg.norm(seq.keypoints2d[:, [9, 10, 12, 13]] - clip.keypoints2d[:, [9, 10, 12, 13]], axis=-1)
    assert legs.mean() < 60.0
    knees = [anny_body.joint_names.index(n) for n in ("lowerleg01.L", "lowerleg01.R")]
    assert np.linalg.norm(seq.body_pose[:, knees], axis=-1).max() < 0.5


def test_single_image_with_mask(anny_body):
    clip = syn.make_clip(anny_body, "heavy_pan", frames=1, variant="clean")
    plain = fit_sequence(anny_body, clip.keypoints, 512, 768, config=FIT)
    masked = fit_sequence(anny_body, clip.keypoints, 512, 768, masks=clip.masks, config=FIT)
    iou_plain, iou_masked = _iou(plain, clip)[0], _iou(masked, clip)[0]
    assert iou_masked > 0.89 and iou_masked > iou_plain  # bench: 0.91 with the defaults
    assert np.isclose(masked.extras["silhouette_iou"][0], iou_masked, atol=0.02)
    assert masked.shape[3] > 0.65  # the heavy man's weight phenotype (0.5 = average)
    assert len(masked) == 1 and masked.fit_error[0] < 4.0


def test_progress_and_cancel(anny_body):
    clip = syn.make_clip(anny_body, "child_cross", frames=6, variant="clean", phase=(0.0, 0.05))
    calls = []
    fit_sequence(anny_body, clip.keypoints, 512, 768, config=QUICK, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] and all(d <= t for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done > 5:
            raise Cancelled

    with pytest.raises(Cancelled):
        fit_sequence(anny_body, clip.keypoints, 512, 768, config=QUICK, progress=cancel)


def test_bad_frames_are_reported(anny_body):
    clip = syn.make_clip(anny_body, "adult_turn", frames=8, variant="clean", phase=(0.0, 0.06))
    kps = clip.keypoints.copy()
    rng = np.random.default_rng(0)
    kps[4, :24, :2] = rng.uniform([0, 0], [512, 768], (24, 2))  # another "person" in frame 4
    with pytest.warns(RuntimeWarning, match="fit badly"):
        seq = fit_sequence(anny_body, kps, 512, 768, config=QUICK)
    assert 4 in seq.extras["bad_frames"].tolist()
    assert seq.fit_error[4] > 3 * np.median(seq.fit_error)


def test_focal_choices(anny_body):
    clip = syn.make_clip(anny_body, "child_cross", frames=2, variant="clean", phase=(0.0, 0.01))
    cfg = FitConfig(init_iters=5, body_iters=5, repair_rounds=0, shape_iters=0)
    hmr = fit_sequence(anny_body, clip.keypoints, 512, 768, focal="hmr2", config=cfg)
    assert np.isclose(hmr.K[0, 0, 0], 5000 / 256 * 768) and hmr.transl[0, 2] > 10  # a long lens: far away
    px = fit_sequence(anny_body, clip.keypoints, 512, 768, focal=700.0, config=cfg)
    assert np.isclose(px.K[0, 0, 0], 700.0) and np.isclose(px.K[0, 1, 2], 383.5)
    assert np.isclose(px.extras["focal"], 700.0)
    with pytest.raises(ValueError, match="focal"):
        fit_sequence(anny_body, clip.keypoints, 512, 768, focal="wide", config=cfg)
    with pytest.raises(ValueError, match="focal"):
        fit_sequence(anny_body, clip.keypoints, 512, 768, focal=-1.0, config=cfg)


def test_input_errors(anny_body):
    kps = np.zeros((3, 134, 3), np.float32)
    kps[:, :18] = [256, 384, 1.0]
    with pytest.raises(ValueError, match=r"\[frames, 134, 3\]"):
        fit_sequence(anny_body, np.zeros((3, 18, 3)), 512, 768)
    with pytest.raises(ValueError, match="empty"):
        fit_sequence(anny_body, np.zeros((0, 134, 3)), 512, 768)
    with pytest.raises(ValueError, match="no person"):
        fit_sequence(anny_body, np.zeros((3, 134, 3)), 512, 768)
    with pytest.raises(ValueError, match="2 people"):
        fit_sequence(anny_body, np.zeros((3, 2, 134, 3)), 512, 768)
    with pytest.raises(ValueError, match="2 frames but the keypoints have 3"):
        fit_sequence(anny_body, kps, 512, 768, masks=np.ones((2, 768, 512), bool))
    with pytest.raises(ValueError, match="resize the masks"):
        fit_sequence(anny_body, kps, 512, 768, masks=np.ones((3, 384, 256), bool))
    with pytest.raises(ValueError, match="image size does not match"):
        fit_sequence(anny_body, kps * [10, 10, 1], 51, 76)
    with pytest.raises(ValueError, match="width"):
        fit_sequence(anny_body, kps, 0, 768)
    with pytest.raises(ValueError, match="BodyModel"):
        fit_sequence("anny", kps, 512, 768)


def test_missing_frames_and_torch_input(anny_body):
    """Frames without any keypoint are bridged; torch input and a [T, 1, 134, 3] batch work."""
    clip = syn.make_clip(anny_body, "heavy_pan", frames=10, variant="clean", phase=(0.2, 0.28))
    kps = torch.as_tensor(clip.keypoints[:, None].copy())
    kps[4:6] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        seq = fit_sequence(anny_body, kps, 512, 768, config=FIT)
    assert np.isnan(seq.fit_error[4:6]).all() and np.isfinite(seq.fit_error[[0, 3, 6, 9]]).all()
    err = _in_frame_error(seq, clip)
    assert np.nanmean(err[4:6]) < 10.0  # the gap follows its neighbours
    assert np.isfinite(seq.vertices).all()


def test_check_inputs_normalises_masks(anny_body):
    kps = np.zeros((2, 134, 3))
    kps[:, :18] = [30, 20, 1]
    _, masks = fit_mod.check_inputs(anny_body, kps, 64, 48, np.full((2, 48, 64, 1), 0.7, np.float32))
    assert masks.dtype == bool and masks.shape == (2, 48, 64) and masks.all()
