"""Run our nodes the way ComfyUI does, without ComfyUI: input checks, class clone, inference mode.

Also: synthetic input media, small stand-ins for the core nodes our example
workflows use, and a topological executor for API-format graphs.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


# ----------------------------------------------------------------------------------------------
# running one node


def input_spec(cls) -> dict[str, tuple[str, dict, bool]]:
    """name → (io type, options dict, optional) in schema order (as ComfyUI's INPUT_TYPES)."""
    info = cls.INPUT_TYPES()
    out = {}
    for category in ("required", "optional"):
        for name, (io_type, opts) in info.get(category, {}).items():
            out[name] = (io_type, opts, category == "optional")
    return out


def check_widget(node: str, name: str, io_type: str, opts: dict, value: Any) -> Any:
    """Convert and range-check one widget value as ComfyUI's validation does (plus combo membership)."""
    if io_type == "INT":
        value = int(value)
    elif io_type == "FLOAT":
        value = float(value)
    elif io_type == "STRING":
        value = str(value)
    elif io_type == "BOOLEAN":
        if not isinstance(value, bool):
            raise AssertionError(f"{node}.{name}: {value!r} is not a boolean")
    if io_type in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            raise AssertionError(f"{node}.{name}: {value} < min {opts['min']}")
        if "max" in opts and value > opts["max"]:
            raise AssertionError(f"{node}.{name}: {value} > max {opts['max']}")
    if io_type == "COMBO" and value not in opts.get("options", []):
        raise AssertionError(f"{node}.{name}: {value!r} not in {opts.get('options')}")
    return value


def run_node(cls, hidden: dict | None = None, **inputs):
    """Validate ``inputs`` against the schema, call ``validate_inputs``, then execute like ComfyUI.

    Returns the ``NodeOutput``. Widget inputs left out take their schema default.
    """
    schema = cls.GET_SCHEMA()
    spec = input_spec(cls)
    unknown = set(inputs) - set(spec)
    assert not unknown, f"{schema.node_id}: unknown inputs {unknown}"
    kwargs = {}
    for name, (io_type, opts, optional) in spec.items():
        if name in inputs:
            value = inputs[name]
            if io_type in WIDGET_TYPES:
                value = check_widget(schema.node_id, name, io_type, opts, value)
            kwargs[name] = value
        elif io_type in WIDGET_TYPES and "default" in opts:
            kwargs[name] = opts["default"]
        elif not optional:
            raise AssertionError(f"{schema.node_id}: required input {name!r} missing")
    validate = real_override(cls, "validate_inputs")
    if validate is not None:
        names = inspect.getfullargspec(validate.__func__).args[1:]
        ok = cls.validate_inputs(**{k: v for k, v in kwargs.items() if k in names})
        if ok is not True:
            raise ValidationFailed(f"{schema.node_id}: {ok}")
    clone = cls.PREPARE_CLASS_CLONE(hidden or {})
    with torch.inference_mode():
        return clone.EXECUTE_NORMALIZED(**kwargs)


def real_override(cls, name: str):
    """The node's own ``name`` classmethod, or None if only the V3 base class has it (ComfyUI's rule)."""
    for klass in cls.__mro__:
        if name in klass.__dict__ and not klass.__module__.startswith("comfy_api"):
            return klass.__dict__[name]
    return None


class ValidationFailed(AssertionError):
    """A node's validate_inputs refused its inputs (ComfyUI: custom_validation_failed)."""


# ----------------------------------------------------------------------------------------------
# a cheap face model


class FastLiaX(torch.nn.Module):
    """A stand-in with LIA-X's interface (``encode_identity``, ``motion_code``, ``render``) that runs in
    milliseconds, for tests of node plumbing (batches, progress, previews, cancellation). The debug
    LIA-X keeps the published layout and renders 512×512 frames at seconds to a minute each on a CPU."""

    def __init__(self, style: int = 32, motion: int = 40):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 8 * 8, style)
        self.to_motion = torch.nn.Linear(style, motion)
        self.to_rgb = torch.nn.Linear(style + motion, 3 * 8 * 8)

    def encode_identity(self, img: torch.Tensor):
        z = self.proj(torch.nn.functional.adaptive_avg_pool2d(img, 8).flatten(1))
        return z, [torch.nn.functional.adaptive_avg_pool2d(img, 4)]

    def motion_code(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_motion(z)

    def render(self, z: torch.Tensor, feats, alpha: torch.Tensor) -> torch.Tensor:
        x = self.to_rgb(torch.cat([z.expand(alpha.shape[0], -1), alpha], 1)).view(-1, 3, 8, 8)
        return torch.nn.functional.interpolate(torch.tanh(x), size=512, mode="nearest")


# ----------------------------------------------------------------------------------------------
# synthetic media


def voice_waveform(seconds: float = 2.0, rate: int = 16000, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """A speech-like test signal (C, N): a gliding harmonic tone with a syllable-rate envelope."""
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t)) ** 2
    x = 0.25 * tone * env + 0.003 * g.standard_normal(t.shape)
    x = np.stack([x * (1 - 0.1 * c) for c in range(channels)]).astype(np.float32)
    return torch.from_numpy(x)


