"""A small stand-in for ``comfy_api.latest`` (io, ui, ComfyExtension), used only when ComfyUI
is not importable (unit tests, the command line), so node schemas can be checked and nodes
run without a server. Constructor signatures follow ComfyUI 0.3.64's ``_io.py``; the contract
test in tests/comfyui checks the real thing when ``COMFYUI_DIR`` is set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


class _Input:
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                 lazy: bool = None, default: Any = None, **extra):
        self.id, self.display_name, self.optional = id, display_name, optional
        self.tooltip, self.lazy, self.default = tooltip, lazy, default
        self.extra = extra


class _Output:
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def _type(io_type: str, input_cls=_Input):
    class T:
        class Input(input_cls):
            pass

        class Output(_Output):
            pass

    T.io_type = io_type
    T.Input.io_type = io_type
    T.Output.io_type = io_type
    T.__name__ = io_type
    return T


class _ComboInput(_Input):
    def __init__(self, id: str, options=None, display_name: str = None, optional=False, tooltip: str = None,
                 lazy: bool = None, default=None, **extra):
        super().__init__(id, display_name, optional, tooltip, lazy, default, **extra)
        self.options = list(options or [])


class io:  # noqa: N801 - mirrors the real module's name
    Hidden = Hidden
    Boolean = _type("BOOLEAN")
    Int = _type("INT")
    Float = _type("FLOAT")
    String = _type("STRING")
    Combo = _type("COMBO", _ComboInput)
    Image = _type("IMAGE")
    Mask = _type("MASK")
    Video = _type("VIDEO")
    Latent = _type("LATENT")

    @staticmethod
    def Custom(io_type: str):  # noqa: N802
        return _type(io_type)

    @dataclass
    class Schema:
        node_id: str
        display_name: str = None
        category: str = "sd"
        inputs: list = field(default_factory=list)
        outputs: list = field(default_factory=list)
        hidden: list = field(default_factory=list)
        description: str = ""
        is_output_node: bool = False
        is_experimental: bool = False
        not_idempotent: bool = False

    class ComfyNode:
        @classmethod
        def define_schema(cls):
            raise NotImplementedError

        @classmethod
        def execute(cls, **kwargs):
            raise NotImplementedError

    class NodeOutput:
        def __init__(self, *args, ui=None, expand=None, block_execution=None):
            self.args, self.ui = args, ui

        @property
        def result(self):
            return self.args if self.args else None

        def __getitem__(self, i):
            return self.args[i]


class ui:  # noqa: N801
    class PreviewText(dict):
        def __init__(self, value: str, **kwargs):
            super().__init__(text=(value,))

    class PreviewImage(dict):
        def __init__(self, image, animated: bool = False, cls=None, **kwargs):
            super().__init__(images=[], shape=tuple(getattr(image, "shape", ())))


class ComfyExtension:
    async def on_load(self) -> None:
        pass

    async def get_node_list(self) -> list:
        raise NotImplementedError
