"""The pose nodes run end to end without a server (V3 stand-in): estimate on fixture models,
save and load the JSON, draw; and their cheap checks give clear messages."""
import json

import numpy as np
import pytest
import torch

from marionette.nodes import comfy_bridge
from marionette.nodes.pose import node as pose_node


@pytest.fixture()
def io_dirs(tmp_path, monkeypatch):
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    out.mkdir()
    monkeypatch.setattr(comfy_bridge, "input_dir", lambda: inp)
    monkeypatch.setattr(comfy_bridge, "output_dir", lambda: out)
    return inp, out


def _frames(t=3, h=96, w=64):
    g = torch.Generator().manual_seed(0)
    return torch.rand(t, h, w, 3, generator=g)


def test_estimate_save_load_draw_round_trip(models_dir, io_dirs):
    inp, out = io_dirs
    images = _frames()
    res = pose_node.MarionetteEstimatePose.execute(
        images=images, detector="yolox_l.onnx", pose_model="dw-ll_ucoco_384.onnx", follow="largest",
        max_gap_frames=8, draw_body=True, draw_hands=True, draw_face=True)
    frames, skeleton = res.args
    assert len(frames) == 3 and frames[0]["canvas_width"] == 64 and frames[0]["canvas_height"] == 96
    assert len(frames[0]["people"]) == 1 and len(frames[0]["people"][0]["pose_keypoints_2d"]) == 18 * 3
    assert skeleton.shape == (3, 96, 64, 3) and skeleton.dtype == torch.float32
    assert float(skeleton.max()) > 0.5  # something was drawn
    assert "3" in res.ui["text"][0]  # the report mentions the frame count

    saved = pose_node.MarionetteSavePoseKeypoints.execute(pose_keypoint=frames, filename_prefix="poses/run")
    entry = saved.ui["json"][0]
    path = out / entry["subfolder"] / entry["filename"]
    assert entry["subfolder"] == "poses" and path.name == "run_00001.json" and path.is_file()
    again = pose_node.MarionetteSavePoseKeypoints.execute(pose_keypoint=frames, filename_prefix="poses/run")
    assert again.ui["json"][0]["filename"] == "run_00002.json"  # never overwrites earlier results

    (inp / "kp").mkdir()
    (inp / "kp" / "clip.json").write_text(path.read_text())
    assert "kp/clip.json" in comfy_bridge.input_files(".json")
    assert pose_node.MarionetteLoadPoseKeypoints.validate_inputs(file="kp/clip.json") is True
    loaded = pose_node.MarionetteLoadPoseKeypoints.execute(file="kp/clip.json").args
    assert loaded[1:] == (3, 64, 96)
    p0, q0 = frames[0]["people"][0], loaded[0][0]["people"][0]
    assert np.allclose(p0["pose_keypoints_2d"], q0["pose_keypoints_2d"], atol=1e-3)

    drawn = pose_node.MarionetteDrawPose.execute(pose_keypoint=loaded[0], width=128, height=192, draw_body=True,
                                                 draw_hands=False, draw_face=False).args[0]
    assert drawn.shape == (3, 192, 128, 3)


def test_missing_model_is_reported_before_the_run(models_dir):
    msg = pose_node.MarionetteEstimatePose.validate_inputs(detector="nope.onnx", pose_model="dw-ll_ucoco_384.onnx")
    assert isinstance(msg, str) and "nope.onnx" in msg and "dwpose" in msg
    assert pose_node.MarionetteEstimatePose.validate_inputs(
        detector="yolox_l.onnx", pose_model="dw-ll_ucoco_384.onnx") is True


def test_load_rejects_paths_outside_input_and_missing_files(io_dirs):
    assert "outside" in pose_node.MarionetteLoadPoseKeypoints.validate_inputs(file="../../etc/passwd")
    assert "not in the input folder" in pose_node.MarionetteLoadPoseKeypoints.validate_inputs(file="none.json")


def test_save_refuses_prefix_outside_output(io_dirs):
    with pytest.raises(ValueError, match="outside the output folder"):
        pose_node.MarionetteSavePoseKeypoints.execute(pose_keypoint=[{"people": [], "canvas_width": 8,
                                                                      "canvas_height": 8}],
                                                      filename_prefix="../../escape")


def test_empty_keypoints_are_refused():
    with pytest.raises(ValueError, match="empty"):
        pose_node.MarionetteDrawPose.execute(pose_keypoint=[], width=0, height=0, draw_body=True,
                                             draw_hands=True, draw_face=True)


def test_sample_keypoints_file_is_valid_and_matches_video():
    from marionette.nodes import keypoints as kp_format
    from marionette.nodes.media import read_video
    from pathlib import Path

    inputs = Path(__file__).resolve().parents[2] / "workflows" / "inputs"
    frames = kp_format.load_json(inputs / "marionette_sample_pose.json")
    video, fps = read_video(inputs / "marionette_sample.mp4")
    assert len(frames) == len(video) == 48 and fps == 24
    assert json.loads((inputs / "marionette_sample_pose.json").read_text())[0]["canvas_height"] == 768