def face_image(h: int = 320, w: int = 288, seed: int = 0) -> torch.Tensor:
    """A face-like test image (1, H, W, 3) float in [0, 1]: skin-toned ellipse, eyes and mouth on a gradient."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    img[...] = np.stack([0.2 + 0.3 * yy / h, 0.3 + 0.2 * xx / w, 0.5 * np.ones_like(xx)], -1)
    cy, cx = h * 0.5, w * 0.5
    head = ((yy - cy) / (h * 0.38)) ** 2 + ((xx - cx) / (w * 0.3)) ** 2 < 1
    img[head] = [0.86, 0.68, 0.55]
    for ex in (cx - w * 0.11, cx + w * 0.11):
        img[((yy - (cy - h * 0.08)) ** 2 + (xx - ex) ** 2) < (w * 0.03) ** 2] = [0.1, 0.1, 0.15]
    mouth = (np.abs(yy - (cy + h * 0.17)) < h * 0.015) & (np.abs(xx - cx) < w * 0.1)
    img[mouth] = [0.6, 0.2, 0.2]
    img += np.random.default_rng(seed).normal(0, 0.01, img.shape).astype(np.float32)
    return torch.from_numpy(img.clip(0, 1))[None]


def talking_frames(n: int = 12, h: int = 256, w: int = 224) -> torch.Tensor:
    """(N, H, W, 3): the test face with a mouth that opens and closes, and a slight head shift."""
    base = face_image(h, w)[0].numpy()
    frames = []
    for i in range(n):
        f = np.roll(base, int(3 * math.sin(i / 3)), axis=1).copy()
        open_ = int(h * 0.01 * (1 + math.sin(i / 2)))
        cy = int(h * 0.67)
        f[cy - open_: cy + open_ + 1, int(w * 0.4): int(w * 0.6)] = [0.3, 0.05, 0.05]
        frames.append(f)
    return torch.from_numpy(np.stack(frames))


def write_wav(path: Path, waveform: torch.Tensor, rate: int) -> Path:
    pcm = (waveform.clamp(-1, 1).numpy().T * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(waveform.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def write_png(path: Path, image: torch.Tensor) -> Path:
    from PIL import Image

    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def write_mp4(path: Path, frames: torch.Tensor, fps: int, audio: torch.Tensor | None = None,
              rate: int = 16000) -> Path:
    """H.264 (+ AAC) test clip with PyAV."""
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        a = None
        if audio is not None:
            a = out.add_stream("aac", rate=rate)
            a.layout = "mono"
        for f in frames:
            arr = (f.numpy() * 255).round().astype(np.uint8)
            for pkt in v.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(pkt)
        for pkt in v.encode():
            out.mux(pkt)
        if a is not None:
            samples = audio[:1].numpy().astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = rate
            for pkt in a.encode(frame):
                out.mux(pkt)
            for pkt in a.encode():
                out.mux(pkt)
    return path


def write_inputs(folder: Path) -> dict[str, Path]:
    """The input files the example workflows name, written into ``folder`` (ComfyUI's input/)."""
    folder.mkdir(parents=True, exist_ok=True)
    clip_audio = voice_waveform(1.2, 16000, seed=2)
    return {
        "talker_face.png": write_png(folder / "talker_face.png", face_image()),
        "talker_voice.wav": write_wav(folder / "talker_voice.wav", voice_waveform(2.0, 22050, channels=2), 22050),
        "talker_speech.wav": write_wav(folder / "talker_speech.wav", voice_waveform(1.0, 16000, seed=1), 16000),
        "talker_reference.mp4": write_mp4(folder / "talker_reference.mp4", talking_frames(30), 25, clip_audio),
        "talker_silent.mp4": write_mp4(folder / "talker_silent.mp4", talking_frames(24), 30),
    }


# ----------------------------------------------------------------------------------------------
# core nodes (stand-ins with the real sockets and widgets, enough to execute our example graphs)


class CoreNode:
    """Socket layout of a core node: inputs (name, type, options), outputs, widget order in UI files."""

    INPUTS: list[tuple[str, str, dict]] = []
    OUTPUTS: list[str] = []
    UI_WIDGETS: list[str] = []  # widgets_values order in UI-format files (incl. upload/UI widgets)

    @classmethod
    def run(cls, **kw):
        raise NotImplementedError


def _input_path(name: str) -> str:
    import folder_paths

    return folder_paths.get_annotated_filepath(name)


class LoadImage(CoreNode):
    INPUTS = [("image", "COMBO", {"image_upload": True})]
    OUTPUTS = ["IMAGE", "MASK"]
    UI_WIDGETS = ["image", "upload"]

    @classmethod
    def run(cls, image):
        from PIL import Image

        arr = np.asarray(Image.open(_input_path(image)).convert("RGB"), np.float32) / 255
        t = torch.from_numpy(arr)[None]
        return t, torch.zeros(1, t.shape[1], t.shape[2])


def _load_audio(path: str) -> dict:
    import av

    with av.open(path) as f:
        stream = f.streams.audio[0]
        chunks = [fr.to_ndarray() for fr in f.decode(stream)]
        rate = stream.codec_context.sample_rate
        layout_channels = stream.codec_context.channels
    data = np.concatenate([c.reshape(layout_channels, -1) if c.shape[0] != layout_channels else c for c in chunks], 1)
    if data.dtype == np.int16:
        data = data.astype(np.float32) / 32768
    return {"waveform": torch.from_numpy(data.astype(np.float32))[None], "sample_rate": rate}


class LoadAudio(CoreNode):
    INPUTS = [("audio", "COMBO", {"audio_upload": True})]
    OUTPUTS = ["AUDIO"]
    UI_WIDGETS = ["audio", "audioUI", "upload"]

    @classmethod
    def run(cls, audio):
        return (_load_audio(_input_path(audio)),)


class VideoStub:
    """What core video nodes pass on a VIDEO socket: frames, audio and rate (or a file)."""

    def __init__(self, images=None, fps=None, audio=None, path=None):
        self.images, self.fps, self.audio, self.path = images, fps, audio, path

    def components(self):
        if self.path is None:
            return self.images, self.audio, self.fps
        import av

        with av.open(self.path) as f:
            vs = f.streams.video[0]
            fps = float(vs.average_rate)
            frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(vs)]
        images = torch.from_numpy(np.stack(frames).astype(np.float32) / 255)
        audio = None
        with av.open(self.path) as f:
            if f.streams.audio:
                audio = _load_audio(self.path)
        return images, audio, fps


