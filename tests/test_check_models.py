"""``python -m talker_core check-models DIR`` on the debug set and on broken copies of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from talker_core.cli import main
from talker_core.weights.loaders import KINDS, MODEL_LAYOUT

ROOT = Path(__file__).resolve().parents[1]


def _check(capsys, folder: Path) -> tuple[int, str]:
    code = main(["check-models", str(folder)])
    return code, capsys.readouterr().out


def _section(out: str, kind: str) -> str:
    start = out.index(f"[{kind}] ")
    end = out.find("\n\n", start)
    return out[start : end if end >= 0 else None]


@pytest.fixture
def copy(debug_models, tmp_path) -> Path:
    dst = tmp_path / "models"
    shutil.copytree(debug_models, dst)
    return dst


def _edit_speaker(folder: Path, edit) -> None:
    path = folder / MODEL_LAYOUT["speaker"]
    sd = torch.load(path, map_location="cpu", weights_only=True)
    edit(sd["model"])
    torch.save(sd, path)


def test_debug_set_is_ok_through_the_command_line(debug_models):
    proc = subprocess.run(
        [sys.executable, "-m", "talker_core", "check-models", str(debug_models)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "environment: talker_core" in out and f"torch {torch.__version__}" in out
    for kind in KINDS:
        section = _section(out, kind)
        assert "format: " in section and "tensors: " in section and "parameters: " in section, section
        assert "dtypes: float32" in section, section
        assert "keys: needed" in section and "unexpected 0" in section, section
        assert "verdict: OK" in section, section
    talker = _section(out, "talker")
    assert "config.json: agrees" in talker and "chat template from chat_template.jinja" in talker
    assert "known-unused (skipped by design): llm.lm_head.weight" in talker
    assert out.rstrip().endswith("-> OK")


def test_extra_key_is_a_problem(copy, capsys):
    _edit_speaker(copy, lambda sd: sd.__setitem__("layer4.extra_gain", torch.ones(1)))
    code, out = _check(capsys, copy)
    assert code == 1
    section = _section(out, "speaker")
    assert "unexpected 1" in section and "unexpected: layer4.extra_gain" in section
    assert "verdict: PROBLEM" in section and "layer4.extra_gain" in section.splitlines()[-1]
    assert "verdict: OK" in _section(out, "liax")
    assert out.rstrip().endswith("-> PROBLEM")


def test_missing_key_is_a_problem(copy, capsys):
    _edit_speaker(copy, lambda sd: sd.pop("layer1.conv.bias"))
    code, out = _check(capsys, copy)
    assert code == 1
    section = _section(out, "speaker")
    assert "missing: layer1.conv.bias" in section and "1 missing key(s)" in section


def test_wrong_shape_is_a_problem(copy, capsys):
    _edit_speaker(copy, lambda sd: sd.__setitem__("linear.weight", torch.zeros(3, 3)))
    code, out = _check(capsys, copy)
    assert code == 1
    section = _section(out, "speaker")
    assert "wrong shape: linear.weight: file (3, 3)" in section and "verdict: PROBLEM" in section


def test_file_of_another_component_is_a_problem(copy, capsys):
    shutil.copy2(copy / MODEL_LAYOUT["speaker"], copy / MODEL_LAYOUT["liax"])
    code, out = _check(capsys, copy)
    assert code == 1
    section = _section(out, "liax")
    assert "verdict: PROBLEM" in section and "looks like the WavLM" in section
    assert "verdict: OK" in _section(out, "speaker")


def test_foreign_keys_inside_a_file_are_a_problem(copy, capsys):
    _edit_speaker(copy, lambda sd: sd.__setitem__("CodecDec.model.0.weight_v", torch.zeros(1)))
    code, out = _check(capsys, copy)
    assert code == 1
    assert "keys of another component (whisperx_vae): CodecDec.model.0.weight_v" in _section(out, "speaker")


def test_config_json_disagreeing_and_missing_files(copy, capsys):
    cfg = copy / "talker-t2av" / "config.json"
    cfg.write_text(cfg.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 28'))
    (copy / MODEL_LAYOUT["whisperx_vae"]).unlink()
    code, out = _check(capsys, copy)
    assert code == 1
    talker = _section(out, "talker")
    assert "config.json: disagrees" in talker and "num_hidden_layers: config.json 28, built 2" in talker
    assert "[whisperx_vae]" not in out and "Model files missing" in out and "model.ckpt" in out


def test_not_a_folder(tmp_path, capsys):
    code, out = _check(capsys, tmp_path / "absent")
    assert code == 1 and "is not a folder" in out
