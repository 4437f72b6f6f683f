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


# --------------------------------------------------------------------------- video file options


def _top_boxes(path: Path) -> list[str]:
    """The top-level MP4 box types, in file order."""
    data, pos, kinds = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kinds.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return kinds


def _x264_options(path: Path) -> str:
    """The settings x264 writes into the stream (its SEI text): what the encoder really ran with."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\0", start)].decode("latin-1")


@pytest.mark.slow
def test_overlap_fragmented_crf_and_preset_reach_the_file(debug_models, inputs, tmp_path):
    """--overlap renders while generating and gives the same frames and sound as --no-overlap (lossless
    crf 0 so that the decoded files compare exactly); --fragmented writes moof fragments; --crf and --preset
    are what x264 ran with."""
    common = ["generate", "--models", debug_models, "--text", "Hello there. Nice day.", "--seed", "3"]
    common += ["--ref-audio", inputs / "voice.wav", "--ref-image", inputs / "face.png", "--crf", "0"]
    common += ["--preset", "ultrafast", "--render-chunk", "3", *COMMON]
    plain, live = tmp_path / "plain.mp4", tmp_path / "live.mp4"
    code, _, stderr = cli("-v", *common, "--no-overlap", "--out", plain)
    assert code == 0, stderr
    assert "streaming with overlap off" in stderr
    code, _, stderr = cli("-v", *common, "--overlap", "--fragmented", "--out", live)
    assert code == 0, stderr
    assert "streaming with overlap on" in stderr
    assert_av(plain, 0.3)
    # (a fragmented file has no sample table, so its probed frame count and rate are not checked here:
    # its decoded frames are compared with the plain file's below)
    streams = media.probe_media(live)["streams"]
    assert sorted((x["type"], x["codec"]) for x in streams) == [("audio", "aac"), ("video", "h264")]

    assert "moof" not in _top_boxes(plain) and _top_boxes(plain).index("moov") < _top_boxes(plain).index("mdat")
    assert "moof" in _top_boxes(live)
    for path in (plain, live):
        options = _x264_options(path)
        assert "qp=0" in options and "cabac=0" in options, options  # crf 0 = lossless; ultrafast has no CABAC
    assert "keyint=25" in _x264_options(live)  # one fragment (and keyframe) a second

    frames_a, _ = media.load_video_frames(plain)
    frames_b, _ = media.load_video_frames(live)
    assert frames_a.shape == frames_b.shape and frames_a.shape[0] >= 8
    assert torch.equal(frames_a, frames_b)
    audio_a, _ = media.load_audio(plain)
    audio_b, _ = media.load_audio(live)
    # a fragmented MP4 has no edit list, so its decoded sound starts with the AAC encoder's 1024 priming
    # samples (at 48 kHz), which the plain file's edit list hides; after them the two are the same samples
    assert audio_a.abs().max() > 0 and audio_b.shape[1] - audio_a.shape[1] == 1024
    assert torch.equal(audio_a, audio_b[:, 1024:])


@pytest.mark.parametrize(
    "extra,code,match",
    [
        (("--crf", "52"), 2, "--crf must be in 0..51, got 52"),
        (("--crf", "high"), 2, "--crf takes a whole number 0..51"),
        (("--preset", "fastest"), 2, "invalid choice: 'fastest'"),
        (("--speech-only", "--crf", "20"), 1, "--crf is for video; --speech-only writes a .wav"),
        (("--drive-video", "{clip}", "--overlap"), 1, "--overlap: V2A keeps the clip's own frames"),
        (("--paste-back", "--overlap"), 1, "--overlap does not apply to --paste-back"),
    ],
)
def test_video_options_are_checked_before_anything_loads(debug_models, inputs, tmp_path, capsys, extra, code, match):
    from talker_core.cli import main

    extra = [str(e).format(clip=inputs / "clip.mp4") for e in extra]
    out = tmp_path / ("o.wav" if "--speech-only" in extra else "o.mp4")
    args = ["generate", "--models", str(debug_models), "--ref-audio", str(inputs / "voice.wav"), "--quiet"]
    if "--drive-video" not in extra:
        args += ["--text", "Hi.", "--ref-image", str(inputs / "face.png")]
    assert main([*args, *extra, "--out", str(out)]) == code
    assert match in capsys.readouterr().err
    assert not out.exists()
