"""Body models (nodes/body): Anny (real, offline) and SMPL / SMPL-X (fixture files in the
official layouts): the canonical camera-ready frame, keypoints, part labels, posing, batching,
safe loading of .pkl/.npz files and the error messages."""
import math
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from marionette.models_loader import catalog, files
from marionette.models_loader.cache import CACHE
from marionette.nodes.body.base import SMPL_PARTS, BodyModel

L_SHO, R_SHO, L_WRI, R_WRI, NECK, NOSE, L_ANK, R_ANK = 5, 2, 7, 4, 1, 0, 13, 10
MODELS = [pytest.param("anny", marks=pytest.mark.anny), "smpl", "smpl_npz", "smplx"]


@pytest.fixture(params=MODELS)
def body(request) -> BodyModel:
    if request.param == "anny":
        return request.getfixturevalue("anny_body")
    return request.getfixturevalue("fixture_bodies")[request.param]


def rest(model: BodyModel, T: int = 1, transl=None):
    with torch.no_grad():
        return model(model.default_shape(), torch.zeros(T, model.num_joints, 3), torch.zeros(T, 3), transl)


def flexed_left_elbow(model: BodyModel, angle: float) -> torch.Tensor:
    """body_pose [1, J, 3] bending the left elbow by ``angle`` (positive = flexion)."""
    pose = torch.zeros(1, model.num_joints, 3)
    if model.name == "anny":
        i = model.joint_names.index("lowerarm01.L")
        pose[0, i] = torch.as_tensor(model.joint_axes[i][:, 0], dtype=torch.float32) * angle  # local X = flexion
    else:
        pose[0, model.joint_names.index("left_elbow"), 1] = -angle  # SMPL: left elbow flexes about −y
    return pose


# ------------------------------------------------------------------------------ the frame

def test_canonical_frame_standing_facing_the_camera(body):
    out = rest(body)
    k, v = out.keypoints[0], out.vertices[0]
    labels = torch.as_tensor(body.part_labels)
    assert k[NOSE, 1] < k[NECK, 1] < k[L_ANK, 1] and k[NOSE, 1] < k[R_ANK, 1]  # y down: head above feet
    assert v[:, 1].max() - v[:, 1].min() > 1.2  # an adult-sized body, metres
    head = v[labels == 15]
    assert k[NOSE, 2] < head[:, 2].max() - 0.05  # the nose is nearer the camera than the back of the head
    assert k[NOSE, 2] < k[16:18, 2].mean()  # ... and than the ears
    assert k[L_WRI, 0] > 0.2 > -0.2 > k[R_WRI, 0]  # the person's left at +x
    assert k[L_SHO, 0] > 0 > k[R_SHO, 0]
    assert torch.allclose(out.joints[0, 0], torch.zeros(3), atol=1e-6)  # pelvis at the origin


def test_global_orient_and_transl_move_the_whole_body(body):
    base = rest(body)
    T = 1
    turned = body(body.default_shape(), torch.zeros(T, body.num_joints, 3), torch.tensor([[0.0, math.pi, 0.0]]),
                  torch.tensor([[0.1, -0.2, 3.0]]))
    k, k0 = turned.keypoints[0].detach(), base.keypoints[0]
    assert k[L_WRI, 0] < k[R_WRI, 0]  # turned around: left wrist now on the image's left
    assert k[NOSE, 2] > 3.0  # facing away: nose beyond the pelvis (which sits at z = 3)
    assert torch.allclose(turned.joints[0, 0].detach(), torch.tensor([0.1, -0.2, 3.0]), atol=1e-5)
    # a rotation about the pelvis keeps every distance
    assert torch.allclose((k[L_WRI] - k[R_WRI]).norm(), (k0[L_WRI] - k0[R_WRI]).norm(), atol=1e-5)


# ------------------------------------------------------------------------------ keypoints

def test_keypoints_consistent_with_mask_and_sides(body):
    out = rest(body)
    k = out.keypoints[0]
    mask = torch.as_tensor(body.keypoint_mask)
    assert mask.shape == (134,) and mask[:24].all()  # body 18 + feet 6 on every model
    assert (k[~mask] == 0).all() and (k[mask].norm(dim=1) > 0).all()
    assert torch.allclose(k[NECK], (k[L_SHO] + k[R_SHO]) / 2, atol=1e-6)
    for left, right in ((L_SHO, R_SHO), (L_WRI, R_WRI), (11, 8), (15, 14), (17, 16), (18, 21), (20, 23)):
        assert k[left, 0] > k[right, 0], (left, right)  # hips, eyes, ears, toes, heels too
    # hands: the wrist point sits at the hand's root (within 2 cm of the body's wrist point)
    assert mask[92] and mask[113]
    assert (k[92] - k[L_WRI]).norm() < 0.02 and (k[113] - k[R_WRI]).norm() < 0.02
    left_hand, right_hand = k[92:113][mask[92:113]], k[113:134][mask[113:134]]
    assert (left_hand[:, 0] > 0.3).all() and (right_hand[:, 0] < -0.3).all()
    assert out.joints.shape == (1, body.num_joints + 1, 3)


