"""The four loaders, the converter and the safety of file reading, on the debug model set."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from talker_core.checkpoint import CheckpointError, read_pickle, sniff_format
from talker_core.safe_pickle import LIGHTNING_GLOBALS, to_plain
from talker_core.weights import loaders
from talker_core.weights.loaders import (
    CONVERTED_LAYOUT,
    KINDS,
    MODEL_LAYOUT,
    convert_to_safetensors,
    find_models,
    load_component,
    missing_models_message,
    resolve_in_folder,
)

ROOT = Path(__file__).resolve().parents[1]

_DESCRIPTIONS = {
    "talker": "Talker-T2AV backbone",
    "whisperx_vae": "WhisperX-VAE",
    "liax": "LIA-X",
    "speaker": "speaker encoder",
}


def _file(debug_models: Path, kind: str) -> Path:
    path = debug_models / MODEL_LAYOUT[kind]
    return path / "model.safetensors" if kind == "talker" else path


def _model_of(loaded):
    return loaded.model if isinstance(loaded, loaders.TalkerBundle) else loaded


@pytest.fixture(scope="module")
def converted(debug_models, tmp_path_factory):
    """The debug set converted to safetensors, in the sidecar layout of a separate folder."""
    out = tmp_path_factory.mktemp("converted")
    for kind in KINDS:
        src = debug_models / MODEL_LAYOUT[kind]
        dst = out / CONVERTED_LAYOUT[kind]
        convert_to_safetensors(src, dst)
    return out


# --------------------------------------------------------------------------- loading


def test_debug_set_loads_through_every_loader(debug_models):
    bundle = loaders.load_talker(debug_models / MODEL_LAYOUT["talker"])
    assert not bundle.model.training and bundle.config.llm.vocab_size == 320
    assert bundle.source.name == "model.safetensors"
    assert all(not p.requires_grad for p in bundle.model.parameters())
    from talker_core.tokenizer import render_prompt

    ids = render_prompt(bundle.tokenizer, "Hi.")
    emb = bundle.model.embed_prompt(ids)
    assert emb.shape == (1, ids.shape[1], bundle.config.llm.hidden_size) and torch.isfinite(emb).all()

    vae = loaders.load_whisperx_vae(_file(debug_models, "whisperx_vae"))
    assert not vae.training and vae.weight_norm_folded
    with torch.no_grad():
        wav = vae.decode(torch.randn(1, 5, 32) * 0.5)
    assert torch.isfinite(wav).all() and wav.abs().max() <= 1 and wav.std() > 0

    spk = loaders.load_speaker_encoder(_file(debug_models, "speaker"))
    with torch.no_grad():
        emb = spk(torch.randn(2, 8000) * 0.1)
    assert emb.shape == (2, 256) and torch.isfinite(emb).all() and emb.std() > 0

    liax = loaders.load_liax(_file(debug_models, "liax"))
    from talker_core.weights.debug_models import debug_liax_config

    assert liax.cfg == debug_liax_config() and not liax.training
    assert next(liax.parameters()).dtype == torch.float32
    with torch.no_grad():
        alpha = liax.direction(torch.randn(2, 40))
    assert torch.isfinite(alpha).all()


def test_sizes_are_recovered_from_the_published_files(debug_models):
    """The pickles carry no (or partial) config: what the loaders infer must be the debug set's sizes."""
    from talker_core.weights import debug_models as dm

    assert loaders._read_whisperx(_file(debug_models, "whisperx_vae"))[1] == dm.debug_whisperx_config()
    assert loaders._read_speaker(_file(debug_models, "speaker"))[1] == dm.debug_speaker_config()
    assert loaders._read_talker(_file(debug_models, "talker"))[1] == dm.debug_talker_config()
    assert loaders._read_liax(_file(debug_models, "liax"))[1] == dm.debug_liax_config()


@pytest.mark.parametrize("kind", ["whisperx_vae", "speaker", "liax"])
def test_converted_file_without_config_falls_back_to_shapes(converted, tmp_path, kind):
    src = converted / CONVERTED_LAYOUT[kind]
    bare = tmp_path / src.name
    save_file(load_file(str(src)), str(bare))  # same tensors, no metadata
    reader = {"whisperx_vae": loaders._read_whisperx, "speaker": loaders._read_speaker, "liax": loaders._read_liax}[
        kind
    ]
    assert reader(bare)[1] == reader(src)[1]


