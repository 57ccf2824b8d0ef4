"""The Quick start's main job (cli.py sample) and the other commands run on a clean folder, and
the README's generated tables are current."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_sample_writes_the_guidance_videos(tmp_path):
    """The Quick start's main job: Anny fitted to the bundled reference and driving keypoints,
    aligned, rendered as Champ's guidance videos."""
    import numpy as np

    from marionette.nodes.media import read_video

    run = _cli("--out", str(tmp_path / "out"), "sample", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out" / "sample"
    masks, fps = read_video(out / "mask.mp4")
    assert masks.shape == (48, 768, 512, 3) and fps == 24
    coverage = (masks[..., 0] > 0.5).mean(axis=(1, 2))
    assert (coverage > 0.03).all() and (coverage < 0.5).all()  # a body in every frame, on black
    for name in ("depth", "normal", "semantic", "dwpose"):
        frames, _ = read_video(out / f"{name}.mp4")
        assert frames.shape == (48, 768, 512, 3), name
        assert frames[:, :4].max() < 0.1 and frames.max() > 0.5, name  # black background, something drawn
    bodies = np.load(out / "bodies.npz")
    assert bodies["vertices"].shape[0] == 48 and bodies["model"] == "anny"
    assert np.isfinite(bodies["keypoints2d"][:, :18]).all()


def test_pose_on_a_video_with_fixture_models(tmp_path, fixture_models):
    video = ROOT / "workflows" / "inputs" / "marionette_sample.mp4"
    run = _cli("--out", str(tmp_path), "pose", str(video), "--models-dir", str(fixture_models), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    poses = json.loads((tmp_path / "marionette_sample_pose.json").read_text())
    assert len(poses) == 48 and poses[0]["canvas_width"] == 256
    assert (tmp_path / "marionette_sample_skeleton.mp4").stat().st_size > 1000


def test_missing_models_give_a_clear_error_not_a_traceback(tmp_path):
    video = ROOT / "workflows" / "inputs" / "marionette_sample.mp4"
    run = _cli("pose", str(video), "--models-dir", str(tmp_path / "empty"), cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "yolox_l.onnx" in run.stderr and "huggingface.co" in run.stderr
    run = _cli("models", "--models-dir", str(tmp_path / "empty"), cwd=tmp_path)
    report = json.loads(run.stdout)
    assert set(report["dwpose_detector"]) == {"missing"}


def test_readme_tables_are_current():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_requirements_never_list_torch():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip().split("=")[0].split(">")[0].split("<")[0].strip().lower()
        assert name not in {"torch", "torchvision", "torchaudio"}
