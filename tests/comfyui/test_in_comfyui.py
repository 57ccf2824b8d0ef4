"""Marionette inside a real ComfyUI server (runs only when ``COMFYUI_DIR`` names a checkout).

One server per module (tests/comfyui/server.py): the pack linked into a temp ``custom_nodes``,
fixture models from tests/fixtures/make_models.py, ``workflows/inputs`` as the input folder.

Workflow expectations: ``workflows/tests/<name>.json`` (optional) sits beside
``workflows/api/<name>_api.json`` and says what the run must produce::

    {
      "timeout_s": 300,                      # optional, default 300
      "overrides": {"5": {"steps": 2}},      # optional: widget values changed for the CPU run only
      "outputs": {                           # keyed by output node id in <name>_api.json
        "4": {"files": 1, "ext": ".json", "frames": 8},
        "6": {"files": 1, "ext": ".mp4", "frames": 8, "width": 64, "height": 48}
      }
    }

``files`` = number of files the node reports; ``ext`` = every file ends with it; ``frames`` = total
frames over the node's files (a video's frames, an image's frames, a keypoints JSON's list length);
``width``/``height`` = size of every file (pixels, or the canvas of a keypoints JSON);
``min_bytes`` = smallest acceptable file size (default 1). Unknown keys are an error.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKFLOWS = REPO / "workflows"
UI_DIR = HERE / "ui"
CHROMIUM = "/usr/bin/chromium"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: these tests need a ComfyUI checkout "
                                               "(see tests/comfyui/README.md)"),
]


def _load_harness():
    spec = importlib.util.spec_from_file_location("marionette_comfyui_server", HERE / "server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
PACK_MODULE = f"custom_nodes.{harness.PACK_FOLDER}"

API_WORKFLOWS = sorted((WORKFLOWS / "api").glob("*_api.json"))
UI_WORKFLOWS = sorted(p for p in WORKFLOWS.glob("*.json") if not p.name.endswith("_api.json"))
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "upload")
EXPECTATION_KEYS = {"files", "ext", "frames", "width", "height", "min_bytes"}


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def server():
    srv = harness.ComfyServer(COMFYUI_DIR)
    srv.prepare()
    # A stray file in the model folder: the pack's .onnx filter must hide it from /models/dwpose.
    (srv.models / "dwpose").mkdir(parents=True, exist_ok=True)
    (srv.models / "dwpose" / "README.txt").write_text("not a model\n")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        if os.environ.get("MARIONETTE_KEEP_COMFY_BASE"):
            print(f"\nComfyUI base kept at {srv.base}")
        else:
            srv.cleanup()


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


@pytest.fixture(scope="module")
def pack_node_ids():
    import marionette  # imported by tests/conftest.py from the repo root

    ids = [cls.define_schema().node_id for cls in marionette.load_node_classes()]
    assert ids, "marionette.load_node_classes() returned no node classes in the test process"
    return ids


# ----------------------------------------------------------------------------- (a) log

def _pack_problems(log: str) -> list[str]:
    pack_paths = (f"custom_nodes/{harness.PACK_FOLDER}", str(REPO))
    problems = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        mentions_pack = any(p in line for p in pack_paths)
        if "IMPORT FAILED" in line and mentions_pack:
            problems.append(line.strip())
        elif mentions_pack and re.search(r"Cannot import|Skip .* module for custom nodes|Error while calling "
                                         r"comfy_entrypoint|did not return", line):
            problems.append(line.strip())
        elif line.startswith("[Marionette]") and re.search(r"could not|error|failed", line, re.I):
            problems.append(line.strip())
        elif line.startswith("Traceback (most recent call last)"):
            block = [line]
            for nxt in lines[i + 1:]:
                block.append(nxt)
                if nxt and not nxt.startswith(" "):
                    break  # the exception line ends the block
            if any(any(p in b for p in pack_paths) for b in block):
                problems.append("\n".join(block))
    return problems


def test_pack_imports_cleanly(server, object_info):
    log = server.log_text().split("\nStarting server", 1)[0]  # start-up only; prompts log their own errors
    assert "Import times for custom nodes" in log, server.log_tail()
    loaded = [line for line in log.splitlines()
              if "seconds" in line and line.rstrip().endswith(f"custom_nodes/{harness.PACK_FOLDER}")]
    assert loaded, f"the pack is missing from the import-times table\n{server.log_tail()}"
    problems = _pack_problems(log)
    assert not problems, "the server log shows problems in the pack:\n" + "\n".join(problems)


def test_web_extension_served(server):
    scripts = sorted(p.relative_to(REPO / "web").as_posix() for p in (REPO / "web").rglob("*.js"))
    if not scripts:
        pytest.skip("the pack has no web/*.js")
    listed = server.get_json("/extensions")
    for rel in scripts:
        url = f"/extensions/{harness.PACK_FOLDER}/{rel}"
        assert url in listed, f"/extensions does not list {url}: {[u for u in listed if 'marionette' in u]}"
        assert server.get(url).strip(), f"{url} is empty"


# ----------------------------------------------------------------------------- (b) /object_info

def test_object_info_lists_every_node(object_info, pack_node_ids):
    ours = {k for k, v in object_info.items() if v.get("python_module") == PACK_MODULE}
    missing = [n for n in pack_node_ids if n not in object_info]
    assert not missing, f"nodes returned by load_node_classes() but absent from /object_info: {missing}"
    assert ours == set(pack_node_ids), (f"/object_info nodes from {PACK_MODULE} differ from load_node_classes(): "
                                        f"extra {sorted(ours - set(pack_node_ids))}, "
                                        f"missing {sorted(set(pack_node_ids) - ours)}")


def test_node_metadata(object_info, pack_node_ids):
    gaps = []
    for node_id in pack_node_ids:
        info = object_info[node_id]
        if info.get("python_module") != PACK_MODULE:
            gaps.append(f"{node_id}: python_module is {info.get('python_module')!r}, expected {PACK_MODULE!r}")
        if not str(info.get("category", "")).startswith("Marionette/"):
            gaps.append(f"{node_id}: category {info.get('category')!r} does not start with 'Marionette/'")
        if not str(info.get("description", "")).strip():
            gaps.append(f"{node_id}: no description")
        if not node_id.startswith("Marionette"):
            gaps.append(f"{node_id}: id lacks the Marionette prefix")
        for section in ("required", "optional"):
            for name, spec in (info.get("input", {}).get(section) or {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not str(opts.get("tooltip") or "").strip():
                    gaps.append(f"{node_id}: input '{name}' has no tooltip")
        names = info.get("output_name") or []
        tips = info.get("output_tooltips") or []
        for i, name in enumerate(names):
            if i >= len(tips) or not str(tips[i] or "").strip():
                gaps.append(f"{node_id}: output '{name}' has no tooltip")
    assert not gaps, "\n".join(gaps)


# ----------------------------------------------------------------------------- (c) API workflows

def _media_info(path: Path) -> tuple[int | None, int | None, int | None]:
    """(frames, width, height) of an output file; None where it does not apply."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text())
        frames = data if isinstance(data, list) else data.get("frames") if isinstance(data, dict) else None
        if not isinstance(frames, list):
            return None, None, None
        first = frames[0] if frames and isinstance(frames[0], dict) else {}
        return len(frames), first.get("canvas_width"), first.get("canvas_height")
    if suffix in (".mp4", ".webm", ".mov", ".mkv", ".avi"):
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            n = sum(1 for _ in container.decode(stream))
            return n, stream.codec_context.width, stream.codec_context.height
    if suffix in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"):
        from PIL import Image

        with Image.open(path) as im:
            return getattr(im, "n_frames", 1), im.width, im.height
    return None, None, None


