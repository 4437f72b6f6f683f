"""The ComfyUI nodes, run on the tiny debug models inside the real ComfyUI named by ``COMFYUI_DIR``.

Each node is validated and executed by ComfyUI's own ``execution`` functions (schema checks,
``validate_inputs``, class clone, inference mode): see ``tests/comfy_host.py``. Without
``COMFYUI_DIR`` these tests are skipped with a hint (``scripts/get_comfyui.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import comfy_host
import numpy as np
import pytest
import synthetic
import torch

pytestmark = pytest.mark.comfyui
comfy_host.require()

from comfy_host import ValidationFailed, run_node  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def input_spec(cls) -> dict[str, tuple[str, dict]]:
    """name → (io type, options) from the node's ``INPUT_TYPES`` (what ComfyUI's /object_info sends)."""
    info = cls.INPUT_TYPES()
    return {name: spec for category in ("required", "optional") for name, spec in info.get(category, {}).items()}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, debug_models):
    """A ComfyUI base folder whose models/talker_t2av is the debug model set."""
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_base")
    comfy_host.use_base(base)
    (base / "models" / "talker_t2av").symlink_to(debug_models, target_is_directory=True)
    return {"base": base, "nodes": comfy_host.module("nodes"), "folder_paths": folder_paths}


@pytest.fixture(scope="module")
def models(comfy):
    loaders = comfy_host.module("nodes.loaders")

    return {
        "model": run_node(loaders.TalkerLoadModel)[0],
        "codec": run_node(loaders.TalkerLoadCodec)[0],
        "face_model": run_node(loaders.TalkerLoadFaceModel)[0],
        "speaker_encoder": run_node(loaders.TalkerLoadSpeakerEncoder)[0],
    }


@pytest.fixture(scope="module")
def fast_face_model(comfy):
    """LIA-X's interface at a fraction of the cost: node tests render many frames; the real debug LIA-X is covered elsewhere."""
    host = comfy_host.module("nodes.host")

    module = synthetic.FastLiaX()
    return host.manage("liax", module, module, torch.device("cpu"), torch.float32, "fast-liax")


@pytest.fixture(scope="module")
def refs(models, fast_face_model):
    encoders = comfy_host.module("nodes.encoders")

    audio = {"waveform": synthetic.voice_waveform(2.0, 22050, channels=2)[None], "sample_rate": 22050}
    voice = run_node(
        encoders.TalkerEncodeVoice, codec=models["codec"], speaker_encoder=models["speaker_encoder"], audio=audio
    )[0]
    face = run_node(encoders.TalkerEncodeFace, face_model=fast_face_model, image=synthetic.face_image())[0]
    motion = run_node(
        encoders.TalkerEncodeMotion, face_model=fast_face_model, images=synthetic.talking_frames(12), fps=30.0
    )[0]
    driving = {"waveform": synthetic.voice_waveform(0.8, 16000, seed=1)[None], "sample_rate": 16000}
    speech = run_node(encoders.TalkerEncodeSpeech, codec=models["codec"], audio=driving)[0]
    return {"voice": voice, "face": face, "motion": motion, "speech": speech}


def sample(models, refs, **kw):
    TalkerSampler = comfy_host.module("nodes.sampler").TalkerSampler

    inputs = dict(
        model=models["model"], voice=refs["voice"], face=refs["face"], text="Hello there.", max_seconds=0.64, seed=1
    )
    inputs.update(kw)
    return run_node(TalkerSampler, **{k: v for k, v in inputs.items() if v is not None})


# ----------------------------------------------------------------------------------------------
# package and schemas