@pytest.mark.anny
def test_anny_keypoints_hands_and_no_face(anny_body):
    mask = anny_body.keypoint_mask
    assert mask[92:134].all() and not mask[24:92].any()  # full hands, no face landmarks
    k = rest(anny_body).keypoints[0]
    for wrist in (92, 113):  # each finger: wrist → ... → DIP → tip goes outward, tip ~2-3 cm past DIP
        dip, tip = k[wrist + 3:wrist + 21:4], k[wrist + 4:wrist + 21:4]
        assert ((tip - k[wrist]).norm(dim=1) > (dip - k[wrist]).norm(dim=1) + 0.01).all()
        assert ((tip - dip).norm(dim=1) < 0.04).all()


def test_smpl_keypoints(fixture_bodies, models_dir):
    from marionette.nodes.body.models import load_body_model

    smpl, smplx = fixture_bodies["smpl"], fixture_bodies["smplx"]
    assert smpl.keypoint_mask[[92, 113]].all() and smpl.keypoint_mask.sum() == 26  # body, feet, wrists
    assert smplx.keypoint_mask.all()  # + fingers and 68 face landmarks (51 static + 17 contour)
    k = rest(smplx).keypoints[0]
    face = k[24:92]
    assert ((face - k[NOSE]).norm(dim=1) < 0.15).all()  # on the head
    assert (face[:, 2] < k[16:18, 2].mean()).all()  # on the face side, toward the camera
    body_only = load_body_model("smplx", device="cpu", with_fingers=False)
    assert body_only.num_joints == 22 and body_only.keypoint_mask[93:113].sum() == 0


def test_smpl_orientation_from_camera_convention():
    pytest.importorskip("smplx")
    from marionette.nodes.body.smpl_model import canonical_orient_from_camera_smpl

    upright = canonical_orient_from_camera_smpl(torch.tensor([[math.pi, 0.0, 0.0]]))  # HMR2-style, facing us
    assert torch.allclose(upright, torch.zeros(1, 3), atol=1e-5)


# ------------------------------------------------------------------------------ part labels

def test_part_labels_cover_smpl_parts_and_are_placed_sensibly(body):
    labels = torch.as_tensor(body.part_labels)
    assert labels.shape == (body.num_vertices,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(len(SMPL_PARTS)))
    v = rest(body).vertices[0]
    mean = {p: v[labels == p].mean(0) for p in range(24)}
    assert mean[15][1] < mean[12][1] < mean[0][1] < mean[4][1] < mean[7][1]  # head, neck, pelvis, knee, ankle
    for left, right in ((1, 2), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23), (10, 11)):
        assert mean[left][0] > 0 > mean[right][0], (SMPL_PARTS[left], SMPL_PARTS[right])
    assert body.faces.dtype == np.int64 and body.faces.shape[1] == 3 and body.faces.max() < body.num_vertices


# ------------------------------------------------------------------------------ posing

def test_left_elbow_moves_only_the_left_forearm(body):
    shape, zero = body.default_shape(), torch.zeros(1, 3)
    with torch.no_grad():
        k0 = body(shape, torch.zeros(1, body.num_joints, 3), zero).keypoints[0]
        k1 = body(shape, flexed_left_elbow(body, math.pi / 2), zero).keypoints[0]
    assert (k1[L_WRI] - k0[L_WRI]).norm() > 0.05
    assert (k1[R_WRI] - k0[R_WRI]).norm() < 1e-5 and (k1[L_SHO] - k0[L_SHO]).norm() < 1e-5
    # positive flexion bends the arm: the wrist comes nearer the shoulder
    assert (k1[L_WRI] - k1[L_SHO]).norm() < (k0[L_WRI] - k0[L_SHO]).norm() - 0.03


