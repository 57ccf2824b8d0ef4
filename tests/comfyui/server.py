"""A real ComfyUI server with Marionette installed, for tests and manual checks.

Standard library only (no pytest), so it also works from a shell::

    python tests/comfyui/server.py /path/to/ComfyUI      # starts, prints the URL, waits for Ctrl-C

``ComfyServer(comfyui_dir)`` builds a throw-away base folder::

    <tmp>/custom_nodes/marionette -> <repo root>       (symlink; ComfyUI imports it as custom_nodes.marionette)
    <tmp>/models/...                                   (tests/fixtures/make_models.py write_all)
    <tmp>/input/                                       (a copy of workflows/inputs)
    <tmp>/output/
    <tmp>/base/                                        (--base-directory: user, temp, an empty custom_nodes)
    <tmp>/extra_model_paths.yaml                       (custom_nodes + every models/<key> folder)
    <tmp>/comfyui.log                                  (server stdout and stderr)

and runs ``main.py --cpu`` on a free loopback port with the python of ComfyUI's venv
(``COMFYUI_PYTHON``, else ``<COMFYUI_DIR>/../venv/bin/python`` when it exists, else this
interpreter). The server runs in its own process group and ``stop()`` kills that group by PID.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK_FOLDER = "marionette"  # the folder name ComfyUI sees; python_module is custom_nodes.marionette
HOST = "127.0.0.1"  # loopback only, never another interface


class ServerError(RuntimeError):
    """The server did not start, died, or answered unexpectedly. The message ends with the log tail."""


class PromptRejected(RuntimeError):
    """``POST /prompt`` answered 400 (validation failed). ``error`` and ``node_errors`` hold the reply."""

    def __init__(self, reply: dict):
        self.reply = reply
        self.error = reply.get("error", {})
        self.node_errors = reply.get("node_errors", {})
        lines = [f"prompt rejected: {self.error.get('type')}: {self.error.get('message')} {self.error.get('details', '')}"]
        for node_id, info in self.node_errors.items():
            for err in info.get("errors", []):
                lines.append(f"  node {node_id} ({info.get('class_type')}): {err.get('type')}: "
                             f"{err.get('message')} — {err.get('details')}")
        super().__init__("\n".join(lines))

    def messages(self) -> list[str]:
        """Every message and details text of the reply (for asserting on wording)."""
        out = [str(self.error.get("message", "")), str(self.error.get("details", ""))]
        for info in self.node_errors.values():
            for err in info.get("errors", []):
                out += [str(err.get("message", "")), str(err.get("details", ""))]
        return out


class PromptFailed(RuntimeError):
    """A queued prompt ended with ``status_str == "error"``. ``entry`` is its /history entry and
    ``errors`` the ``execution_error`` payloads (node_type, exception_type, exception_message, ...)."""

    def __init__(self, prompt_id: str, entry: dict):
        self.prompt_id, self.entry = prompt_id, entry
        self.errors = [data for kind, data in entry.get("status", {}).get("messages", [])
                       if kind in ("execution_error", "execution_interrupted")]
        lines = [f"prompt {prompt_id} failed:"]
        for e in self.errors:
            lines.append(f"  node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type')}: "
                         f"{e.get('exception_message')}")
            tb = e.get("traceback") or []
            if tb:
                lines.append("    " + "".join(tb[-3:]).strip().replace("\n", "\n    "))
        super().__init__("\n".join(lines))


def default_python(comfyui_dir: str | os.PathLike) -> str:
    """``COMFYUI_PYTHON``, else ComfyUI's sibling venv, else the running interpreter."""
    env = os.environ.get("COMFYUI_PYTHON")
    if env:
        return env
    venv = Path(comfyui_dir).resolve().parent / "venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _die_with_parent() -> None:  # runs in the child before exec (Linux): SIGTERM when the test process dies
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def write_fixture_models(models_dir: Path) -> None:
    """Tiny random-weight models in ComfyUI's layout (tests/fixtures/make_models.py)."""
    fixtures = str(REPO / "tests" / "fixtures")
    if fixtures not in sys.path:
        sys.path.insert(0, fixtures)
    import make_models  # noqa: PLC0415 - lives in tests/fixtures

    make_models.write_all(models_dir)


