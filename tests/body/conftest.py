"""Body-model test fixtures: the real Anny (offline; its first use builds Anny's model cache,
~3 minutes, once per machine) and the SMPL / SMPL-X fixture files of tests/fixtures."""
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "anny: uses the real Anny body model (first run builds its cache, ~3 min)")


@pytest.fixture(scope="session")
def anny_body():
    """Anny with fingers, on the CPU (loaded once for the session, held here so that tests
    clearing the shared cache do not force a reload)."""
    pytest.importorskip("anny")
    from marionette.nodes.body.models import load_body_model

    return load_body_model("anny", device="cpu", with_fingers=True)


@pytest.fixture(scope="session")
def fixture_bodies(fixture_models):
    """SMPL (.pkl neutral, .npz male) and SMPL-X (.npz) bodies from the fixture files."""
    pytest.importorskip("smplx")
    from marionette.models_loader import files
    from marionette.nodes.body.models import load_body_model

    files.set_models_dir(fixture_models)
    try:
        return {
            "smpl": load_body_model("smpl", "neutral", device="cpu"),
            "smpl_npz": load_body_model("smpl", "male", device="cpu"),
            "smplx": load_body_model("smplx", "neutral", device="cpu"),
        }
    finally:
        files.set_models_dir(None)