def test_pack_root_imports_without_comfyui():
    """The pack's __init__ imports with no ComfyUI module around and no side effect."""
    code = (
        "import importlib.util, sys, inspect\n"
        f"spec = importlib.util.spec_from_file_location('talker_pack', r'{ROOT / '__init__.py'}',"
        f" submodule_search_locations=[r'{ROOT}'])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['talker_pack'] = m; spec.loader.exec_module(m)\n"
        "assert m.WEB_DIRECTORY == './web'\n"
        "assert inspect.iscoroutinefunction(m.comfy_entrypoint)\n"
        "heavy = ('comfy', 'comfy_api', 'folder_paths', 'torch', 'talker_core')\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in heavy]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_entrypoint_loads_like_comfyui(tmp_path):
    """A fresh ComfyUI process loads the pack with its own ``load_custom_node`` (module named after the
    folder path, pack not on sys.path) and registers all 16 nodes and the model folder."""
    link = tmp_path / "custom_nodes" / comfy_host.PACK_FOLDER
    link.parent.mkdir()
    link.symlink_to(ROOT, target_is_directory=True)
    code = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, r'{os.environ['COMFYUI_DIR']}')\n"
        "from comfy.cli_args import args\n"
        f"args.cpu = True; args.base_directory = r'{tmp_path}'\n"
        "import nodes, folder_paths\n"
        f"assert asyncio.run(nodes.load_custom_node(r'{link}'))\n"
        "ours = [k for k, v in nodes.NODE_CLASS_MAPPINGS.items() if v.__module__.startswith(r'{link}')]\n"
        "assert 'talker_t2av' in folder_paths.folder_names_and_paths\n"
        "assert 'talker_core' in sys.modules and not any(p.rstrip('/') == r'{ROOT}' for p in sys.path)\n"
        "print(','.join(ours))\n"
    ).replace("{link}", str(link).replace(".", "_x_"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    ids = out.stdout.strip().splitlines()[-1].split(",")
    assert len(ids) == len(set(ids)) == 19 and all(i.startswith("Talker") for i in ids)


def test_schemas(comfy):
    NODES = comfy_host.module("nodes").NODES

    ids = set()
    for cls in NODES:
        schema = cls.GET_SCHEMA()
        assert schema.node_id.startswith("Talker") and schema.node_id not in ids
        ids.add(schema.node_id)
        assert schema.display_name and "Talker-T2AV" not in schema.display_name  # the category names the pack
        assert schema.category.startswith("Talker-T2AV")
        assert schema.description
        for i in schema.inputs:
            assert i.tooltip, f"{schema.node_id}.{i.id} has no tooltip"
            assert not i.get_io_type().startswith("TALKER") or i.get_io_type() in SOCKETS
        for o in schema.outputs or []:
            assert o.tooltip, f"{schema.node_id} output {o.id} has no tooltip"
            assert o.display_name


SOCKETS = {
    "TALKER_MODEL",
    "TALKER_CODEC",
    "TALKER_FACE_MODEL",
    "TALKER_SPEAKER_ENCODER",
    "TALKER_VOICE",
    "TALKER_SPEECH",
    "TALKER_FACE",
    "TALKER_MOTION",
}


def test_model_folder_registration_keeps_user_paths(comfy, tmp_path):
    import folder_paths

    host = comfy_host.module("nodes.host")

    saved = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    try:
        folder_paths.folder_names_and_paths.pop("talker_t2av", None)
        folder_paths.add_model_folder_path("talker_t2av", str(tmp_path / "user_models"))
        host.register_model_folder()
        host.register_model_folder()
        paths = folder_paths.get_folder_paths("talker_t2av")
        assert paths == [str(tmp_path / "user_models"), os.path.join(folder_paths.models_dir, "talker_t2av")]
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)


# ----------------------------------------------------------------------------------------------
# loaders


def test_loader_options_list_the_release_layout(comfy):
    loaders = comfy_host.module("nodes.loaders")

    spec = input_spec(loaders.TalkerLoadModel)
    assert spec["model_folder"][1]["options"] == ["talker-t2av"]
    assert spec["precision"][1]["options"] == ["auto", "fp32", "bf16", "fp16"]
    assert spec["attention"][1]["options"] == ["sdpa", "eager", "flash_attention_2"]
    assert spec["download_if_missing"][1]["default"] is False
    assert input_spec(loaders.TalkerLoadCodec)["file"][1]["options"][0] == "whisperx-vae/model.ckpt"
    assert input_spec(loaders.TalkerLoadFaceModel)["file"][1]["options"][0] == "lia-x.pt"
    spk = input_spec(loaders.TalkerLoadSpeakerEncoder)["file"][1]["options"]
    assert spk[0] == "wavlm_large_finetune.pth"
    assert not any(o.startswith("talker-t2av/") for o in spk)  # backbone folder files are not offered


def test_loaders_wrap_models_for_comfyui(models):
    import comfy.model_management as mm

    for managed in models.values():
        assert managed.patcher.model.inner is managed.module
        assert managed.dtype == torch.float32  # auto on the CPU
        managed.ready()
        assert any(loaded.model is managed.patcher for loaded in mm.current_loaded_models)
    assert models["model"].payload.tokenizer is not None


def test_loader_missing_file_is_explained(comfy):
    loaders = comfy_host.module("nodes.loaders")

    msg = loaders.TalkerLoadFaceModel.validate_inputs(file="missing/lia-x.pt", download_if_missing=False)
    assert "'missing/lia-x.pt' was not found" in msg and "lia-x.pt" in msg
    msg = loaders.TalkerLoadCodec.validate_inputs(file="nope.ckpt", download_if_missing=True)
    assert "nope.ckpt" in msg and "whisperx-vae/model.ckpt" in msg  # only the release name can be downloaded
    assert "inside" in loaders.TalkerLoadCodec.validate_inputs(file="../x.ckpt", download_if_missing=False)
    assert "attention" in loaders.TalkerLoadModel.validate_inputs(
        model_folder="talker-t2av", attention="flash_attention_3", download_if_missing=False
    )


def test_download_only_when_asked(comfy, monkeypatch, tmp_path, debug_models):
    import folder_paths

    import talker_core.weights.download as dl

    loaders = comfy_host.module("nodes.loaders")

    calls = []

    def fake_download(models_dir, kinds=None, progress=None, **kw):
        calls.append((models_dir, list(kinds)))
        progress(0, 1, "lia-x.pt")
        src = Path(debug_models) / "lia-x.pt"
        shutil.copy(src, Path(models_dir) / "lia-x.pt")  # a link out of the folder would be refused
        progress(1, 1, "done")
        return [Path(models_dir) / "lia-x.pt"]

    monkeypatch.setattr(dl, "download_models", fake_download)
    import talker_core.weights.loaders

    monkeypatch.setattr(talker_core.weights.loaders, "load_liax", lambda path, device, dtype: torch.nn.Linear(2, 2))
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    saved = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    try:
        empty = tmp_path / "empty_models"
        folder_paths.folder_names_and_paths["talker_t2av"] = ([str(empty)], set())
        with pytest.raises(ValidationFailed, match="not found"):
            run_node(loaders.TalkerLoadFaceModel)
        assert calls == []
        with pytest.raises(FileNotFoundError, match="download_if_missing"):
            loaders.TalkerLoadFaceModel.execute(
                file="lia-x.pt", precision="auto", device="auto", download_if_missing=False
            )
        assert calls == []
        out = run_node(loaders.TalkerLoadFaceModel, download_if_missing=True)[0]
        assert calls == [(str(empty), ["liax"])]
        assert out.source == str(empty / "lia-x.pt")
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)


