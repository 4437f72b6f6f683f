"""The example workflows: UI files match the node schemas, API files match the UI files, and the
API graphs run in process (our nodes on the debug models, small stand-ins for the core nodes).
"""

from __future__ import annotations

import json
from pathlib import Path

import comfy_stubs
import pytest

comfy_stubs.activate()

from comfy_stubs import harness  # noqa: E402
from comfy_stubs.harness import CORE_NODES, WIDGET_TYPES, check_widget, input_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UI_DIR = ROOT / "example_workflows"
API_DIR = ROOT / "workflows_api"
UI_FILES = sorted(UI_DIR.glob("*.json"))
FRONTEND_ONLY = {"MarkdownNote", "Note"}  # UI notes: never sent to the server
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
EXPECTED = {"talker_t2av", "talker_style_prefix", "talker_a2v", "talker_v2a", "talker_speech_only", "talker_long_form"}


def ours() -> dict[str, type]:
    import nodes

    return {cls.GET_SCHEMA().node_id: cls for cls in nodes.NODES}


def layout(ntype: str):
    """(sockets [(name, type, optional)] in UI order, {widget: (type, options)}, UI widget names, output types)."""
    if ntype in ours():
        cls = ours()[ntype]
        spec = input_spec(cls)
        sockets = [(n, t, opt) for n, (t, o, opt) in spec.items() if t not in WIDGET_TYPES]
        sockets = [s for s in sockets if not s[2]] + [s for s in sockets if s[2]]
        widgets = {n: (t, o) for n, (t, o, opt) in spec.items() if t in WIDGET_TYPES}
        names = []
        for n, (_t, o) in widgets.items():
            names.append(n)
            if o.get("control_after_generate"):
                names.append("control_after_generate")
        return sockets, widgets, names, [o.io_type for o in cls.GET_SCHEMA().outputs or []]
    core = CORE_NODES[ntype]
    sockets = [(n, t, bool(o.get("optional"))) for n, t, o in core.INPUTS if t not in WIDGET_TYPES]
    sockets = [s for s in sockets if not s[2]] + [s for s in sockets if s[2]]
    widgets = {n: (t, o) for n, t, o in core.INPUTS if t in WIDGET_TYPES}
    return sockets, widgets, core.UI_WIDGETS, core.OUTPUTS


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
        assert ntype in ours() or ntype in CORE_NODES, f"unknown node type {ntype}"
        sockets, widgets, names, outputs = layout(ntype)
        where = f"{path.name}: node {node['id']} ({ntype})"
        # widgets_values: one value per UI widget, in order, each valid for its widget
        values = node["widgets_values"]
        assert len(values) == len(names), f"{where}: {len(values)} widget values for {names}"
        for name, value in zip(names, values, strict=True):
            if name == "control_after_generate":
                assert value in CONTROL_VALUES, f"{where}: {value!r}"
            elif name == "upload":
                assert value in ("image", None)
            elif name == "audioUI":
                assert value is None
            else:
                io_type, opts = widgets[name]
                if io_type == "COMBO" and ntype in CORE_NODES:
                    assert isinstance(value, str) and value, f"{where}: {name}"
                else:
                    check_widget(ntype, name, io_type, opts, value)
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
        assert [o["type"] for o in node["outputs"]] == outputs, where
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
        for name, value in zip(names, node["widgets_values"], strict=True):
            if name in widgets and name not in expected:
                expected[name] = value
        assert entry["inputs"] == expected, f"{path.name}: node {nid}"


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_api_workflow_passes_comfyui_validation(path):
    """ComfyUI's /prompt checks: required inputs present, linked types equal, widget values in range."""
    api = api_of(path)
    for nid, entry in api.items():
        ntype = entry["class_type"]
        sockets, widgets, names, _ = layout(ntype)
        for name, _t, optional in sockets:
            if not optional:
                assert name in entry["inputs"], f"{path.name}: {nid}.{name} missing"
        for name, (_t, opts) in widgets.items():
            if not opts.get("optional"):
                assert name in entry["inputs"], f"{path.name}: {nid}.{name} missing"
        types = {n: t for n, t, _ in sockets} | {n: t for n, (t, _) in widgets.items()}
        for name, value in entry["inputs"].items():
            assert name in types, f"{path.name}: {nid}.{name} is not an input of {ntype}"
            if isinstance(value, list):
                src = api[value[0]]["class_type"]
                assert layout(src)[3][value[1]] == types[name], f"{path.name}: {nid}.{name}"
            elif ntype in ours():
                check_widget(ntype, name, types[name], widgets[name][1], value)


# ----------------------------------------------------------------------------------------------
# running the API graphs in process


# Small lengths so that every graph runs in seconds on the debug models.
SHORT = {"TalkerSampler": {"max_seconds": 0.32}, "TalkerEncodeMotion": {"max_seconds": 0.4}}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, debug_models):
    base = tmp_path_factory.mktemp("wf_base")
    comfy_stubs.reset_dirs(base)
    (base / "models" / "talker_t2av").symlink_to(debug_models, target_is_directory=True)
    harness.write_inputs(base / "input")
    return base


@pytest.fixture
def fast_liax(monkeypatch):
    """LIA-X's interface at a fraction of its cost: the debug LIA-X renders a frame in seconds or more."""
    import talker_core.weights.loaders

    monkeypatch.setattr(talker_core.weights.loaders, "load_liax", lambda path, device, dtype: harness.FastLiaX())


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


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
@pytest.mark.slow
def test_api_workflow_runs(path, comfy, fast_liax):
    api = api_of(path)
    overrides = {nid: dict(SHORT[e["class_type"]]) for nid, e in api.items() if e["class_type"] in SHORT}
    for nid, e in api.items():
        if e["class_type"] == "TalkerSampler" and e["inputs"]["prefix_seconds"] > 0:
            overrides[nid]["prefix_seconds"] = 0.16  # within the shortened reference clip
    harness.SaveVideo.saved.clear()
    harness.SaveAudio.saved.clear()
    results = harness.execute_prompt(
        api, ours(), overrides=overrides, hidden={"EXTRA_PNGINFO": {"workflow": load_ui(path)}}
    )
    samplers = [nid for nid, e in api.items() if e["class_type"] == "TalkerSampler"]
    assert len(samplers) == 1
    speech, motion = results[samplers[0]]
    ui = results[samplers[0] + ":ui"]
    assert ui["text"][0] and json.dumps(ui)
    if api[samplers[0]]["inputs"]["speech_only"]:
        assert motion is None
        assert len(harness.SaveAudio.saved) == 1
        info = read_media(harness.SaveAudio.saved[0])
        assert info["audio"] == (24000, speech.frames * 960)
        return
    assert motion.frames == speech.frames
    assert len(harness.SaveVideo.saved) == 1
    info = read_media(harness.SaveVideo.saved[0])
    assert info["video"] is not None and info["audio"] is not None
    if path.stem != "talker_v2a":  # v2a lays the speech over the source clip's own frames
        assert info["video"][:2] == (512, 512)
        assert info["video"][2] == motion.frames
    for nid, e in api.items():
        if e["class_type"] in ("TalkerSaveSpeechLatents", "TalkerSaveMotionLatents"):
            assert "saved " in results[nid + ":ui"]["text"][0]
