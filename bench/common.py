"""What every benchmark script shares: importing the repository as the package ``marionette``
and naming the commit measured (read from .git without running git)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_pack():
    """The repository as the package ``marionette`` (as ComfyUI and the tests import it)."""
    if "marionette" not in sys.modules:
        spec = importlib.util.spec_from_file_location("marionette", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["marionette"] = module
        spec.loader.exec_module(module)
    return sys.modules["marionette"]


def commit() -> str | None:
    """The checked-out commit (12 hex digits), or None outside a git checkout."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head[:12]
        ref = head.split(":", 1)[1].strip()
        if (git / ref).is_file():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return None
