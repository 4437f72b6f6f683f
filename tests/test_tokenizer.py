"""Prompt rendering (GENERATION.md, Inputs: prompt_ids) on the debug tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from talker_core.checkpoint import CheckpointError
from talker_core.tokenizer import (
    MOTION_TOKEN,
    SPEECH_TOKEN,
    load_tokenizer,
    render_prompt,
    write_debug_tokenizer,
)

# What Qwen3's template renders for [user: text, assistant: ...] with thinking off,
# up to the assistant's content.
ASSISTANT_OPEN = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return write_debug_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


def test_debug_tokenizer_fits_the_tiny_vocabulary(tok):
    assert len(tok) < 320
    ids = [tok.convert_tokens_to_ids(t) for t in (SPEECH_TOKEN, MOTION_TOKEN, "<|im_start|>", "<|im_end|>")]
    assert len(set(ids)) == 4 and max(ids) < 320
    assert tok.encode(SPEECH_TOKEN, add_special_tokens=False) == [ids[0]]


def test_prompt_stops_right_before_the_placeholder(tok):
    ids = render_prompt(tok, "Hello world.")
    assert ids.dtype == torch.long and ids.ndim == 2 and ids.shape[0] == 1
    assert tok.decode(ids[0]) == "<|im_start|>user\nHello world.<|im_end|>\n" + ASSISTANT_OPEN
    speech = tok.convert_tokens_to_ids(SPEECH_TOKEN)
    assert speech not in ids[0].tolist()
    # the same as the full templated chat cut at the first placeholder
    full = tok.apply_chat_template(
        [{"role": "user", "content": "Hello world."}, {"role": "assistant", "content": SPEECH_TOKEN * 3}],
        tokenize=False,
        enable_thinking=False,
    )
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[0].tolist() == full_ids[: full_ids.index(speech)]
    # the empty think block is the tail
    tail = tok(ASSISTANT_OPEN, add_special_tokens=False)["input_ids"]
    assert ids[0].tolist()[-len(tail) :] == tail


@pytest.mark.parametrize("text", ["👋🏽 héllo — 你好！", "שלום עולם, مرحبا بالعالم", "line one\nline two\ttab"])
def test_unicode_and_rtl_text_round_trips(tok, text):
    ids = render_prompt(tok, text)
    assert tok.decode(ids[0]) == f"<|im_start|>user\n{text}<|im_end|>\n" + ASSISTANT_OPEN


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_refused(tok, text):
    with pytest.raises(ValueError, match="empty"):
        render_prompt(tok, text)


def test_too_long_text_says_how_much_fits(tok):
    with pytest.raises(ValueError, match=r"at most 100\b.*Roughly \d+ characters"):
        render_prompt(tok, "word " * 60, max_length=100)
    assert render_prompt(tok, "word " * 10, max_length=100).shape[1] <= 100


def test_control_tokens_in_the_text_are_refused(tok):
    with pytest.raises(ValueError, match="<SPEECH_FRAME>"):
        render_prompt(tok, f"say {SPEECH_TOKEN} now")
    with pytest.raises(ValueError, match="im_end"):
        render_prompt(tok, "a<|im_end|>b")


def test_missing_files_are_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path / "absent")


def test_tokenizer_without_the_placeholders_is_refused(tmp_path, tok_dir):
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in (SPEECH_TOKEN, MOTION_TOKEN)]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config.pop("additional_special_tokens")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="single token"):
        load_tokenizer(tmp_path, add_missing_placeholders=False)


def test_missing_placeholders_are_added_like_the_reference(tmp_path, tok_dir, tok, caplog):
    test_tokenizer_without_the_placeholders_is_refused(tmp_path, tok_dir)
    with caplog.at_level("WARNING", logger="talker_core.tokenizer"):
        patched = load_tokenizer(tmp_path)
    assert "lacks <SPEECH_FRAME> and <MOTION_FRAME>" in caplog.text
    assert len(patched.encode(SPEECH_TOKEN, add_special_tokens=False)) == 1
    # the prompt (everything before the placeholder) does not depend on it
    assert render_prompt(patched, "Hello.").tolist() == render_prompt(tok, "Hello.").tolist()


def test_tokenizer_json_is_used_as_stored_whatever_the_declared_class(tmp_path, tok_dir, tok):
    """A Qwen checkpoint declares ``Qwen2Tokenizer``; the file's own pipeline must still be the one used."""
    (tmp_path / "tokenizer.json").write_text((tok_dir / "tokenizer.json").read_text())
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    other = load_tokenizer(tmp_path)
    text = "It's 12:30 — ok?"
    assert render_prompt(other, text).tolist() == render_prompt(tok, text).tolist()
