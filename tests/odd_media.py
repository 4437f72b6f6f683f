"""A corpus of odd media files, and a decoder run over it; used by tests/test_odd_media.py in subprocesses.

``python tests/odd_media.py generate DIR`` writes the corpus and ``DIR/manifest.json`` (one entry per
file: kind, what the file holds). ``python tests/odd_media.py decode DIR`` decodes every file with the
pack's own readers and prints one JSON line per file (``start`` before the decoder runs, then the
outcome), so a native crash is seen by the caller as a dead process whose last ``start`` line names
the file.

The corpus: audio with 1-16 channels (default and unusual layouts), every sample format an encoder of
this PyAV build accepts, rates from 8 kHz to 192 kHz; stills in every mode Pillow creates, saved in
every format that takes them; short videos in the pixel formats of several encoders and a set of raw
pixel formats. Files are tiny (a fraction of a second, a few dozen pixels) so the run stays short.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np

AUDIO_SECONDS = 0.25
RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 64000, 88200, 96000, 176400, 192000)
ODD_LAYOUTS = (
    "2.1",
    "3.0",
    "3.0(back)",
    "quad",
    "quad(side)",
    "4.1",
    "5.0",
    "5.0(side)",
    "5.1(side)",
    "6.0",
    "6.1",
    "6.1(back)",
    "7.0",
    "7.1(wide)",
    "7.1(wide-side)",
    "octagonal",
    "hexadecagonal",
    "downmix",
)
# (encoder, container suffix) pairs tried for each sample format they accept
AUDIO_ENCODERS = (
    ("pcm_u8", "wav"),
    ("pcm_s16le", "wav"),
    ("pcm_s24le", "wav"),
    ("pcm_s32le", "wav"),
    ("pcm_s64le", "nut"),
    ("pcm_f32le", "wav"),
    ("pcm_f64le", "wav"),
    ("pcm_s16le_planar", "nut"),
    ("pcm_s24le_planar", "nut"),
    ("pcm_s32le_planar", "nut"),
    ("pcm_s16be", "aiff"),
    ("pcm_alaw", "wav"),
    ("pcm_mulaw", "wav"),
    ("aac", "m4a"),
    ("flac", "flac"),
    ("alac", "m4a"),
    ("wavpack", "wv"),
    ("libmp3lame", "mp3"),
    ("mp2", "mp2"),
    ("libopus", "ogg"),
    ("vorbis", "ogg"),
    ("ac3", "ac3"),
    ("ac3_fixed", "ac3"),
    ("eac3", "eac3"),
    ("adpcm_ms", "wav"),
    ("adpcm_ima_wav", "wav"),
    ("wmav2", "asf"),
    ("tta", "tta"),
    ("pcm_bluray", "m2ts"),
    ("nellymoser", "flv"),
)
VIDEO_ENCODERS = (
    ("ffv1", "mkv"),
    ("libx264", "mp4"),
    ("png", "mov"),
    ("qtrle", "mov"),
    ("ffvhuff", "mkv"),
    ("libvpx-vp9", "webm"),
    ("mjpeg", "avi"),
    ("gif", "gif"),
    ("utvideo", "mkv"),
    ("prores_ks", "mov"),
)
RAW_PIXEL_FORMATS = (
    "rgb565be",
    "bgr555le",
    "bgr48be",
    "rgba64be",
    "argb",
    "abgr",
    "0rgb",
    "x2rgb10le",
    "yuyv422",
    "uyvy422",
    "nv12",
    "nv21",
    "nv24",
    "p010le",
    "p016be",
    "yuv444p16be",
    "gray16be",
    "grayf32le",
    "gbrpf32le",
    "gbrapf32be",
    "rgbaf32le",
    "monow",
    "monob",
    "pal8",
    "rgb8",
    "bgr4_byte",
    "bayer_rggb8",
    "bayer_gbrg16le",
    "xyz12le",
    "vuya",
    "ayuv64le",
    "y210le",
    "yuv410p",
    "ya16be",
    "rgb444be",
    "rgb24",
    "gray9be",
)
VIDEO_SIZE = (34, 18)  # width, height: small and not a multiple of 16
VIDEO_FRAMES = 3
PIL_MODES = (
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "F",
    "LA",
    "PA",
    "RGBX",
    "RGBa",
    "La",
    "I;16",
    "I;16L",
    "I;16B",
    "I;16N",
)
PIL_FORMATS = (
    "PNG",
    "JPEG",
    "WEBP",
    "BMP",
    "GIF",
    "TIFF",
    "PPM",
    "TGA",
    "ICO",
    "JPEG2000",
    "PCX",
    "SGI",
    "IM",
    "DDS",
    "QOI",
    "XBM",
    "SPIDER",
    "MSP",
    "ICNS",
    "BLP",
    "EPS",
    "PDF",
)
IMAGE_SIZE = (37, 23)


# ---------------------------------------------------------------------------------------------- generation


def _tones(channels: int, rate: int) -> np.ndarray:
    """(C, T) float32: channel c is a sine at 200 + 60·c Hz (below Nyquist for every rate), amplitude 0.3."""
    t = np.arange(int(AUDIO_SECONDS * rate)) / rate
    freqs = [min(200.0 + 60.0 * c, rate / 4) for c in range(channels)]
    return np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def _write_audio(av, path: Path, codec: str, fmt: str, layout, rate: int) -> None:
    """Encode the tones through ``codec`` in sample format ``fmt``; frames are built packed, then converted."""
    lay = av.AudioLayout(layout)
    n = lay.nb_channels
    data = _tones(n, rate)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, layout=lay)
        s.codec_context.format = fmt
        s.codec_context.sample_rate = rate
        if codec in ("vorbis", "aac", "libopus", "opus"):
            s.codec_context.options = {"strict": "experimental"}
        resampler = av.AudioResampler(format=fmt, layout=lay, rate=rate)
        step = 1024
        for i in range(0, data.shape[1], step):
            packed = np.ascontiguousarray(data[:, i : i + step].T).reshape(1, -1)
            f = av.AudioFrame.from_ndarray(packed, format="flt", layout=lay)
            f.sample_rate = rate
            for g in resampler.resample(f):
                for p in s.encode(g):
                    c.mux(p)
        for g in resampler.resample(None):
            for p in s.encode(g):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _audio_cases(av):
    cases = []
    for codec, suffix in AUDIO_ENCODERS:  # every sample format every available encoder takes
        try:
            formats = [f.name for f in (av.codec.Codec(codec, "w").audio_formats or [])]
            rates = list(av.codec.Codec(codec, "w").audio_rates or [])
        except Exception:  # encoder not in this build
            continue
        rate = 48000 if (not rates or 48000 in rates) else (8000 if 8000 in rates else rates[0])
        if codec == "nellymoser":
            rate = 22050
        for fmt in formats:
            for layout in ("mono", "stereo"):
                cases.append((codec, suffix, fmt, layout, rate))
    for n in range(1, 17):  # 1-16 channels: lossless and lossy
        for codec, suffix, fmt in (
            ("pcm_s16le", "wav", "s16"),
            ("pcm_f32le", "nut", "flt"),
            ("flac", "flac", "s32"),
            ("aac", "mp4", "fltp"),
            ("wavpack", "wv", "fltp"),
            ("pcm_s32le_planar", "nut", "s32p"),
        ):
            cases.append((codec, suffix, fmt, f"{n} channels", 48000))  # unspecified order: the oddest
    for layout in ODD_LAYOUTS:
        for codec, suffix, fmt in (("pcm_s16le", "wav", "s16"), ("aac", "mp4", "fltp"), ("ac3", "ac3", "fltp")):
            cases.append((codec, suffix, fmt, layout, 48000))
    for rate in RATES:
        for codec, suffix, fmt in (("pcm_s16le", "wav", "s16"), ("flac", "flac", "s16"), ("aac", "m4a", "fltp")):
            cases.append((codec, suffix, fmt, "stereo", rate))
    return cases


def _write_video(av, path: Path, codec: str, pix_fmt: str) -> bool:
    w, h = VIDEO_SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if codec in ("prores_ks",):
            s.codec_context.options = {"profile": "4"} if "444" in pix_fmt else {}
        for i in range(VIDEO_FRAMES):
            rgb = np.stack([(xx * 7 + i * 40) % 256, (yy * 13) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return True


def _video_cases(av):
    cases = []
    for codec, suffix in VIDEO_ENCODERS:
        try:
            formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
        except Exception:
            continue
        cases += [(codec, suffix, f) for f in formats]
    cases += [("rawvideo", "nut", f) for f in RAW_PIXEL_FORMATS]
    return cases


def generate(out: Path) -> dict:
    import av
    from PIL import Image

    av.logging.set_level(av.logging.PANIC)  # encoders chatter about odd settings; outcomes are in the manifest
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"files": [], "skipped": 0}
    for i, (codec, suffix, fmt, layout, rate) in enumerate(_audio_cases(av)):
        path = out / f"a{i:03d}_{codec}_{fmt}_{str(layout).replace('(', '-').replace(')', '')}_{rate}.{suffix}"
        try:
            _write_audio(av, path, codec, fmt, layout, rate)
        except Exception:
            path.unlink(missing_ok=True)
            manifest["skipped"] += 1
            continue
        manifest["files"].append(
            {
                "file": path.name,
                "kind": "audio",
                "codec": codec,
                "format": fmt,
                "layout": str(layout),
                "channels": av.AudioLayout(layout).nb_channels,
                "rate": rate,
                "seconds": AUDIO_SECONDS,
            }
        )
    for i, (codec, suffix, pix_fmt) in enumerate(_video_cases(av)):
        path = out / f"v{i:03d}_{codec}_{pix_fmt}.{suffix}"
        try:
            _write_video(av, path, codec, pix_fmt)
        except Exception:
            path.unlink(missing_ok=True)
            manifest["skipped"] += 1
            continue
        manifest["files"].append(
            {
                "file": path.name,
                "kind": "video",
                "codec": codec,
                "format": pix_fmt,
                "width": VIDEO_SIZE[0],
                "height": VIDEO_SIZE[1],
                "frames": VIDEO_FRAMES,
            }
        )
    for mode in PIL_MODES:
        try:
            img = Image.new(mode, IMAGE_SIZE)
        except Exception:
            manifest["skipped"] += 1
            continue
        for fmt in PIL_FORMATS:
            path = out / f"i_{mode.replace(';', '_')}.{fmt.lower()}"
            try:
                img.save(path, format=fmt)
            except Exception:
                path.unlink(missing_ok=True)
                continue
            manifest["files"].append(
                {
                    "file": path.name,
                    "kind": "image",
                    "mode": mode,
                    "format": fmt,
                    "width": IMAGE_SIZE[0],
                    "height": IMAGE_SIZE[1],
                }
            )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------------------------------------- decoding


def decode(folder: Path) -> None:
    """Decode every manifest file with the pack's readers; one JSON line per outcome on stdout."""
    from talker_core import media

    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        path = folder / entry["file"]
        print(json.dumps({"start": entry["file"]}), flush=True)
        result = {"file": entry["file"]}
        try:
            if entry["kind"] == "audio":
                wav, rate = media.load_audio(path)
                a = wav.numpy()
                result.update(
                    ok=True,
                    channels=int(a.shape[0]),
                    rate=int(rate),
                    seconds=a.shape[1] / rate,
                    finite=bool(np.isfinite(a).all()),
                    peak=float(np.abs(a).max()),
                    silent_channels=int((np.sqrt((a.astype(np.float64) ** 2).mean(axis=1)) < 1e-3).sum()),
                )
            elif entry["kind"] == "video":
                frames, fps = media.load_video_frames(path)
                result.update(ok=True, shape=list(frames.shape), dtype=str(frames.dtype), fps=fps)
            else:
                img = media.load_image(path)
                result.update(ok=True, shape=list(img.shape), dtype=str(img.dtype))
        except media.MediaError as exc:
            result.update(ok=False, error_type="MediaError", error=str(exc))
        except Exception as exc:  # reported, and the test fails on it: only MediaError is a clean refusal
            result.update(ok=False, error_type=type(exc).__name__, error=str(exc), tb=traceback.format_exc()[-600:])
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    command, target = sys.argv[1], Path(sys.argv[2])
    if command == "generate":
        m = generate(target)
        print(json.dumps({"files": len(m["files"]), "skipped": m["skipped"]}))
    elif command == "decode":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        decode(target)
    else:
        raise SystemExit(f"unknown command {command!r}; use generate or decode")
