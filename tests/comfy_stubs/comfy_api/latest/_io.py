"""Stand-in for ``comfy_api.latest._io``: the V3 schema, socket types and node base class.

Only the parts our nodes use, with ComfyUI 0.3.64's semantics: the same ``as_dict``
keys (so tests can read widget options, ranges and defaults exactly as ComfyUI would
serve them in /object_info), the same V1 view (``INPUT_TYPES``, ``RETURN_TYPES``),
schema id checks, ``NodeOutput`` and hidden inputs on a per-run class clone.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class Input:
    io_type = None

    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict or {}

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "optional": self.optional,
                           "tooltip": self.tooltip, "lazy": self.lazy}) | prune_dict(self.extra_dict)

    def get_io_type(self):
        return self.io_type


class WidgetInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                 socketless=None, widget_type=None, force_input=None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self):
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})


class Output:
    io_type = None

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "tooltip": self.tooltip,
                           "is_output_list": self.is_output_list})

    def get_io_type(self):
        return self.io_type


class _UIOutput(ABC):
    @abstractmethod
    def as_dict(self) -> dict: ...


def _socket_type(io_type: str, input_base=Input):
    """A ComfyType-like class with nested Input/Output bound to ``io_type``."""
    in_cls = type("Input", (input_base,), {"io_type": io_type})
    out_cls = type("Output", (Output,), {"io_type": io_type})
    return type(io_type.title(), (), {"io_type": io_type, "Input": in_cls, "Output": out_cls})


def Custom(io_type: str):
    """A socket type for a custom io_type (as ``io.Custom``)."""
    return _socket_type(io_type)


class Boolean:
    io_type = "BOOLEAN"

    class Input(WidgetInput):
        io_type = "BOOLEAN"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     label_on=None, label_off=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self):
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})

    class Output(Output):
        io_type = "BOOLEAN"


class Int:
    io_type = "INT"

    class Input(WidgetInput):
        io_type = "INT"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     min=None, max=None, step=None, control_after_generate=None, display_mode=None,
                     socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None})

    class Output(Output):
        io_type = "INT"


class Float:
    io_type = "FLOAT"

    class Input(WidgetInput):
        io_type = "FLOAT"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     min=None, max=None, step=None, round=None, display_mode=None, socketless=None,
                     force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                   "round": self.round, "display": self.display_mode})

    class Output(Output):
        io_type = "FLOAT"


class String:
    io_type = "STRING"

    class Input(WidgetInput):
        io_type = "STRING"

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                     placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self):
            return super().as_dict() | prune_dict({"multiline": self.multiline, "placeholder": self.placeholder,
                                                   "dynamicPrompts": self.dynamic_prompts})

    class Output(Output):
        io_type = "STRING"


class Combo:
    io_type = "COMBO"

    class Input(WidgetInput):
        io_type = "COMBO"

        def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None,
                     default=None, control_after_generate=None, upload=None, image_folder=None, remote=None,
                     socketless=None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload = upload
            self.image_folder = image_folder
            self.remote = remote

        def as_dict(self):
            return super().as_dict() | prune_dict({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": self.control_after_generate,
                **({self.upload.value: True} if self.upload is not None else {}),
                "image_folder": self.image_folder.value if self.image_folder else None})


Image = _socket_type("IMAGE")
Mask = _socket_type("MASK")
Audio = _socket_type("AUDIO")
Video = _socket_type("VIDEO")
Latent = _socket_type("LATENT")
Model = _socket_type("MODEL")


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    def __init__(self, values: dict | None = None):
        values = values or {}
        self.unique_id = values.get(Hidden.unique_id)
        self.prompt = values.get(Hidden.prompt)
        self.extra_pnginfo = values.get(Hidden.extra_pnginfo)
        self.dynprompt = values.get(Hidden.dynprompt)

    def __getattr__(self, key):
        return None


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):
        ins = [i.id for i in self.inputs or []]
        outs = [o.id for o in self.outputs or []]
        issues = []
        if len(set(ins)) != len(ins):
            issues.append(f"Input ids must be unique, but {[k for k, c in Counter(ins).items() if c > 1]} are not.")
        if len(set(outs)) != len(outs):
            issues.append(f"Output ids must be unique, but {[k for k, c in Counter(outs).items() if c > 1]} are not.")
        if set(ins) & set(outs):
            issues.append(f"Ids must be unique between inputs and outputs, but {set(ins) & set(outs)} are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self):
        if self.is_output_node:
            self.hidden = list(self.hidden or [])
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        for i, o in enumerate(self.outputs or []):
            if o.id is None:
                o.id = f"_{i}_{o.io_type}_"

    def v1_inputs(self) -> dict:
        """The ``INPUT_TYPES()`` dict ComfyUI derives from this schema."""
        out = {"required": {}}
        for i in self.inputs or []:
            d = i.as_dict()
            d.pop("optional", None)
            out.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), d)
        for h in self.hidden or []:
            out.setdefault("hidden", {})[h.name] = (h.value,)
        return out


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand=None, block_execution=None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    """Base class of V3 nodes: classmethods only; ComfyUI runs each execution on a class clone."""

    SCHEMA = None
    hidden: HiddenHolder = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return cls.GET_SCHEMA().v1_inputs()

    @classmethod
    def RETURN_TYPES(cls) -> list:
        return [o.io_type for o in cls.GET_SCHEMA().outputs or []]

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict | None = None):
        clone = type(cls.__name__, (cls,), {})
        clone.hidden = HiddenHolder(hidden_inputs)
        return clone

    @classmethod
    def EXECUTE_NORMALIZED(cls, **kwargs) -> NodeOutput:
        out = cls.execute(**kwargs)
        if out is None:
            out = NodeOutput()
        elif isinstance(out, tuple):
            out = NodeOutput(*out)
        elif not isinstance(out, NodeOutput):
            raise Exception(f"Invalid return type from node: {type(out)}")
        return out
