"""Load Image Sequence: file-name order, alpha or brightness as the mask, clear errors."""
import numpy as np
import pytest
from PIL import Image

from marionette.nodes import comfy_bridge
from marionette.nodes.io import node as io_node
from marionette.nodes.media import read_image_folder


def _write(folder, names, size=(8, 6), mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        value = 10 * (i + 1)
        if mode == "RGBA":
            arr = np.zeros((size[1], size[0], 4), np.uint8)
            arr[..., :3] = value
            arr[:, : size[0] // 2, 3] = 255
        else:
            arr = np.full((size[1], size[0], 3), value, np.uint8)
        Image.fromarray(arr, mode).save(folder / name)


def test_sorted_by_name_and_brightness_mask(tmp_path):
    _write(tmp_path / "seq", ["0002.png", "0010.png", "0001.png"])  # written out of order
    rgb, mask = read_image_folder(tmp_path / "seq")
    assert rgb.shape == (3, 6, 8, 3) and mask.shape == (3, 6, 8)
    # 0001 was written third (value 30), 0002 first (10), 0010 second (20)
    assert np.allclose(rgb[:, 0, 0, 0] * 255, [30, 10, 20])
    assert np.allclose(mask[:, 0, 0] * 255, [30, 10, 20])


def test_alpha_is_the_mask_and_max_frames(tmp_path):
    _write(tmp_path / "a", ["0.png", "1.png"], mode="RGBA")
    rgb, mask = read_image_folder(tmp_path / "a", max_frames=1)
    assert len(rgb) == 1 and mask[0, 0, 0] == 1.0 and mask[0, 0, -1] == 0.0


def test_mixed_sizes_and_empty_folder_are_clear_errors(tmp_path):
    _write(tmp_path / "m", ["0.png"], size=(8, 6))
    _write(tmp_path / "m", ["1.png"], size=(6, 8))
    with pytest.raises(ValueError, match="different sizes: 8×6 \\(0.png\\), 6×8 \\(1.png\\)"):
        read_image_folder(tmp_path / "m")
    (tmp_path / "e").mkdir()
    with pytest.raises(ValueError, match="no images"):
        read_image_folder(tmp_path / "e")


def test_node_runs_and_checks_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(comfy_bridge, "input_dir", lambda: tmp_path)
    _write(tmp_path / "clip" / "maps", ["0.png", "1.png"])
    assert "clip/maps" in io_node._subfolders()
    assert io_node.MarionetteLoadImageSequence.validate_inputs(folder="clip/maps") is True
    assert "not a folder" in io_node.MarionetteLoadImageSequence.validate_inputs(folder="nope")
    assert "outside" in io_node.MarionetteLoadImageSequence.validate_inputs(folder="../..")
    images, mask, count = io_node.MarionetteLoadImageSequence.execute(folder="clip/maps", max_frames=0).args
    assert images.shape == (2, 6, 8, 3) and mask.shape == (2, 6, 8) and count == 2
