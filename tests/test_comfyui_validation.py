"""In a real ComfyUI: an empty text is refused when the prompt is queued (T2AV), not after the models
ran, while audio-driven video (text optional, forced_speech linked) is accepted. Runs when
``COMFYUI_DIR`` is set; shares the server of tests/test_comfyui_e2e.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from test_comfyui_e2e import COMFYUI_DIR, comfyui, uploaded  # noqa: F401  (shared fixtures)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no ComfyUI checkout to run the pack in"),
]


def post_prompt(server: str, prompt: dict) -> tuple[int, dict]:
    body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
    req = urllib.request.Request(server + "/prompt", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def sampler_of(prompt: dict) -> str:
    return next(nid for nid, n in prompt.items() if n["class_type"] == "TalkerSampler")


def test_empty_t2av_text_is_refused_at_queue_time(comfyui, uploaded):  # noqa: F811
    server, _, _ = comfyui
    prompt = json.loads((ROOT / "workflows_api" / "1 Text to talking video.json").read_text())
    sampler = sampler_of(prompt)
    prompt[sampler]["inputs"]["text"] = "   "
    status, reply = post_prompt(server, prompt)
    assert status == 400, reply
    errors = json.dumps(reply["node_errors"][sampler])
    assert "text is empty: T2AV needs the words to speak" in errors


def test_empty_text_with_forced_speech_is_accepted(comfyui, uploaded):  # noqa: F811
    server, _, _ = comfyui
    prompt = json.loads((ROOT / "workflows_api" / "3 Audio to talking video.json").read_text())
    assert prompt[sampler_of(prompt)]["inputs"]["text"] == ""
    status, reply = post_prompt(server, prompt)
    try:
        assert status == 200 and not reply.get("node_errors"), reply
    finally:  # only validation is under test: drop the run
        urllib.request.urlopen(urllib.request.Request(server + "/interrupt", b"", method="POST"), timeout=30)
        clear = json.dumps({"clear": True}).encode()
        urllib.request.urlopen(
            urllib.request.Request(server + "/queue", clear, {"Content-Type": "application/json"}), timeout=30
        )