@pytest.fixture
def own_model_root(comfy, tmp_path):
    """A talker_t2av model folder of this test alone (the shared debug set is not touched)."""
    import folder_paths

    root = tmp_path / "talker_t2av"
    root.mkdir()
    saved = {k: (list(v[0]), v[1]) for k, v in folder_paths.folder_names_and_paths.items()}
    folder_paths.folder_names_and_paths["talker_t2av"] = ([str(root)], set())
    folder_paths.filename_list_cache.clear()
    try:
        yield root
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()


def test_loaders_refuse_names_that_leave_the_model_folder(own_model_root, tmp_path, debug_models):
    """The nodes resolve names with talker_core's resolver: no '..', no absolute path, no link out of the folder."""
    loaders = comfy_host.module("nodes.loaders")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(Path(debug_models) / "lia-x.pt", elsewhere / "lia-x.pt")
    (own_model_root / "outside.pt").symlink_to(elsewhere / "lia-x.pt")  # a link out of the folder
    (own_model_root / "sub").mkdir()
    shutil.copy(Path(debug_models) / "lia-x.pt", own_model_root / "sub" / "face.pt")
    (own_model_root / "inner.pt").symlink_to(own_model_root / "sub" / "face.pt")  # a link inside it
    shutil.copytree(Path(debug_models) / "talker-t2av", elsewhere / "talker-t2av")
    (own_model_root / "linked-talker").symlink_to(elsewhere / "talker-t2av", target_is_directory=True)

    refused = {
        "../lia-x.pt": "contains '..'",
        str(elsewhere / "lia-x.pt"): "is an absolute path",
        "outside.pt": "points outside the models folder",
    }
    for name, why in refused.items():
        msg = loaders.TalkerLoadFaceModel.validate_inputs(file=name, download_if_missing=False)
        assert isinstance(msg, str) and why in msg and f"file {name!r}" in msg, msg
        assert "extra_model_paths.yaml" in msg  # what to do instead
        with pytest.raises(ValidationFailed, match=why):  # ComfyUI's own validation shows it before the run
            run_node(loaders.TalkerLoadFaceModel, file=name)
        with pytest.raises(ValueError, match=why):  # and the run itself refuses it
            loaders.TalkerLoadFaceModel.execute(file=name, precision="auto", device="cpu", download_if_missing=False)
    msg = loaders.TalkerLoadModel.validate_inputs(
        model_folder="linked-talker", attention="sdpa", download_if_missing=False
    )
    assert isinstance(msg, str) and "model_folder 'linked-talker'" in msg and "symbolic link" in msg
    with pytest.raises(ValidationFailed, match="contains '..'"):
        run_node(loaders.TalkerLoadModel, model_folder="../talker-t2av")

    face = next(i for i in loaders.TalkerLoadFaceModel.define_schema().inputs if i.id == "file").options
    assert "outside.pt" not in face  # what would be refused is not offered
    assert "inner.pt" in face and "sub/face.pt" in face
    out = run_node(loaders.TalkerLoadFaceModel, file="inner.pt")[0]  # a link that stays inside loads
    assert out.source == str((own_model_root / "sub" / "face.pt").resolve())


def test_gpu_choice_on_cpu_only_host_is_explained(comfy):
    loaders = comfy_host.module("nodes.loaders")

    with pytest.raises(ValueError, match="no GPU"):
        run_node(loaders.TalkerLoadCodec, device="gpu")


# ----------------------------------------------------------------------------------------------
# encoders


def test_encoders(refs):
    from talker_core.types import Identity, MotionCodes, SpeakerReference, SpeechLatents

    assert isinstance(refs["voice"], SpeakerReference) and refs["voice"].embedding.shape == (256,)
    assert isinstance(refs["face"], Identity) and refs["face"].z.device.type == "cpu"
    assert isinstance(refs["motion"], MotionCodes)
    assert refs["motion"].frames == 10  # 12 frames at 30 fps → 0.4 s at 25 fps
    assert isinstance(refs["speech"], SpeechLatents) and refs["speech"].frames == 20


def test_encode_face_with_the_debug_liax(models):
    TalkerEncodeFace = comfy_host.module("nodes.encoders").TalkerEncodeFace

    face = run_node(TalkerEncodeFace, face_model=models["face_model"], image=synthetic.face_image(200, 160))[0]
    assert face.z.device.type == "cpu" and face.z.dtype == torch.float32
    assert face.first_motion.shape == (40,) and torch.isfinite(face.first_motion).all()
    assert all(f.device.type == "cpu" for f in face.feats)


