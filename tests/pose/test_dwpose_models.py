"""DWPose end to end on the fixture ONNX models: loading through the catalog and the shared
cache, the errors for missing / broken / wrong files, the comfyui_controlnet_aux location, and
what ``estimate_video`` returns."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marionette.models_loader import cache, catalog, files
from marionette.models_loader.cache import CACHE
from marionette.nodes.pose import dwpose

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import make_models  # noqa: E402

# DWPose-134 index → COCO-WholeBody index (spec §9.3; -1 = neck)
SOURCE = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3] + list(range(17, 133))


def _frames(t=3, h=360, w=640, seed=0):
    return np.random.default_rng(seed).random((t, h, w, 3), dtype=np.float32)


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """No model anywhere but where a test puts one: empty models dir, no custom_nodes, no HF cache."""
    models = tmp_path / "models"
    models.mkdir()
    files.set_models_dir(models)
    monkeypatch.setattr(files, "_custom_nodes_dirs", lambda: [])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("AUX_ANNOTATOR_CKPTS_PATH", raising=False)
    CACHE.clear()
    yield models
    files.set_models_dir(None)
    CACHE.clear()


def test_estimate_video_on_fixture_models(models_dir):
    frames = _frames()
    calls = []
    result = dwpose.estimate_video(frames, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert result.keypoints.shape == (3, 1, 134, 3) and result.keypoints.dtype == np.float32
    assert (result.width, result.height) == (640, 360)
    assert result.person_found.tolist() == [True] * 3 and not result.filled.any() and result.missing_frames == []
    assert result.person_index.tolist() == [0, 0, 0]
    assert "3/3 frames" in result.summary()

    # the fixture detector puts one person at letterbox (176, 176), 160×300 → ÷ ratio 1
    people = result.all_people[0]
    assert not people.fallback and people.is_person.tolist() == [True]
    np.testing.assert_allclose(people.boxes[0], [96, 26, 256, 326], atol=8)
    assert people.box_scores[0] > 0.95

    # the fixture pose model peaks at POSE_TEMPLATE (crop pixels): mapped back through the box
    c, s = dwpose.bbox_xyxy_to_cs(people.boxes, 1.25)
    s = dwpose.fix_aspect_ratio(s, 288 / 384)
    crop_px = np.round(make_models.POSE_TEMPLATE * 2) / 2
    coco = crop_px / [288, 384] * s + c - s / 2
    kp = result.keypoints[0, 0]
    for i, src in enumerate(SOURCE):
        expected = (coco[5] + coco[6]) / 2 if src == -1 else coco[src]
        np.testing.assert_allclose(kp[i, :2], expected, atol=1e-3, err_msg=f"point {i}")
    heights = make_models.pose_peak_heights()
    np.testing.assert_allclose(kp[0, 2], heights[0], atol=0.05)  # nose score ≈ peak height
    assert kp[1, 2] == 1.0  # both shoulders visible → neck score 1
    assert (kp[:, 2] > 0.3).all()


def test_torch_input_gives_the_numpy_result(models_dir):
    frames = _frames(2, 128, 96)
    a = dwpose.estimate_video(frames)
    b = dwpose.estimate_video(torch.from_numpy(frames))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    single = dwpose.estimate_video(torch.from_numpy(frames[0]))
    np.testing.assert_array_equal(single.keypoints[0], a.keypoints[0])


def test_progress_callback_can_cancel(models_dir):
    class Cancelled(Exception):
        pass

    def progress(done, total):
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        dwpose.estimate_video(_frames(4, 64, 64), progress=progress)


def test_sessions_are_loaded_once_and_shared(models_dir):
    before = CACHE.loads
    dwpose.estimate_video(_frames(1, 64, 64))
    assert CACHE.loads == before + 2  # detector + pose model
    dwpose.estimate_video(_frames(1, 64, 64), detector_file="yolox_l.onnx", pose_model_file="dw-ll_ucoco_384.onnx")
    assert CACHE.loads == before + 2
    a = cache.onnx_model("dwpose_detector")
    assert cache.onnx_model("dwpose_detector", name="yolox_l.onnx") is a
    assert CACHE.loads == before + 2


def test_bad_frames_fail_before_loading_models(isolated):
    with pytest.raises(ValueError, match="empty batch"):
        dwpose.estimate_video(np.zeros((0, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        dwpose.estimate_video(np.zeros((2, 64, 64, 4), np.float32))


def test_missing_file_names_file_folders_and_url(isolated):
    with pytest.raises(files.ModelFileMissing) as err:
        dwpose.estimate_video(_frames(1, 64, 64))
    msg = str(err.value)
    assert "yolox_l.onnx" in msg
    assert str(isolated / "dwpose") in msg and str(isolated / "detection") in msg
    assert catalog.model("dwpose_detector").url in msg
    # a detector alone is not enough: now the pose model is named
    make_models.write_yolox(isolated / "dwpose" / "yolox_l.onnx")
    with pytest.raises(files.ModelFileMissing, match="dw-ll_ucoco_384.onnx"):
        dwpose.estimate_video(_frames(1, 64, 64))


def test_truncated_file_is_invalid_and_named(isolated):
    paths = make_models.write_dwpose(isolated)
    data = paths["dwpose_detector"].read_bytes()
    paths["dwpose_detector"].write_bytes(data[: len(data) // 3])
    with pytest.raises(files.ModelFileInvalid) as err:
        dwpose.estimate_video(_frames(1, 64, 64))
    assert str(paths["dwpose_detector"]) in str(err.value)
    assert "download it again" in str(err.value)


def test_pose_model_under_the_detector_name_is_invalid(isolated):
    paths = make_models.write_dwpose(isolated)
    shutil.copy(paths["dwpose_pose"], paths["dwpose_detector"])
    with pytest.raises(files.ModelFileInvalid) as err:
        dwpose.estimate_video(_frames(1, 64, 64))
    msg = str(err.value)
    assert str(paths["dwpose_detector"]) in msg and "does not look like" in msg and "'simcc_x'" in msg


def test_files_in_comfyui_controlnet_aux_are_found(isolated, tmp_path, monkeypatch):
    custom_nodes = tmp_path / "custom_nodes"
    aux = custom_nodes / "comfyui_controlnet_aux" / "ckpts" / "yzd-v" / "DWPose"
    written = make_models.write_dwpose(tmp_path / "written")
    aux.mkdir(parents=True)
    for p in written.values():
        shutil.copy(p, aux / p.name)
    monkeypatch.setattr(files, "_custom_nodes_dirs", lambda: [custom_nodes])
    assert files.find("dwpose_detector") == aux / "yolox_l.onnx"
    assert files.find("dwpose_pose") == aux / "dw-ll_ucoco_384.onnx"
    result = dwpose.estimate_video(_frames(1, 64, 64))
    assert result.person_found.all()


def test_dynamic_batch_models_give_the_static_result(tmp_path, fixture_models):
    import onnxruntime as ort

    dyn = make_models.write_dwpose(tmp_path, dynamic_batch=True)
    static = {k: fixture_models / "dwpose" / v.name for k, v in dyn.items()}

    def estimator(paths, batch_size):
        return dwpose.DWPoseEstimator(ort.InferenceSession(str(paths["dwpose_detector"])),
                                      ort.InferenceSession(str(paths["dwpose_pose"])),
                                      dwpose.DWPoseConfig(batch_size=batch_size))

    frames = _frames(7, 96, 128)
    batched = estimator(dyn, 3)
    assert batched._det_batched and batched._pose_batched
    progress = []
    a = batched(frames, progress=lambda d, t: progress.append(d))
    b = estimator(static, 3)(frames)
    assert progress == list(range(1, 8))
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.keypoints, fb.keypoints, atol=1e-3)
        np.testing.assert_allclose(fa.boxes, fb.boxes, atol=1e-3)


def test_no_box_falls_back_to_the_whole_frame_but_is_not_a_person(fixture_models, fakes):
    import onnxruntime as ort

    pose = ort.InferenceSession(str(fixture_models / "dwpose" / "dw-ll_ucoco_384.onnx"))
    est = dwpose.DWPoseEstimator(fakes.detector(), pose)  # a detector that never finds anyone
    (people,) = est(_frames(1, 100, 80))
    assert people.fallback and people.is_person.tolist() == [False]
    np.testing.assert_array_equal(people.boxes, [[0, 0, 80, 100]])
    assert people.keypoints.shape == (1, 134, 3) and (people.keypoints[0, :, 2] > 0.3).all()


def test_video_without_a_person_is_a_clear_error(models_dir):
    config = dwpose.DWPoseConfig(min_body_keypoints=18)  # more than a body has: nobody qualifies
    with pytest.raises(ValueError) as err:
        dwpose.estimate_video(_frames(2, 64, 64), config=config)
    msg = str(err.value)
    assert "no person in any of the 2 frames" in msg and "upscale" in msg and "yolox_l.onnx" in msg


def test_follow_option_is_checked(models_dir):
    with pytest.raises(ValueError, match="follow"):
        dwpose.estimate_video(_frames(1, 64, 64), follow="tallest")
