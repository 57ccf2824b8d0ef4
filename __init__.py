"""Marionette: pose-guided human image animation with 3D body guidance, as ComfyUI nodes.

ComfyUI imports this file; it registers the V3 extension. Each stage's nodes are imported one
by one, so a stage whose optional package is missing logs one line and the others still load.
No downloads and no heavy work at import time.
"""
import importlib
import logging

from .models_loader import files as _files
from .nodes.comfy_bridge import ComfyExtension

WEB_DIRECTORY = "./web"

# Stages whose node.py exists; each lists its nodes in NODES.
STAGES = ("io", "pose", "body", "render", "track", "sampler", "stitch")

log = logging.getLogger("marionette")


def load_node_classes() -> list:
    classes = []
    for stage in STAGES:
        try:
            module = importlib.import_module(f".nodes.{stage}.node", __name__)
        except Exception as exc:  # one line per failing stage, the rest still load
            log.error("[Marionette] the %s stage could not load: %s: %s", stage, type(exc).__name__, exc)
            continue
        classes.extend(module.NODES)
    return classes


class MarionetteExtension(ComfyExtension):
    async def get_node_list(self) -> list:
        return load_node_classes()


async def comfy_entrypoint() -> MarionetteExtension:
    _files.register_comfy_folders()
    return MarionetteExtension()