def test_encode_face_picks_a_frame_of_a_batch(fast_face_model, refs):
    TalkerEncodeFace = comfy_host.module("nodes.encoders").TalkerEncodeFace

    batch = torch.cat([synthetic.face_image(seed=0), synthetic.face_image(seed=1)])
    a = run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch, frame_index=1)[0]
    b = run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch[1:])[0]
    c = run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch)[0]
    assert torch.allclose(a.z, b.z) and not torch.allclose(a.z, c.z)
    with pytest.raises(ValueError, match="frame_index 2 is out of range"):
        run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch, frame_index=2)


def test_encode_voice_rejects_silence(models):
    TalkerEncodeVoice = comfy_host.module("nodes.encoders").TalkerEncodeVoice

    silent = {"waveform": torch.zeros(1, 1, 32000), "sample_rate": 16000}
    with pytest.raises(ValueError, match="silent"):
        run_node(TalkerEncodeVoice, codec=models["codec"], speaker_encoder=models["speaker_encoder"], audio=silent)


# ----------------------------------------------------------------------------------------------
# sampler


def test_sampler_t2av(models, refs):
    out = sample(models, refs)
    speech, motion = out.args
    assert speech.frames == motion.frames > 0
    assert speech.frames <= 16  # 0.64 s at 25 fps
    text = out.ui["text"][0]
    assert text.startswith("T2AV: ") and "RTF" in text
    plot = out.ui["talker_plot"][0]
    json.dumps(out.ui)  # the payload goes to the browser as JSON
    assert {s["name"] for s in plot["series"]} >= {"speech activity", "motion energy"}
    assert all(len(s["values"]) <= 320 for s in plot["series"])


def test_sampler_is_deterministic_per_seed(models, refs):
    a = sample(models, refs, seed=5).args[0].latents
    b = sample(models, refs, seed=5).args[0].latents
    c = sample(models, refs, seed=6).args[0].latents
    assert torch.equal(a, b)
    assert a.shape != c.shape or not torch.equal(a, c)


def test_sampler_speech_only(models, refs):
    out = sample(models, refs, face=None, speech_only=True)
    speech, motion = out.args
    assert motion is None and speech.frames > 0
    assert out.ui["text"][0].startswith("speech only: ")


def test_sampler_a2v_follows_the_forced_speech(models, refs):
    out = sample(models, refs, voice=None, forced_speech=refs["speech"], text="", max_seconds=30.0)
    speech, motion = out.args
    assert motion.frames == refs["speech"].frames
    assert torch.equal(speech.latents, refs["speech"].latents)
    assert out.ui["text"][0].startswith("A2V: ")


def test_sampler_v2a_follows_the_forced_motion(models, refs):
    out = sample(models, refs, face=None, forced_motion=refs["motion"], max_seconds=30.0)
    speech, motion = out.args
    assert speech.frames == refs["motion"].frames
    assert out.ui["text"][0].startswith("V2A: ")


def test_sampler_style_prefix(models, refs):
    with_prefix = sample(models, refs, reference_motion=refs["motion"], prefix_seconds=0.16)
    speech, motion = with_prefix.args
    assert with_prefix.ui["talker_plot"][0]["prefix_seconds"] == pytest.approx(0.16)
    assert torch.equal(speech.latents[:4], refs["voice"].speech.latents[:4])
    trimmed = sample(models, refs, reference_motion=refs["motion"], prefix_seconds=0.16, include_prefix=False)
    assert trimmed.args[0].frames == speech.frames - 4
    assert torch.equal(trimmed.args[0].latents, speech.latents[4:])


def test_sampler_long_form_runs_in_segments(models, refs, monkeypatch):
    # a 20-frame segment limit (instead of 750) makes a 2 s take span several segments
    monkeypatch.setattr(models["model"].payload.model.config, "max_frames", 20)
    text = " ".join(f"Sentence number {i} is here to make the text long enough for segments." for i in range(12))
    out = sample(models, refs, text=text, max_seconds=2.0, segment_prefix_seconds=0.16)
    speech, motion = out.args
    assert speech.frames == motion.frames <= 50
    assert " segments)" in out.ui["text"][0]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(voice=None), "voice is not connected"),
        (dict(face=None), "face is not connected"),
        (dict(forced_speech="S", forced_motion="M"), "both connected"),
        (dict(speech_only=True, forced_speech="S"), "speech_only is on"),
        (dict(voice=None, forced_speech="S", prefix_seconds=1.0), "prefix_seconds"),
    ],
)
def test_sampler_explains_wrong_wiring(models, refs, change, message):
    change = {k: refs["speech"] if v == "S" else refs["motion"] if v == "M" else v for k, v in change.items()}
    with pytest.raises(ValueError, match=message):
        sample(models, refs, **change)


def test_sampler_validation_catches_empty_speech_text(models, refs):
    with pytest.raises(ValidationFailed, match="text is empty"):
        sample(models, refs, speech_only=True, text="")
    with pytest.raises(ValidationFailed, match="text is empty: T2AV"):  # at queue time, T2AV too
        sample(models, refs, text="   ")
    with pytest.raises(ValueError, match="text is empty"):  # a linked text is checked when it runs
        TalkerSampler = comfy_host.module("nodes.sampler").TalkerSampler

        TalkerSampler.execute(
            model=models["model"],
            voice=refs["voice"],
            face=refs["face"],
            text=" ",
            speech_only=False,
            seed=0,
            steps=1,
            cfg=2.0,
            temperature=0.3,
            sway=1.0,
            cfg_zero_star=True,
            stop_threshold=0.5,
            max_seconds=0.64,
            prefix_seconds=0.0,
            include_prefix=True,
            segment_prefix_seconds=2.0,
        )


