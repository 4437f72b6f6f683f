"""A first load of the released files: unlisted keys do not strand a user, everything else stays an error.

Lenient loading (the default for users) skips a key no list names and reports it once in
one log line; the strict switch (argument or ``TALKER_STRICT_LOADING=1``, which the test
session sets) makes it an error. Missing keys, wrong shapes, wrong dtypes and keys of
another component are errors either way. The ``talker-t2av`` folder's ``config.json`` is
checked against the sizes built; the chat template is found in ``chat_template.jinja`` or
in ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from talker_core import checkpoint
from talker_core.checkpoint import STRICT_ENV, CheckpointError, strict_loading
from talker_core.tokenizer import CHAT_TEMPLATE_FILE, DEBUG_CHAT_TEMPLATE, load_tokenizer, render_prompt
from talker_core.weights import loaders
from talker_core.weights.loaders import MODEL_LAYOUT

LOG = "talker_core.checkpoint"


def _speaker_file(debug_models: Path, tmp_path: Path, edit) -> Path:
    sd = torch.load(debug_models / MODEL_LAYOUT["speaker"], map_location="cpu", weights_only=True)
    edit(sd["model"])
    path = tmp_path / "wavlm_large_finetune.pth"
    torch.save(sd, path)
    return path


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOG and r.levelno >= logging.WARNING]


def test_the_test_session_loads_strictly():
    assert strict_loading() is True
    assert strict_loading(False) is False


def test_unlisted_key_is_reported_once_and_skipped(debug_models, tmp_path, caplog):
    def add(sd):
        sd["layer4.conv.running_extra"] = torch.zeros(3)
        sd["pooling.extra_scale"] = torch.zeros(2, 2)

    path = _speaker_file(debug_models, tmp_path, add)
    with pytest.raises(CheckpointError, match=r"unexpected 2 key\(s\): layer4\.conv\.running_extra") as info:
        loaders.load_speaker_encoder(path)  # strict: the session's switch
    assert str(path) in str(info.value)

    checkpoint._REPORTED.clear()
    with caplog.at_level(logging.DEBUG, logger=LOG):
        model = loaders.load_speaker_encoder(path, strict=False)
        again = loaders.load_speaker_encoder(path, strict=False)
    warned = _warnings(caplog)
    assert len(warned) == 1, [r.getMessage() for r in warned]
    line = warned[0].getMessage()
    assert "\n" not in line and str(path) in line
    assert "layer4.conv.running_extra" in line and "pooling.extra_scale" in line
    # what was loaded is the file's weights, exactly as without the extra keys
    reference = loaders.load_speaker_encoder(debug_models / MODEL_LAYOUT["speaker"])
    for (k, a), (_, b), (_, c) in zip(
        model.state_dict().items(), again.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, c) and torch.equal(b, c), k


def test_environment_variable_is_the_switch(debug_models, tmp_path, monkeypatch):
    path = _speaker_file(debug_models, tmp_path, lambda sd: sd.__setitem__("linear.extra", torch.zeros(1)))
    monkeypatch.setenv(STRICT_ENV, "0")
    loaders.load_speaker_encoder(path)
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(CheckpointError, match=r"linear\.extra"):
        loaders.load_speaker_encoder(path)
    monkeypatch.delenv(STRICT_ENV)
    assert strict_loading() is False  # users' default
    loaders.load_speaker_encoder(path)


def test_missing_shape_dtype_stay_errors_when_lenient(debug_models, tmp_path):
    path = _speaker_file(debug_models, tmp_path, lambda sd: sd.pop("layer1.conv.bias"))
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): layer1\.conv\.bias") as info:
        loaders.load_speaker_encoder(path, strict=False)
    assert str(path) in str(info.value)

    path = _speaker_file(debug_models, tmp_path, lambda sd: sd.__setitem__("linear.weight", torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match=r"linear\.weight: file \(3, 3\)"):
        loaders.load_speaker_encoder(path, strict=False)

    def to_int(sd):
        sd["linear.weight"] = sd["linear.weight"].to(torch.int32)

    path = _speaker_file(debug_models, tmp_path, to_int)
    with pytest.raises(CheckpointError, match=r"non-float dtype.*linear\.weight"):
        loaders.load_speaker_encoder(path, strict=False)


def test_keys_of_another_component_stay_errors_when_lenient(debug_models, tmp_path):
    def add(sd):
        sd["CodecEnc.block.0.weight_v"] = torch.zeros(2, 1, 3)
        sd["llm.model.norm.weight"] = torch.zeros(4)

    path = _speaker_file(debug_models, tmp_path, add)
    with pytest.raises(CheckpointError) as info:
        loaders.load_speaker_encoder(path, strict=False)
    msg = str(info.value)
    assert str(path) in msg
    assert "another component (whisperx_vae): CodecEnc.block.0.weight_v" in msg
    assert "another component (talker): llm.model.norm.weight" in msg


def test_talker_folder_unlisted_key_is_lenient(debug_models, tmp_path, caplog):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "talker-t2av"
    shutil.copytree(debug_models / "talker-t2av", folder)
    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata()
    sd = load_file(str(weights))
    sd["speech_cfm.estimator.training_ema_decay"] = torch.zeros(1)
    save_file(sd, str(weights), metadata=meta)
    with pytest.raises(CheckpointError, match="training_ema_decay"):
        loaders.load_talker(folder)
    checkpoint._REPORTED.clear()
    with caplog.at_level(logging.WARNING, logger=LOG):
        bundle = loaders.load_talker(folder, strict=False)
    assert bundle.model is not None
    assert len(_warnings(caplog)) == 1 and "training_ema_decay" in _warnings(caplog)[0].getMessage()


# --------------------------------------------------------------------------- config.json


def _talker_copy(debug_models: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "talker-t2av"
    shutil.copytree(debug_models / "talker-t2av", folder)
    return folder


def test_debug_set_has_the_published_folder_files(debug_models):
    from talker_core.models.talker import TalkerConfig

    folder = debug_models / "talker-t2av"
    data = json.loads((folder / loaders.BACKBONE_CONFIG).read_text())
    assert data["model_type"] == "qwen3"
    assert data["hidden_size"] == TalkerConfig.tiny().llm.hidden_size
    assert (folder / CHAT_TEMPLATE_FILE).read_text() == DEBUG_CHAT_TEMPLATE
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
    assert loaders.load_talker(folder).tokenizer.chat_template == DEBUG_CHAT_TEMPLATE


def test_config_json_that_disagrees_names_the_fields(debug_models, tmp_path):
    folder = _talker_copy(debug_models, tmp_path)
    path = folder / loaders.BACKBONE_CONFIG
    data = json.loads(path.read_text())
    data["num_hidden_layers"] = 28
    data["hidden_size"] = 1024
    data["rope_theta"] = 1e6 * (1 + 1e-12)  # equal as a number
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as info:
        loaders.load_talker(folder)
    msg = str(info.value)
    assert str(path) in msg
    assert "num_hidden_layers: config.json 28, built 2" in msg and "hidden_size: config.json 1024, built 64" in msg
    assert "rope_theta" not in msg


def test_config_json_forms(debug_models, tmp_path):
    from talker_core.models.talker import TalkerConfig

    config = TalkerConfig.tiny()
    path = tmp_path / "config.json"
    flat = json.loads((debug_models / "talker-t2av" / loaders.BACKBONE_CONFIG).read_text())
    # transformers 5 keeps rope_theta in rope_parameters
    rope = {k: v for k, v in flat.items() if k != "rope_theta"}
    rope["rope_parameters"] = {"rope_type": "default", "rope_theta": 10.0}
    path.write_text(json.dumps(rope))
    with pytest.raises(CheckpointError, match=r"rope_theta: config.json 10.0, built 1000000.0"):
        loaders.check_backbone_config(path, config)
    # a nested Talker config: backbone under "llm", Talker sizes at the top
    nested = {"llm": flat, "patch_size": config.patch_size, "speech_dim": 16, "dit": {"n_layer": 99}}
    path.write_text(json.dumps(nested))
    with pytest.raises(CheckpointError) as info:
        loaders.check_backbone_config(path, config)
    assert "speech_dim: config.json 16, built 32" in str(info.value)
    assert f"dit.n_layer: config.json 99, built {config.dit.n_layer}" in str(info.value)
    assert "patch_size" not in str(info.value)
    nested["speech_dim"] = config.speech_dim
    nested.pop("dit")
    path.write_text(json.dumps(nested))
    loaders.check_backbone_config(path, config)
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        loaders.check_backbone_config(path, config)
    loaders.check_backbone_config(tmp_path / "absent.json", config)  # no file: nothing to check


# --------------------------------------------------------------------------- chat template


def test_template_is_found_in_either_place(debug_models, tmp_path):
    from talker_core.tokenizer import write_debug_tokenizer

    in_config = write_debug_tokenizer(tmp_path / "config")
    in_file = write_debug_tokenizer(tmp_path / "file", template_file=True)
    assert not (in_config / CHAT_TEMPLATE_FILE).exists() and (in_file / CHAT_TEMPLATE_FILE).is_file()
    a, b = load_tokenizer(in_config), load_tokenizer(in_file)
    assert a.chat_template == b.chat_template == DEBUG_CHAT_TEMPLATE
    assert render_prompt(a, "Hello there.").tolist() == render_prompt(b, "Hello there.").tolist()
    # the file wins over the config entry
    (in_config / CHAT_TEMPLATE_FILE).write_text(DEBUG_CHAT_TEMPLATE.replace("<|im_start|>", "<|im_start|> "))
    assert load_tokenizer(in_config).chat_template != DEBUG_CHAT_TEMPLATE
    # neither: a clear error naming both places
    (in_file / CHAT_TEMPLATE_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"chat_template\.jinja or in tokenizer_config\.json"):
        load_tokenizer(in_file)