def test_loaders_take_device_and_dtype(debug_models):
    spk = loaders.load_speaker_encoder(_file(debug_models, "speaker"), device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in spk.parameters()} == {torch.bfloat16}
    vae = load_component("whisperx_vae", debug_models / "whisperx-vae", dtype=torch.float64)
    assert vae.vae.in_proj.weight.dtype == torch.float64


@pytest.mark.parametrize("kind", KINDS)
def test_converted_file_loads_to_identical_tensors(debug_models, converted, kind):
    original = _model_of(load_component(kind, debug_models / MODEL_LAYOUT[kind])).state_dict()
    again = _model_of(load_component(kind, converted / CONVERTED_LAYOUT[kind])).state_dict()
    assert original.keys() == again.keys()
    for key, value in original.items():
        assert torch.equal(value, again[key]), key
    del original, again

    out = converted / CONVERTED_LAYOUT[kind]
    out = out / "model.safetensors" if kind == "talker" else out
    assert sniff_format(out) == "safetensors"
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        names = set(f.keys())
    assert meta["talker_kind"] == kind
    assert isinstance(json.loads(meta["talker_config"]), dict)
    # known-unused entries of the published files are dropped
    dropped = {
        "talker": "llm.lm_head.weight",
        "whisperx_vae": "discriminator.discriminators.0.convs.0.weight",
        "liax": None,
        "speaker": "loss_calculator.projection.weight",
    }[kind]
    if dropped:
        assert dropped not in names


def test_converted_talker_folder_keeps_the_tokenizer(converted):
    folder = converted / CONVERTED_LAYOUT["talker"]
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()