def test_sampler_can_be_interrupted(models, refs):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            sample(models, refs)
    finally:
        mm.interrupt_current_processing(False)
    assert not mm.processing_interrupted()


# ----------------------------------------------------------------------------------------------
# decoders


def test_decode_speech_gives_24khz_audio(models, refs):
    TalkerDecodeSpeech = comfy_host.module("nodes.decoders").TalkerDecodeSpeech

    audio = run_node(TalkerDecodeSpeech, codec=models["codec"], speech=refs["speech"])[0]
    assert audio["sample_rate"] == 24000
    assert audio["waveform"].shape == (1, 1, refs["speech"].frames * 960)
    assert audio["waveform"].abs().max() <= 1


def assert_progress(calls, reports) -> None:
    """The progress hook saw ``reports`` ((value, total) in order). Cores with a progress throttle
    (0.28 has ``PROGRESS_THROTTLE_MIN_INTERVAL``) drop preview-less reports between the first and the
    last: there the reports seen must be the first, the last, and some of those between, in order."""
    import comfy.utils

    seen = [c[:2] for c in calls]
    if not hasattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL"):
        assert seen == reports
        return
    assert seen[0] == reports[0] and seen[-1] == reports[-1], seen
    rest = iter(reports)
    assert all(any(r == s for r in rest) for s in seen), f"{seen} is not a subsequence of {reports}"


@pytest.mark.slow
def test_render_video_with_progress_and_previews(fast_face_model, refs):
    import comfy.utils

    TalkerRenderVideo = comfy_host.module("nodes.decoders").TalkerRenderVideo
    from talker_core.types import MotionCodes

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: calls.append((v, t, p)))
    try:
        motion = MotionCodes(refs["motion"].codes[:6])
        out = run_node(TalkerRenderVideo, face_model=fast_face_model, face=refs["face"], motion=motion, chunk=4)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    images, fps = out.args
    assert images.shape == (6, 512, 512, 3) and fps == 25.0
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert_progress(calls, [(1, 6), (5, 6), (6, 6)])  # the first report comes with the first frame
    kind, image, size = calls[-1][2]
    assert kind == "JPEG" and image.size == (512, 512) and size > 0
    assert out.ui["text"][0].startswith("rendered 6 frames")


def test_render_video_file_streams_into_an_mp4_with_the_workflow(comfy, models, fast_face_model, refs):
    """Render Video File: frames go straight into the MP4 (never an IMAGE batch), with the workflow
    and prompt in its tags like Save Video's, previews on the way, and a VIDEO out."""
    import av
    import comfy.utils
    import folder_paths

    TalkerRenderVideoFile = comfy_host.module("nodes.video_file").TalkerRenderVideoFile
    from talker_core.media import load_audio
    from talker_core.types import MotionCodes

    calls = []
    motion = MotionCodes(refs["motion"].codes[:6])
    workflow = {"nodes": [{"id": 1, "type": "TalkerRenderVideoFile"}], "links": []}
    prompt = {"1": {"class_type": "TalkerRenderVideoFile", "inputs": {}}}
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: calls.append((v, t, p)))
    try:
        out = run_node(
            TalkerRenderVideoFile,
            hidden={"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": workflow}},
            face_model=fast_face_model,
            face=refs["face"],
            motion=motion,
            codec=models["codec"],
            speech=refs["speech"],
            filename_prefix="video/long",
            chunk=4,
            preset="ultrafast",
        )
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    path = Path(out.args[0].get_stream_source())
    assert path.parent == Path(folder_paths.get_output_directory()) / "video" and path.suffix == ".mp4"
    assert_progress(calls, [(1, 6), (5, 6), (6, 6)])
    assert calls[0][2][0] == "JPEG"
    with av.open(str(path)) as c:
        assert json.loads(c.metadata["workflow"]) == workflow and json.loads(c.metadata["prompt"]) == prompt
        assert sum(1 for _ in c.decode(video=0)) == 6
    wav, sr = load_audio(path)
    assert abs(wav.shape[1] / sr - 6 / 25) <= 1 / 25
    assert out.ui["images"][0]["filename"] == path.name and out.ui["text"][0].startswith("wrote ")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_render_video_file_interrupted_leaves_no_file(comfy, fast_face_model, refs):
    import comfy.model_management as mm
    import folder_paths

    TalkerRenderVideoFile = comfy_host.module("nodes.video_file").TalkerRenderVideoFile

    folder = Path(folder_paths.get_output_directory()) / "cut"
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node(
                TalkerRenderVideoFile,
                face_model=fast_face_model,
                face=refs["face"],
                motion=refs["motion"],
                filename_prefix="cut/x",
            )
    finally:
        mm.interrupt_current_processing(False)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_paste_back_video_file_streams_renders_and_ready_frames(comfy, fast_face_model, refs, tmp_path):
    """Paste Back Video File: rendered from motion (or ready frames) straight into an MP4 at the
    background's size, a VIDEO out; a VIDEO background is decoded as needed and held when shorter."""
    import av
    import comfy.utils
    from comfy_api.latest import InputImpl

    node = comfy_host.module("nodes.paste_back").TalkerPasteBackVideo
    encoders = comfy_host.module("nodes.encoders")
    from talker_core.types import MotionCodes

    clip = synthetic.drawn_face_clip(240, 180, 150, 80, 60, n=5)  # 0.2 s of footage: shorter than the render
    footage = synthetic.write_mp4(tmp_path / "footage.mp4", clip.float() / 255, 25)
    face = run_node(
        encoders.TalkerEncodeFace,
        face_model=fast_face_model,
        image=clip.float() / 255,
        crop_x=100,
        crop_y=20,
        crop_size=100,
    )[0]
    assert (face.crop.x, face.crop.y, face.crop.size, face.crop.method) == (100, 20, 100, "manual")
    motion = MotionCodes(refs["motion"].codes[:9])
    calls = []
    prompt = {"1": {"class_type": "TalkerPasteBackVideo", "inputs": {}}}
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: calls.append((v, t, p)))
    try:
        out = run_node(
            node, hidden={"PROMPT": prompt, "EXTRA_PNGINFO": {}}, face=face, face_model=fast_face_model, motion=motion,
            background_video=InputImpl.VideoFromFile(str(footage)), background_end="hold", chunk=4,
            preset="ultrafast", filename_prefix="video/pasted",
        )  # fmt: skip
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    path = Path(out.args[0].get_stream_source())
    with av.open(str(path)) as c:
        assert json.loads(c.metadata["prompt"]) == prompt
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (180, 240, 3)
    assert_progress(calls, [(1, 9), (5, 9), (9, 9)])
    assert calls[0][2][0] == "JPEG"
    held = torch.from_numpy(np.stack(frames[4:])).float()  # the footage's last frame held under the face
    assert (held[:, :, :90] - clip[4, :, :90].float()).abs().mean() < 3
    assert out.ui["text"][0].startswith("wrote ") and not [p for p in path.parent.iterdir() if p.name.startswith(".")]

    ready = torch.rand(6, 128, 128, 3)  # e.g. an upscaler's output, on the photo
    photo = clip[:1].float() / 255
    audio = {"waveform": torch.zeros(1, 1, 6 * 640), "sample_rate": 16000}
    out = run_node(node, face=face, images=ready, background_image=photo, audio=audio, preset="ultrafast")
    with av.open(str(out.args[0].get_stream_source())) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6 and len(c.streams.audio) == 1
    with pytest.raises(ValueError, match="background_image .* or background_video"):
        run_node(node, face=face, images=ready)
    with pytest.raises(ValueError, match="not both"):
        run_node(node, face=face, images=ready, background_image=photo, face_model=fast_face_model, motion=motion)


