"""No file a user can pick crashes the process: a corpus of odd media decoded in a subprocess.

The corpus (tests/odd_media.py) is generated and decoded in child processes, so a native crash (a
segmentation fault in a decoder or in the conversion to numpy) is a failed test naming the file, not a
dead test run. Every file must either decode to what it holds (channels, rate, length, non-silent
channels; frame size; image size) or be refused with a MediaError whose message names the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "odd_media.py"
LOSSY = {
    "aac",
    "ac3",
    "ac3_fixed",
    "eac3",
    "libmp3lame",
    "mp2",
    "libopus",
    "vorbis",
    "wmav2",
    "nellymoser",
    "adpcm_ms",
    "adpcm_ima_wav",
}


def _run(command: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), command, str(folder)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd_media")
    proc = _run("generate", folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((folder / "manifest.json").read_text())
    decoded = _run("decode", folder)
    lines = [json.loads(line) for line in decoded.stdout.splitlines() if line.strip()]
    started = [r["start"] for r in lines if "start" in r]
    assert decoded.returncode == 0, (
        f"the decoder process died (status {decoded.returncode}) while decoding {started[-1] if started else '?'}: "
        f"{decoded.stderr[-1500:]}"
    )
    results = {r["file"]: r for r in lines if "start" not in r}
    return manifest, results


def _entries(manifest, kind):
    return [e for e in manifest["files"] if e["kind"] == kind]


def test_the_corpus_covers_what_it_claims(corpus):
    manifest, _ = corpus
    audio = _entries(manifest, "audio")
    assert {e["channels"] for e in audio} >= set(range(1, 17))
    assert {e["format"] for e in audio} >= {"u8", "s16", "s32", "s64", "flt", "dbl", "u8p", "s16p", "s32p", "fltp"}
    assert {e["rate"] for e in audio} >= {8000, 11025, 22050, 44100, 48000, 96000, 192000}
    # the file of the bug report: a 7.1 AAC track in an MP4, and planar formats with more than 8 channels
    assert any(e["codec"] == "aac" and e["channels"] == 8 and e["file"].endswith(".mp4") for e in audio)
    assert any(e["format"] in ("fltp", "s32p") and e["channels"] > 8 for e in audio)
    video = _entries(manifest, "video")
    assert len({e["format"] for e in video}) >= 60
    images = _entries(manifest, "image")
    assert {e["mode"] for e in images} >= {"1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "LA", "I;16"}


def test_every_audio_file_decodes_to_what_it_holds(corpus):
    manifest, results = corpus
    wrong = []
    for e in _entries(manifest, "audio"):
        r = results[e["file"]]
        if not r["ok"]:
            wrong.append((e["file"], r["error_type"], r["error"]))
            continue
        slack = 0.02 + (2304 / e["rate"] if e["codec"] in LOSSY else 0.0)  # encoder delay and padding
        if (
            r["channels"] != e["channels"]
            or r["rate"] != e["rate"]
            or abs(r["seconds"] - e["seconds"]) > slack
            or not r["finite"]
            or not 0.1 < r["peak"] <= 1.0
            or r["silent_channels"]
        ):
            wrong.append((e["file"], {k: r[k] for k in ("channels", "rate", "seconds", "peak", "silent_channels")}))
    assert not wrong, wrong[:10]


def test_every_video_file_decodes_or_is_refused_clearly(corpus):
    manifest, results = corpus
    wrong = []
    for e in _entries(manifest, "video"):
        r = results[e["file"]]
        if r["ok"]:
            if r["shape"][1:] != [e["height"], e["width"], 3] or r["dtype"] != "torch.uint8" or r["shape"][0] < 1:
                wrong.append((e["file"], r["shape"], r["dtype"]))
        elif r["error_type"] != "MediaError" or e["file"] not in r["error"]:
            wrong.append((e["file"], r["error_type"], r["error"]))
    assert not wrong, wrong[:10]
    decoded = sum(results[e["file"]]["ok"] for e in _entries(manifest, "video"))
    assert decoded >= 0.9 * len(_entries(manifest, "video"))


def test_every_image_decodes_or_is_named_not_readable(corpus):
    manifest, results = corpus
    wrong = []
    for e in _entries(manifest, "image"):
        r = results[e["file"]]
        if r["ok"]:
            size = r["shape"][:2] if e["format"] in ("ICO", "ICNS") else [e["height"], e["width"]]  # icon sizes
            if r["shape"] != [*size, 3] or r["dtype"] != "torch.uint8":
                wrong.append((e["file"], r["shape"]))
        elif r["error_type"] != "MediaError" or "not an image the pack can read" not in r["error"]:
            wrong.append((e["file"], r["error_type"], r["error"]))
        elif "PNG, JPEG" not in r["error"] or "Error" in r["error"].split(";")[0]:
            wrong.append((e["file"], "message", r["error"]))
    assert not wrong, wrong[:10]
    # the common formats always decode, in every mode Pillow wrote them in
    for e in _entries(manifest, "image"):
        if e["format"] in ("PNG", "TIFF", "BMP", "JPEG", "WEBP"):
            assert results[e["file"]]["ok"], results[e["file"]]
