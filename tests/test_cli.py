"""The command line as a user runs it: every mode writes a playable file; mistakes give one clear line."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from talker_core import media

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "talker_core", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    sr = 22050
    t = torch.arange(int(sr * 2.0)) / sr
    wav = (0.3 * torch.sin(2 * math.pi * 220 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t)))[None]
    media.write_wav(d / "voice.wav", wav, sr)
    frames = (torch.rand(30, 96, 128, 3) * 255).to(torch.uint8)
    media.write_mp4(d / "clip.mp4", frames, 30, audio=wav, sample_rate=sr)
    media.write_mp4(d / "silent.mp4", frames[:20], 30)
    from PIL import Image

    Image.fromarray(frames[0].numpy()).save(d / "face.png")
    return d


def assert_av(path: Path, min_seconds: float, size=(512, 512)):
    info = media.probe_media(path)
    kinds = sorted(s["type"] for s in info["streams"])
    assert kinds == ["audio", "video"], info
    video = next(s for s in info["streams"] if s["type"] == "video")
    audio = next(s for s in info["streams"] if s["type"] == "audio")
    assert video["codec"] == "h264" and audio["codec"] == "aac"
    assert (video["width"], video["height"]) == size and abs(video["fps"] - 25) < 1e-6
    assert abs(video["duration"] - audio["duration"]) <= 1 / 25 + 1e-6
    assert video["duration"] >= min_seconds
    frames, _ = media.load_video_frames(path)
    assert frames.shape[0] == video["frames"]


COMMON = ("--max-seconds", "0.32", "--quiet")


@pytest.mark.slow
def test_t2av_with_style_prefix(debug_models, inputs, tmp_path):
    out = tmp_path / "t2av.mp4"
    code, stdout, stderr = cli(
        "generate",
        "--models",
        debug_models,
        "--text",
        "Hello there. Nice day.",
        "--ref-audio",
        inputs / "voice.wav",
        "--ref-video",
        inputs / "clip.mp4",
        "--prefix-seconds",
        "0.16",
        "--out",
        out,
        *COMMON,
    )
    assert code == 0, stderr
    assert_av(out, 0.16)
    assert "RTF" in stdout and "t2av" in stdout


@pytest.mark.slow
def test_a2v(debug_models, inputs, tmp_path):
    out = tmp_path / "a2v.mp4"
    code, _, stderr = cli(
        "generate",
        "--models",
        debug_models,
        "--drive-audio",
        inputs / "voice.wav",
        "--ref-image",
        inputs / "face.png",
        "--out",
        out,
        *COMMON,
    )
    assert code == 0, stderr
    assert_av(out, 0.3)


@pytest.mark.slow
def test_v2a_keeps_the_clips_frames_unless_asked_to_rerender(debug_models, inputs, tmp_path):
    out = tmp_path / "v2a.mp4"
    args = ["generate", "--models", debug_models, "--drive-video", inputs / "silent.mp4"]
    args += ["--ref-audio", inputs / "voice.wav", "--text", "Dubbed words.", *COMMON]
    code, _, stderr = cli(*args, "--out", out)
    assert code == 0, stderr
    # silent.mp4 is 0.67 s: --max-seconds 0.32 uses only the start, and says so
    assert "warning: --drive-video" in stderr and "only the first 0.32 s are used" in stderr, stderr
    assert_av(out, 0.3, size=(128, 96))  # the clip's own picture, as the ComfyUI V2A workflow
    kept, _ = media.load_video_frames(out)
    source, _ = media.load_video_frames(inputs / "silent.mp4", target_fps=25)
    n = kept.shape[0]
    assert n == 8  # 0.32 s at 25 fps
    err = (kept.float() - source[:n].float()).abs().mean()
    assert err < 20, err  # the same frames (through a second H.264 pass); random frames differ by ~85
    code, _, stderr = cli(*args, "--rerender-face", "--out", tmp_path / "v2a_rendered.mp4")
    assert code == 0, stderr
    assert_av(tmp_path / "v2a_rendered.mp4", 0.3)  # rendered through LIA-X: 512×512


@pytest.mark.slow
def test_speech_only_batch_of_seeds(debug_models, inputs, tmp_path):
    out = tmp_path / "speech.wav"
    code, stdout, stderr = cli(
        "generate",
        "--models",
        debug_models,
        "--speech-only",
        "--text",
        "Just talk.",
        "--ref-audio",
        inputs / "voice.wav",
        "--seed",
        "1",
        "--seed",
        "2",
        "--out",
        out,
        *COMMON,
    )
    assert code == 0, stderr
    for name in ("speech_1.wav", "speech_2.wav"):
        info = media.probe_media(tmp_path / name)
        assert [s["type"] for s in info["streams"]] == ["audio"]
        assert info["streams"][0]["sample_rate"] == 24000
    a, _ = media.load_audio(tmp_path / "speech_1.wav")
    b, _ = media.load_audio(tmp_path / "speech_2.wav")
    assert a.shape != b.shape or not torch.equal(a, b)


@pytest.mark.parametrize(
    "extra,match",
    [
        (("--text", ""), "empty"),
        (("--text", "Hi.", "--prefix-seconds", "10"), "longer than"),
        (("--text", "Hi.", "--ref-audio", "{face}"), "no audio stream"),
        (("--text", "Hi.", "--ref-audio", "{silent}"), "no audio stream"),
        (("--text", "Hi.", "--ref-audio", "{missing}"), "does not exist"),
    ],
)
def test_bad_inputs_one_line_and_no_output(debug_models, inputs, tmp_path, extra, match):
    out = tmp_path / "bad.mp4"
    names = {"face": inputs / "face.png", "silent": inputs / "silent.mp4", "missing": inputs / "nope.wav"}
    extra = [str(e).format(**names) for e in extra]
    args = ["generate", "--models", debug_models, "--ref-image", inputs / "face.png", "--out", out, *COMMON]
    if "--ref-audio" not in extra:
        args += ["--ref-audio", inputs / "voice.wav"]
    if "--prefix-seconds" in extra:
        args[args.index("--ref-image") : args.index("--ref-image") + 2] = ["--ref-video", inputs / "clip.mp4"]
    code, _, stderr = cli(*args, *extra)
    assert code == 1
    assert match in stderr and "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len([line for line in lines if line.startswith("error")]) == 1 and lines[-1].startswith("error")
    assert len(lines) <= 3  # the error, at most after the noise image's two warnings (no face found, small)
    assert not out.exists() and not list(tmp_path.glob(".*bad*"))


def test_missing_models_names_the_file_and_the_command(inputs, tmp_path):
    code, _, stderr = cli(
        "generate",
        "--models",
        tmp_path / "empty",
        "--text",
        "Hi.",
        "--ref-audio",
        inputs / "voice.wav",
        "--ref-image",
        inputs / "face.png",
        "--out",
        tmp_path / "o.mp4",
    )
    assert code == 1
    assert "talker-t2av" in stderr and "python -m talker_core download" in stderr


def test_video_without_frames_is_refused(debug_models, inputs, tmp_path):
    empty = tmp_path / "noframes.mp4"
    media.write_wav(tmp_path / "a.wav", torch.zeros(1, 2400), 24000)
    # an audio-only MP4: a "video" with no video frames
    subprocess.run(
        [
            media._ffmpeg() if hasattr(media, "_ffmpeg") else __import__("imageio_ffmpeg").get_ffmpeg_exe(),
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(tmp_path / "a.wav"),
            "-c:a",
            "aac",
            str(empty),
        ],
        check=True,
    )
    code, _, stderr = cli(
        "generate",
        "--models",
        debug_models,
        "--drive-video",
        empty,
        "--ref-audio",
        inputs / "voice.wav",
        "--out",
        tmp_path / "o.mp4",
        *COMMON,
    )
    assert code == 1 and "video" in stderr and "Traceback" not in stderr