def test_encode_motion_frames_an_off_centre_clip_and_takes_a_crop_box(fast_face_model):
    encoders = comfy_host.module("nodes.encoders")
    from talker_core.pipeline import encode_motion

    clip = synthetic.drawn_face_clip(320, 200, 90, 90, 60, n=8).float() / 255
    manual = run_node(
        encoders.TalkerEncodeMotion,
        face_model=fast_face_model,
        images=clip,
        fps=25.0,
        crop_x=20,
        crop_y=10,
        crop_size=150,
    )[0]
    cut = encode_motion(fast_face_model.ready(), clip[:, 10:160, 20:170], 25.0)
    assert torch.allclose(manual.codes, cut.codes, atol=1e-5)
    centre = run_node(encoders.TalkerEncodeMotion, face_model=fast_face_model, images=clip, fps=25.0, framing="centre")[
        0
    ]
    assert torch.allclose(centre.codes, encode_motion(fast_face_model.ready(), clip, 25.0).codes, atol=1e-5)
    detected = run_node(encoders.TalkerEncodeMotion, face_model=fast_face_model, images=clip, fps=25.0)[0]
    assert not torch.allclose(detected.codes, centre.codes, atol=1e-3)  # the face on the left, not the middle
    face = run_node(encoders.TalkerEncodeFace, face_model=fast_face_model, image=clip, frame_index=3)[0]
    assert face.crop.method == "detected" and face.crop.x + face.crop.size / 2 < 160  # the clip's square
    with pytest.raises(Exception, match="does not fit"):
        run_node(
            encoders.TalkerEncodeMotion, face_model=fast_face_model, images=clip, fps=25.0, crop_x=300, crop_size=50
        )


def test_dialogue_node_writes_one_video_with_its_audio(comfy, models, fast_face_model, refs):
    import av

    node = comfy_host.module("nodes.dialogue").TalkerDialogue
    out = run_node(
        node, model=models["model"], codec=models["codec"], face_model=fast_face_model, script="A: Hi.\nB: Hello.",
        layout="side_by_side", voice_a=refs["voice"], face_a=refs["face"], voice_b=refs["voice"], face_b=refs["face"],
        steps=2, max_seconds=0.16, preset="ultrafast", filename_prefix="video/dlg",
    )  # fmt: skip
    video, audio = out.args
    with av.open(str(video.get_stream_source())) as c:
        frames = sum(1 for _ in c.decode(video=0))
        assert (c.streams.video[0].width, c.streams.video[0].height) == (1024, 512) and len(c.streams.audio) == 1
    assert audio["sample_rate"] == 24000 and abs(audio["waveform"].shape[-1] / 24000 - frames / 25) <= 1 / 25
    assert out.ui["text"][0].startswith("wrote ")


