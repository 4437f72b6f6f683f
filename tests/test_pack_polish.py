"""What a user meets in the browser: help pages, short payload reprs, display names, newer-core
schema features behind capability checks, queue-time refusals, loader lists per component, the
latents loaders' empty state, output file modes and a progress bar that ends full.

Only the nodes' public schema behaviour is used (``GET_SCHEMA``, ``validate_inputs``,
``execute``), in the real ComfyUI named by ``COMFYUI_DIR`` (``tests/comfy_host.py``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
from pathlib import Path

import comfy_host
import pytest
import synthetic
import torch

pytestmark = pytest.mark.comfyui
comfy_host.require()

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "web" / "docs"


def all_nodes():
    nodes = comfy_host.module("nodes")

    return list(nodes.NODES)


def node_ids():
    return [cls.GET_SCHEMA().node_id for cls in all_nodes()]


# ----------------------------------------------------------------------------------------------
# help pages


@pytest.mark.parametrize("cls", all_nodes(), ids=node_ids())
def test_every_node_has_a_help_page_naming_its_inputs_and_outputs(cls):
    schema = cls.GET_SCHEMA()
    page = DOCS / f"{schema.node_id}.md"
    assert page.is_file(), f"no help page web/docs/{schema.node_id}.md (the frontend's node help panel asks for it)"
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# {schema.display_name}\n"), "the page's title is the node's display name"
    for section in ("## Inputs", "## Outputs", "## Example", "## Common mistakes"):
        assert section in text, f"{page.name} has no '{section}' section"
    named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text))
    missing = [i.id for i in schema.inputs if i.id not in named]
    assert not missing, f"{page.name} does not name the input(s) {missing}"
    missing = [o.id for o in schema.outputs or [] if o.id not in named]
    assert not missing, f"{page.name} does not name the output(s) {missing}"


def test_no_help_page_without_a_node():
    assert {p.stem for p in DOCS.glob("*.md")} <= set(node_ids())


# ----------------------------------------------------------------------------------------------
# names and reprs


def test_display_names_do_not_repeat_the_pack_name():
    names = [cls.GET_SCHEMA().display_name for cls in all_nodes()]
    assert all(n and "Talker-T2AV" not in n for n in names), names
    assert len(set(names)) == len(names)


def test_socket_payload_reprs_are_one_short_line():
    from talker_core.types import Identity, MotionCodes, SpeakerReference, SpeechLatents

    speech = SpeechLatents(torch.randn(750, 32))
    payloads = [
        speech,
        MotionCodes(torch.randn(750, 40)),
        SpeakerReference(torch.randn(256), speech),
        Identity(
            z=torch.randn(1, 512),
            feats=[torch.randn(1, 64, 256, 256), torch.randn(1, 128, 128, 128)],
            first_motion=torch.randn(40),
            source=torch.rand(3, 512, 512),
        ),
    ]
    for p in payloads:
        text = repr(p)
        assert "\n" not in text and len(text) < 160, text
        assert "tensor(" not in text, text
        assert text.startswith(type(p).__name__ + "(")
    assert "750 frames" in repr(payloads[0]) and "30.00 s" in repr(payloads[1])


# ----------------------------------------------------------------------------------------------
# newer-core features behind capability checks


def test_schema_features_follow_what_the_core_offers(monkeypatch):
    """On a core whose Schema has search_aliases / has_intermediate_output they are set; else left out."""
    from comfy_api.latest import io

    compat = comfy_host.module("nodes.compat")
    decoders = comfy_host.module("nodes.decoders")
    sampler = comfy_host.module("nodes.sampler")

    # the running core: building every schema works (no TypeError), whatever it offers
    for cls in all_nodes():
        cls.define_schema()
    newer_fields = {"search_aliases", "has_intermediate_output"}
    if not newer_fields <= set(compat._parameters(io.Schema)):

        @dataclasses.dataclass
        class NewerSchema(io.Schema):
            search_aliases: list = dataclasses.field(default_factory=list)
            has_intermediate_output: bool = False

        monkeypatch.setattr(io, "Schema", NewerSchema)
    s = sampler.TalkerSampler.define_schema()
    assert {"talking head", "lip sync", "tts", "voice clone", "dubbing", "avatar"} <= set(s.search_aliases)
    assert s.has_intermediate_output is True
    assert decoders.TalkerRenderVideo.define_schema().has_intermediate_output is True

    class OldSchema:
        def __init__(self, node_id, display_name=None, category="sd", inputs=None, outputs=None, description=""):
            self.node_id = node_id

    monkeypatch.setattr(io, "Schema", OldSchema)
    assert compat.schema_extras(search_aliases=["x"], has_intermediate_output=True) == {}
    assert sampler.TalkerSampler.define_schema().node_id == "TalkerSampler"


def test_advanced_flag_only_where_the_input_takes_it():
    compat = comfy_host.module("nodes.compat")

    class Old:
        def __init__(self, id, default=None, tooltip=None):
            pass

    class New:
        def __init__(self, id, default=None, tooltip=None, advanced=None):
            pass

    assert compat.advanced(Old) == {}
    assert compat.advanced(New) == {"advanced": True}


def test_rarely_changed_sampler_inputs_are_advanced_where_supported():
    from comfy_api.latest import io

    compat = comfy_host.module("nodes.compat")
    TalkerSampler = comfy_host.module("nodes.sampler").TalkerSampler

    inputs = {i.id: i for i in TalkerSampler.define_schema().inputs}
    rare = {"sway", "cfg_zero_star", "stop_threshold", "include_prefix", "segment_prefix_seconds"}
    if compat.advanced(io.Float.Input):
        assert {n for n, i in inputs.items() if getattr(i, "advanced", None)} == rare
    else:  # an older core: no flag, and the inputs are all there
        assert rare <= set(inputs)


# ----------------------------------------------------------------------------------------------
# queue-time refusal of an empty text


@pytest.mark.parametrize(
    ("kwargs", "refused"),
    [
        (dict(text="", speech_only=False), "T2AV needs the words"),
        (dict(text="   \n", speech_only=False), "T2AV needs the words"),
        (dict(text="", speech_only=True), "speech only needs the words"),
        (dict(text="", speech_only=False, forced_speech=None), None),  # linked forced_speech: A2V
        (dict(text="", speech_only=False, forced_motion=None), None),  # linked forced_motion: V2A, checked at run
        (dict(text=None, speech_only=False), None),  # a linked text: its value comes at run time
        (dict(text="Hello.", speech_only=False), None),
    ],
)
def test_sampler_refuses_empty_text_at_queue_time(kwargs, refused):
    TalkerSampler = comfy_host.module("nodes.sampler").TalkerSampler

    result = TalkerSampler.validate_inputs(**kwargs)
    if refused is None:
        assert result is True
    else:
        assert isinstance(result, str) and refused in result


# ----------------------------------------------------------------------------------------------
# loader lists, latents files


@pytest.fixture
def comfy_base(tmp_path, debug_models):
    """A fresh ComfyUI base whose models/talker_t2av holds the debug models plus renamed copies."""
    base = tmp_path / "comfy"
    comfy_host.use_base(base)
    folder = base / "models" / "talker_t2av"
    shutil.copytree(debug_models, folder)
    return base


def test_sniff_kind_reads_the_component_from_the_header(debug_models, tmp_path):
    from safetensors.torch import save_file

    from talker_core.weights.loaders import MODEL_LAYOUT, sniff_kind

    for kind in ("whisperx_vae", "liax", "speaker"):
        src = debug_models / MODEL_LAYOUT[kind]
        renamed = tmp_path / f"renamed_{kind}{src.suffix}"  # the name tells nothing
        shutil.copy(src, renamed)
        assert sniff_kind(src) == kind
        assert sniff_kind(renamed) == kind
    assert sniff_kind(debug_models / MODEL_LAYOUT["talker"] / "model.safetensors") == "talker"
    conv = tmp_path / "conv.safetensors"
    save_file({"layer1.conv.weight": torch.zeros(2)}, str(conv))
    assert sniff_kind(conv) == "speaker"
    mystery = tmp_path / "mystery.pt"
    torch.save({"weight": torch.zeros(2)}, str(mystery))
    assert sniff_kind(mystery) is None
    (tmp_path / "wavlm_base.bin").write_bytes(b"not a checkpoint")
    assert sniff_kind(tmp_path / "wavlm_base.bin") == "speaker"  # by name where the header cannot tell


def test_each_loader_lists_only_its_own_component(comfy_base):
    loaders = comfy_host.module("nodes.loaders")

    folder = comfy_base / "models" / "talker_t2av"
    shutil.copy(folder / "lia-x.pt", folder / "face_copy.pt")
    shutil.copy(folder / "wavlm_large_finetune.pth", folder / "voice_copy.pth")
    torch.save({"weight": torch.zeros(2)}, str(folder / "mystery.pt"))

    def options(cls):
        return next(i for i in cls.define_schema().inputs if i.id == "file").options

    face = options(loaders.TalkerLoadFaceModel)
    speaker = options(loaders.TalkerLoadSpeakerEncoder)
    codec = options(loaders.TalkerLoadCodec)
    assert face[0] == "lia-x.pt" and "face_copy.pt" in face
    assert "wavlm_large_finetune.pth" not in face and "voice_copy.pth" not in face
    assert speaker[0] == "wavlm_large_finetune.pth" and "voice_copy.pth" in speaker
    assert "lia-x.pt" not in speaker and "face_copy.pt" not in speaker
    assert codec[0] == "whisperx-vae/model.ckpt" and not {"lia-x.pt", "face_copy.pt"} & set(codec)
    assert "mystery.pt" in face and "mystery.pt" in speaker  # nothing tells what it is: offered, not hidden


def test_latents_loaders_have_a_sensible_empty_state(comfy_base):
    latents = comfy_host.module("nodes.latents")

    for cls, kind in ((latents.TalkerLoadSpeechLatents, "speech"), (latents.TalkerLoadMotionLatents, "motion")):
        file_input = next(i for i in cls.define_schema().inputs if i.id == "file")
        assert file_input.options == [latents.empty_choice(kind)]
        assert file_input.default == latents.empty_choice(kind)
        message = cls.validate_inputs(file=latents.empty_choice(kind))
        assert isinstance(message, str) and f"Save {kind.capitalize()} Latents" in message


def test_saved_latents_get_the_mode_of_comfyui_outputs(comfy_base):
    import folder_paths

    latents = comfy_host.module("nodes.latents")
    from talker_core.types import MotionCodes

    node = latents.TalkerSaveMotionLatents.PREPARE_CLASS_CLONE({})  # as ComfyUI runs it (no hidden inputs)
    node.execute(motion=MotionCodes(torch.randn(8, 40)), filename_prefix="talker/motion")
    saved = Path(folder_paths.get_output_directory()) / "talker" / "motion_00001_.safetensors"
    reference = Path(folder_paths.get_output_directory()) / "reference.png"
    with open(reference, "wb") as f:  # how ComfyUI (PIL) writes its own outputs: a plain open()
        f.write(b"x")
    assert stat.S_IMODE(os.stat(saved).st_mode) == stat.S_IMODE(os.stat(reference).st_mode)
    options = next(i for i in latents.TalkerLoadMotionLatents.define_schema().inputs if i.id == "file").options
    assert options == ["talker/motion_00001_.safetensors [output]"]


# ----------------------------------------------------------------------------------------------
# progress


def test_progress_ends_at_its_total_when_the_stop_head_ends_early(debug_models):

    from talker_core.pipeline import Hooks, TalkRequest, encode_face, encode_voice, generate
    from talker_core.weights.loaders import load_component

    bundle = load_component("talker", debug_models / "talker-t2av")
    codec = load_component("whisperx_vae", debug_models / "whisperx-vae" / "model.ckpt")
    speaker = load_component("speaker", debug_models / "wavlm_large_finetune.pth")
    liax = synthetic.FastLiaX()
    voice = encode_voice(codec, speaker, synthetic.voice_waveform(2.0, 16000), 16000)
    face = encode_face(liax, synthetic.face_image()[0])
    calls = []
    hooks = Hooks(progress=lambda done, total, stage, preview: calls.append((done, total)))
    # a low stop threshold: the random debug stop head ends the take as soon as it may
    request = TalkRequest(text="Hello there.", mode="t2av", max_seconds=4.0, stop_threshold=0.01)
    result = generate(bundle, request, voice=voice, face=face, hooks=hooks)
    assert calls, "no progress was reported"
    done, total = calls[-1]
    assert done == total, f"the bar ends at {done}/{total}"
    assert result.generated_seconds < 4.0, "the stop head did not end the take early: the test proves nothing"
    assert all(d <= t for d, t in calls)


# ----------------------------------------------------------------------------------------------
# templates

TEMPLATES = sorted((ROOT / "example_workflows").glob("*.json"))
TITLE_BAR = 30  # LiteGraph draws the title above a node's pos
# Height a node can reach once the frontend has loaded its preview or our report (its saved size
# is what it has before): a portrait image/clip previewed 300 px wide, an MP4 player, the report
# widget (summary line 26 px; the sampler's plot 146 px more).
GROWN_HEIGHT = {
    "LoadImage": 540,
    "LoadVideo": 640,
    "LoadAudio": 200,
    "SaveVideo": 700,
    "TalkerRenderVideoFile": 730,  # the MP4 player, as Save Video's, and the summary line
    "SaveAudio": 200,
    "TalkerSampler": 800,
    "TalkerRenderVideo": 160,
    "TalkerSaveSpeechLatents": 120,
    "TalkerSaveMotionLatents": 120,
}


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_template_nodes_do_not_overlap_once_previews_load(path):
    import json

    nodes = json.loads(path.read_text())["nodes"]

    def box(n):
        (x, y), (w, h) = n["pos"], n["size"]
        return x, y - TITLE_BAR, x + w, y + max(h, GROWN_HEIGHT.get(n["type"], 0))

    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box(a), box(b)
            overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
            assert not overlap, f"{path.name}: {a['type']} (node {a['id']}) and {b['type']} (node {b['id']}) overlap"


def test_template_thumbnails_tell_apart():
    import numpy as np
    from PIL import Image

    thumbs = {p.stem: np.asarray(Image.open(p.with_suffix(".jpg")).convert("RGB"), dtype=np.float32) for p in TEMPLATES}
    names = sorted(thumbs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            diff = float(np.abs(thumbs[a] - thumbs[b]).mean())
            assert diff > 25, f"the thumbnails of {a} and {b} look alike (mean difference {diff:.1f} of 255)"


def test_the_speech_only_note_speaks_of_speech_only():
    import json

    nodes = json.loads((ROOT / "example_workflows" / "5 Speech only.json").read_text())["nodes"]
    note = next(n for n in nodes if n["type"] in ("MarkdownNote", "Note"))["widgets_values"][0].lower()
    for word in ("lip", "head", "lia-x"):
        assert word not in note, f"the speech-only note mentions {word!r}"
    assert "voice" in note and "speech" in note


def test_blueprint_is_the_t2av_template_as_one_node():
    """subgraphs/…json is what scripts/make_blueprint.py builds from the current talker_t2av template."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("make_blueprint", ROOT / "scripts" / "make_blueprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build(json.loads(module.TEMPLATE.read_text()))
    assert json.loads(module.OUT.read_text()) == built, "rerun python scripts/make_blueprint.py"
    sg = built["definitions"]["subgraphs"][0]
    assert built["nodes"][0]["type"] == sg["id"]
    types = [n["type"] for n in sg["nodes"]]
    assert "TalkerSampler" in types and "CreateVideo" in types and "SaveVideo" not in types
    assert [(i["name"], i["type"]) for i in sg["inputs"]] == [("voice", "AUDIO"), ("face", "IMAGE")]
    assert [(o["name"], o["type"]) for o in sg["outputs"]] == [("video", "VIDEO")]
    ids = {n["id"] for n in sg["nodes"]} | {-10, -20}
    for link in sg["links"]:
        assert link["origin_id"] in ids and link["target_id"] in ids, link
