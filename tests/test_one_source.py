"""Facts written once: the dependency list (requirements.txt) and the version (pyproject.toml)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def _install_module():
    spec = importlib.util.spec_from_file_location("talker_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_checks_exactly_the_requirements():
    checked = _install_module().required()
    assert sorted(checked.values()) == sorted(_requirements())
    assert checked["PIL"].startswith("pillow")  # an import name that differs from the pip name
    for name in checked:  # every import name it derives is importable here (CI installs requirements.txt)
        assert importlib.util.find_spec(name) is not None, name


def test_pyproject_lists_the_same_dependencies():
    """The registry reads pyproject.toml's static list; it must say what requirements.txt says."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1)
    listed = re.findall(r'"([^"]+)"', block)
    assert listed == _requirements()


def test_version_comes_from_pyproject():
    import talker_core

    text = (ROOT / "pyproject.toml").read_text()
    want = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    assert talker_core.__version__ == want
    assert "__version__ =" not in (ROOT / "talker_core" / "__init__.py").read_text()


def test_the_parameter_table_drives_request_settings_and_cli():
    """(The sampler node's widgets: tests/test_nodes.py::test_sampler_widgets_come_from_the_parameter_table.)"""
    import argparse

    from talker_core.cli import generate as cli_generate
    from talker_core.generation.engine import SamplingSettings
    from talker_core.generation.flow_sampler import FlowSettings
    from talker_core.params import PARAMS
    from talker_core.pipeline import TalkRequest

    request, settings, flow = TalkRequest(), SamplingSettings(), FlowSettings()
    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    cli_defaults = vars(parser.parse_args(["--text", "x"]))
    for name, spec in PARAMS.items():
        assert getattr(request, name) == spec.default, name
        for obj in (settings, flow):
            if hasattr(obj, name):
                assert getattr(obj, name) == spec.default, name
        if name in cli_generate._TABLE_OPTIONS:
            assert cli_defaults[name] == spec.default, name
    # the CLI offers sway and CFG-zero-star (they were missing), and validates with the table
    args = parser.parse_args(["--text", "x", "--sway", "0.5", "--no-cfg-zero-star"])
    assert args.sway == 0.5 and args.cfg_zero_star is False
    for bad in (["--steps", "0"], ["--stop-threshold", "1.5"], ["--cfg", "nan"]):
        try:
            parser.parse_args(["--text", "x", *bad])
        except SystemExit:
            pass
        else:
            raise AssertionError(f"{bad} was accepted")
    # one range everywhere: the request and the engine's settings agree at the edges
    for value, ok in ((0.0, True), (1.0, True), (-0.01, False), (1.01, False)):
        for make in (lambda v: TalkRequest(stop_threshold=v), lambda v: SamplingSettings(stop_threshold=v)):
            try:
                make(value)
                accepted = True
            except ValueError:
                accepted = False
            assert accepted == ok, value


# ----------------------------------------------------------------------------------------------
# the component registry (talker_core/weights/components.py)

REGISTRY = ROOT / "talker_core" / "weights" / "components.py"
#: Production code: what runs in ComfyUI, the library, the command line and the benchmark.
PRODUCTION = [
    *sorted((ROOT / "talker_core").rglob("*.py")),
    *sorted((ROOT / "nodes").rglob("*.py")),
    *sorted((ROOT / "bench").rglob("*.py")),
    ROOT / "install.py",
    ROOT / "__init__.py",
]


def _strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant in a file, f-string parts included, docstrings left out."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_release_file_names_and_sources_are_written_only_in_the_registry():
    from talker_core.weights.components import COMPONENTS

    facts = set()
    for c in COMPONENTS.values():
        facts |= {c.release, c.converted, c.source.repo_id, c.source.remote}
        facts |= {c.release.rsplit("/", 1)[-1], c.converted.rsplit("/", 1)[-1]}
    facts -= {c.weights_file for c in COMPONENTS.values()}  # "model.safetensors": a generic name, not a fact
    assert {"lia-x.pt", "wavlm_large_finetune.pth", "whisperx-vae/model.ckpt", "YaohuiW/LIA-X"} <= facts
    import re

    # as a name of its own: "talker-t2av" inside the package name "comfyui-talker-t2av" is not the folder
    patterns = {fact: re.compile(rf"(?<![\w.-]){re.escape(fact)}(?![\w-])") for fact in facts}
    found = [
        f"{path.relative_to(ROOT)}:{line}: {fact!r} in {text!r}"
        for path in PRODUCTION
        if path != REGISTRY
        for line, text in _strings(path)
        for fact, pattern in patterns.items()
        if pattern.search(text)
    ]
    assert not found, "release names/sources outside the registry:\n" + "\n".join(found)
    # the registry holds each of them as a literal (so the scan above looks for something real)
    registry = {text for _, text in _strings(REGISTRY)}
    for c in COMPONENTS.values():
        assert {c.release, c.converted, c.source.repo_id, c.source.remote} <= registry


