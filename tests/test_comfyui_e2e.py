"""End to end in a real ComfyUI: load the pack, queue every API workflow over HTTP, check the files.

Runs when ``COMFYUI_DIR`` names a ComfyUI checkout (CI: the ComfyUI 0.3.75 that
``scripts/get_comfyui.sh`` fetches, see scripts/test.sh); ``COMFYUI_PYTHON`` names the
Python that has ComfyUI's requirements and this pack's (default: the interpreter running
the tests). ComfyUI is started on the
CPU on a free loopback port with ``--base-directory`` in a temporary folder, whose
``custom_nodes`` links to this checkout and whose ``models/talker_t2av`` holds the debug
models; inputs are uploaded, each workflow is queued with ``scripts/queue_workflow.py``'s
functions (lengths shortened for the CPU), and the outputs are downloaded and checked with
PyAV: streams, sizes, durations, and the ``prompt``/``workflow`` metadata of saved MP4s.

    eval "$(bash scripts/get_comfyui.sh)"   # or set both to another ComfyUI and its Python
    "$COMFYUI_PYTHON" -m pytest -q tests/test_comfyui_e2e.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
WORKFLOWS = sorted((ROOT / "workflows_api").glob("*.json"))
OUR_NODES = {
    "TalkerLoadModel",
    "TalkerLoadCodec",
    "TalkerLoadFaceModel",
    "TalkerLoadSpeakerEncoder",
    "TalkerEncodeVoice",
    "TalkerEncodeSpeech",
    "TalkerEncodeFace",
    "TalkerEncodeMotion",
    "TalkerSampler",
    "TalkerDecodeSpeech",
    "TalkerRenderVideo",
    "TalkerRenderVideoFile",
    "TalkerPasteBackVideo",
    "TalkerSaveSpeechLatents",
    "TalkerSaveMotionLatents",
    "TalkerLoadSpeechLatents",
    "TalkerLoadMotionLatents",
}
START_TIMEOUT = float(os.environ.get("COMFYUI_START_TIMEOUT", 600))
RUN_TIMEOUT = float(os.environ.get("COMFYUI_RUN_TIMEOUT", 1800))

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.slow,
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no ComfyUI checkout to run the pack in"),
]

# Shorter takes for the CPU (the debug LIA-X renders a 512×512 frame in seconds): node type → inputs.
SHORT = {
    "TalkerSampler": {"max_seconds": 0.16},
    "TalkerEncodeMotion": {"max_seconds": 0.2},
    "TalkerEncodeSpeech": {"max_seconds": 0.52},  # the encoder wants at least 0.5 s
    "TalkerDialogue": {"max_seconds": 0.16, "steps": 2, "script": "A: Hello.\nB: Hi."},
}


def queue_module():
    spec = importlib.util.spec_from_file_location("queue_workflow", ROOT / "scripts" / "queue_workflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory, debug_models):
    """A running ComfyUI with the pack installed; yields (server URL, log path, base folder)."""
    comfy_dir = Path(COMFYUI_DIR).resolve()
    if not (comfy_dir / "main.py").is_file():
        pytest.fail(f"COMFYUI_DIR={COMFYUI_DIR} is not a ComfyUI checkout (no main.py)")
    base = tmp_path_factory.mktemp("comfyui_base")
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir()
    (base / "custom_nodes" / "ComfyUI-Talker-T2AV").symlink_to(ROOT, target_is_directory=True)
    (base / "models" / "talker_t2av").symlink_to(debug_models, target_is_directory=True)
    port = free_port()
    log_path = base / "comfyui.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in the finally below, after the server stops
    proc = subprocess.Popen(
        [PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base)]
        + os.environ.get("COMFYUI_ARGS", "").split(),  # e.g. --front-end-root DIR to try another frontend
        cwd=comfy_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                urllib.request.urlopen(server + "/system_stats", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT:.0f} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(2)
        yield server, log_path, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_pack_loads_without_import_errors(comfyui):
    server, log_path, _ = comfyui
    log = log_path.read_text()
    pack_lines = [line for line in log.splitlines() if "Talker-T2AV" in line]
    assert not [line for line in pack_lines if "IMPORT FAILED" in line], log[-4000:]
    assert "Cannot import" not in log and "Error while calling comfy_entrypoint" not in log, log[-4000:]
    info = json.loads(urllib.request.urlopen(server + "/object_info", timeout=60).read())
    assert set(info) >= OUR_NODES, sorted(OUR_NODES - set(info))
    model = info["TalkerLoadModel"]["input"]["required"]["model_folder"]
    assert "talker-t2av" in model[1]["options"]
    assert info["TalkerSampler"]["output"] == ["TALKER_SPEECH", "TALKER_MOTION"]
    assert info["TalkerRenderVideo"]["output"] == ["IMAGE", "FLOAT"]
    assert info["TalkerRenderVideoFile"]["output"] == ["VIDEO"]  # the core type, from comfy_api's InputImpl
    stats = json.loads(urllib.request.urlopen(server + "/system_stats", timeout=30).read())
    print("ComfyUI", stats["system"].get("comfyui_version"), "python", stats["system"].get("python_version"))


@pytest.fixture(scope="module")
def uploaded(comfyui, tmp_path_factory):
    """Write the example inputs and upload them through ComfyUI's /upload/image."""
    sys.path.insert(0, str(ROOT / "tests"))
    import synthetic

    server, _, base = comfyui
    folder = tmp_path_factory.mktemp("e2e_inputs")
    files = synthetic.write_inputs(folder)
    q = queue_module()
    names = {name: q.upload(server, path, name) for name, path in files.items()}
    assert names == {name: name for name in files}
    for name in files:
        assert (base / "input" / name).is_file()
    return names


def probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as f:
        info = {"metadata": dict(f.metadata), "video": None, "audio": None}
        for stream in f.streams:
            if stream.type == "video":
                frames = sum(1 for _ in f.decode(stream))
                info["video"] = {
                    "codec": stream.codec_context.name,
                    "size": (stream.width, stream.height),
                    "frames": frames,
                    "fps": float(stream.average_rate or 0),
                }
    with av.open(str(path)) as f:
        if f.streams.audio:
            a = f.streams.audio[0]
            samples = sum(fr.samples for fr in f.decode(a))
            info["audio"] = {
                "codec": a.codec_context.name,
                "rate": a.codec_context.sample_rate,
                "seconds": samples / a.codec_context.sample_rate,
            }
    return info


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_in_comfyui(path, comfyui, uploaded, tmp_path):
    server, log_path, _ = comfyui
    q = queue_module()
    prompt = json.loads(path.read_text())
    for node in prompt.values():
        node["inputs"].update(SHORT.get(node["class_type"], {}))
        if node["class_type"] == "TalkerSampler" and node["inputs"]["prefix_seconds"] > 0:
            node["inputs"]["prefix_seconds"] = 0.16
    workflow = json.loads((ROOT / "example_workflows" / path.name).read_text())
    started = time.monotonic()
    prompt_id = q.queue(server, prompt, workflow, uuid.uuid4().hex)
    entry = q.wait(server, prompt_id, RUN_TIMEOUT, poll=2.0)
    status = entry["status"]
    errors = [m for m in status.get("messages", []) if m[0] in ("execution_error", "execution_interrupted")]
    assert status["status_str"] == "success", f"{errors}\n{log_path.read_text()[-4000:]}"
    print(f"{path.stem}: {time.monotonic() - started:.1f} s")

    dialogue = next((nid for nid, n in prompt.items() if n["class_type"] == "TalkerDialogue"), None)
    if dialogue is not None:  # no sampler: one conversation, both speakers side by side
        files = [
            q.download(server, item, tmp_path)
            for outputs in entry["outputs"].values()
            for item in outputs.get("images", [])
        ]
        assert len(files) == 1, entry["outputs"]  # the node's own MP4, which it previews (no Save Video copy)
        info = probe(files[0])
        assert info["video"]["codec"] == "h264" and info["audio"] is not None and info["audio"]["codec"] == "aac"
        assert info["video"]["size"] == (1024, 512) and info["video"]["frames"] >= 4
        assert json.loads(info["metadata"]["prompt"])[dialogue]["class_type"] == "TalkerDialogue"
        assert json.loads(info["metadata"]["workflow"])["nodes"]
        return
    sampler = next(nid for nid, n in prompt.items() if n["class_type"] == "TalkerSampler")
    summary = entry["outputs"][sampler]["text"][0]
    assert "generated" in summary and "RTF" in summary
    assert entry["outputs"][sampler]["talker_plot"][0]["series"]
    files = []
    for node_id, outputs in entry["outputs"].items():
        for key in ("images", "audio"):
            for item in outputs.get(key, []):
                files.append((prompt[node_id]["class_type"], q.download(server, item, tmp_path)))
    kinds = [k for k, _ in files]
    if path.stem == "5 Speech only":
        assert kinds == ["SaveAudio"]
        info = probe(files[0][1])
        assert info["video"] is None and info["audio"]["rate"] == 24000 and info["audio"]["seconds"] > 0
        return
    # every node of the workflow that writes an MP4 gave one: Save Video, and the nodes that render straight
    # into a file and preview it (Paste Back Video File in the paste-back workflow, Render Video File in the
    # long-form one; neither has a Save Video after it); the file checked is Save Video's where there is one
    writers = sorted(
        n["class_type"]
        for n in prompt.values()
        if n["class_type"] in ("SaveVideo", "TalkerPasteBackVideo", "TalkerRenderVideoFile")
    )
    assert writers and sorted(kinds) == writers, files
    info = probe(next(f for k, f in files if k == ("SaveVideo" if "SaveVideo" in writers else writers[0])))
    video, audio = info["video"], info["audio"]
    assert video["codec"] == "h264" and audio is not None and audio["codec"] == "aac"
    assert json.loads(info["metadata"]["prompt"])[sampler]["class_type"] == "TalkerSampler"
    assert json.loads(info["metadata"]["workflow"])["nodes"]
    if path.stem == "7 Paste the face back into a photo":  # the photo's own size
        from synthetic import PORTRAIT

        assert video["size"] == PORTRAIT and video["frames"] >= 4
    elif path.stem == "4 Dub a silent clip":  # the source clip's frames with the new speech
        assert video["size"] == (224, 256) and video["frames"] == 24
    else:
        assert video["size"] == (512, 512) and round(video["fps"]) == 25 and video["frames"] >= 4
        assert abs(audio["seconds"] - video["frames"] / 25) < 0.15
