"""talker_core.media: decoding (audio, video, images), identity preparation, MP4/WAV writing.

Every input is generated here (numpy → WAV, the imageio-ffmpeg binary, PyAV
encoders, Pillow), kept tiny so the whole file runs in seconds.
"""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

from talker_core.media import (  # noqa: E402
    MediaError,
    decode_video,
    load_audio,
    load_image,
    load_video_frames,
    prepare_identity_image,
    probe_media,
    resample_frames_to_fps,
    write_mp4,
    write_wav,
)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def tones(rate: int, channels: int, seconds: float = 0.5) -> np.ndarray:
    """(C, T) float32: channel c is a 0.5-amplitude sine at 220·(c+1) Hz."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= atol, f"max abs difference {err} > {atol}"


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


# --------------------------------------------------------------------------- audio

AUDIO_CASES = [
    # (suffix, ffmpeg codec args or None for our own WAV, rate, channels, lossless)
    ("wav", None, 8000, 1, True),
    ("wav", None, 44100, 2, True),
    ("wav", None, 48000, 6, True),
    ("wav", ["-c:a", "pcm_u8"], 8000, 1, False),
    ("wav", ["-c:a", "pcm_s24le"], 48000, 2, True),
    ("wav", ["-c:a", "pcm_f32le"], 44100, 2, True),
    ("flac", ["-c:a", "flac"], 44100, 2, True),
    ("flac", ["-c:a", "flac"], 48000, 6, True),
    ("mp3", ["-c:a", "libmp3lame", "-b:a", "128k"], 44100, 2, False),
    ("mp3", ["-c:a", "libmp3lame", "-b:a", "32k"], 8000, 1, False),
    ("m4a", ["-c:a", "aac", "-b:a", "128k"], 48000, 2, False),
    ("ogg", ["-c:a", "libvorbis"], 44100, 2, False),
]


@pytest.mark.parametrize(
    "suffix,codec,rate,channels,lossless",
    AUDIO_CASES,
    ids=[f"{c[0]}-{(c[1] or ['', 's16'])[-1]}-{c[2]}-{c[3]}ch" for c in AUDIO_CASES],
)
def test_load_audio_formats(tmp_path, suffix, codec, rate, channels, lossless):
    ref = tones(rate, channels)
    src = write_wav(tmp_path / "src.wav", ref, rate)
    path = src
    if codec is not None:
        path = tmp_path / f"clip.{suffix}"
        ffmpeg("-i", str(src), *codec, str(path))
    wav, sr = load_audio(path)
    assert sr == rate
    assert wav.dtype == torch.float32 and wav.ndim == 2 and wav.shape[0] == channels
    assert float(wav.abs().max()) <= 1.0
    x = wav.numpy()
    if lossless:
        assert x.shape[1] == ref.shape[1]
        np.testing.assert_allclose(x, ref, atol=1.5 / 32767)
    else:
        assert abs(x.shape[1] - ref.shape[1]) <= 2304  # codec framing/padding
    for c in range(channels):  # channel order preserved: each channel keeps its own tone
        assert abs(dominant_hz(x[c], rate) - 220 * (c + 1)) < 10


def test_load_audio_max_seconds_stops_early(tmp_path):
    long_mp3 = tmp_path / "ten_minutes.mp3"
    ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "600", "-c:a", "libmp3lame", "-b:a", "8k", str(long_mp3)
    )
    wav, sr = load_audio(long_mp3, max_seconds=1.5)
    assert sr == 8000 and wav.shape == (1, 12000)

    ref = tones(16000, 2)
    path = write_wav(tmp_path / "a.wav", ref, 16000)
    part, _ = load_audio(path, max_seconds=0.25)
    full, _ = load_audio(path)
    assert part.shape == (2, 4000)
    assert torch.equal(part, full[:, :4000])
    beyond, _ = load_audio(path, max_seconds=99)
    assert torch.equal(beyond, full)


def test_load_audio_track_of_a_video(tmp_path):
    out = write_mp4(
        tmp_path / "v.mp4",
        torch.zeros(25, 16, 16, 3, dtype=torch.uint8),
        25,
        tones(24000, 1, 1.0),
        24000,
        preset="ultrafast",
    )
    wav, sr = load_audio(out)
    assert sr == 48000 and wav.shape[0] == 1
    assert abs(wav.shape[1] / sr - 1.0) < 1 / 25
    assert abs(dominant_hz(wav[0].numpy(), sr) - 220) < 10


def test_load_audio_errors(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")

    png = tmp_path / "face.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(png)
    with pytest.raises(MediaError, match="no audio stream") as err:
        load_audio(png)
    assert "face.png" in str(err.value) and "wav" in str(err.value)

    silent_video = tmp_path / "silent.mp4"
    write_mp4(silent_video, torch.zeros(2, 16, 16, 3, dtype=torch.uint8), 25, preset="ultrafast")
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(silent_video)

    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="junk.mp3"):
        load_audio(junk)

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_audio(empty)

    no_samples = tmp_path / "no_samples.wav"
    write_wav(no_samples, np.zeros((1, 1), np.float32), 16000)
    with open(no_samples, "r+b") as fh:  # rewrite as a header with zero frames
        import wave

        fh.truncate(0)
        with wave.open(fh, "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    with pytest.raises(MediaError, match="no audio samples"):
        load_audio(no_samples)

    with pytest.raises(MediaError, match="max_seconds"):
        load_audio(no_samples, max_seconds=0)


def _float_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)  # IEEE float, mono
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def test_load_audio_non_finite_and_clipping(tmp_path):
    bad = tmp_path / "nan.wav"
    _float_wav(bad, np.array([0.0, np.nan, 0.5] * 100, np.float32), 16000)
    with pytest.raises(MediaError, match="nan.wav.*non-finite"):
        load_audio(bad)
    loud = tmp_path / "loud.wav"
    _float_wav(loud, np.array([0.0, 1.7, -2.0] * 100, np.float32), 16000)
    wav, _ = load_audio(loud)
    assert float(wav.max()) == 1.0 and float(wav.min()) == -1.0


def test_write_wav_round_trip_and_atomic(tmp_path):
    ref = tones(24000, 2, 0.2)
    out = write_wav(tmp_path / "sub" / "x.wav", torch.from_numpy(ref), 24000)
    wav, sr = load_audio(out)
    assert sr == 24000 and wav.shape == ref.shape
    np.testing.assert_allclose(wav.numpy(), ref, atol=1.5 / 32767)
    mono = write_wav(tmp_path / "m.wav", torch.zeros(100), 8000)  # (T,) accepted
    assert load_audio(mono)[0].shape == (1, 100)
    with pytest.raises(MediaError, match="NaN"):
        write_wav(tmp_path / "bad.wav", np.full((1, 10), np.nan, np.float32), 8000)
    with pytest.raises(MediaError, match="sample_rate"):
        write_wav(tmp_path / "bad.wav", np.zeros((1, 10), np.float32), 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wav", "sub"]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.wav"]


# --------------------------------------------------------------------------- video


def code_color(i: int) -> tuple[int, int, int]:
    """A flat colour that survives H.264 and identifies frame i (0 ≤ i < 144)."""
    return 16 * (i % 12) + 8, 16 * (i // 12) + 8, 128


def frame_ids(frames: torch.Tensor) -> list[int]:
    mean = frames.float().mean(dim=(1, 2)).numpy()
    return [int(round((r - 8) / 16)) + 12 * int(round((g - 8) / 16)) for r, g, _ in mean]


def make_video(path: Path, times_s, size=(32, 32), codec="libx264", rotation=None) -> Path:
    """Encode len(times_s) identifiable frames at the given presentation times (VFR allowed)."""
    tb = Fraction(1, 3000)  # exact for 60, 25 and 24 fps and for whole milliseconds
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.time_base = tb
        s.codec_context.time_base = tb
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, t in enumerate(times_s):
            f = av.VideoFrame.from_ndarray(np.full((h, w, 3), code_color(i), np.uint8), format="rgb24")
            f.pts, f.time_base = int(round(t * 3000)), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def nearest(ts: np.ndarray, out_t: np.ndarray) -> list[int]:
    """Brute-force nearest index (ties → earlier)."""
    return [int(np.argmin(np.abs(ts - t) + 1e-9 * np.arange(len(ts)))) for t in out_t]


def test_video_60fps_to_25(tmp_path):
    path = make_video(tmp_path / "v60.mp4", np.arange(120) / 60)
    frames, fps = load_video_frames(path)
    assert frames.shape == (120, 32, 32, 3) and frames.dtype == torch.uint8
    assert fps == pytest.approx(60.0)
    assert frame_ids(frames) == list(range(120))
    out, fps25 = load_video_frames(path, target_fps=25)
    assert fps25 == 25.0 and out.shape[0] == 50
    assert frame_ids(out) == [int(np.floor(2.4 * k + 0.5)) for k in range(50)]
    assert torch.equal(out, resample_frames_to_fps(frames, 60.0, 25))


def test_video_24fps_to_25_duplicates(tmp_path):
    path = make_video(tmp_path / "v24.mp4", np.arange(48) / 24)
    out, fps = load_video_frames(path, target_fps=25)
    ids = frame_ids(out)
    assert fps == 25.0 and len(ids) == 50
    assert ids == nearest(np.arange(48) / 24, np.arange(50) / 25)
    assert len(set(ids)) == 48 and ids[0] == 0 and ids[-1] == 47  # every frame used, two repeated


def test_video_variable_frame_rate(tmp_path):
    steps = [0.02, 0.06] * 15  # alternating 20 / 60 ms: 25 fps on average
    times = np.concatenate([[0.0], np.cumsum(steps)])[:30]
    path = make_video(tmp_path / "vfr.mp4", times)
    frames, ts, fps = decode_video(path)
    assert frames.shape[0] == 30 and ts.dtype == torch.float64
    np.testing.assert_allclose(ts.numpy(), times, atol=1e-3)
    assert fps == pytest.approx(29 / times[-1])
    out, _ = load_video_frames(path, target_fps=25)
    duration = times[-1] + np.median(np.diff(times))
    count = int(np.floor(duration * 25 + 1e-6))
    assert out.shape[0] == count
    assert frame_ids(out) == nearest(times, np.arange(count) / 25)
    # the streaming selection inside load_video_frames equals the batch function
    assert torch.equal(out, resample_frames_to_fps(frames, ts, 25))


def test_video_limits_and_start(tmp_path):
    path = make_video(tmp_path / "v25.mp4", np.arange(75) / 25)
    assert frame_ids(load_video_frames(path, max_frames=7)[0]) == list(range(7))
    assert load_video_frames(path, max_seconds=1.0)[0].shape[0] == 25
    late, _ = load_video_frames(path, start_seconds=1.0, max_seconds=0.4)
    assert frame_ids(late) == list(range(25, 35))
    _, ts, _ = decode_video(path, start_seconds=2.0)
    assert ts[0].item() == pytest.approx(0.0, abs=1e-6) and ts.shape[0] == 25
    assert load_video_frames(path, target_fps=10, max_frames=5)[0].shape[0] == 5
    assert load_video_frames(path, target_fps=50, max_seconds=1.0)[0].shape[0] == 50
    with pytest.raises(MediaError, match="no video frames after"):
        load_video_frames(path, start_seconds=10)
    with pytest.raises(MediaError, match="max_frames"):
        load_video_frames(path, max_frames=0)


def test_video_rotation_matches_ffmpeg(tmp_path):
    path = tmp_path / "rot.mp4"
    w, h = 48, 32
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.set_display_rotation(90)
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2, 0] = 255  # left half red, right half blue
        img[:, w // 2 :, 2] = 255
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    frames, _ = load_video_frames(path)
    assert frames.shape == (1, w, h, 3)  # displayed upright: portrait
    raw = subprocess.run(
        [FFMPEG, "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    expected = np.frombuffer(raw, np.uint8).reshape(w, h, 3)  # ffmpeg applies the rotation itself
    assert np.abs(frames[0].numpy().astype(int) - expected.astype(int)).max() <= 2


def test_video_errors(tmp_path):
    wav = write_wav(tmp_path / "a.wav", np.zeros((1, 800), np.float32), 8000)
    with pytest.raises(MediaError, match="no video stream"):
        load_video_frames(wav)
    no_frames = tmp_path / "no_frames.mkv"  # a video stream with zero packets (and some audio)
    with av.open(str(no_frames), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=48000, layout="mono")
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 48000, 0
        for p in a.encode(fr):
            c.mux(p)
        for p in a.encode():
            c.mux(p)
    with pytest.raises(MediaError, match="no video frames"):
        load_video_frames(no_frames)
    with pytest.raises(MediaError, match="does not exist"):
        load_video_frames(tmp_path / "nope.mp4")


def test_resample_frames_to_fps_unit():
    frames = torch.arange(60).view(60, 1, 1, 1)
    assert resample_frames_to_fps(frames, 60, 25).flatten().tolist() == [
        int(np.floor(2.4 * k + 0.5)) for k in range(25)
    ]
    same = resample_frames_to_fps(frames, 25, 25)
    assert torch.equal(same, frames)
    one = resample_frames_to_fps(frames[:1], [0.3], 25)
    assert one.shape[0] == 1
    with pytest.raises(MediaError, match="strictly increasing"):
        resample_frames_to_fps(frames[:3], [0.0, 0.1, 0.1], 25)
    with pytest.raises(MediaError, match="timestamps"):
        resample_frames_to_fps(frames[:3], [0.0, 0.1], 25)


# --------------------------------------------------------------------------- images


def test_load_image_modes(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert torch.equal(load_image(tmp_path / "rgb.png"), torch.from_numpy(rgb))

    gray = rgb[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    g = load_image(tmp_path / "gray.png")
    assert g.shape == (20, 30, 3) and torch.equal(g[..., 1], torch.from_numpy(gray))

    rgba = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], axis=2)  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(load_image(tmp_path / "rgba.png"), torch.from_numpy(rgb))  # alpha dropped

    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").shape == (20, 30, 3)

    g16_img = Image.fromarray(gray.astype(np.uint16) * 257)
    assert g16_img.mode.startswith("I")
    g16_img.save(tmp_path / "g16.png")
    g16 = load_image(tmp_path / "g16.png")
    assert (g16[..., 0].int() - torch.from_numpy(gray).int()).abs().max() <= 1

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(rgb).save(tmp_path / "exif.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "exif.jpg").shape == (30, 20, 3)


def test_load_image_guards_and_fallback(tmp_path, monkeypatch):
    from PIL import Image

    rgb = np.random.default_rng(2).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with pytest.raises(MediaError, match="megapixels"):
        load_image(tmp_path / "a.png", max_pixels=100)
    with pytest.raises(MediaError, match="does not exist"):
        load_image(tmp_path / "b.png")
    # without Pillow the PyAV path gives the same pixels and the same guard
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert torch.equal(load_image(tmp_path / "a.png"), torch.from_numpy(rgb))
    with pytest.raises(MediaError, match="megapixels"):
        load_image(tmp_path / "a.png", max_pixels=100)
    video = make_video(tmp_path / "v.mp4", np.arange(3) / 25)
    first = load_image(video)  # a video gives its first frame
    assert frame_ids(first[None]) == [0]


# --------------------------------------------------------------------------- identity


def test_identity_rgb_exact_and_float_equivalent():
    img = np.random.default_rng(3).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = prepare_identity_image(img)
    assert out.shape == (3, 512, 512) and out.dtype == torch.float32
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 255 * 2 - 1
    assert_close(out, expected)
    assert_close(prepare_identity_image(torch.from_numpy(img).float()[None] / 255), expected)


def test_identity_channels():
    g = np.random.default_rng(4).integers(0, 256, (64, 64, 1), dtype=np.uint8)
    out = prepare_identity_image(g)
    assert out.shape == (3, 512, 512)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert_close(prepare_identity_image(g[..., 0]), out)  # (H, W) too
    rgb = np.random.default_rng(5).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.zeros((600, 600, 1), np.uint8)], axis=2)
    assert_close(prepare_identity_image(rgba), prepare_identity_image(rgb))


def test_identity_centre_crop_not_stretch():
    blue, red = (0, 0, 255), (255, 0, 0)
    wide = np.zeros((300, 900, 3), np.uint8)
    wide[:, :300], wide[:, 300:600], wide[:, 600:] = red, blue, red
    out = prepare_identity_image(wide)
    expected = torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, 512, 512)
    assert_close(out, expected)
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))  # 900 high: top/bottom thirds red
    assert_close(prepare_identity_image(tall), expected)
    big = np.zeros((1200, 2000, 3), np.uint8)  # downscaled path: centre 1200×1200 is blue
    big[:, 400:1600] = blue
    big[:, :400] = red
    big[:, 1600:] = red
    assert_close(prepare_identity_image(big), expected)


def test_identity_area_downscale_and_tiny(caplog):
    img = torch.rand(1024, 1024, 3)
    out = prepare_identity_image(img)
    box = img.permute(2, 0, 1).reshape(3, 512, 2, 512, 2).mean(dim=(2, 4)) * 2 - 1  # 2×2 area average
    assert_close(out, box)
    with caplog.at_level(logging.WARNING, logger="talker_core.media"):
        one = prepare_identity_image(np.array([[[10, 200, 30]]], np.uint8))
    assert "soft" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="talker_core.media"):
        prepare_identity_image(np.zeros((4, 4, 3), np.uint8), warn_small=False)
    assert caplog.text == ""
    assert_close(one, (torch.tensor([10, 200, 30]).float() / 255 * 2 - 1).view(3, 1, 1).expand(3, 512, 512))
    small = prepare_identity_image(torch.rand(17, 23, 3))
    assert small.shape == (3, 512, 512) and small.min() >= -1 and small.max() <= 1


def test_identity_errors():
    with pytest.raises(MediaError, match="reference face.*batch of 2"):
        prepare_identity_image(torch.rand(2, 64, 64, 3), name="reference face")
    with pytest.raises(MediaError, match="channels-first"):
        prepare_identity_image(torch.rand(3, 64, 64))
    with pytest.raises(MediaError, match="divide by 255"):
        prepare_identity_image(torch.rand(64, 64, 3) * 255)
    with pytest.raises(MediaError, match=r"\[0, 1\]"):
        prepare_identity_image(torch.rand(64, 64, 3) * 2 - 1)
    with pytest.raises(MediaError, match="NaN"):
        prepare_identity_image(torch.full((8, 8, 3), float("nan")))
    with pytest.raises(MediaError, match="empty"):
        prepare_identity_image(torch.zeros(0, 8, 3))


# --------------------------------------------------------------------------- MP4


@pytest.mark.parametrize("audio_seconds", [2.0, 2.5, 1.3])
def test_write_mp4_streams_and_durations(tmp_path, audio_seconds):
    n = 50
    frames = torch.from_numpy(np.stack([np.full((64, 64, 3), code_color(i), np.uint8) for i in range(n)]))
    audio = torch.from_numpy(tones(24000, 1, audio_seconds))
    out = write_mp4(tmp_path / "out.mp4", frames, 25, audio, 24000, preset="ultrafast")
    info = probe_media(out)
    video = [s for s in info["streams"] if s["type"] == "video"]
    sound = [s for s in info["streams"] if s["type"] == "audio"]
    assert len(video) == 1 and len(sound) == 1 and len(info["streams"]) == 2
    assert video[0]["codec"] == "h264" and video[0]["pix_fmt"] == "yuv420p"
    assert video[0]["frames"] == n and video[0]["fps"] == pytest.approx(25.0)
    assert (video[0]["width"], video[0]["height"]) == (64, 64)
    assert sound[0]["codec"] == "aac" and sound[0]["channels"] == 1
    assert abs(video[0]["duration"] - n / 25) < 1e-6
    assert abs(sound[0]["duration"] - video[0]["duration"]) <= 1 / 25
    decoded, sr = load_audio(out)  # decoded length agrees too, not only the header
    assert abs(decoded.shape[1] / sr - n / 25) <= 1 / 25
    back, fps = load_video_frames(out)
    assert back.shape == (n, 64, 64, 3) and fps == pytest.approx(25.0)
    assert frame_ids(back) == list(range(n))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary files left


def test_write_mp4_float_odd_size_no_audio(tmp_path):
    frames = torch.full((5, 33, 47, 3), 0.5)
    out = write_mp4(tmp_path / "f.mp4", frames, 25, preset="ultrafast", metadata={"comment": "talker"})
    info = probe_media(out)
    assert [s["type"] for s in info["streams"]] == ["video"]
    assert (info["streams"][0]["width"], info["streams"][0]["height"]) == (48, 34)
    back, _ = load_video_frames(out)
    assert abs(back.float().mean().item() - 127.5) < 3
    with av.open(str(out)) as c:
        assert c.metadata.get("comment") == "talker"
    stereo = write_mp4(tmp_path / "s.mp4", frames, 25, np.zeros((2, 44100), np.float32), 44100, preset="ultrafast")
    a = [s for s in probe_media(stereo)["streams"] if s["type"] == "audio"][0]
    assert a["channels"] == 2 and a["sample_rate"] == 44100


def test_write_mp4_interrupted_leaves_nothing(tmp_path, monkeypatch):
    frames = torch.zeros(40, 32, 32, 3, dtype=torch.uint8)
    from talker_core.media import output as media_output

    real = media_output.Mp4Writer._encode_video
    calls = []

    def interrupted(self, img):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        real(self, img)

    monkeypatch.setattr(media_output.Mp4Writer, "_encode_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_mp4(tmp_path / "x.mp4", frames, 25, np.zeros((1, 48000), np.float32), 24000)
    assert len(calls) == 20 and list(tmp_path.iterdir()) == []


def test_write_mp4_failure_keeps_existing_file(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"previous")
    frames = torch.zeros(4, 32, 32, 3, dtype=torch.uint8)
    with pytest.raises(MediaError, match="could not encode"):
        write_mp4(target, frames, 25, preset="no-such-preset")
    nan = torch.full((4, 32, 32, 3), float("nan"))
    with pytest.raises(MediaError, match="NaN"):
        write_mp4(target, nan, 25, preset="ultrafast")
    with pytest.raises(MediaError, match="sample_rate"):
        write_mp4(target, frames, 25, np.zeros((1, 10), np.float32))
    with pytest.raises(MediaError, match=r"\(N, H, W, 3\)"):
        write_mp4(target, frames[..., :2], 25)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]
