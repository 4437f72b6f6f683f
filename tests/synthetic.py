"""Test inputs made here: synthetic speech-like audio, a face-like image, talking frames, the files
the example workflows name, and a cheap model with LIA-X's interface. Nothing here is ComfyUI's."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch

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

    def render(self, z: torch.Tensor, feats, alpha: torch.Tensor, check=None) -> torch.Tensor:
        if check is not None:  # LIA-X polls it between its blocks; once a call here
            check()
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
        f[cy - open_ : cy + open_ + 1, int(w * 0.4) : int(w * 0.6)] = [0.3, 0.05, 0.05]
        frames.append(f)
    return torch.from_numpy(np.stack(frames))


def drawn_face(width: int, height: int, cx: float, cy: float, s: float) -> np.ndarray:
    """A photo-like drawing of a head and shoulders (uint8 (H, W, 3)); ``s`` is the head's width."""
    from PIL import Image, ImageDraw, ImageFilter

    im = Image.new("RGB", (width, height), (90, 110, 130))
    d = ImageDraw.Draw(im)
    d.ellipse([cx - 0.55 * s, cy - 0.75 * s, cx + 0.55 * s, cy + 0.7 * s], fill=(60, 40, 30))  # hair
    d.ellipse([cx - 0.5 * s, cy - 0.6 * s, cx + 0.5 * s, cy + 0.7 * s], fill=(225, 185, 160))  # skin
    d.rectangle([cx - 0.2 * s, cy + 0.6 * s, cx + 0.2 * s, cy + 1.0 * s], fill=(215, 175, 150))  # neck
    d.ellipse([cx - 1.0 * s, cy + 0.9 * s, cx + 1.0 * s, cy + 2.0 * s], fill=(40, 60, 120))  # shoulders
    for side in (-1, 1):
        ex, ey = cx + side * 0.2 * s, cy - 0.12 * s
        d.rectangle([ex - 0.13 * s, ey - 0.16 * s, ex + 0.13 * s, ey - 0.11 * s], fill=(50, 35, 25))
        d.ellipse([ex - 0.1 * s, ey - 0.05 * s, ex + 0.1 * s, ey + 0.05 * s], fill=(245, 245, 245))
        d.ellipse([ex - 0.045 * s, ey - 0.045 * s, ex + 0.045 * s, ey + 0.045 * s], fill=(30, 20, 15))
    d.polygon(
        [(cx, cy - 0.05 * s), (cx - 0.07 * s, cy + 0.17 * s), (cx + 0.07 * s, cy + 0.17 * s)], fill=(195, 150, 125)
    )
    d.ellipse([cx - 0.17 * s, cy + 0.28 * s, cx + 0.17 * s, cy + 0.36 * s], fill=(150, 60, 60))
    return np.array(im.filter(ImageFilter.GaussianBlur(max(1, s / 100))))


def drawn_face_clip(
    width: int, height: int, cx: float, cy: float, s: float, n: int = 12, sway: float = 0.0
) -> torch.Tensor:
    """(N, H, W, 3) uint8: :func:`drawn_face` whose head sways ``sway`` pixels left and right over the clip."""
    return torch.from_numpy(np.stack([drawn_face(width, height, cx + sway * math.sin(i / 2), cy, s) for i in range(n)]))


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


def write_mp4(path: Path, frames: torch.Tensor, fps: int, audio: torch.Tensor | None = None, rate: int = 16000) -> Path:
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
        # paste-back's non-square photo, and the dialogue example's second speaker
        "talker_portrait.png": write_png(folder / "talker_portrait.png", face_image(PORTRAIT[1], PORTRAIT[0], seed=3)),
        "talker_voice_b.wav": write_wav(folder / "talker_voice_b.wav", voice_waveform(1.5, 22050, seed=4), 22050),
        "talker_face_b.png": write_png(folder / "talker_face_b.png", face_image(seed=5).flip(2)),
    }


PORTRAIT = (240, 320)  # (width, height) of the example input talker_portrait.png
