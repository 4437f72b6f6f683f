"""Nothing lost, nothing crashed (issue 10): inputs never overwritten, true messages, no silent wrong output.

Command-line cases run ``python -m talker_core`` in a subprocess, as a user does; most are refused before
any model loads (checked: the "loading models" log line never appears), so they take seconds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from talker_core import media, pipeline
from talker_core.media import MediaError

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None, timeout=600):
    proc = subprocess.run(
        [sys.executable, "-m", "talker_core", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety_inputs")
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


def early(debug_models, *args):
    """Run generate with -v; returns (status, stderr) and checks no model was loaded."""
    code, _, stderr = cli("-v", "generate", "--models", debug_models, "--quiet", "--max-seconds", "0.32", *args)
    assert "loading models" not in stderr, stderr
    assert "Traceback" not in stderr and ".tmp" not in stderr, stderr
    return code, stderr


# ---------------------------------------------------------------------------------------------- 1. outputs


MODES = {
    "t2av": lambda i: ["--text", "Hi.", "--ref-audio", i / "voice.wav", "--ref-video", i / "clip.mp4"],
    "a2v": lambda i: ["--drive-audio", i / "voice.wav", "--ref-video", i / "clip.mp4"],
    "v2a": lambda i: ["--drive-video", i / "silent.mp4", "--ref-audio", i / "voice.wav"],
    "speech": lambda i: ["--speech-only", "--text", "Hi.", "--ref-audio", i / "voice.wav"],
}
VICTIM = {"t2av": ("clip.mp4", "--ref-video"), "a2v": ("clip.mp4", "--ref-video"),
          "v2a": ("silent.mp4", "--drive-video"), "speech": ("voice.wav", "--ref-audio")}  # fmt: skip


@pytest.mark.parametrize("mode", sorted(MODES))
def test_output_that_is_an_input_is_refused_in_every_mode(debug_models, inputs, tmp_path, mode):
    name, flag = VICTIM[mode]
    before = digest(inputs / name)
    # the same file through a symbolic link in another folder, and through a relative path with '..'
    link = tmp_path / ("link" + Path(name).suffix)
    link.symlink_to(inputs / name)
    relative = os.path.relpath(inputs / name, ROOT).replace(os.sep, "/")
    relative = f"{inputs.name}/../{relative}" if not relative.startswith("..") else relative
    for out in (inputs / name, link, relative):
        code, stderr = early(debug_models, *MODES[mode](inputs), "--out", out)
        assert code == 1
        assert "--out" in stderr and flag in stderr and "replace your input" in stderr, stderr
        assert digest(inputs / name) == before


def test_unusable_output_locations_are_found_before_loading(debug_models, inputs, tmp_path):
    args = MODES["speech"](inputs)
    folder = tmp_path / "a_folder.wav"
    folder.mkdir()
    code, stderr = early(debug_models, *args, "--out", folder)
    assert code == 1 and "is a folder" in stderr and "--out" in stderr
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    code, stderr = early(debug_models, *args, "--out", a_file / "sub" / "o.wav")
    assert code == 1 and "is a file, not a folder" in stderr and "--out" in stderr
    code, stderr = early(debug_models, *args, "--out", "/proc/talker_out.wav")  # a read-only file system
    assert code == 1 and "not writable" in stderr and "--out /proc/talker_out.wav" in stderr
    if os.geteuid() != 0:  # root writes into read-only folders; the /proc case above covers it
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, stderr = early(debug_models, *args, "--out", ro / "o.wav")
        assert code == 1 and "not writable" in stderr


def test_sigterm_while_writing_leaves_nothing_and_exits_as_interrupted(debug_models, inputs, tmp_path):
    """SIGTERM arrives while the output is written (at the rename of the finished temporary file)."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["generate", "--models", str(debug_models), *map(str, MODES["speech"](inputs))]
    argv += ["--out", str(out_dir / "speech.wav"), "--quiet", "--max-seconds", "0.32"]
    script = textwrap.dedent(
        """
        import os, signal, sys
        real_replace = os.replace
        def replace(src, dst, *a, **k):
            if ".tmp" in str(src):
                os.kill(os.getpid(), signal.SIGTERM)  # as a process manager would, mid-write
            return real_replace(src, dst, *a, **k)
        os.replace = replace
        from talker_core.cli import main
        sys.exit(main(ARGV))
        """
    ).replace("ARGV", repr(argv))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 128 + 15, proc.stderr
    assert "stopped (SIGTERM)" in proc.stderr and "Traceback" not in proc.stderr
    assert list(out_dir.iterdir()) == []  # no final file, no temporary file


