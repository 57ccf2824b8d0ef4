"""BODY_SEQUENCE .npz files: round trip, readable with plain numpy, clear errors."""
import zipfile

import numpy as np
import pytest

from marionette.nodes.body import io as body_io
from marionette.nodes.types import BodySequence


def _sequence(T=3, V=12, J=4, S=6, seed=0) -> BodySequence:
    rng = np.random.default_rng(seed)
    kp2 = rng.uniform(0, 500, (T, 134, 2)).astype(np.float32)
    kp2[:, 24:92] = np.nan  # a model without face points
    K = np.array([[900.0, 0, 255.5], [0, 900.0, 383.5], [0, 0, 1]], np.float32)
    return BodySequence(
        model="anny", variant="", shape=rng.uniform(0, 1, S).astype(np.float32),
        body_pose=rng.normal(0, 0.2, (T, J, 3)).astype(np.float32),
        global_orient=rng.normal(0, 0.2, (T, 3)).astype(np.float32),
        transl=np.tile([0.0, 0.2, 3.0], (T, 1)).astype(np.float32), K=np.repeat(K[None], T, 0), width=512,
        height=768, vertices=rng.normal(0, 0.3, (T, V, 3)).astype(np.float32),
        faces=rng.integers(0, V, (8, 3)).astype(np.int32), part_labels=rng.integers(0, 24, V),
        keypoints2d=kp2, fit_error=np.array([1.5, np.nan, 2.0][:T], np.float32),
        shape_names=tuple(f"s{i}" for i in range(S)), joint_names=tuple(f"j{i}" for i in range(J)),
        extras={"bad_frames": np.array([1]), "focal": 923.0, "note": "hello", "skipped": {"a": 1}},
    )


def test_round_trip(tmp_path):
    seq = _sequence()
    path = body_io.save_npz(seq, tmp_path / "sub" / "bodies.npz")
    assert path.is_file() and not list(tmp_path.glob("sub/*.tmp"))
    back = body_io.load_npz(path)
    for name in ("shape", "body_pose", "global_orient", "transl", "K", "vertices", "faces", "part_labels"):
        assert np.array_equal(getattr(back, name), getattr(seq, name)), name
    assert np.array_equal(back.keypoints2d, seq.keypoints2d, equal_nan=True)
    assert np.array_equal(back.fit_error, seq.fit_error, equal_nan=True)
    assert (back.model, back.variant, back.width, back.height) == ("anny", "", 512, 768)
    assert back.shape_names == seq.shape_names and back.joint_names == seq.joint_names
    assert back.extras["bad_frames"].tolist() == [1] and float(back.extras["focal"]) == 923.0
    assert str(back.extras["note"]) == "hello" and "skipped" not in back.extras


def test_readable_with_plain_numpy(tmp_path):
    seq = _sequence(T=2)
    path = body_io.save_npz(seq, tmp_path / "b.npz")
    with np.load(path) as data:  # allow_pickle=False is numpy's default
        assert str(data["format"]) == body_io.FORMAT and int(data["format_version"]) == body_io.FORMAT_VERSION
        assert data["vertices"].dtype == np.float32 and data["vertices"].shape == (2, 12, 3)
        assert data["faces"].dtype == np.int32 and data["K"].shape == (2, 3, 3)
        assert data["image_size"].tolist() == [512, 768]
        assert np.isnan(data["keypoints2d"][:, 24:92]).all() and data["keypoints2d"].shape == (2, 134, 2)
        assert data["shape_names"].tolist() == list(seq.shape_names)
        assert str(data["model"]) == "anny"
        for key in data.files:
            assert data[key].dtype != object, key


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        body_io.load_npz(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="not a NumPy .npz"):
        body_io.load_npz(text)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a Marionette body sequence"):
        body_io.load_npz(other)
    path = body_io.save_npz(_sequence(), tmp_path / "b.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(tmp_path / "newer.npz", **{**arrays, "format_version": np.asarray(99)})
    with pytest.raises(ValueError, match="version 99"):
        body_io.load_npz(tmp_path / "newer.npz")
    np.savez(tmp_path / "foreign.npz", **{**arrays, "format": np.asarray("something.else")})
    with pytest.raises(ValueError, match="something.else"):
        body_io.load_npz(tmp_path / "foreign.npz")
    del arrays["faces"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match="faces"):
        body_io.load_npz(tmp_path / "partial.npz")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(ValueError, match="not a Marionette"):
        body_io.load_npz(tmp_path / "empty.npz")


def test_inconsistent_sequence_refused(tmp_path):
    seq = _sequence()
    bad = BodySequence(**{**seq.__dict__, "transl": seq.transl[:2]})
    with pytest.raises(ValueError, match="transl"):
        body_io.save_npz(bad, tmp_path / "x.npz")
    bad = BodySequence(**{**seq.__dict__, "faces": seq.faces + 100})
    with pytest.raises(ValueError, match="faces"):
        body_io.save_npz(bad, tmp_path / "x.npz")
