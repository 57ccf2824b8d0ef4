"""The Clip Stitcher node through the V3 stand-in: schema, checks, the plan it outputs."""
from __future__ import annotations

import pytest

from marionette.nodes.stitch import node as stitch_node
from marionette.nodes.types import STITCHING, Stitching

Node = stitch_node.MarionetteClipStitcher
DEFAULTS = dict(mode="aggregate", clip_frames=24, overlap=4, blend="linear", color_match="reference",
                color_strength=1.0)


def test_schema():
    s = Node.define_schema()
    assert stitch_node.NODES == [Node]
    assert s.node_id == "MarionetteClipStitcher" and s.display_name == "Stitch Clips"
    assert s.category == "Marionette/stitch"
    assert "aggregate" in s.description and "chain" in s.description and "memory" in s.description
    inputs = {i.id: i for i in s.inputs}
    assert list(inputs) == list(DEFAULTS)
    assert {k: inputs[k].default for k in DEFAULTS} == DEFAULTS
    assert inputs["mode"].options == ["aggregate", "chain"]
    assert inputs["blend"].options == ["none", "linear", "pyramid"]
    assert inputs["color_match"].options == ["none", "reference"]
    assert inputs["clip_frames"].extra["max"] == 32 and inputs["clip_frames"].extra["min"] == 2
    assert all(i.tooltip and len(i.tooltip) > 30 for i in s.inputs)
    (out,) = s.outputs
    assert out.io_type == STITCHING and out.tooltip


def test_execute_returns_the_plan():
    plan = Node.execute(**{**DEFAULTS, "mode": "chain", "clip_frames": 16, "overlap": 2, "blend": "pyramid",
                           "color_strength": 0.5})[0]
    assert plan == Stitching(mode="chain", clip_frames=16, overlap=2, blend="pyramid", color_match="reference",
                             color_strength=0.5)
    assert Node.execute(**DEFAULTS)[0] == Stitching()  # the node's defaults are the dataclass's


@pytest.mark.parametrize("change, words", [
    (dict(overlap=24), "overlap must be between 0 and clip_frames - 1 (23)"),
    (dict(clip_frames=33), "clip_frames must be between 2 and 32"),
    (dict(blend="cubic"), "seam blend must be one of"),
])
def test_validate_inputs_explains_bad_settings(change, words):
    assert Node.validate_inputs(**DEFAULTS) is True
    message = Node.validate_inputs(**{**DEFAULTS, **change})
    assert isinstance(message, str) and words in message
    with pytest.raises(ValueError, match="must be"):
        Node.execute(**{**DEFAULTS, **change})