# ---------------------------------------------------------------------------------------------- 3. messages


def test_input_paths_say_what_they_are(debug_models, inputs, tmp_path):
    base = ["--speech-only", "--text", "Hi.", "--out", tmp_path / "o.wav"]
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    broken = tmp_path / "broken.wav"
    broken.symlink_to(tmp_path / "gone.wav")
    cases = [
        (tmp_path, "is a folder, not a file"),
        (fifo, "is a pipe, not a file"),
        ("/dev/null", "is a device, not a file"),
        (tmp_path / "nope.wav", "does not exist"),
        (broken, "is a broken link"),
    ]
    for path, words in cases:
        code, stderr = early(debug_models, *base, "--ref-audio", path)
        assert code == 1 and f"--ref-audio {path} {words}" in stderr, stderr
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    code, stderr = early(debug_models, *base, "--ref-audio", empty)
    assert code == 1 and "is empty (0 bytes)" in stderr


def test_undecodable_inputs_are_reported_before_any_model_loads(debug_models, inputs, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(os.urandom(4096))
    code, stderr = early(
        debug_models, "--speech-only", "--text", "Hi.", "--ref-audio", junk, "--out", tmp_path / "o.wav"
    )
    assert code == 1 and "junk.wav" in stderr
    bad_image = tmp_path / "face.png"
    bad_image.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    code, stderr = early(
        debug_models, "--text", "Hi.", "--ref-audio", inputs / "voice.wav", "--ref-image", bad_image,
        "--out", tmp_path / "o.mp4",
    )  # fmt: skip
    assert code == 1 and "not an image the pack can read" in stderr and "PNG, JPEG" in stderr, stderr
    assert "Error" not in stderr.replace("error:", ""), stderr


def test_models_path_that_is_a_file_is_called_a_file(inputs, tmp_path):
    a_file = tmp_path / "models.bin"
    a_file.write_bytes(b"x")
    code, _, stderr = cli(*["generate", "--models", a_file, *MODES["speech"](inputs), "--out", tmp_path / "o.wav"])
    assert code == 1 and f"{a_file} is a file, not a folder" in stderr and "missing in" not in stderr


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_device_mps_without_mps_in_our_words(debug_models, inputs, tmp_path):
    code, stderr = early(debug_models, *MODES["speech"](inputs), "--device", "mps", "--out", tmp_path / "o.wav")
    assert code == 1 and "--device mps" in stderr and "no usable MPS" in stderr
    assert "RuntimeError" not in stderr


def test_fp16_on_the_cpu_is_refused_up_front(debug_models, inputs, tmp_path):
    args = MODES["speech"](inputs)
    code, stderr = early(debug_models, *args, "--device", "cpu", "--dtype", "fp16", "--out", tmp_path / "o.wav")
    assert code == 1 and "--dtype fp16" in stderr and "NaN" in stderr and "fp32" in stderr
    from talker_core.weights.loaders import check_precision

    with pytest.raises(ValueError, match="fp16 does not work on the CPU"):
        check_precision("cpu", torch.float16)
    check_precision("cpu", torch.float32)
    check_precision("cpu", torch.bfloat16)


def test_download_without_network_says_the_hub_cannot_be_reached(tmp_path):
    code, _, stderr = cli("download", "--models", tmp_path / "m", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert code == 1
    assert "hub cannot be reached at http://127.0.0.1:9" in stderr
    for words in ("network", "proxy", "HF_ENDPOINT", str(tmp_path / "m"), "lia-x.pt", "talker-t2av/"):
        assert words in stderr, (words, stderr)
    assert "ConnectError" not in stderr and "(DownloadError)" not in stderr


def test_image_that_cannot_be_read_names_the_formats_that_work(tmp_path):
    for name, data in (("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64), ("x.jpg", b"\xff\xd8\xff" + b"\1" * 50)):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(MediaError, match=r"not an image the pack can read.*PNG, JPEG") as info:
            media.load_image(p)
        assert "Error" not in str(info.value)


# ---------------------------------------------------------------------------------------------- 4. text


@pytest.mark.parametrize(
    "text,found",
    [
        ("\u200b\u200b\u2060", "ZERO WIDTH SPACE"),
        ("\u200e\u202e", "LEFT-TO-RIGHT MARK"),
        ("... !?", "punctuation or symbols"),
        ("\u0301", "COMBINING ACUTE ACCENT"),
        ("\ue000", "U+E000"),
        (" \t\n", "empty"),
    ],
)
def test_text_without_speakable_content_is_refused_naming_what_was_found(text, found):
    reason = pipeline.unspeakable_reason(text)
    assert reason is not None and found in reason
    with pytest.raises(ValueError, match="needs the words to speak") as info:
        pipeline.generate(None, pipeline.TalkRequest(text=text), voice=object(), face=object())
    assert found in str(info.value)
    for ok in ("Hi", "３", "你好", "x\u200b"):
        assert pipeline.unspeakable_reason(ok) is None


def test_cli_refuses_unspeakable_text(debug_models, inputs, tmp_path):
    code, stderr = early(debug_models, "--speech-only", "--text", "\u200b\u200b", "--ref-audio", inputs / "voice.wav",
                         "--out", tmp_path / "o.wav")  # fmt: skip
    assert code == 1 and "--text" in stderr and "ZERO WIDTH SPACE" in stderr


# ---------------------------------------------------------------------------------------------- 4b. wrong output


class _NaNRenderer(torch.nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
        self.calls = 0

    def render(self, z, feats, alpha, check=None):
        out = torch.zeros(alpha.shape[0], 3, 512, 512, dtype=self.w.dtype)
        if self.calls == 1:
            out[-1, 0, 0, 0] = float(
                "nan"
            )  # one bad value in the last frame of the second chunk (the first frame renders alone)
        self.calls += 1
        return out


class _NaNCodec(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    hop = 960
    cfg = type("Cfg", (), {"codec_decoder": type("Dec", (), {"z_dim": 32})})

    def decoder_context_frames(self):  # the codec interface the chunked decoder reads
        return 2

    def decode(self, latents):
        return torch.full((1, 1, latents.shape[1] * 960), float("inf"))


def test_non_finite_values_are_an_error_naming_the_stage():
    from talker_core.pipeline._helpers import NonFiniteError
    from talker_core.types import Identity, MotionCodes, SpeechLatents

    face = Identity(z=torch.zeros(1, 4), feats=[], first_motion=torch.zeros(40))
    motion = MotionCodes(torch.zeros(10, 40))
    with pytest.raises(NonFiniteError, match=r"rendering \(frames 1-8\).*fp16.*fp32"):
        pipeline.render_motion(_NaNRenderer(torch.float16), face, motion, chunk=8, as_uint8=True)
    with pytest.raises(NonFiniteError, match=r"rendering \(frames 1-4\).*damaged"):
        pipeline.render_motion(_NaNRenderer(torch.float32), face, motion, chunk=4)
    with pytest.raises(NonFiniteError, match="speech decoding"):
        pipeline.decode_speech(_NaNCodec(), SpeechLatents(torch.zeros(5, 32)))


def _float_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    import struct

    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_clipped_reference_is_reported(tmp_path, caplog):
    loud = tmp_path / "loud.wav"
    t = np.arange(16000) / 16000
    _float_wav(loud, 3.0 * np.sin(2 * np.pi * 200 * t), 16000)  # far above full scale
    with caplog.at_level(logging.WARNING, logger="talker_core"):
        wav, _ = media.load_audio(loud)
    assert float(wav.abs().max()) <= 1.0
    assert any("above full scale" in r.getMessage() and "loud.wav" in r.getMessage() for r in caplog.records)
    caplog.clear()
    quiet = tmp_path / "ok.wav"
    _float_wav(quiet, 0.5 * np.sin(2 * np.pi * 200 * t), 16000)
    with caplog.at_level(logging.WARNING, logger="talker_core"):
        media.load_audio(quiet)
    assert not caplog.records


def test_truncated_video_is_reported(tmp_path, caplog):
    sr = 24000
    wav = (0.3 * torch.sin(2 * math.pi * 220 * torch.arange(sr * 5) / sr))[None]
    frames = (torch.rand(125, 64, 64, 3) * 255).to(torch.uint8)
    full = tmp_path / "full.mp4"
    media.write_mp4(full, frames, 25, audio=wav, sample_rate=sr)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 4])  # still opens: the index is at the front
    with caplog.at_level(logging.WARNING, logger="talker_core"):
        got, _ = media.load_video_frames(cut, target_fps=25)
        media.load_audio(cut)
    assert got.shape[0] < 125
    messages = [r.getMessage() for r in caplog.records]
    assert any("video file" in m and "declares 5.00 s" in m and "truncated" in m for m in messages), messages
    assert any("audio file" in m and "declares 5.00 s" in m for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="talker_core"):
        media.load_video_frames(full, target_fps=25)
        media.load_audio(full)
    assert not caplog.records


def test_driving_input_cut_at_max_seconds_is_reported(caplog):
    from talker_core.pipeline.encode import _warn_cut

    with caplog.at_level(logging.WARNING, logger="talker_core"):
        _warn_cut("driving audio", 12.0, 5.0)
        _warn_cut("driving audio", 5.0, 5.0)
    assert len(caplog.records) == 1 and "12.00 s" in caplog.records[0].getMessage()


def test_write_errors_name_out_never_a_temporary_file(tmp_path):
    from talker_core.cli.checks import writing

    out = tmp_path / "clip.mp4"
    with pytest.raises(ValueError) as info, writing(out):
        raise MediaError(f"ffmpeg could not write {tmp_path}/.clip.mp4.x1y2.tmp.mp4 (exit code 1)")
    assert str(out) in str(info.value) and ".tmp" not in str(info.value)
    with (
        pytest.raises(ValueError, match=r"--out .*clip.mp4 could not be written \(No space left on device\)"),
        writing(out),
    ):
        raise OSError(28, "No space left on device", str(tmp_path / ".clip.tmp.mp4"))


def test_cli_reports_a_truncated_driving_file(debug_models, inputs, tmp_path):
    sr = 24000
    wav = (0.3 * torch.sin(2 * math.pi * 220 * torch.arange(sr * 5) / sr))[None]
    full = tmp_path / "full.mp4"
    media.write_mp4(full, (torch.rand(125, 32, 32, 3) * 255).to(torch.uint8), 25, audio=wav, sample_rate=sr)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 4])  # declares 5 s, about 1.2 s decode
    out = tmp_path / "a2v.mp4"
    code, _, stderr = cli(
        "generate", "--models", debug_models, "--drive-audio", cut, "--ref-image", inputs / "face.png",
        "--max-seconds", "3", "--quiet", "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    # a cut at a packet boundary ends the stream early, a cut inside one is damaged data: both are reported
    assert "warning: audio file" in stderr and "5.00 s" in stderr and "truncated" in stderr, stderr
    assert media.probe_media(out)["duration"] < 2.0