def test_no_other_table_lists_every_component_kind():
    """A literal naming every kind (a dict, tuple, list or set) is a second kind table; the key signatures of
    strict loading (checkpoint.COMPONENT_KEYS, read by the registry) are the one allowed, below the registry."""
    import ast

    from talker_core.checkpoint import COMPONENT_KEYS
    from talker_core.weights.components import KINDS

    tables = []
    for path in PRODUCTION:
        if path == REGISTRY:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if not isinstance(node, (ast.Dict, ast.Tuple, ast.List, ast.Set)) or not items:
                continue
            names = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
            if set(KINDS) <= names:
                tables.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert tables == [f"talker_core/checkpoint.py:{_line_of('COMPONENT_KEYS')}"], tables
    assert tuple(COMPONENT_KEYS) == KINDS


def _line_of(name: str) -> int:
    text = (ROOT / "talker_core" / "checkpoint.py").read_text().splitlines()
    return next(i for i, line in enumerate(text, 1) if line.startswith(f"{name}:"))


def test_every_registered_component_is_complete(debug_models, tmp_path):
    """Each kind has a key map, a module, a reader, a loader, a debug writer, a download source and a header
    test that recognises its file by content alone; the tables built from the registry agree with it."""
    import shutil

    import torch

    from talker_core.checkpoint import KeyMap
    from talker_core.weights import download, loaders
    from talker_core.weights.components import COMPONENTS

    sources = {s.kind: s for s in download.SOURCES}
    assert loaders.KINDS == tuple(COMPONENTS) == tuple(sources)
    for kind, c in COMPONENTS.items():
        assert c.kind == kind
        assert isinstance(c.key_map(), KeyMap) and loaders.key_map(kind) is c.key_map()
        assert issubclass(c.module_class(), torch.nn.Module)
        assert callable(c.reader()) and callable(c.debug_writer())
        assert c.loader() is getattr(loaders, c.loader_ref.split(":")[1])
        assert (sources[kind].repo_id, sources[kind].remote, sources[kind].local) == (
            c.source.repo_id,
            c.source.remote,
            c.release,
        )
        assert loaders.MODEL_LAYOUT[kind] == c.release and loaders.CONVERTED_LAYOUT[kind] == c.converted
        assert c.signature and c.published_format in ("safetensors", "pickle")
        # the header test: a copy under a name that tells nothing is still recognised
        src = debug_models / c.release
        src = src / c.weights_file if c.is_folder else src
        blind = tmp_path / f"blind_{kind}{src.suffix}"
        shutil.copy(src, blind)
        assert loaders.sniff_kind(blind) == kind
        if not c.is_folder:  # the node lists offer the published and converted forms
            assert c.extensions and src.suffix in c.extensions and ".safetensors" in c.extensions
            assert any(hint in c.release for hint in c.name_hints)
    written = loaders.find_models(debug_models)
    assert written == {k: debug_models / c.release for k, c in COMPONENTS.items()}


def test_attention_choices_come_from_the_model_file(monkeypatch):
    """The CLI's --attn reads models/talker.py's list (the loader node's combo: tests/test_nodes.py)."""
    import argparse

    from talker_core.cli import generate as cli_generate
    from talker_core.models import talker

    def attn_action():
        parser = argparse.ArgumentParser()
        cli_generate.add_arguments(parser)
        return next(a for a in parser._actions if "--attn" in a.option_strings)

    action = attn_action()
    assert tuple(action.choices) == talker.ATTN_IMPLEMENTATIONS and action.default == talker.ATTN_IMPLEMENTATIONS[0]
    monkeypatch.setattr(talker, "ATTN_HELP", {"kernel_a": "the first", "kernel_b": "the second"})
    monkeypatch.setattr(talker, "ATTN_IMPLEMENTATIONS", ("kernel_a", "kernel_b"))
    action = attn_action()
    assert tuple(action.choices) == ("kernel_a", "kernel_b") and action.default == "kernel_a"
    assert "kernel_b: the second" in action.help


def test_sample_rates_are_written_once():
    """16 kHz and 24 kHz appear as numbers only in talker_core/types.py (each under one name)."""
    import ast

    from talker_core import types
    from talker_core.models import audio_frontend, speaker_encoder, whisperx_vae

    found = []
    for path in PRODUCTION:
        if path == ROOT / "talker_core" / "types.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and type(node.value) is int and node.value in (16_000, 24_000):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert not found, found
    assert (types.SAMPLE_RATE, types.SPEAKER_SAMPLE_RATE, types.WHISPER_SAMPLE_RATE) == (24_000, 16_000, 16_000)
    assert speaker_encoder.SPEAKER_SAMPLE_RATE is types.SPEAKER_SAMPLE_RATE
    assert audio_frontend.WHISPER_SAMPLE_RATE is types.WHISPER_SAMPLE_RATE
    assert whisperx_vae.WhisperXVAEConfig().sample_rate == types.SAMPLE_RATE
    assert not hasattr(speaker_encoder, "SAMPLE_RATE")  # the 16 kHz constant no longer shadows the 24 kHz one
