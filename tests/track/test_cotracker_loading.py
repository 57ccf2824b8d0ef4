"""Loading CoTracker3 through torch.hub from a local copy (nodes/track/cotracker.py,
models_loader/files.py): where the code and checkpoints are found, the messages when they are
missing or wrong, one load shared through the cache, the global random state kept."""
import shutil
import sys
import types

import pytest
import torch

from marionette.models_loader import catalog, files
from marionette.models_loader.cache import CACHE
from marionette.nodes.track import cotracker as ct

ENV = catalog.HUB_REPOS["cotracker"].env_var


@pytest.fixture()
def hub(models_dir, monkeypatch, tmp_path):
    """The fixture models folder; no real checkout from the environment, an empty torch.hub folder."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(files, "torch_hub_dir", lambda: tmp_path / "torch_hub")
    return models_dir


@pytest.fixture()
def bare(tmp_path, monkeypatch):
    """An empty models folder and torch.hub folder; returns (models, hub)."""
    monkeypatch.delenv(ENV, raising=False)
    models, hub_dir = tmp_path / "models", tmp_path / "torch_hub"
    (models / "cotracker").mkdir(parents=True)
    monkeypatch.setattr(files, "torch_hub_dir", lambda: hub_dir)
    files.set_models_dir(models)
    yield models, hub_dir
    files.set_models_dir(None)
    CACHE.clear()


def _forget_cotracker_modules():
    for name in [n for n in sys.modules if n == "cotracker" or n.startswith("cotracker.")]:
        del sys.modules[name]


def test_loads_the_hub_copy_and_checkpoint_once(hub):
    loads = CACHE.loads
    a = ct.load_predictor("offline")
    b = ct.load_predictor("offline")
    assert a is b and CACHE.loads == loads + 1
    predictor = a.on_device()
    assert type(predictor).__name__ == "CoTrackerPredictor" and not predictor.training
    sd = torch.load(hub / "cotracker" / "scaled_offline.pth", weights_only=True)
    assert all(torch.equal(v, sd[k]) for k, v in predictor.model.state_dict().items())
    online = ct.load_predictor("online").on_device()
    assert type(online).__name__ == "CoTrackerOnlinePredictor" and online.step == 8
    assert sys.modules["cotracker"].__file__.startswith(str(hub))


def test_loading_keeps_the_global_random_state(hub):
    _forget_cotracker_modules()  # the model module reseeds torch when imported, as the real one does
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    ct.load_predictor("offline")
    assert torch.equal(torch.rand(3), want)


def test_another_imported_cotracker_package_is_not_used(hub):
    stray = types.ModuleType("cotracker")
    stray.__file__ = "/somewhere/else/cotracker/__init__.py"
    sys.modules["cotracker"] = stray
    sys.modules["cotracker.predictor"] = types.ModuleType("cotracker.predictor")
    predictor = ct.load_predictor("offline").on_device()
    assert type(predictor).__module__ == "cotracker.predictor"
    assert sys.modules["cotracker"] is not stray and sys.modules["cotracker"].__file__.startswith(str(hub))


def test_hub_code_from_env_and_from_the_torch_hub_cache(bare, fixture_models, monkeypatch):
    models, hub_dir = bare
    shutil.copy(fixture_models / "cotracker" / "scaled_offline.pth", models / "cotracker")
    with pytest.raises(files.ModelFileMissing) as exc:
        ct.check_models("offline")
    msg = str(exc.value)
    assert "git clone https://github.com/facebookresearch/co-tracker" in msg
    assert str(models / "cotracker" / "co-tracker") in msg and ENV in msg
    assert str(hub_dir / "facebookresearch_co-tracker_main") in msg  # torch.hub's cache was searched

    monkeypatch.setenv(ENV, str(fixture_models / "cotracker" / "co-tracker"))
    assert files.find_hub_repo("cotracker") == fixture_models / "cotracker" / "co-tracker"
    assert type(ct.load_predictor("offline").on_device()).__name__ == "CoTrackerPredictor"

    monkeypatch.setenv(ENV, str(models))  # set, but wrong: said, not silently skipped
    with pytest.raises(files.ModelFileMissing, match=f"{ENV} .* holds no hubconf.py"):
        files.find_hub_repo("cotracker")
    monkeypatch.delenv(ENV)

    shutil.copytree(fixture_models / "cotracker" / "co-tracker", hub_dir / "facebookresearch_co-tracker_main")
    assert files.find_hub_repo("cotracker") == hub_dir / "facebookresearch_co-tracker_main"
    # an explicit folder wins
    assert files.find_hub_repo("cotracker", fixture_models / "cotracker" / "co-tracker") == \
        fixture_models / "cotracker" / "co-tracker"


def test_checkpoint_in_the_torch_hub_checkpoints_folder(bare, fixture_models):
    models, hub_dir = bare
    shutil.copytree(fixture_models / "cotracker" / "co-tracker", models / "cotracker" / "co-tracker")
    with pytest.raises(files.ModelFileMissing) as exc:
        ct.load_predictor("online")
    msg = str(exc.value)
    assert "https://huggingface.co/facebook/cotracker3/resolve/main/scaled_online.pth" in msg
    assert str(models / "cotracker") in msg and str(hub_dir / "checkpoints") in msg
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(fixture_models / "cotracker" / "scaled_online.pth", hub_dir / "checkpoints")
    assert ct.load_predictor("online").on_device().step == 8


@pytest.fixture()
def wrong(bare, fixture_models):
    """A models folder with the code; the test writes the offline checkpoint."""
    models, _ = bare
    shutil.copytree(fixture_models / "cotracker" / "co-tracker", models / "cotracker" / "co-tracker")
    good = torch.load(fixture_models / "cotracker" / "scaled_offline.pth", weights_only=True)
    return models / "cotracker" / "scaled_offline.pth", good, fixture_models


def test_the_other_modes_checkpoint_is_named(wrong):
    path, _, fixture_models = wrong
    shutil.copy(fixture_models / "cotracker" / "scaled_online.pth", path)
    with pytest.raises(files.ModelFileInvalid, match="(?s)16-frame window.*60-frame window.*online checkpoint"):
        ct.load_predictor("offline")


def test_missing_keys_shapes_and_truncation_are_named(wrong):
    path, good, _ = wrong
    torch.save({k: v for k, v in good.items() if k != "fnet.bias"}, path)
    with pytest.raises(files.ModelFileInvalid, match="1 missing keys: fnet.bias"):
        ct.load_predictor("offline")
    torch.save({**good, "fnet.weight": torch.zeros(8, 3, 1, 1)}, path)
    with pytest.raises(files.ModelFileInvalid, match="shape mismatches: fnet.weight"):
        ct.load_predictor("offline")
    torch.save({**good, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(files.ModelFileInvalid, match="unexpected keys: extra.weight"):
        ct.load_predictor("offline")
    torch.save(good, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(files.ModelFileInvalid, match="(?s)could not be read.*download it again from https://hugg"):
        ct.load_predictor("offline")


def test_broken_hub_code_is_named(wrong):
    path, good, _ = wrong
    torch.save(good, path)
    hubconf = path.parent / "co-tracker" / "hubconf.py"
    text = hubconf.read_text()
    hubconf.write_text(text.replace("def cotracker3_offline(", "def some_other_entry("))
    with pytest.raises(files.ModelFileInvalid, match="(?s)no 'cotracker3_offline' entry point.*git pull"):
        ct.load_predictor("offline")
    hubconf.write_text("import package_nobody_installed\n" + text)
    with pytest.raises(files.ModelFileInvalid, match="needs the Python package 'package_nobody_installed'"):
        ct.load_predictor("offline")


def test_unknown_mode():
    with pytest.raises(ValueError, match="offline"):
        ct.load_predictor("sideways")