class ComfyServer:
    """One ComfyUI process with the pack linked in. ``prepare()`` builds the folders (edit them
    before ``start()`` if needed), ``start()`` launches and waits, ``stop()`` ends it. Also a
    context manager (start on enter, ``cleanup()`` on exit)."""

    def __init__(self, comfyui_dir: str | os.PathLike, python: str | None = None, base: str | os.PathLike | None = None,
                 extra_args: list[str] | None = None, models: bool = True):
        self.comfyui_dir = Path(comfyui_dir).resolve()
        if not (self.comfyui_dir / "main.py").is_file():
            raise ServerError(f"{self.comfyui_dir} is not a ComfyUI checkout (no main.py)")
        self.python = python or default_python(self.comfyui_dir)
        self._own_base = base is None
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="marionette-comfyui-"))
        self.custom_nodes = self.base / "custom_nodes"
        self.models = self.base / "models"
        self.input_dir = self.base / "input"
        self.output_dir = self.base / "output"
        self.comfy_base = self.base / "base"
        self.temp_dir = self.comfy_base / "temp"
        self.yaml = self.base / "extra_model_paths.yaml"
        self.log_path = self.base / "comfyui.log"
        self.extra_args = list(extra_args or [])
        self.with_models = models
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex
        self.start_seconds: float | None = None
        self._prepared = False

    # ------------------------------------------------------------------ set-up

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def prepare(self) -> "ComfyServer":
        if self._prepared:
            return self
        self.custom_nodes.mkdir(parents=True, exist_ok=True)
        link = self.custom_nodes / PACK_FOLDER
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        self.models.mkdir(parents=True, exist_ok=True)
        if self.with_models:
            write_fixture_models(self.models)
        inputs = REPO / "workflows" / "inputs"
        if inputs.is_dir():
            shutil.copytree(inputs, self.input_dir, dirs_exist_ok=True)
        # base/custom_nodes must exist (the prestartup scan lists it) and stays empty
        for d in (self.input_dir, self.output_dir, self.comfy_base / "custom_nodes"):
            d.mkdir(parents=True, exist_ok=True)
        self.write_yaml()
        self._prepared = True
        return self

    def write_yaml(self) -> None:
        """custom_nodes plus one key per folder under models/ (how a user with a shared models
        folder sets ComfyUI up; the pack must append to keys the yaml already created)."""
        lines = ["marionette_test:", f"  base_path: {json.dumps(str(self.base))}", "  custom_nodes: custom_nodes"]
        for d in sorted(p for p in self.models.iterdir() if p.is_dir()):
            lines.append(f"  {d.name}: models/{d.name}")
        self.yaml.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.python, str(self.comfyui_dir / "main.py"), "--cpu",
                "--listen", HOST, "--port", str(self.port),
                "--disable-auto-launch", "--disable-api-nodes",
                "--base-directory", str(self.comfy_base),
                "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir),
                "--extra-model-paths-config", str(self.yaml),
                "--database-url", "sqlite:///:memory:",
                *self.extra_args]

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        self.prepare()
        self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
        env.pop("PYTHONPATH", None)  # the server must import its own venv only
        self._log = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=self.comfyui_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        atexit.register(self.stop)
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode} during start-up.\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                break
            except (OSError, ServerError):
                pass
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise ServerError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s.\n{self.log_tail()}")
            time.sleep(0.5)
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Kill the server's process group (SIGTERM, then SIGKILL after 10 s)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # own session: pgid == pid
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        """Stop and delete the temp base (only if this object created it)."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ log

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        if self.port is None:
            raise ServerError("server not started")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str, timeout: float = 30.0) -> bytes:
        status, raw = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerError(f"GET {path} -> HTTP {status}: {raw[:500]!r}")
        return raw

    def get_json(self, path: str, timeout: float = 30.0):
        return json.loads(self.get(path, timeout=timeout))

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=60)

    def queue_prompt(self, api_prompt: dict, extra_data: dict | None = None) -> str:
        """POST /prompt; returns the prompt id, raises ``PromptRejected`` on a 400."""
        body = {"prompt": api_prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        status, raw = self._request("POST", "/prompt", body)
        try:
            reply = json.loads(raw)
        except ValueError:
            raise ServerError(f"POST /prompt -> HTTP {status}: {raw[:500]!r}") from None
        if status == 400:
            raise PromptRejected(reply)
        if status != 200:
            raise ServerError(f"POST /prompt -> HTTP {status}: {reply}")
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history until the prompt finishes; return its entry or raise ``PromptFailed``."""
        t0 = time.monotonic()
        while True:
            entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    raise PromptFailed(prompt_id, entry)
                if status.get("completed", True):
                    return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"ComfyUI died while running prompt {prompt_id}.\n{self.log_tail()}")
            if time.monotonic() - t0 > timeout:
                raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s.\n{self.log_tail()}")
            time.sleep(0.2)

    def run(self, api_prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue_prompt(api_prompt), timeout)

    def output_files(self, entry: dict) -> list[tuple[str, Path]]:
        """(node id, path) for every file the prompt's output nodes report (any ui key whose
        items carry ``filename``/``subfolder``/``type``)."""
        roots = {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}
        out = []
        for node_id, ui in (entry.get("outputs") or {}).items():
            for items in ui.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item:
                        root = roots.get(item.get("type", "output"), self.output_dir)
                        out.append((node_id, root / item.get("subfolder", "") / item["filename"]))
        return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        print("usage: python tests/comfyui/server.py <ComfyUI checkout>")
        return 2
    server = ComfyServer(argv[0])
    try:
        server.start()
        print(f"ComfyUI with Marionette: {server.url}  (base {server.base}, log {server.log_path})", flush=True)
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