def test_pose_limits_allow_flexion_not_hyperextension(body):
    lim = torch.as_tensor(body.pose_limits)
    assert lim.shape == (body.num_joints, 3, 2) and (lim[..., 0] <= 0).all() and (lim[..., 1] >= 0).all()
    i = body.joint_names.index("lowerarm01.L" if body.name == "anny" else "left_elbow")
    bend = flexed_left_elbow(body, 1.0)[0, i]
    inside = ((bend >= lim[i, :, 0] - 1e-6) & (bend <= lim[i, :, 1] + 1e-6)).all()
    outside = ((-bend >= lim[i, :, 0] - 1e-6) & (-bend <= lim[i, :, 1] + 1e-6)).all()
    assert inside and not outside  # 1 rad of flexion is plausible, 1 rad of hyperextension is not


def test_batch_equals_single_frames(body):
    g = torch.Generator().manual_seed(0)
    T = 5
    pose = torch.randn(T, body.num_joints, 3, generator=g) * 0.2
    orient = torch.randn(T, 3, generator=g) * 0.3
    transl = torch.randn(T, 3, generator=g)
    shape = body.default_shape()
    with torch.no_grad():
        batch = body(shape, pose, orient, transl)
        singles = [body(shape, pose[t:t + 1], orient[t:t + 1], transl[t:t + 1]) for t in range(T)]
    for field in ("vertices", "keypoints", "joints"):
        stacked = torch.cat([getattr(s, field) for s in singles])
        assert torch.allclose(getattr(batch, field), stacked, atol=2e-5), field


def test_per_frame_shapes_equal_shared_shape(body):
    T = 3
    shapes = body.default_shape()[None].repeat(T, 1)
    shapes[1] += 0.1
    pose = torch.zeros(T, body.num_joints, 3)
    with torch.no_grad():
        per_frame = body(shapes, pose, torch.zeros(T, 3)).vertices
        single = body(shapes[1], pose[:1], torch.zeros(1, 3)).vertices
    assert torch.allclose(per_frame[1], single[0], atol=2e-5)
    assert not torch.allclose(per_frame[0], per_frame[1], atol=1e-3)  # the shape does change the body


