"""The ComfyUI nodes, run on the tiny debug models through stand-ins of ComfyUI's modules.

Each node class is executed the way ComfyUI executes V3 nodes (schema checks, class
clone, ``validate_inputs``, inference mode): see ``tests/comfy_stubs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import comfy_stubs
import pytest
import torch

comfy_stubs.activate()

from comfy_stubs import harness  # noqa: E402
from comfy_stubs.harness import ValidationFailed, run_node  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, debug_models):
    """A ComfyUI-like base folder whose models/talker_t2av is the debug model set."""
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_base")
    comfy_stubs.reset_dirs(base)
    (base / "models" / "talker_t2av").symlink_to(debug_models, target_is_directory=True)
    import nodes

    return {"base": base, "nodes": nodes, "folder_paths": folder_paths}


@pytest.fixture(scope="module")
def models(comfy):
    from nodes import loaders

    return {
        "model": run_node(loaders.TalkerLoadModel)[0],
        "codec": run_node(loaders.TalkerLoadCodec)[0],
        "face_model": run_node(loaders.TalkerLoadFaceModel)[0],
        "speaker_encoder": run_node(loaders.TalkerLoadSpeakerEncoder)[0],
    }


@pytest.fixture(scope="module")
def fast_face_model(comfy):
    """LIA-X's interface at a fraction of the cost: node tests render many frames; the real debug LIA-X is covered elsewhere."""
    from nodes import host

    module = harness.FastLiaX()
    return host.manage("liax", module, module, torch.device("cpu"), torch.float32, "fast-liax")


@pytest.fixture(scope="module")
def refs(models, fast_face_model):
    from nodes import encoders

    audio = {"waveform": harness.voice_waveform(2.0, 22050, channels=2)[None], "sample_rate": 22050}
    voice = run_node(
        encoders.TalkerEncodeVoice, codec=models["codec"], speaker_encoder=models["speaker_encoder"], audio=audio
    )[0]
    face = run_node(encoders.TalkerEncodeFace, face_model=fast_face_model, image=harness.face_image())[0]
    motion = run_node(
        encoders.TalkerEncodeMotion, face_model=fast_face_model, images=harness.talking_frames(12), fps=30.0
    )[0]
    driving = {"waveform": harness.voice_waveform(0.8, 16000, seed=1)[None], "sample_rate": 16000}
    speech = run_node(encoders.TalkerEncodeSpeech, codec=models["codec"], audio=driving)[0]
    return {"voice": voice, "face": face, "motion": motion, "speech": speech}


def sample(models, refs, **kw):
    from nodes.sampler import TalkerSampler

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
    """Load the pack the way ComfyUI does (module named after its path, pack not on sys.path)."""
    code = (
        "import asyncio, importlib.util, os, sys\n"
        f"sys.path.insert(0, r'{ROOT / 'tests' / 'comfy_stubs'}')\n"
        f"path = r'{ROOT}'\n"
        "name = path.replace('.', '_x_')\n"
        "spec = importlib.util.spec_from_file_location(name, os.path.join(path, '__init__.py'))\n"
        "m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m)\n"
        "ext = asyncio.run(m.comfy_entrypoint())\n"
        "nodes = asyncio.run(ext.get_node_list())\n"
        "ids = [n.GET_SCHEMA().node_id for n in nodes]\n"
        "import folder_paths\n"
        "assert 'talker_t2av' in folder_paths.folder_names_and_paths\n"
        "print(','.join(ids))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["COMFY_STUB_BASE"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    ids = out.stdout.strip().splitlines()[-1].split(",")
    assert len(ids) == len(set(ids)) == 15


def test_schemas(comfy):
    from nodes import NODES

    ids = set()
    for cls in NODES:
        schema = cls.GET_SCHEMA()
        assert schema.node_id.startswith("Talker") and schema.node_id not in ids
        ids.add(schema.node_id)
        assert schema.display_name.startswith("Talker-T2AV ")
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

    from nodes import host

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
    from nodes import loaders

    spec = harness.input_spec(loaders.TalkerLoadModel)
    assert spec["model_folder"][1]["options"] == ["talker-t2av"]
    assert spec["precision"][1]["options"] == ["auto", "fp32", "bf16", "fp16"]
    assert spec["attention"][1]["options"] == ["sdpa", "eager", "flash_attention_2"]
    assert spec["download_if_missing"][1]["default"] is False
    assert harness.input_spec(loaders.TalkerLoadCodec)["file"][1]["options"][0] == "whisperx-vae/model.ckpt"
    assert harness.input_spec(loaders.TalkerLoadFaceModel)["file"][1]["options"][0] == "lia-x.pt"
    spk = harness.input_spec(loaders.TalkerLoadSpeakerEncoder)["file"][1]["options"]
    assert spk[0] == "wavlm_large_finetune.pth"
    assert not any(o.startswith("talker-t2av/") for o in spk)  # backbone folder files are not offered


def test_loaders_wrap_models_for_comfyui(models):
    import comfy.model_management as mm

    for _key, managed in models.items():
        assert managed.patcher.model.inner is managed.module
        assert managed.dtype == torch.float32  # auto on the CPU
        before = len(mm.load_calls)
        managed.ready()
        assert mm.load_calls[before:] == [[managed.patcher]]
    assert models["model"].payload.tokenizer is not None


def test_loader_missing_file_is_explained(comfy):
    from nodes import loaders

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
    from nodes import loaders

    calls = []

    def fake_download(models_dir, kinds=None, progress=None, **kw):
        calls.append((models_dir, list(kinds)))
        progress(0, 1, "lia-x.pt")
        src = Path(debug_models) / "lia-x.pt"
        (Path(models_dir) / "lia-x.pt").symlink_to(src)
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


def test_gpu_choice_on_cpu_only_host_is_explained(comfy):
    from nodes import loaders

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
    from nodes.encoders import TalkerEncodeFace

    face = run_node(TalkerEncodeFace, face_model=models["face_model"], image=harness.face_image(200, 160))[0]
    assert face.z.device.type == "cpu" and face.z.dtype == torch.float32
    assert face.first_motion.shape == (40,) and torch.isfinite(face.first_motion).all()
    assert all(f.device.type == "cpu" for f in face.feats)


def test_encode_face_picks_a_frame_of_a_batch(fast_face_model, refs):
    from nodes.encoders import TalkerEncodeFace

    batch = torch.cat([harness.face_image(seed=0), harness.face_image(seed=1)])
    a = run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch, frame_index=1)[0]
    b = run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch[1:])[0]
    c = run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch)[0]
    assert torch.allclose(a.z, b.z) and not torch.allclose(a.z, c.z)
    with pytest.raises(ValueError, match="frame_index 2 is out of range"):
        run_node(TalkerEncodeFace, face_model=fast_face_model, image=batch, frame_index=2)


