"""Test setup: the repository is imported as the package ``marionette`` (ComfyUI imports it by
folder; tests use a fixed name), and a tiny model folder is written once per session by
tests/fixtures/make_models.py."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _import_pack():
    if "marionette" in sys.modules:
        return sys.modules["marionette"]
    spec = importlib.util.spec_from_file_location("marionette", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["marionette"] = module
    spec.loader.exec_module(module)
    return module


_import_pack()


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory):
    """A ComfyUI-style ``models`` folder with tiny random-weight files in the official layouts."""
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import make_models

    out = tmp_path_factory.mktemp("models")
    make_models.write_all(out)
    return out


@pytest.fixture()
def models_dir(fixture_models):
    """Point the pack at the fixture models for one test, then restore the default."""
    from marionette.models_loader import files
    from marionette.models_loader.cache import CACHE

    files.set_models_dir(fixture_models)
    yield fixture_models
    files.set_models_dir(None)
    CACHE.clear()