def test_gradients_are_finite_at_the_neutral_pose(body):
    pose = torch.zeros(2, body.num_joints, 3, requires_grad=True)
    orient = torch.zeros(2, 3, requires_grad=True)
    shape = body.default_shape().clone().requires_grad_(True)
    out = body(shape, pose, orient, torch.zeros(2, 3))
    g = torch.Generator().manual_seed(0)  # a loss no rotation about the pelvis leaves unchanged
    wv, wk = torch.randn(out.vertices.shape, generator=g), torch.randn(out.keypoints.shape, generator=g)
    ((out.vertices * wv).sum() + (out.keypoints * wk).sum()).backward()
    for g in (pose.grad, orient.grad, shape.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_shape_changes_height(body):
    def height(shape):
        with torch.no_grad():
            v = body(shape, torch.zeros(1, body.num_joints, 3), torch.zeros(1, 3)).vertices[0]
        return (v[:, 1].max() - v[:, 1].min()).item()

    taller = body.default_shape().clone()
    taller[body.shape_names.index("height" if body.name == "anny" else "beta0")] += 0.4
    assert height(taller) > height(body.default_shape()) + 0.02


@pytest.mark.parametrize("name", ["smpl", "smplx"])
def test_smpl_axes_conventions(fixture_bodies, name):
    """The SMPL-axis signs _pose_limits relies on (the fixture stands in SMPL's T-pose)."""
    m = fixture_bodies[name]

    def moved(joint, aa, point):
        pose = torch.zeros(1, m.num_joints, 3)
        pose[0, m.joint_names.index(joint)] = torch.tensor(aa)
        with torch.no_grad():
            return m(m.default_shape(), pose, torch.zeros(1, 3)).keypoints[0, point] - rest(m).keypoints[0, point]

    assert moved("left_shoulder", [0, 0, 1.0], L_WRI)[1] < -0.2  # +z raises the left arm (canonical up = -y)
    assert moved("left_shoulder", [0, -1.0, 0], L_WRI)[2] < -0.2  # -y swings it forward
    assert moved("right_elbow", [0, 1.0, 0], R_WRI)[2] < -0.1  # right elbow flexes about +y
    assert moved("left_hip", [-1.0, 0, 0], L_ANK)[2] < -0.2  # -x: hip flexion
    assert moved("left_knee", [1.0, 0, 0], L_ANK)[2] > 0.2  # +x: knee flexion
    lim = m.pose_limits[m.joint_names.index("left_knee")]
    assert lim[0, 1] > 2 and lim[0, 0] > -0.1  # bends one way


@pytest.mark.anny
def test_anny_bone_axes_conventions(anny_body):
    """The local-axis signs the pose limits (and synthetic poses) rely on."""
    m = anny_body

    def moved(bone, axis, angle, point):
        pose = torch.zeros(1, m.num_joints, 3)
        i = m.joint_names.index(bone)
        pose[0, i] = torch.as_tensor(m.joint_axes[i][:, axis], dtype=torch.float32) * angle
        with torch.no_grad():
            return m(m.default_shape(), pose, torch.zeros(1, 3)).keypoints[0, point] - rest(m).keypoints[0, point]

    assert moved("upperarm01.L", 0, 1.0, L_WRI)[2] < -0.1  # +X swings the arm forward (toward -z)
    assert moved("upperarm01.L", 2, 1.0, L_WRI)[1] < -0.2  # +Z raises it (abduction)
    assert moved("upperarm01.R", 2, -1.0, R_WRI)[1] < -0.2  # right side mirrored: -Z raises
    assert moved("upperleg01.L", 0, -1.0, L_ANK)[2] < -0.3  # -X: hip flexion, foot forward
    assert moved("upperleg01.L", 2, -0.5, L_ANK)[0] > 0.2  # -Z: hip abduction, foot outward (+x)
    assert moved("lowerleg01.L", 0, 1.0, L_ANK)[2] > 0.2  # +X: knee flexion, foot backward
    assert moved("spine02", 0, 0.4, NOSE)[2] < -0.1  # +X: bend forward
    assert moved("foot.L", 0, 0.5, 18)[1] > 0.05  # +X: plantar-flexion, toes down


@pytest.mark.anny
def test_anny_matches_annys_own_forward(anny_body):
    """The grouped fast path gives Anny's vertices (its own dense LBS, through local-ref)."""
    from marionette.nodes.body.anny_model import _C, _axis_angle_to_matrix

    m, core = anny_body, anny_body.core
    g = torch.Generator().manual_seed(1)
    pose, orient = torch.randn(2, m.num_joints, 3, generator=g) * 0.4, torch.randn(2, 3, generator=g) * 0.4
    shape = torch.tensor([0.2, 0.6, 0.7, 0.3, 0.8, 0.4])
    C = torch.as_tensor(_C, dtype=torch.float32)
    params = torch.eye(4).repeat(2, 104, 1, 1)
    params[:, m._bones, :3, :3] = C.T @ _axis_angle_to_matrix(pose) @ C
    params[:, 0, :3, :3] = C.T @ _axis_angle_to_matrix(orient) @ C
    with torch.no_grad():
        ref = core(pose_parameters=params, phenotype_kwargs=shape[None].expand(2, -1))["vertices"] @ C.T
        ours = m(shape, pose, orient).vertices
    assert torch.allclose(ours, ref, atol=1e-5)


# ------------------------------------------------------------------------------ files and errors

def test_catalog_lists_smpl_files():
    for family, folder, url in (("smpl", "smpl", "smpl.is.tue.mpg.de"), ("smplx", "smplx", "smpl-x.is.tue.mpg.de")):
        for gender in ("neutral", "male", "female"):
            entry = catalog.model(f"{family}_{gender}")
            assert entry.folder == folder and url in entry.url and "non-commercial" in entry.licence
    assert "SMPL_NEUTRAL.pkl" in catalog.model("smpl_neutral").names
    assert "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl" in catalog.model("smpl_neutral").names
    assert catalog.model("smplx_neutral").names[:2] == ("SMPLX_NEUTRAL.npz", "SMPLX_NEUTRAL.pkl")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "f": _Evil(marker)}, protocol=2))
    with pytest.raises(files.ModelFileInvalid, match="refused.*system"):
        files.load_pickle_arrays(path)
    assert not marker.exists()
    # a pickled object array inside an .npz is skipped, never unpickled
    np.savez(tmp_path / "evil.npz", ok=np.ones(2), bad=np.array([_Evil(marker)], dtype=object))
    arrays = files.load_npz_arrays(tmp_path / "evil.npz")
    assert list(arrays) == ["ok"] and not marker.exists()


def test_chumpy_pickle_loads_as_plain_arrays(fixture_models):
    import body_fixtures

    path = fixture_models / "smpl" / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    raw = path.read_bytes()
    assert b"chumpy.ch\nCh" in raw and b"scipy.sparse.csc\ncsc_matrix" in raw  # pickled as the official files
    data = files.load_pickle_arrays(path)
    expected = body_fixtures.smpl_arrays()
    assert isinstance(data["shapedirs"], np.ndarray) and data["shapedirs"].shape == (6890, 3, 10)
    assert isinstance(data["J_regressor"], np.ndarray) and data["J_regressor"].shape == (24, 6890)
    for key in ("shapedirs", "J_regressor", "v_template", "J"):
        np.testing.assert_array_equal(data[key], expected[key])
    assert data["f"].dtype == np.uint32 and data["bs_style"] == "lbs"