def test_encode_voice_rejects_silence(models):
    from nodes.encoders import TalkerEncodeVoice

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
        (dict(text="   "), "text is empty"),
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
    from nodes.decoders import TalkerDecodeSpeech

    audio = run_node(TalkerDecodeSpeech, codec=models["codec"], speech=refs["speech"])[0]
    assert audio["sample_rate"] == 24000
    assert audio["waveform"].shape == (1, 1, refs["speech"].frames * 960)
    assert audio["waveform"].abs().max() <= 1


@pytest.mark.slow
def test_render_video_with_progress_and_previews(fast_face_model, refs):
    import comfy.utils

    from nodes.decoders import TalkerRenderVideo
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
    assert [c[:2] for c in calls] == [(4, 6), (6, 6)]
    kind, image, size = calls[-1][2]
    assert kind == "JPEG" and image.size == (512, 512) and size > 0
    assert out.ui["text"][0].startswith("rendered 6 frames")


def test_render_explains_missing_motion(fast_face_model, refs):
    from nodes.decoders import TalkerRenderVideo

    with pytest.raises(ValueError, match="speech-only"):
        run_node(TalkerRenderVideo, face_model=fast_face_model, face=refs["face"], motion=None)


@pytest.mark.slow
def test_render_can_be_interrupted(fast_face_model, refs):
    import comfy.model_management as mm

    from nodes.decoders import TalkerRenderVideo

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

    from nodes import latents

    prompt = {"1": {"class_type": "TalkerSampler", "inputs": {}}}
    out = run_node(
        latents.TalkerSaveMotionLatents,
        hidden={"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": {}}},
        motion=refs["motion"],
        filename_prefix="talker/motion",
    )
    assert "saved talker/motion_00001_.safetensors" in out.ui["text"][0]
    run_node(latents.TalkerSaveSpeechLatents, speech=refs["speech"], filename_prefix="talker/speech")

    motion_files = harness.input_spec(latents.TalkerLoadMotionLatents)["file"][1]["options"]
    speech_files = harness.input_spec(latents.TalkerLoadSpeechLatents)["file"][1]["options"]
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


def test_sampler_widgets_come_from_the_parameter_table(comfy):
    from nodes import sampler
    from talker_core.params import PARAMS

    widgets = {i.id: i for i in sampler.TalkerSampler.GET_SCHEMA().inputs}
    shown = [name for name in PARAMS if name in widgets]
    assert {"seed", "steps", "cfg", "temperature", "sway", "cfg_zero_star", "stop_threshold"} <= set(shown)
    for name in shown:
        spec, w = PARAMS[name], widgets[name]
        assert (w.default, w.tooltip) == (spec.default, spec.help), name
        if spec.kind is not bool:
            assert (w.min, w.max) == (spec.minimum, spec.maximum), name
