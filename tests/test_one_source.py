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