def _expectations(api_path: Path, prompt: dict) -> dict:
    name = api_path.name[: -len("_api.json")]
    spec_path = WORKFLOWS / "tests" / f"{name}.json"
    if not spec_path.is_file():
        return {}
    spec = json.loads(spec_path.read_text())
    unknown = set(spec) - {"timeout_s", "outputs", "overrides"}
    assert not unknown, f"{spec_path}: unknown keys {sorted(unknown)}"
    # "overrides": widget values changed for the CPU test run only (e.g. fewer sampling steps);
    # the graph itself, its links and every other value are the shipped ones.
    for node_id, values in spec.get("overrides", {}).items():
        assert node_id in prompt, f"{spec_path}: override for node {node_id}, which is not in {api_path.name}"
        for key, value in values.items():
            current = prompt[node_id]["inputs"].get(key)
            assert current is not None and not isinstance(current, list), \
                f"{spec_path}: node {node_id} has no widget value '{key}' to override"
            prompt[node_id]["inputs"][key] = value
    for node_id, exp in spec.get("outputs", {}).items():
        assert node_id in prompt, f"{spec_path}: node {node_id} is not in {api_path.name}"
        bad = set(exp) - EXPECTATION_KEYS
        assert not bad, f"{spec_path}: node {node_id}: unknown keys {sorted(bad)} (allowed {sorted(EXPECTATION_KEYS)})"
    return spec


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=[p.stem for p in API_WORKFLOWS])
def test_api_workflow_runs(server, api_path):
    prompt = json.loads(api_path.read_text())
    spec = _expectations(api_path, prompt)
    entry = server.run(prompt, timeout=float(spec.get("timeout_s", 300)))
    files = server.output_files(entry)
    assert files, f"{api_path.name} finished but its output nodes reported no files: {entry.get('outputs')}"
    by_node: dict[str, list[Path]] = {}
    for node_id, path in files:
        by_node.setdefault(node_id, []).append(path)
        assert path.is_file(), f"{api_path.name}: node {node_id} reported {path}, which does not exist"
        assert path.stat().st_size > 0, f"{api_path.name}: node {node_id} wrote an empty file {path}"
    problems = []
    for node_id, exp in spec.get("outputs", {}).items():
        paths = by_node.get(node_id, [])
        where = f"{api_path.name} node {node_id} ({prompt[node_id]['class_type']})"
        if "files" in exp and len(paths) != exp["files"]:
            problems.append(f"{where}: {len(paths)} files, expected {exp['files']}: {paths}")
        frames_total = 0
        for p in paths:
            if "ext" in exp and not p.name.endswith(exp["ext"]):
                problems.append(f"{where}: {p.name} does not end with {exp['ext']}")
            if p.stat().st_size < exp.get("min_bytes", 1):
                problems.append(f"{where}: {p.name} has {p.stat().st_size} bytes, expected ≥ {exp['min_bytes']}")
            frames, width, height = _media_info(p)
            frames_total += frames or 0
            for key, got in (("width", width), ("height", height)):
                if key in exp and got != exp[key]:
                    problems.append(f"{where}: {p.name} {key} {got}, expected {exp[key]}")
        if "frames" in exp and frames_total != exp["frames"]:
            problems.append(f"{where}: {frames_total} frames in total, expected {exp['frames']}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- (d) UI workflows

def _expected_widget_values(info: dict) -> int:
    """How many entries the frontend writes to widgets_values for a node of this definition."""
    n = 0
    inputs = info.get("input", {})
    order = info.get("input_order") or {s: list((inputs.get(s) or {}).keys()) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = (inputs.get(section) or {}).get(name)
            if not spec:
                continue
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or opts.get("forceInput"):
                continue
            n += 1
            control = opts.get("control_after_generate")
            if control is None:
                control = kind == "INT" and name in ("seed", "noise_seed")
            if control:
                n += 1
            if any(opts.get(flag) for flag in UPLOAD_FLAGS):
                n += 1
    return n


def _graph_nodes(workflow: dict):
    """(where, node) for every node, subgraph definitions included."""
    for node in workflow.get("nodes", []):
        yield "graph", node
    for sub in (workflow.get("definitions") or {}).get("subgraphs", []):
        for node in sub.get("nodes", []):
            yield f"subgraph {sub.get('name') or sub.get('id')}", node


def _links(graph: dict):
    """(id, from node, from slot, to node, to slot, type) of a graph's links (array or object form)."""
    for link in graph.get("links") or []:
        if isinstance(link, dict):
            yield (link.get("id"), link.get("origin_id"), link.get("origin_slot"), link.get("target_id"),
                   link.get("target_slot"), link.get("type"))
        else:
            yield tuple(link[:6])


def _link_problems(name: str, workflow: dict, object_info: dict) -> list[str]:
    """Links must agree with both ends: the source output lists the link id, the target input at
    ``to_slot`` holds it, and the type is what the source node's schema outputs. (The editor
    otherwise "repairs" the graph on load and may rewire it.)"""
    problems = []
    graphs = [("graph", workflow)] + [(f"subgraph {s.get('name') or s.get('id')}", s)
                                      for s in (workflow.get("definitions") or {}).get("subgraphs", [])]
    for where, graph in graphs:
        nodes = {n.get("id"): n for n in graph.get("nodes", [])}
        for link_id, src, src_slot, dst, dst_slot, kind in _links(graph):
            label = f"{name} {where} link {link_id} ({src}:{src_slot} -> {dst}:{dst_slot} {kind})"
            if src not in nodes or dst not in nodes:
                if not (isinstance(src, int) and src < 0 or isinstance(dst, int) and dst < 0):  # subgraph io
                    problems.append(f"{label}: a node it names does not exist")
                continue
            outs = nodes[src].get("outputs") or []
            ins = nodes[dst].get("inputs") or []
            if src_slot >= len(outs) or link_id not in (outs[src_slot].get("links") or []):
                problems.append(f"{label}: output slot {src_slot} of node {src} does not list it")
            if dst_slot >= len(ins) or ins[dst_slot].get("link") != link_id:
                at = [i.get("name") for i in ins if i.get("link") == link_id]
                problems.append(f"{label}: input slot {dst_slot} of node {dst} does not hold it"
                                + (f" (input {at[0]!r} does)" if at else ""))
            info = object_info.get(nodes[src].get("type"))
            if info and src_slot < len(info.get("output", [])):
                want = info["output"][src_slot]
                if isinstance(want, str) and kind not in (want, "*"):
                    problems.append(f"{label}: {nodes[src].get('type')} output {src_slot} is {want}")
    return problems


@pytest.fixture(scope="module")
def templates(server):
    return server.get_json("/workflow_templates")


@pytest.mark.parametrize("ui_path", UI_WORKFLOWS, ids=[p.stem for p in UI_WORKFLOWS])
def test_ui_workflow_served_and_valid(server, templates, object_info, ui_path):
    listed = templates.get(harness.PACK_FOLDER, [])
    assert ui_path.stem in listed, f"/workflow_templates does not list {ui_path.stem}: {templates}"
    served = server.get_json(f"/api/workflow_templates/{harness.PACK_FOLDER}/{ui_path.name}")
    workflow = json.loads(ui_path.read_text())
    assert served == workflow, f"/api/workflow_templates/{harness.PACK_FOLDER}/{ui_path.name} differs from the file"
    subgraph_ids = {s.get("id") for s in (workflow.get("definitions") or {}).get("subgraphs", [])}
    problems = []
    for where, node in _graph_nodes(workflow):
        kind = node.get("type")
        label = f"{ui_path.name} {where} node {node.get('id')} ({kind})"
        if kind in FRONTEND_ONLY_TYPES or kind in subgraph_ids:
            continue
        if kind not in object_info:
            problems.append(f"{label}: type not in /object_info")
            continue
        values = node.get("widgets_values")
        if isinstance(values, dict):  # a few frontend nodes save a dict; nothing positional to check
            continue
        expected = _expected_widget_values(object_info[kind])
        got = len(values or [])
        if got != expected:
            problems.append(f"{label}: {got} widgets_values {values}, the schema gives {expected}")
    problems += _link_problems(ui_path.name, workflow, object_info)
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- (e) model folder

def test_models_folder_lists_fixtures(server):
    folders = server.get_json("/models")
    assert "dwpose" in folders, f"/models does not list the dwpose key: {folders}"
    root = server.models / "dwpose"
    expected = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.onnx"))
    assert expected, f"make_models.write_all wrote no .onnx file under {root}"
    listed = server.get_json("/models/dwpose")
    assert sorted(f for f in listed if f in expected) == expected, f"/models/dwpose {listed}, expected {expected}"
    assert "README.txt" not in listed, f"/models/dwpose lists a non-model file (extension filter missing): {listed}"
    assert all(f.endswith(".onnx") for f in listed), listed


# ----------------------------------------------------------------------------- (f) clear errors

def test_missing_model_names_file_and_folder(server):
    missing = "no_such_detector_file.onnx"
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "MarionetteEstimatePose",
              "inputs": {"images": ["1", 0], "detector": missing, "pose_model": "dw-ll_ucoco_384.onnx",
                         "follow": "largest", "max_gap_frames": 8, "draw_body": True, "draw_hands": True,
                         "draw_face": True}},
        "3": {"class_type": "MarionetteSavePoseKeypoints",
              "inputs": {"pose_keypoint": ["2", 0], "filename_prefix": "marionette/missing_model"}},
    }
    try:
        entry = server.run(prompt, timeout=120)
    except harness.PromptRejected as exc:  # validate_inputs caught it before the run
        messages = exc.messages()
    except harness.PromptFailed as exc:  # raised while running
        messages = [str(e.get("exception_message", "")) for e in exc.errors]
    else:
        pytest.fail(f"a prompt naming a missing detector file ran without error: {entry.get('outputs')}")
    text = "\n".join(messages)
    assert missing in text, f"the error does not name the file {missing}:\n{text}"
    folder = str(server.models / "dwpose")
    assert folder in text, f"the error does not name the model folder {folder}:\n{text}"


# ----------------------------------------------------------------------------- (g) web editor

def _ui_skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if not (UI_DIR / "node_modules" / "playwright-core").is_dir():
        return f"playwright-core is not installed (cd {UI_DIR} && npm install)"
    if not UI_WORKFLOWS:
        return "no UI-format workflows in workflows/"
    return None


def test_ui_workflows_load_in_editor(server, tmp_path):
    reason = _ui_skip_reason()
    if reason:
        pytest.skip(reason)
    shots = Path(os.environ.get("MARIONETTE_UI_SHOTS", tmp_path / "screenshots"))
    cmd = ["node", str(UI_DIR / "check_workflows.mjs"), "--out", str(shots), server.url, *map(str, UI_WORKFLOWS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=UI_DIR)
    report = f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, report
    for wf in UI_WORKFLOWS:
        shot = shots / f"{wf.stem}.png"
        assert shot.is_file() and shot.stat().st_size > 0, f"no screenshot {shot}\n{report}"
