"""Every node follows the pack's conventions (STYLE.md §2): Marionette-prefixed ids equal to
the class names, verb-first display names, Marionette/<stage> categories, a description, and a
tooltip on every input and output. Runs on the V3 stand-in here; tests/comfyui checks the same
against a real ComfyUI's /object_info."""
import asyncio
import logging

import pytest

import marionette

NODES = marionette.load_node_classes()


def test_every_stage_loads_without_comfyui(caplog):
    with caplog.at_level(logging.ERROR, logger="marionette"):
        classes = marionette.load_node_classes()
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert {c.__module__.split(".")[2] for c in classes} == set(marionette.STAGES)


def test_entrypoint_lists_the_nodes():
    ext = asyncio.run(marionette.comfy_entrypoint())
    assert [c.__name__ for c in asyncio.run(ext.get_node_list())] == [c.__name__ for c in NODES]


@pytest.mark.parametrize("cls", NODES, ids=lambda c: c.__name__)
def test_schema_conventions(cls):
    s = cls.define_schema()
    assert s.node_id == cls.__name__ and s.node_id.startswith("Marionette")
    assert s.display_name and s.display_name[0].isupper() and not s.display_name.startswith("Marionette")
    assert s.category.startswith("Marionette/")
    assert len(s.description) > 30
    ids = [i.id for i in s.inputs] + [o.id for o in s.outputs if o.id]
    assert len(ids) == len(set(ids)), "duplicate input/output ids"
    for i in s.inputs:
        assert i.tooltip and len(i.tooltip) > 10, f"{s.node_id}.{i.id} has no tooltip"
        assert i.id == i.id.lower(), f"{s.node_id}.{i.id} is not snake_case"
    for o in s.outputs:
        assert o.tooltip, f"{s.node_id} output {o.display_name} has no tooltip"


def test_node_ids_are_unique():
    ids = [c.define_schema().node_id for c in NODES]
    assert len(ids) == len(set(ids))