def test_render_explains_missing_motion(fast_face_model, refs):
    TalkerRenderVideo = comfy_host.module("nodes.decoders").TalkerRenderVideo

    with pytest.raises(ValueError, match="speech-only"):
        run_node(TalkerRenderVideo, face_model=fast_face_model, face=refs["face"], motion=None)


@pytest.mark.slow
def test_render_can_be_interrupted(fast_face_model, refs):
    import comfy.model_management as mm

    TalkerRenderVideo = comfy_host.module("nodes.decoders").TalkerRenderVideo

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node(TalkerRenderVideo, face_model=fast_face_model, face=refs["face"], motion=refs["motion"])
    finally:
        mm.interrupt_current_processing(False)


# ----------------------------------------------------------------------------------------------
# latents files


def test_latents_round_trip(comfy, refs):
    import folder_paths

    latents = comfy_host.module("nodes.latents")

    prompt = {"1": {"class_type": "TalkerSampler", "inputs": {}}}
    out = run_node(
        latents.TalkerSaveMotionLatents,
        hidden={"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": {}}},
        motion=refs["motion"],
        filename_prefix="talker/motion",
    )
    assert "saved talker/motion_00001_.safetensors" in out.ui["text"][0]
    run_node(latents.TalkerSaveSpeechLatents, speech=refs["speech"], filename_prefix="talker/speech")

    motion_files = input_spec(latents.TalkerLoadMotionLatents)["file"][1]["options"]
    speech_files = input_spec(latents.TalkerLoadSpeechLatents)["file"][1]["options"]
    assert "talker/motion_00001_.safetensors [output]" in motion_files
    assert "talker/speech_00001_.safetensors [output]" in speech_files
    assert not set(motion_files) & set(speech_files)

    motion = run_node(latents.TalkerLoadMotionLatents, file="talker/motion_00001_.safetensors [output]")[0]
    assert torch.equal(motion.codes, refs["motion"].codes)
    speech = run_node(latents.TalkerLoadSpeechLatents, file="talker/speech_00001_.safetensors [output]")[0]
    assert torch.equal(speech.latents, refs["speech"].latents)

    from safetensors import safe_open

    path = Path(folder_paths.get_output_directory()) / "talker" / "motion_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["talker_t2av"] == "motion" and json.loads(meta["prompt"]) == prompt and "workflow" in meta

    with pytest.raises(ValueError, match="holds speech, not motion"):
        latents.TalkerLoadMotionLatents.execute(file="talker/speech_00001_.safetensors [output]")
    assert "not found" in latents.TalkerLoadMotionLatents.validate_inputs(file="nothing.safetensors")


def test_sampler_runs_on_inference_tensors_with_packed_linears(models, refs, monkeypatch):
    """In ComfyUI, models load and run under torch.inference_mode(), so their weights are inference
    tensors (no version counter). Real-size layers take the CPU packed-linear path that debug-size
    layers skip; lower its size threshold so the debug model exercises it too."""
    from talker_core.fast.kernels import LinearKernels as kernels

    assert models["model"].module.task_embedding.weight.is_inference()
    *head, _min_numel = kernels.__init__.__defaults__
    monkeypatch.setattr(kernels.__init__, "__defaults__", (*head, 0))
    speech, motion = sample(models, refs).args
    assert speech.frames == motion.frames > 0


# ----------------------------------------------------------------------------------------------
# nothing lost, nothing wrong said (issue 10)


def test_fp16_on_the_cpu_is_refused_before_loading(comfy):
    loaders = comfy_host.module("nodes.loaders")

    with pytest.raises(ValueError, match="precision fp16 on cpu: fp16 does not work on the CPU"):
        run_node(loaders.TalkerLoadFaceModel, precision="fp16", device="cpu")


def test_sampler_refuses_text_with_nothing_to_speak(models, refs):
    with pytest.raises(ValidationFailed, match="ZERO WIDTH SPACE"):  # at queue time, like empty text
        sample(models, refs, text="\u200b\u200b")
    with pytest.raises(ValidationFailed, match="punctuation or symbols"):
        sample(models, refs, speech_only=True, text="... !!")


def test_summaries_report_cut_and_clipped_inputs(models, refs):
    encoders = comfy_host.module("nodes.encoders")

    out = sample(models, refs, forced_speech=refs["speech"], max_seconds=0.32)  # 0.8 s of driving speech
    assert "⚠" in out.ui["text"][0] and "max_seconds=0.32 cuts it" in out.ui["text"][0], out.ui
    assert "⚠" not in sample(models, refs, forced_speech=refs["speech"], max_seconds=2.0).ui["text"][0]
    loud = {"waveform": 4.0 * synthetic.voice_waveform(2.0, 22050)[None], "sample_rate": 22050}
    out = run_node(
        encoders.TalkerEncodeVoice, codec=models["codec"], speaker_encoder=models["speaker_encoder"], audio=loud
    )
    assert "above full scale" in out.ui["text"][0], out.ui


