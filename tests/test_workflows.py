"""The example workflows: UI files match the node schemas, API files match the UI files, and the
API graphs pass ComfyUI's own validation and run through its own executor (our nodes on the debug
models, ComfyUI's core nodes as they are), in the real ComfyUI named by ``COMFYUI_DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path

import comfy_host
import pytest
import synthetic

pytestmark = pytest.mark.comfyui
comfy_host.require()

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "example_workflows"
API_DIR = ROOT / "workflows_api"
UI_FILES = sorted(UI_DIR.glob("*.json"))
FRONTEND_ONLY = {"MarkdownNote", "Note"}  # UI notes: never sent to the server
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
EXPECTED = {
    "1 Text to talking video",
    "6 Style from a reference prefix",
    "3 Audio to talking video",
    "4 Dub a silent clip",
    "5 Speech only",
    "2 Long video to a file",
    "7 Paste the face back into a photo",
    "8 Two-person dialogue",
}
WIDGET_TYPES = comfy_host.WIDGET_TYPES
# The browser's part (fake): widgets the frontend adds after a combo that has an upload flag;
# they are saved in widgets_values but never sent to the server.
UPLOAD_WIDGETS = {"image_upload": ["upload"], "audio_upload": ["audioUI", "upload"], "video_upload": ["upload"]}


def newer_core_widgets(ntype: str, names: list[str], widgets: dict, values: list) -> list[str]:
    """The trailing widgets of a core node that the saved file has no value for: a newer core gained
    them (0.28: Create Video's ``bit_depth``). The frontend gives each its default on load and sends
    it (tests/test_browser_report.py checks that in the real frontend), so each needs a default. Our
    own nodes get no such slack: a template must carry every one of their widgets."""
    if ntype in ours():
        return []
    missing = names[len(values) :]
    for name in missing:
        assert name in widgets and "default" in widgets[name][1], f"{ntype}.{name}: the frontend would have no value"
    return missing


def ours() -> dict[str, type]:
    return {cls.GET_SCHEMA().node_id: cls for cls in comfy_host.module("nodes").NODES}


def input_spec(cls) -> dict[str, tuple[str, dict, bool]]:
    """name → (io type, options, optional) from the class's INPUT_TYPES; a list type is a combo."""
    info = cls.INPUT_TYPES()
    out = {}
    for category in ("required", "optional"):
        for name, (io_type, *rest) in info.get(category, {}).items():
            opts = dict(rest[0]) if rest else {}
            if isinstance(io_type, list):
                io_type, opts = "COMBO", {**opts, "options": io_type}
            out[name] = (io_type, opts, category == "optional")
    return out


def layout(ntype: str):
    """(sockets [(name, type, optional)] in UI order, {widget: (type, options)}, UI widget names, output types)."""
    cls = comfy_host.node_classes()[ntype]
    spec = input_spec(cls)
    sockets = [(n, t, opt) for n, (t, o, opt) in spec.items() if t not in WIDGET_TYPES]
    sockets = [s for s in sockets if not s[2]] + [s for s in sockets if s[2]]
    widgets = {n: (t, o) for n, (t, o, opt) in spec.items() if t in WIDGET_TYPES}
    names = []
    for n, (_t, o) in widgets.items():
        names.append(n)
        if o.get("control_after_generate"):
            names.append("control_after_generate")
        for flag, extra in UPLOAD_WIDGETS.items():
            if o.get(flag):
                names.extend(extra)
    return sockets, widgets, names, list(cls.RETURN_TYPES)


def load_ui(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_six_examples_exist_with_thumbnails():
    assert {p.stem for p in UI_FILES} == EXPECTED
    assert {p.stem for p in API_DIR.glob("*.json")} == EXPECTED
    from PIL import Image

    for p in UI_FILES:
        thumb = p.with_suffix(".jpg")
        assert thumb.is_file(), f"{p.name} has no thumbnail"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and 128 <= im.width <= 1024 and 72 <= im.height <= 1024
        assert thumb.stat().st_size < 200_000


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_ui_workflow_matches_the_schemas(path):
    wf = load_ui(path)
    assert wf["version"] == 0.4 and isinstance(wf["nodes"], list) and isinstance(wf["links"], list)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max((link[0] for link in wf["links"]), default=0)
    for node in wf["nodes"]:
        ntype = node["type"]
        if ntype in FRONTEND_ONLY:
            assert isinstance(node["widgets_values"][0], str)
            continue
        assert ntype in comfy_host.node_classes(), f"unknown node type {ntype}"
        sockets, widgets, names, outputs = layout(ntype)
        where = f"{path.name}: node {node['id']} ({ntype})"
        # widgets_values: one value per UI widget, in order, each valid for its widget
        values = node["widgets_values"]
        newer = newer_core_widgets(ntype, names, widgets, values)
        assert len(values) + len(newer) == len(names), f"{where}: {len(values)} widget values for {names}"
        for name, value in zip(names, values, strict=False):
            if name == "control_after_generate":
                assert value in CONTROL_VALUES, f"{where}: {value!r}"
            elif name == "upload":
                assert value in ("image", None)
            elif name == "audioUI":
                assert value is None
            else:  # the values themselves: ComfyUI's validation of the API files (equal to these)
                assert name in widgets, f"{where}: {name}"
        # inputs: every socket in schema order (required first), then linked widgets
        entries = node["inputs"]
        assert [(e["name"], e["type"]) for e in entries[: len(sockets)]] == [(n, t) for n, t, _ in sockets], where
        for e, (n, _t, optional) in zip(entries, sockets, strict=False):
            assert (e.get("shape") == 7) == optional, f"{where}: optional flag of {n}"
            if not optional:
                assert e["link"] is not None, f"{where}: required input {n} is not connected"
        for e in entries[len(sockets) :]:
            assert e["widget"]["name"] == e["name"] and e["name"] in widgets and e["link"] is not None, where
            assert e["type"] == widgets[e["name"]][0]
        # a newer core may add outputs at the end (0.28: Save Video's VIDEO, Save Audio's AUDIO, Get Video
        # Components' INT); the frontend appends them on load (checked in tests/test_browser_report.py)
        saved_outputs = [o["type"] for o in node["outputs"]]
        if ntype in ours():
            assert saved_outputs == outputs, where
        else:
            assert saved_outputs == outputs[: len(saved_outputs)], where
    # links join matching types and are recorded at both ends
    for link_id, src, src_slot, dst, dst_slot, ltype in wf["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert out["type"] == inp["type"] == ltype, f"{path.name}: link {link_id} {out['type']}→{inp['type']}"
        assert link_id in out["links"] and inp["link"] == link_id
    linked = {link[0] for link in wf["links"]}
    for node in wf["nodes"]:
        for o in node["outputs"]:
            assert set(o["links"] or []) <= linked
        for e in node["inputs"]:
            assert e["link"] is None or e["link"] in linked


def api_of(path: Path) -> dict:
    return json.loads((API_DIR / path.name).read_text())


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_api_workflow_is_the_same_graph(path):
    wf = load_ui(path)
    api = api_of(path)
    nodes = {n["id"]: n for n in wf["nodes"] if n["type"] not in FRONTEND_ONLY}
    assert set(api) == {str(i) for i in nodes}
    links = {link[0]: link for link in wf["links"]}
    for nid, node in nodes.items():
        entry = api[str(nid)]
        assert entry["class_type"] == node["type"]
        sockets, widgets, names, _ = layout(node["type"])
        expected = {}
        for e in node["inputs"]:
            if e["link"] is not None:
                _, src, slot, *_ = links[e["link"]]
                expected[e["name"]] = [str(src), slot]
        # a widget a newer core added (no saved value) is not in the API file: the server fills its default
        for name, value in zip(names, node["widgets_values"], strict=False):
            if name in widgets and name not in expected:
                expected[name] = value
        assert entry["inputs"] == expected, f"{path.name}: node {nid}"


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_api_workflow_passes_comfyui_validation(path, comfy):
    """ComfyUI's own /prompt validation: required inputs present, linked types equal, widget values in
    range and in their lists (the input files and models exist), and the nodes' validate_inputs."""
    api = api_of(path)
    for nid, entry in api.items():
        sockets, widgets, _, _ = layout(entry["class_type"])
        known = {n for n, _, _ in sockets} | set(widgets)
        assert set(entry["inputs"]) <= known, f"{path.name}: {nid}: {set(entry['inputs']) - known}"
    valid, error, outputs, node_errors = comfy_host.validate_prompt(api)
    assert valid, (error, node_errors)
    assert outputs and not node_errors


# ----------------------------------------------------------------------------------------------
# running the API graphs in process


# Small lengths so that every graph runs in seconds on the debug models.
SHORT = {
    "TalkerSampler": {"max_seconds": 0.32},
    "TalkerEncodeMotion": {"max_seconds": 0.4},
    "TalkerDialogue": {"max_seconds": 0.16, "steps": 2, "script": "A: Hello.\nB: Hi."},
}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, debug_models):
    base = tmp_path_factory.mktemp("wf_base")
    comfy_host.use_base(base)
    (base / "models" / "talker_t2av").symlink_to(debug_models, target_is_directory=True)
    synthetic.write_inputs(base / "input")
    return base


@pytest.fixture
def fast_liax(monkeypatch):
    """LIA-X's interface at a fraction of its cost: the debug LIA-X renders a frame in seconds or more."""
    import talker_core.weights.loaders

    monkeypatch.setattr(talker_core.weights.loaders, "load_liax", lambda path, device, dtype: synthetic.FastLiaX())


def read_media(path: Path) -> dict:
    import av

    with av.open(str(path)) as f:
        info = {"duration": float(f.duration) / 1e6 if f.duration else None, "video": None, "audio": None}
        if f.streams.video:
            v = f.streams.video[0]
            info["video"] = (v.codec_context.width, v.codec_context.height, sum(1 for _ in f.decode(v)))
    with av.open(str(path)) as f:
        if f.streams.audio:
            a = f.streams.audio[0]
            info["audio"] = (a.codec_context.sample_rate, sum(fr.samples for fr in f.decode(a)))
    return info


def saved_files(base: Path, suffix: str) -> set[Path]:
    return set((base / "output").rglob("*" + suffix))


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
@pytest.mark.slow
def test_api_workflow_runs(path, comfy, fast_liax):
    api = api_of(path)
    for e in api.values():
        e["inputs"].update(SHORT.get(e["class_type"], {}))
        if e["class_type"] == "TalkerSampler" and e["inputs"]["prefix_seconds"] > 0:
            e["inputs"]["prefix_seconds"] = 0.16  # within the shortened reference clip
    before = {s: saved_files(comfy, s) for s in (".mp4", ".flac")}
    executor = comfy_host.execute_prompt(api, {"extra_pnginfo": {"workflow": load_ui(path)}})
    new = {s: sorted(saved_files(comfy, s) - before[s]) for s in before}
    ui_of = executor.history_result["outputs"]
    dialogues = [nid for nid, e in api.items() if e["class_type"] == "TalkerDialogue"]
    if dialogues:  # a conversation: every speaker side by side (or cuts), one audio track, written by the node
        (nid,) = dialogues
        video, audio = comfy_host.cached_outputs(executor, nid)
        speakers = sum(1 for k in api[nid]["inputs"] if k.startswith("voice_"))
        width = 512 * speakers if api[nid]["inputs"]["layout"] == "side_by_side" else 512
        written = Path(video.get_stream_source())
        info = read_media(written)
        frames = info["video"][2]
        assert info["video"] == (width, 512, frames) and info["audio"] is not None and frames >= 4
        assert audio["waveform"].shape[-1] == frames * 960
        assert new[".mp4"] == [written]  # the node's own file, which it previews (no Save Video copy)
        return
    samplers = [nid for nid, e in api.items() if e["class_type"] == "TalkerSampler"]
    assert len(samplers) == 1
    speech, motion = comfy_host.cached_outputs(executor, samplers[0])
    ui = ui_of[samplers[0]]
    assert ui["text"][0] and json.dumps(ui)
    if api[samplers[0]]["inputs"]["speech_only"]:
        assert motion is None
        assert len(new[".flac"]) == 1 and not new[".mp4"]
        info = read_media(new[".flac"][0])
        assert info["audio"] == (24000, speech.frames * 960)
        return
    assert motion.frames == speech.frames
    # one MP4 per node that writes one: Save Video, and the nodes that render straight into a file and
    # preview it (Paste Back Video File, Render Video File), which have no Save Video after them
    streamed = [nid for nid, e in api.items() if e["class_type"] in ("TalkerPasteBackVideo", "TalkerRenderVideoFile")]
    save_video = [nid for nid, e in api.items() if e["class_type"] == "SaveVideo"]
    assert len(new[".mp4"]) == len(save_video) + len(streamed) == 1, new[".mp4"]
    for nid in streamed:
        (video,) = comfy_host.cached_outputs(executor, nid)
        assert Path(video.get_stream_source()) in new[".mp4"]
        assert ui_of[nid]["text"][0].startswith("wrote ")
    saved = new[".mp4"]
    info = read_media(saved[0])
    assert info["video"] is not None and info["audio"] is not None
    if path.stem == "7 Paste the face back into a photo":  # the photo's own size
        from synthetic import PORTRAIT

        assert info["video"][:2] == PORTRAIT and info["video"][2] == motion.frames
    elif path.stem != "4 Dub a silent clip":  # v2a lays the speech over the source clip's own frames
        assert info["video"][:2] == (512, 512)
        assert info["video"][2] == motion.frames
    for nid, e in api.items():
        if e["class_type"] in ("TalkerSaveSpeechLatents", "TalkerSaveMotionLatents"):
            assert "saved " in ui_of[nid]["text"][0]
