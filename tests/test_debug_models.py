"""The debug model set: published formats and layout, the CLI that writes it, and the CLI's errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from talker_core.checkpoint import read_pickle, sniff_format
from talker_core.cli import main
from talker_core.safe_pickle import LIGHTNING_GLOBALS, to_plain
from talker_core.weights.loaders import KINDS, MODEL_LAYOUT

ROOT = Path(__file__).resolve().parents[1]


def test_cli_writes_the_four_files_in_the_layout(tmp_path, debug_models):
    out = tmp_path / "set"
    proc = subprocess.run(
        [sys.executable, "-m", "talker_core", "make-debug-models", str(out), "--seed", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    for kind in KINDS:
        assert (out / MODEL_LAYOUT[kind]).exists(), kind
        assert f"{kind}: {out / MODEL_LAYOUT[kind]}" in proc.stdout
    assert (out / "talker-t2av" / "model.safetensors").is_file()
    assert (out / "talker-t2av" / "tokenizer.json").is_file()
    assert (out / "talker-t2av" / "tokenizer_config.json").is_file()

    # the same seed writes the same tensors
    from safetensors.torch import load_file

    a = load_file(str(out / "talker-t2av" / "model.safetensors"))
    b = load_file(str(debug_models / "talker-t2av" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for rel in ("wavlm_large_finetune.pth", "lia-x.pt"):
        x = torch.load(out / rel, map_location="cpu", weights_only=True)
        y = torch.load(debug_models / rel, map_location="cpu", weights_only=True)
        x, y = x.get("model", x), y.get("model", y)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), rel


def test_talker_file_is_safetensors_with_its_config(debug_models):
    from talker_core.models.talker import TalkerConfig

    path = debug_models / "talker-t2av" / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert TalkerConfig.from_dict(json.loads(meta["talker_config"])) == TalkerConfig.tiny()
    for key in (
        "llm.model.embed_tokens.weight",
        "llm.lm_head.weight",
        "projector_speech.linear1.weight",
        "projector_motion.linear1.bias",
        "head_stop.head.weight",
        "task_embedding.weight",
        "motion_pad_emb",
    ):
        assert key in keys, key
    assert any(k.startswith("speech_cfm.estimator.") for k in keys)
    assert any(k.startswith("motion_patch_encoder.") for k in keys)


def test_whisperx_file_is_a_lightning_checkpoint(debug_models):
    path = debug_models / "whisperx-vae" / "model.ckpt"
    assert zipfile.is_zipfile(path)
    ckpt = read_pickle(path, LIGHTNING_GLOBALS)
    for key in ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step"):
        assert key in ckpt, key
    sd = ckpt["state_dict"]
    assert any(k.startswith("CodecEnc.block.") for k in sd) and any(k.startswith("CodecDec.model.") for k in sd)
    assert "vae.in_proj.weight_g" in sd and "semantic_model.encoder.conv1.weight" in sd
    assert "semantic_model.encoder.positional_embedding" in sd  # stored by openai-whisper, recomputed by us
    cfg = to_plain(ckpt["hyper_parameters"]["cfg"])
    assert set(cfg["model"]) >= {"codec_encoder", "codec_decoder"} and cfg["dataset"]["sr"] == 24000


def test_liax_and_speaker_files_are_plain_state_dicts(debug_models):
    liax = torch.load(debug_models / "lia-x.pt", map_location="cpu", weights_only=True)
    assert all(k.startswith(("enc.", "dec.")) for k in liax) and "dec.direction.weight" in liax
    assert liax["enc.enc_2r.block1.0.weight"].shape[0] == 64 // 8  # scale 1/8
    assert all(v.dtype == torch.float32 for v in liax.values() if v.is_floating_point())
    spk = torch.load(debug_models / "wavlm_large_finetune.pth", map_location="cpu", weights_only=True)
    assert list(spk) == ["model"]
    assert "feature_extract.model.mask_emb" in spk["model"] and "feature_weight" in spk["model"]
    assert spk["model"]["linear.weight"].shape[0] == 256


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "lia-x.pt"
    bad.write_bytes(b"not a model")
    assert main(["convert", str(bad), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err and str(bad) in err

    assert main(["convert", str(tmp_path / "absent.pt"), str(tmp_path / "o.safetensors")]) == 1
    assert "not found" in capsys.readouterr().err

    assert main(["no-such-command"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "make-debug-models" in capsys.readouterr().out


def test_cli_convert_with_kind(tmp_path, debug_models, capsys):
    dst = tmp_path / "spk.safetensors"
    assert main(["convert", str(debug_models / "wavlm_large_finetune.pth"), str(dst), "--kind", "speaker"]) == 0
    assert capsys.readouterr().out.strip() == str(dst)
    assert sniff_format(dst) == "safetensors"
    # a wrong --kind is refused with the reason
    assert (
        main(
            [
                "convert",
                str(debug_models / "wavlm_large_finetune.pth"),
                str(tmp_path / "x.safetensors"),
                "--kind",
                "liax",
            ]
        )
        == 1
    )
    assert "looks like the WavLM" in capsys.readouterr().err


def test_commands_can_be_registered_lazily(capsys, monkeypatch):
    from talker_core import cli

    monkeypatch.setitem(cli.COMMANDS, "hello", cli.Command("say hello", "tests_cli_plugin_absent"))
    assert main(["--help"]) == 0
    assert "hello" in capsys.readouterr().out  # listed without importing its module
    assert main(["hello"]) == 1
    assert "not available" in capsys.readouterr().err


def test_seed_must_be_a_non_negative_integer(tmp_path):
    from talker_core.weights.debug_models import write_debug_models

    with pytest.raises(ValueError, match="seed"):
        write_debug_models(tmp_path, seed=-1)
