"""Prompt rendering with the checkpoint's own tokenizer and chat template.

The published ``talker-t2av/`` folder carries a Qwen3 tokenizer (``tokenizer.json``
plus ``tokenizer_config.json`` with the chat template) extended with the two
placeholder tokens ``<SPEECH_FRAME>`` and ``<MOTION_FRAME>``. The reference
(``infer.py: build_chat_and_spans``) renders the conversation
``[user: text, assistant: "<SPEECH_FRAME>"…]`` with that template, thinking
disabled, and feeds the backbone the tokens before the first placeholder
(spec: GENERATION.md, Inputs: ``prompt_ids``). Qwen3's template writes the last
assistant turn as ``<think>\\n\\n</think>\\n\\n`` followed by its content, so the
prompt ends with that empty think block.

Everything is read from the local folder: no network access, and code shipped
with a tokenizer (``trust_remote_code``) is never run.

:func:`write_debug_tokenizer` builds a tiny byte-level BPE tokenizer with the same
special tokens and a chat template written for this project that renders
conversations the way Qwen3's does; tests and the debug model set use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import torch

from talker_core.checkpoint import CheckpointError

__all__ = [
    "SPEECH_TOKEN",
    "MOTION_TOKEN",
    "MAX_PROMPT_TOKENS",
    "TOKENIZER_FILES",
    "CHAT_TEMPLATE_FILE",
    "load_tokenizer",
    "render_prompt",
    "write_debug_tokenizer",
    "DEBUG_CHAT_TEMPLATE",
]

log = logging.getLogger(__name__)

SPEECH_TOKEN = "<SPEECH_FRAME>"
MOTION_TOKEN = "<MOTION_FRAME>"
#: ``model_max_length`` of the release (the reference's tokenizer limit).
MAX_PROMPT_TOKENS = 1000
#: Files that make a tokenizer folder (``tokenizer.json`` is required, the config holds the template).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
#: The chat template as its own file (newer transformers save it so); it wins over tokenizer_config.json's.
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# Qwen3 specials the chat template uses, in Qwen3's id order, then ours.
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
_PLACEHOLDERS = (SPEECH_TOKEN, MOTION_TOKEN)


def load_tokenizer(folder: str | os.PathLike, add_missing_placeholders: bool = True):
    """Load the tokenizer stored in ``folder`` (``tokenizer.json`` + ``tokenizer_config.json``).

    Returns a transformers fast tokenizer built from ``tokenizer.json`` exactly as
    stored (no class-specific rebuilding), with the folder's chat template: the
    file ``chat_template.jinja`` when present, else ``tokenizer_config.json``'s
    ``chat_template``.

    Training added ``<SPEECH_FRAME>``/``<MOTION_FRAME>`` to Qwen3's tokenizer, and the
    reference's ``infer.py`` adds them again when a tokenizer lacks them; with
    ``add_missing_placeholders`` this does the same (with a warning). The prompt is
    cut before the first placeholder, so its ids never reach the model either way.
    Raises :class:`CheckpointError` when files are missing, the template is absent,
    or a placeholder is not a single token (absent, with ``add_missing_placeholders``
    false).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"Tokenizer folder not found: {folder}")
    if not (folder / "tokenizer.json").is_file():
        present = sorted(p.name for p in folder.iterdir())[:12]
        raise CheckpointError(
            f"{folder} has no tokenizer.json (it holds: {', '.join(present) or 'nothing'}). The Talker-T2AV "
            "folder must contain the tokenizer files published with model.safetensors; download the folder "
            "again (python -m talker_core download --models DIR)."
        )
    from transformers import PreTrainedTokenizerFast

    try:
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a broken folder
        raise CheckpointError(
            f"Could not load the tokenizer in {folder} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "The files may be truncated: download the folder again."
        ) from exc

    jinja = folder / CHAT_TEMPLATE_FILE
    if jinja.is_file():  # read here, so that every transformers version finds it
        try:
            template = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"Could not read the chat template {jinja} ({exc}); download it again.") from exc
        if template.strip():
            tok.chat_template = template
    if not getattr(tok, "chat_template", None):
        raise CheckpointError(
            f"The tokenizer in {folder} has no chat template (expected in {CHAT_TEMPLATE_FILE} or in "
            "tokenizer_config.json's chat_template). Download the published tokenizer files again."
        )
    vocab = tok.get_vocab()
    absent = [t for t in _PLACEHOLDERS if t not in vocab]
    if absent and add_missing_placeholders:
        log.warning(
            "The tokenizer in %s lacks %s; adding them as special tokens, as the reference infer.py does.",
            folder,
            " and ".join(absent),
        )
        tok.add_special_tokens({"additional_special_tokens": list(_PLACEHOLDERS)})
    for token in _PLACEHOLDERS:
        ids = tok.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise CheckpointError(
                f"The tokenizer in {folder} does not have {token} as a single token (it splits into "
                f"{len(ids)} pieces). This is not the Talker-T2AV tokenizer: use the tokenizer files published "
                "with model.safetensors."
            )
    return tok


