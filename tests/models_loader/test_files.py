"""models_loader: the catalog's consistency, folder registration with ComfyUI, file finding and
safe loading of weight files."""
import pickle
import sys
import types

import pytest
import torch

from marionette.models_loader import catalog, files


def test_catalog_entries_are_consistent():
    for entry in catalog.MODELS.values():
        assert entry.folder in catalog.FOLDERS, entry.id
        exts = catalog.FOLDERS[entry.folder].extensions
        assert all(n.endswith(exts) for n in entry.names), entry.id
        assert entry.licence and entry.url.startswith("https://"), entry.id
        if entry.kind == "onnx":
            assert entry.onnx_inputs and entry.onnx_outputs, entry.id


def test_unknown_model_id_names_the_known_ones():
    with pytest.raises(KeyError, match="dwpose_detector"):
        catalog.model("no_such_model")


def test_models_table_lists_every_file():
    table = catalog.models_table_markdown()
    for entry in catalog.MODELS.values():
        assert f"`{entry.names[0]}`" in table and entry.licence in table


@pytest.fixture()
def fake_folder_paths(tmp_path, monkeypatch):
    """A stand-in for ComfyUI's folder_paths where the user's extra_model_paths.yaml already
    created our key with an empty extension set (the trap the guide describes)."""
    fp = types.SimpleNamespace()
    fp.models_dir = str(tmp_path / "models")
    user_dir = str(tmp_path / "elsewhere" / "dwpose")
    fp.folder_names_and_paths = {"dwpose": ([user_dir], set())}

    def add_model_folder_path(key, path, is_default=False):
        paths, exts = fp.folder_names_and_paths.setdefault(key, ([], set()))
        if path not in paths:
            paths.insert(0, path) if is_default else paths.append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda key: list(fp.folder_names_and_paths[key][0])
    monkeypatch.setattr(files, "_folder_paths", fp)
    return fp


def test_register_appends_and_fixes_extensions(fake_folder_paths, tmp_path):
    files.register_comfy_folders()
    paths, exts = fake_folder_paths.folder_names_and_paths["dwpose"]
    assert paths[0] == str(tmp_path / "elsewhere" / "dwpose")  # the user's folder is kept, first
    assert str(tmp_path / "models" / "dwpose") in paths
    assert exts == {".onnx"}


def test_find_uses_comfy_folders_and_reports_every_folder(fake_folder_paths, tmp_path):
    files.register_comfy_folders()
    with pytest.raises(files.ModelFileMissing) as err:
        files.find("dwpose_detector")
    msg = str(err.value)
    assert "yolox_l.onnx" in msg and str(tmp_path / "elsewhere" / "dwpose") in msg
    assert "huggingface.co/yzd-v/DWPose" in msg and "Apache-2.0" in msg
    target = tmp_path / "elsewhere" / "dwpose" / "sub" / "yolox_l.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert files.find("dwpose_detector") == target  # found one folder down, like ComfyUI lists


def test_find_plain_models_dir_and_user_choice(tmp_path):
    (tmp_path / "dwpose").mkdir()
    (tmp_path / "dwpose" / "yolox_l.onnx").write_bytes(b"x")
    (tmp_path / "dwpose" / "my_detector.onnx").write_bytes(b"x")
    files.set_models_dir(tmp_path)
    try:
        assert files.find("dwpose_detector") == tmp_path / "dwpose" / "yolox_l.onnx"
        assert files.find("dwpose_detector", "my_detector.onnx") == tmp_path / "dwpose" / "my_detector.onnx"
        options = files.list_candidates(catalog.model("dwpose_detector"))
        assert options[0] == "yolox_l.onnx" and "my_detector.onnx" in options
        with pytest.raises(files.ModelFileMissing, match="other.onnx"):
            files.find("dwpose_detector", "other.onnx")
    finally:
        files.set_models_dir(None)


def test_find_in_hf_cache(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--yzd-v--DWPose" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "dw-ll_ucoco_384.onnx").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    files.set_models_dir(tmp_path / "empty")
    try:
        assert files.find("dwpose_pose") == snap / "dw-ll_ucoco_384.onnx"
    finally:
        files.set_models_dir(None)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_state_dict_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(files.ModelFileInvalid, match="evil.pth"):
        files.load_state_dict(path)


def test_load_state_dict_formats_and_truncation(tmp_path):
    from safetensors.torch import save_file

    sd = {"a.weight": torch.randn(3, 4), "a.bias": torch.zeros(3)}
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        loaded = files.load_state_dict(tmp_path / name)
        assert set(loaded) == set(sd) and torch.equal(loaded["a.weight"], sd["a.weight"])
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(files.ModelFileInvalid, match="cut.safetensors"):
        files.load_state_dict(tmp_path / "cut.safetensors")


def test_check_state_dict_names_the_problems(tmp_path):
    sd = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "extra": torch.zeros(1)}
    files.check_state_dict(sd, {"a": (2, 3), "b": (4,)}, "x.pth", allow_unexpected=("extra",))
    with pytest.raises(files.ModelFileInvalid) as err:
        files.check_state_dict(sd, {"a": (2, 4), "c": (1,)}, "x.pth")
    msg = str(err.value)
    assert "1 missing keys: c" in msg and "unexpected keys" in msg and "a: file (2, 3) vs expected (2, 4)" in msg