class LoadVideo(CoreNode):
    INPUTS = [("file", "COMBO", {"video_upload": True})]
    OUTPUTS = ["VIDEO"]
    UI_WIDGETS = ["file", "upload"]

    @classmethod
    def run(cls, file):
        return (VideoStub(path=_input_path(file)),)


class GetVideoComponents(CoreNode):
    INPUTS = [("video", "VIDEO", {})]
    OUTPUTS = ["IMAGE", "AUDIO", "FLOAT"]

    @classmethod
    def run(cls, video):
        return video.components()


class CreateVideo(CoreNode):
    INPUTS = [("images", "IMAGE", {}), ("fps", "FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}),
              ("audio", "AUDIO", {"optional": True})]
    OUTPUTS = ["VIDEO"]
    UI_WIDGETS = ["fps"]

    @classmethod
    def run(cls, images, fps, audio=None):
        return (VideoStub(images=images, fps=fps, audio=audio),)


class SaveVideo(CoreNode):
    INPUTS = [("video", "VIDEO", {}), ("filename_prefix", "STRING", {"default": "video/ComfyUI"}),
              ("format", "COMBO", {"options": ["auto", "mp4"], "default": "auto"}),
              ("codec", "COMBO", {"options": ["auto", "h264"], "default": "auto"})]
    OUTPUTS = []
    UI_WIDGETS = ["filename_prefix", "format", "codec"]
    saved: list = []

    @classmethod
    def run(cls, video, filename_prefix, format, codec):
        import folder_paths

        images, audio, fps = video.components()
        folder, name, counter, sub, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                          folder_paths.get_output_directory())
        path = Path(folder) / f"{name}_{counter:05}_.mp4"
        wav = None if audio is None else audio["waveform"][0]
        rate = 16000 if audio is None else audio["sample_rate"]
        write_mp4(path, images, int(round(float(fps))), wav, rate)
        cls.saved.append(path)
        return ()