def render_prompt(tokenizer, text: str, max_length: int = MAX_PROMPT_TOKENS, allow_empty: bool = False) -> torch.Tensor:
    """Prompt tokens for ``text``: the templated chat up to, not including, ``<SPEECH_FRAME>``.

    The conversation is ``[user: text, assistant: <SPEECH_FRAME>]`` rendered with the
    tokenizer's chat template with thinking disabled.

    ``allow_empty`` admits an empty text (audio- or video-driven modes, where the
    driving stream carries the content).

    Returns a LongTensor of shape (1, L). Raises ``ValueError`` for empty text, for
    text containing the tokenizer's control tokens, and when L exceeds ``max_length``.
    """
    if not isinstance(text, str):
        raise ValueError(f"The text must be a string, got {type(text).__name__}.")
    if not text.strip():
        if not allow_empty:
            raise ValueError("The text is empty: give the words to speak.")
        text = ""
    specials = _control_strings(tokenizer)
    found = sorted(s for s in specials if s in text)
    if found:
        raise ValueError(
            f"The text contains the control token(s) {', '.join(found)}, which would change the prompt's "
            "structure; remove them."
        )

    chat = [
        {"role": "user", "content": text},
        {"role": "assistant", "content": SPEECH_TOKEN},
    ]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False, enable_thinking=False)
    ids = tokenizer(rendered, add_special_tokens=False, verbose=False)["input_ids"]
    speech_id = tokenizer.convert_tokens_to_ids(SPEECH_TOKEN)
    try:
        cut = ids.index(speech_id)
    except ValueError:
        raise CheckpointError(
            f"The tokenizer's chat template dropped the {SPEECH_TOKEN} placeholder from the assistant turn; "
            "this is not the Talker-T2AV tokenizer."
        ) from None
    prompt = ids[:cut]
    if len(prompt) > max_length:
        text_tokens = max(1, len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]))
        overhead = max(0, len(prompt) - text_tokens)
        room = max(0, max_length - overhead)
        fits = int(len(text) * room / text_tokens)
        raise ValueError(
            f"The text is too long for one prompt: {len(prompt)} tokens after templating, at most "
            f"{max_length}. Roughly {fits} characters of this text fit (it has {len(text)}); shorten it "
            "or split it into several segments."
        )
    return torch.tensor([prompt], dtype=torch.long)


def _control_strings(tokenizer) -> set[str]:
    out = set(_QWEN_SPECIALS) | set(_PLACEHOLDERS)
    with contextlib.suppress(AttributeError):  # very old tokenizers have no added_tokens_decoder
        out |= {
            t.content if hasattr(t, "content") else str(t)
            for t in tokenizer.added_tokens_decoder.values()
            if getattr(t, "special", True)
        }
    return {s for s in out if s}


# --------------------------------------------------------------------------- debug tokenizer

#: A chat template written for this project that renders the way Qwen3's does for
#: plain user/assistant/system turns: ``<|im_start|>role\\ncontent<|im_end|>\\n``;
#: an assistant turn after the last user turn gets a think block
#: (``<think>\\n\\n</think>\\n\\n`` when it has no reasoning) before its content; the
#: generation prompt gets the empty think block when ``enable_thinking`` is false.
DEBUG_CHAT_TEMPLATE = (
    "{%- set last_user = namespace(i=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set last_user.i = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set body = m['content'] -%}{%- set thought = '' -%}"
    "{%- if '</think>' in body -%}"
    "{%- set thought = body.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}"
    "{%- set body = body.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > last_user.i and (loop.last or thought) -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + thought + '\\n</think>\\n\\n' + body.lstrip('\\n') -}}"
    "{%- else -%}"
    "{{- '<|im_start|>assistant\\n' + body -}}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)


def write_debug_tokenizer(folder: str | os.PathLike, template_file: bool = False) -> Path:
    """Write a tiny deterministic byte-level BPE tokenizer into ``folder``.

    256 byte tokens (ids 0–255, no merges) followed by the Qwen3 control tokens
    (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ``<think>``, ``</think>``)
    and the two placeholders: 263 tokens in all, so it fits the tiny Talker
    vocabulary. Saved as ``tokenizer.json`` + ``tokenizer_config.json`` (with
    :data:`DEBUG_CHAT_TEMPLATE`); loads with :func:`load_tokenizer`. With
    ``template_file`` the template goes to ``chat_template.jinja`` instead (the
    layout newer transformers write).
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    # Order by the byte each printable stand-in character encodes, as GPT-2 style BPE does.
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars, key=_byte_of))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], dropout=None, unk_token=None, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _QWEN_SPECIALS + _PLACEHOLDERS])
    tok.save(str(folder / "tokenizer.json"))

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MAX_PROMPT_TOKENS,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "additional_special_tokens": list(_PLACEHOLDERS),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    if template_file:
        (folder / CHAT_TEMPLATE_FILE).write_text(DEBUG_CHAT_TEMPLATE, encoding="utf-8")
    else:
        config["chat_template"] = DEBUG_CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return folder


def _byte_of(ch: str) -> int:
    # Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256+k.
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    code = ord(ch)
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]