def test_chumpy_select_and_unknown_expressions(tmp_path, monkeypatch):
    """``chumpy.reordering.Select`` (how MANO/SMPL-H store shapedirs) is evaluated; other chumpy
    expressions are refused with a clear message."""
    import sys
    import types

    class Select:
        def __init__(self, state):
            self.state = state

        def __getstate__(self):
            return self.state

    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    module = types.ModuleType("chumpy.reordering")
    module.Select = Select
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.reordering", module)
    a = np.arange(12.0)
    path = tmp_path / "select.pkl"
    path.write_bytes(pickle.dumps({"s": Select({"a": a, "idxs": np.array([3, 1, 2, 0]), "preferred_shape": (2, 2)}),
                                   "plain": np.ones(2)}, protocol=2))
    data = files.load_pickle_arrays(path)
    np.testing.assert_array_equal(data["s"], [[3.0, 1.0], [2.0, 0.0]])
    path.write_bytes(pickle.dumps({"s": Select({"b": a})}, protocol=2))
    with pytest.raises(files.ModelFileInvalid, match="chumpy expression"):
        files.load_pickle_arrays(path)


def test_cache_shares_loaded_models(fixture_bodies, models_dir):
    from marionette.nodes.body.models import load_body_model

    first = load_body_model("smpl", "neutral", device="cpu")
    assert load_body_model("smpl", "neutral", device="cpu") is first
    assert load_body_model("smpl", "neutral", device="cpu", with_fingers=False) is not first


def test_missing_smpl_file_names_file_folders_and_where_to_get_it(models_dir):
    from marionette.nodes.body.models import load_body_model

    with pytest.raises(files.ModelFileMissing) as err:
        load_body_model("smpl", "female", device="cpu")
    msg = str(err.value)
    assert "basicmodel_f_lbs_10_207_0_v1.1.0.pkl" in msg and "SMPL_FEMALE.npz" in msg
    assert str(models_dir / "smpl") in msg and "https://smpl.is.tue.mpg.de" in msg and "register" in msg
    with pytest.raises(ValueError, match="smplx"):
        load_body_model("smpl-h")


def test_wrong_or_corrupt_smpl_files_say_what_is_wrong(fixture_models, tmp_path):
    from marionette.nodes.body.models import load_body_model

    (tmp_path / "smpl").mkdir()
    shutil.copy(fixture_models / "smplx" / "SMPLX_NEUTRAL.npz", tmp_path / "smpl" / "SMPL_NEUTRAL.npz")
    files.set_models_dir(tmp_path)
    try:
        with pytest.raises(files.ModelFileInvalid, match=r"SMPL-X model \(10475 vertices, 55 joints\)"):
            load_body_model("smpl", "neutral", device="cpu")
        (tmp_path / "smpl" / "SMPL_NEUTRAL.npz").unlink()
        data = (fixture_models / "smpl" / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl").read_bytes()
        (tmp_path / "smpl" / "SMPL_NEUTRAL.pkl").write_bytes(data[: len(data) // 3])
        with pytest.raises(files.ModelFileInvalid, match="SMPL_NEUTRAL.pkl.*could not be read"):
            load_body_model("smpl", "neutral", device="cpu")
        (tmp_path / "smpl" / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps({"v_template": np.zeros((6890, 3))}))
        with pytest.raises(files.ModelFileInvalid, match="lacks shapedirs"):
            load_body_model("smpl", "neutral", device="cpu")
    finally:
        files.set_models_dir(None)
        CACHE.clear()


def _float64_matches_float32(m32, m64):
    assert m64.dtype == torch.float64 and m64.num_joints == m32.num_joints
    pose = torch.randn(2, m32.num_joints, 3, generator=torch.Generator().manual_seed(3)) * 0.3
    with torch.no_grad():
        v32 = m32(m32.default_shape(), pose, torch.zeros(2, 3)).vertices
        v64 = m64(m64.default_shape(), pose.double(), torch.zeros(2, 3)).vertices
    assert v64.dtype == torch.float64 and torch.allclose(v32.double(), v64, atol=1e-4)


def test_smpl_float64_matches_float32(fixture_bodies, models_dir):
    from marionette.nodes.body.models import load_body_model

    _float64_matches_float32(fixture_bodies["smpl"], load_body_model("smpl", device="cpu", dtype=torch.float64))


@pytest.mark.anny
def test_anny_float64_matches_float32(anny_body):
    from marionette.nodes.body.models import load_body_model

    _float64_matches_float32(anny_body, load_body_model("anny", device="cpu", dtype=torch.float64))