class SaveAudio(CoreNode):
    INPUTS = [("audio", "AUDIO", {}), ("filename_prefix", "STRING", {"default": "audio/ComfyUI"})]
    OUTPUTS = []
    UI_WIDGETS = ["filename_prefix"]
    saved: list = []

    @classmethod
    def run(cls, audio, filename_prefix):
        import folder_paths

        folder, name, counter, sub, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                          folder_paths.get_output_directory())
        path = Path(folder) / f"{name}_{counter:05}_.wav"
        write_wav(path, audio["waveform"][0], audio["sample_rate"])
        cls.saved.append(path)
        return ()


CORE_NODES: dict[str, type[CoreNode]] = {
    c.__name__: c for c in (LoadImage, LoadAudio, LoadVideo, GetVideoComponents, CreateVideo, SaveVideo, SaveAudio)
}


# ----------------------------------------------------------------------------------------------
# executing an API-format graph


def topological_order(prompt: dict) -> list[str]:
    order, state = [], {}

    def visit(nid: str):
        if state.get(nid) == "done":
            return
        if state.get(nid) == "active":
            raise AssertionError(f"cycle through node {nid}")
        state[nid] = "active"
        for value in prompt[nid]["inputs"].values():
            if isinstance(value, list):
                visit(str(value[0]))
        state[nid] = "done"
        order.append(nid)

    for nid in prompt:
        visit(nid)
    return order


def execute_prompt(prompt: dict, our_nodes: dict[str, type], overrides: dict | None = None,
                   hidden: dict | None = None) -> dict[str, Any]:
    """Run every node of an API-format ``prompt`` in dependency order; returns node id → outputs.

    ``overrides``: {node id: {input: value}} applied on a copy (e.g. shorter max_seconds).
    Our nodes run through :func:`run_node`; core nodes through the stand-ins above.
    """
    prompt = json.loads(json.dumps(prompt))
    for nid, values in (overrides or {}).items():
        prompt[nid]["inputs"].update(values)
    results: dict[str, Any] = {}
    for nid in topological_order(prompt):
        node = prompt[nid]
        kwargs = {}
        for name, value in node["inputs"].items():
            kwargs[name] = results[str(value[0])][value[1]] if isinstance(value, list) else value
        ctype = node["class_type"]
        if ctype in our_nodes:
            out = run_node(our_nodes[ctype], hidden={"PROMPT": prompt, **(hidden or {})}, **kwargs)
            results[nid] = out.args
            results[nid + ":ui"] = out.ui
        else:
            with torch.inference_mode():
                results[nid] = CORE_NODES[ctype].run(**kwargs)
    return results


def ensure_dir(path) -> Path:
    os.makedirs(path, exist_ok=True)
    return Path(path)

