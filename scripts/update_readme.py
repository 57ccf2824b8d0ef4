"""Regenerate the README's generated tables (models from the catalog, nodes from their schemas).

    python scripts/update_readme.py          # rewrite README.md in place
    python scripts/update_readme.py --check  # exit 1 if README.md is out of date (used by tests)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pack():
    sys.path.insert(0, str(ROOT))
    import cli

    return cli._pack()


def nodes_table() -> str:
    pack = _pack()
    rows = ["| Node | Id | Category | What it does |", "|---|---|---|---|"]
    for cls in pack.load_node_classes():
        s = cls.define_schema()
        rows.append(f"| {s.display_name} | `{s.node_id}` | {s.category} | {s.description} |")
    return "\n".join(rows)


def models_table() -> str:
    _pack()
    from marionette.models_loader import catalog

    return catalog.models_table_markdown()


def render(text: str) -> str:
    for name, table in (("models-table", models_table()), ("nodes-table", nodes_table())):
        pattern = re.compile(rf"(<!-- {name}:start[^>]*-->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md lacks the {name} markers")
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    return text


def main() -> int:
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = render(old)
    if "--check" in sys.argv:
        if new != old:
            print("README.md is out of date: run python scripts/update_readme.py")
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