def test_lightning_checkpoint_loads_without_omegaconf(debug_models):
    """The real model.ckpt holds an OmegaConf tree; reading it must not need (or import) omegaconf."""
    code = (
        "import sys; sys.modules['omegaconf'] = None\n"
        "from talker_core.weights.loaders import load_whisperx_vae\n"
        f"m = load_whisperx_vae({str(_file(debug_models, 'whisperx_vae'))!r})\n"
        "print(m.cfg.codec_encoder.in_dim, m.cfg.sample_rate)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "24000"]


def test_lightning_config_is_rebuilt_as_plain_values(debug_models):
    ckpt = read_pickle(_file(debug_models, "whisperx_vae"), LIGHTNING_GLOBALS)
    cfg = to_plain(ckpt["hyper_parameters"]["cfg"])
    assert cfg["model"]["codec_encoder"] == {"in_dim": 4, "ratios": [4, 5, 6, 8], "hidden_dim": 64}
    assert cfg["dataset"]["sr"] == 24000 and cfg["dataset"]["train_list"] is None
    assert cfg["preprocess"]["audio"]["sr"] == 24000  # "${dataset.sr}" resolved
    assert ckpt["global_step"] == 480000 and "pytorch-lightning_version" in ckpt


def test_omegaconf_stand_ins_cover_a_real_tree(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    tree = {
        "a": {"b": [1, 2.5, None, "x", {"c": True}], "d": "${a.e}", "e": 7, "f": "???", "g": "id_${a.e}"},
        "h": [[1, 2], []],
        "empty": {},
    }
    cfg = omegaconf.OmegaConf.create(tree)
    omegaconf.OmegaConf.set_struct(cfg, True)
    torch.save({"hyper_parameters": {"cfg": cfg}, "state_dict": {}}, tmp_path / "x.ckpt")
    plain = to_plain(read_pickle(tmp_path / "x.ckpt", LIGHTNING_GLOBALS))
    expected = omegaconf.OmegaConf.to_container(cfg, resolve=False)
    expected["a"]["d"], expected["a"]["f"], expected["a"]["g"] = 7, None, "id_7"
    assert plain["hyper_parameters"]["cfg"] == expected


# --------------------------------------------------------------------------- wrong files


@pytest.mark.parametrize("loader_kind,file_kind", [(a, b) for a in KINDS for b in KINDS if a != b], ids=lambda k: k)
def test_another_components_file_is_named_as_such(debug_models, loader_kind, file_kind):
    path = _file(debug_models, file_kind)
    with pytest.raises(CheckpointError) as info:
        load_component(loader_kind, path)
    msg = str(info.value)
    assert str(path) in msg
    assert "missing" in msg and "unexpected" in msg
    assert "looks like" in msg and _DESCRIPTIONS[file_kind] in msg


def test_converted_file_of_another_component_is_named_as_such(converted):
    path = converted / CONVERTED_LAYOUT["speaker"]
    with pytest.raises(CheckpointError, match="looks like the WavLM") as info:
        loaders.load_whisperx_vae(path)
    assert str(path) in str(info.value)


def test_missing_and_unexpected_keys_are_listed(debug_models, tmp_path):
    sd = torch.load(_file(debug_models, "speaker"), map_location="cpu", weights_only=True)
    del sd["model"]["layer1.conv.bias"]
    sd["model"]["linear.extra"] = torch.zeros(1)
    path = tmp_path / "wavlm_large_finetune.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        loaders.load_speaker_encoder(path)
    msg = str(info.value)
    assert str(path) in msg and "missing 1 key(s): layer1.conv.bias" in msg and "linear.extra" in msg


def test_wrong_shape_and_dtype_are_named(converted, tmp_path):
    src = converted / CONVERTED_LAYOUT["speaker"]
    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    bad_shape = dict(tensors)
    bad_shape["linear.weight"] = torch.zeros(3, 3)
    save_file(bad_shape, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*linear\.weight: file \(3, 3\)") as info:
        loaders.load_speaker_encoder(tmp_path / "shape.safetensors")
    assert "shape.safetensors" in str(info.value)

    bad_dtype = dict(tensors)
    bad_dtype["linear.weight"] = tensors["linear.weight"].to(torch.int32)
    save_file(bad_dtype, str(tmp_path / "dtype.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"non-float dtype.*linear\.weight: torch\.int32"):
        loaders.load_speaker_encoder(tmp_path / "dtype.safetensors")


def test_truncated_files_give_clear_errors(converted, debug_models, tmp_path):
    data = (converted / CONVERTED_LAYOUT["speaker"]).read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        loaders.load_speaker_encoder(tmp_path / "half.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:40])
    with pytest.raises(CheckpointError, match="not safetensors"):
        loaders.load_speaker_encoder(tmp_path / "head.safetensors")

    pickled = _file(debug_models, "speaker").read_bytes()
    (tmp_path / "half.pth").write_bytes(pickled[: len(pickled) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        loaders.load_speaker_encoder(tmp_path / "half.pth")
    (tmp_path / "page.pth").write_bytes(b"<!DOCTYPE html><html>Not found</html>")
    with pytest.raises(CheckpointError, match="neither a PyTorch checkpoint nor a safetensors"):
        loaders.load_speaker_encoder(tmp_path / "page.pth")


def test_format_is_judged_by_content_not_by_name(converted, debug_models, tmp_path):
    renamed = tmp_path / "wavlm_large_finetune.pth"
    shutil.copy(converted / CONVERTED_LAYOUT["speaker"], renamed)  # safetensors under a pickle name
    assert sniff_format(renamed) == "safetensors"
    assert loaders.load_speaker_encoder(renamed).config.ecapa.emb_dim == 256

    disguised = tmp_path / "wavlm_large_finetune.safetensors"
    shutil.copy(_file(debug_models, "speaker"), disguised)  # a pickle under the safetensors name
    with pytest.raises(CheckpointError, match="named .safetensors but is a PyTorch pickle"):
        loaders.load_speaker_encoder(disguised)


def test_file_missing_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        loaders.load_liax(tmp_path / "lia-x.pt")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        loaders.load_talker(tmp_path)


# --------------------------------------------------------------------------- code in pickles


class _Payload:
    """Unpickling this would create a marker file (and, in a real attack, do anything)."""

    def __init__(self, marker: Path, via: str):
        self.marker, self.via = str(marker), via

    def __reduce__(self):
        if self.via == "os.system":
            return (os.system, (f"touch '{self.marker}'",))
        return (open, (self.marker, "w"))


def _write_malicious(path: Path, marker: Path, via: str, style: str) -> None:
    payload = _Payload(marker, via)
    if style == "torch":  # zip archive as torch.save writes it
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"cfg": payload}}, path)
    elif style == "legacy":  # a bare pickle stream, protocol 2
        with open(path, "wb") as f:
            pickle.dump({"model": {"w": payload}}, f, protocol=2)
    else:  # protocol 5 (STACK_GLOBAL)
        with open(path, "wb") as f:
            pickle.dump([payload], f, protocol=5)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "name,loader,via,style",
    [
        ("lia-x.pt", "liax", "os.system", "torch"),
        ("wavlm_large_finetune.pth", "speaker", "open", "legacy"),
        ("model.ckpt", "whisperx_vae", "os.system", "torch"),
        ("model.ckpt", "whisperx_vae", "open", "protocol5"),
        ("lia-x.pt", "liax", "open", "legacy"),
    ],
)
def test_pickles_that_run_code_are_refused(tmp_path, name, loader, via, style):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    _write_malicious(path, marker, via, style)
    with pytest.raises(CheckpointError, match="Refused to load") as info:
        load_component(loader, path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the converter reads through the same path
    with pytest.raises(CheckpointError, match="Refused to load"):
        convert_to_safetensors(path, tmp_path / "out.safetensors")
    assert not marker.exists()


def test_refusal_names_the_global(tmp_path):
    marker = tmp_path / "pwned"
    _write_malicious(tmp_path / "x.pt", marker, "os.system", "torch")
    with pytest.raises(CheckpointError, match=r"(posix|nt|os)\.system"):
        read_pickle(tmp_path / "x.pt")
    assert not marker.exists()


def test_stand_in_names_cannot_be_used_to_call_anything(tmp_path):
    """An allow-listed OmegaConf name used as a function gets an inert object, never real code."""
    # GLOBAL omegaconf.dictconfig.DictConfig, then REDUCE with an argument
    data = b"\x80\x02comegaconf.dictconfig\nDictConfig\nX\x05\x00\x00\x00touchq\x00\x85q\x01Rq\x02."
    (tmp_path / "x.pt").write_bytes(data)
    with pytest.raises(CheckpointError):
        read_pickle(tmp_path / "x.pt", LIGHTNING_GLOBALS)


# --------------------------------------------------------------------------- layout


def test_find_models_and_missing_message(debug_models, tmp_path):
    found = find_models(debug_models)
    assert found == {kind: debug_models / MODEL_LAYOUT[kind] for kind in KINDS}
    assert missing_models_message(debug_models) == ""

    partial = tmp_path / "models dir"
    shutil.copytree(debug_models / "talker-t2av", partial / "talker-t2av")
    shutil.copy(_file(debug_models, "speaker"), partial / "wavlm_large_finetune.pth")
    found = find_models(partial)
    assert found["talker"] is not None and found["speaker"] is not None
    assert found["liax"] is None and found["whisperx_vae"] is None
    msg = missing_models_message(partial, found)
    assert str(partial / "lia-x.pt") in msg and str(partial / "whisperx-vae" / "model.ckpt") in msg
    assert "wavlm" not in msg and "talker-t2av" not in msg
    assert f'python -m talker_core download --models "{partial}"' in msg


def test_find_models_prefers_the_converted_sidecar(debug_models, converted, tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copy(_file(debug_models, "speaker"), root / MODEL_LAYOUT["speaker"])
    shutil.copy(converted / CONVERTED_LAYOUT["speaker"], root / CONVERTED_LAYOUT["speaker"])
    assert find_models(root)["speaker"] == root / CONVERTED_LAYOUT["speaker"]


def test_resolve_in_folder_refuses_escapes(tmp_path):
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.pt").write_bytes(b"x")
    assert resolve_in_folder(root, "sub/a.pt") == (root / "sub" / "a.pt").resolve()
    assert resolve_in_folder(root, "new.pt") == (root / "new.pt").resolve()
    for bad in ("../x.pt", "sub/../../x.pt", "..", "/etc/passwd", "\\\\server\\share\\x.pt", "C:\\x.pt", "", "  "):
        with pytest.raises(ValueError):
            resolve_in_folder(root, bad)
    outside = tmp_path / "outside.pt"
    outside.write_bytes(b"x")
    (root / "link.pt").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        resolve_in_folder(root, "link.pt")
    (root / "inner.pt").symlink_to(root / "sub" / "a.pt")
    assert resolve_in_folder(root, "inner.pt") == (root / "sub" / "a.pt").resolve()