def test_a_failed_save_leaves_nothing_in_output(comfy, refs, monkeypatch):
    import folder_paths

    latents = comfy_host.module("nodes.latents")

    out_dir = Path(folder_paths.get_output_directory())
    before = sorted(p.relative_to(out_dir) for p in out_dir.rglob("*"))

    def disk_full(src, dst):  # the temporary file is written, the final rename fails
        assert Path(src).is_file()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(latents.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        run_node(latents.TalkerSaveSpeechLatents, speech=refs["speech"], filename_prefix="talker/fail")
    after = sorted(p.relative_to(out_dir) for p in out_dir.rglob("*"))
    assert [p for p in after if p not in before] in ([], [Path("talker")])  # at most the (empty) subfolder
    assert not [p for p in out_dir.rglob("*") if p.is_file() and "fail" in p.name]


def test_saves_never_write_into_the_input_folder(comfy, refs, monkeypatch):
    import folder_paths

    latents = comfy_host.module("nodes.latents")

    in_dir = Path(folder_paths.get_input_directory())
    monkeypatch.setattr(folder_paths, "output_directory", str(in_dir))  # a setup where output/ is input/
    before = sorted(in_dir.rglob("*"))
    with pytest.raises(ValueError, match="input folder"):
        run_node(latents.TalkerSaveMotionLatents, motion=refs["motion"], filename_prefix="talker/m")
    assert sorted(p for p in in_dir.rglob("*") if p.is_file()) == [p for p in before if p.is_file()]


# ----------------------------------------------------------------------------------------------
# fast-path memory belongs to the managed model


@pytest.fixture
def pack_small_linears(monkeypatch):
    """Prepack every linear layer: by default the fast path leaves debug-sized layers on F.linear
    (too small to gain), so at debug sizes it would hold next to nothing to count and free."""
    from talker_core.fast import kernels

    if not kernels._onednn_packing_available():
        pytest.skip("this torch build has no oneDNN weight packing")
    monkeypatch.setattr(kernels.LinearKernels.__init__, "__defaults__", (None, 32, 0))


def test_unloading_a_model_in_comfyui_frees_its_fast_path(models, refs, pack_small_linears):
    """The fast path's prepacked weights, caches and programs are counted in what the patcher reports
    to ComfyUI's memory management, and ComfyUI's own unload frees them (rebuilt on the next run)."""
    import comfy.model_management as mm
    import comfy.model_patcher as mp

    patcher = models["model"].patcher
    patcher.release_fast_path()  # start from kernels built with the small-layer setting
    assert isinstance(patcher, getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher)
    sample(models, refs)
    held = patcher.fast_path_bytes()
    assert held > 0
    weights = mm.module_size(patcher.model)
    assert patcher.model_size() == weights + held
    assert patcher.loaded_size() == patcher.model.model_loaded_weight_memory + held
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models)
    mm.unload_all_models()
    assert patcher.fast_path_bytes() == 0
    assert patcher.model_size() == weights
    print(f"fast path of the debug backbone: {held} bytes held, freed by unload_all_models")
    sample(models, refs)  # the next run loads the model again and rebuilds what it needs
    assert patcher.fast_path_bytes() > 0


def test_a_replaced_model_takes_its_fast_path_along(comfy, refs, pack_small_linears):
    """A model dropped from the canvas (its loader re-run or removed) is not unloaded by ComfyUI, only
    forgotten: once its patcher goes, the fast-path table lets go of it too."""
    import gc
    import weakref

    loaders = comfy_host.module("nodes.loaders")
    managed = run_node(loaders.TalkerLoadModel)[0]
    sample({"model": managed}, refs)
    assert managed.patcher.fast_path_bytes() > 0
    module = weakref.ref(managed.module)
    del managed
    gc.collect()
    assert module() is None


def test_sampler_widgets_come_from_the_parameter_table(comfy):
    from talker_core.params import PARAMS

    sampler = comfy_host.module("nodes.sampler")

    widgets = {i.id: i for i in sampler.TalkerSampler.GET_SCHEMA().inputs}
    shown = [name for name in PARAMS if name in widgets]
    assert {"seed", "steps", "cfg", "temperature", "sway", "cfg_zero_star", "stop_threshold"} <= set(shown)
    for name in shown:
        spec, w = PARAMS[name], widgets[name]
        assert (w.default, w.tooltip) == (spec.default, spec.help), name
        if spec.kind is not bool:
            assert (w.min, w.max) == (spec.minimum, spec.maximum), name


def test_attention_choices_come_from_the_model_file(comfy, monkeypatch):
    """The loader node's attention combo reads models/talker.py's list (the CLI's --attn: test_one_source.py)."""
    from talker_core.models import talker

    loaders = comfy_host.module("nodes.loaders")

    def attention():
        return next(i for i in loaders.TalkerLoadModel.define_schema().inputs if i.id == "attention")

    assert tuple(attention().options) == talker.ATTN_IMPLEMENTATIONS
    monkeypatch.setattr(talker, "ATTN_HELP", {"kernel_a": "the first", "kernel_b": "the second"})
    monkeypatch.setattr(talker, "ATTN_IMPLEMENTATIONS", ("kernel_a", "kernel_b"))
    combo = attention()
    assert combo.options == ["kernel_a", "kernel_b"] and combo.default == "kernel_a"
    assert "kernel_b: the second" in combo.tooltip
    msg = loaders.TalkerLoadModel.validate_inputs(
        model_folder="talker-t2av", attention="sdpa", download_if_missing=False
    )
    assert isinstance(msg, str) and "kernel_a" in msg
