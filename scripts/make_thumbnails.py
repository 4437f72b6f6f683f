"""Draw the template thumbnails (example_workflows/<name>.jpg, 512×288): a title, and what goes in and
what comes out as pictograms, on a colour of its own, so the cards tell apart at a glance.

Usage: python scripts/make_thumbnails.py   (needs Pillow; uses DejaVu Sans where installed)
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
W, H, S = 512, 288, 3  # drawn at S× and scaled down (smooth edges)
INK = (245, 240, 230)
SKIN, MOUTH, EYE = (222, 178, 140), (150, 50, 50), (30, 30, 30)

# name → (title, subtitle, background (top, bottom), inputs, outputs)
CARDS = {
    "1 Text to talking video": (
        "Text to talking video",
        "text + voice + face",
        ((40, 30, 110), (90, 60, 170)),
        ["text", "voice", "face"],
        ["face", "wave"],
    ),
    "6 Style from a reference prefix": (
        "Style cloning",
        "continue a reference clip",
        ((10, 80, 90), (20, 130, 120)),
        ["film"],
        ["film", "wave"],
    ),
    "3 Audio to talking video": (
        "Audio to video (A2V)",
        "lip-sync a face to speech",
        ((120, 60, 10), (190, 110, 30)),
        ["wave", "face"],
        ["face"],
    ),
    "4 Dub a silent clip": (
        "Dubbing (V2A)",
        "new speech for a silent clip",
        ((20, 90, 40), (50, 140, 70)),
        ["film", "voice"],
        ["wave"],
    ),
    "5 Speech only": (
        "Speech only",
        "voice-cloning text to speech",
        ((110, 20, 80), (170, 50, 120)),
        ["text", "voice"],
        ["wave"],
    ),
    "2 Long video to a file": (
        "Long form",
        "a long script, in segments",
        ((90, 20, 20), (150, 50, 40)),
        ["pages"],
        ["segments"],
    ),
    "7 Paste the face back into a photo": (
        "Paste back into the photo",
        "text + voice + photo, full size",
        ((20, 80, 60), (40, 140, 100)),
        ["text", "voice", "face"],
        ["film"],
    ),
    "8 Two-person dialogue": (
        "Two-person dialogue",
        "script + two voices + two faces",
        ((100, 40, 20), (170, 90, 40)),
        ["pages", "voice", "face"],
        ["face", "face", "wave"],
    ),
}


def font(size: int):
    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"):
        path = Path("/usr/share/fonts/truetype/dejavu") / name
        if path.is_file():
            return ImageFont.truetype(str(path), size * S)
    return ImageFont.load_default()


def wave(d, x, y, w, h, color, seed=0.0):
    pts = []
    for i in range(120):
        t = i / 119
        env = 0.25 + 0.75 * abs(math.sin(math.pi * (2.2 * t + seed)))
        pts.append(((x + t * w) * S, (y + h / 2 + env * h / 2 * math.sin(40 * t + seed)) * S))
    d.line(pts, fill=color, width=3 * S)


def face(d, x, y, s):
    d.ellipse([x * S, y * S, (x + s) * S, (y + 1.25 * s) * S], fill=SKIN)
    for ex in (0.3, 0.7):
        d.ellipse(
            [(x + ex * s - 5) * S, (y + 0.45 * s - 5) * S, (x + ex * s + 5) * S, (y + 0.45 * s + 5) * S], fill=EYE
        )
    d.ellipse([(x + 0.3 * s) * S, (y + 0.85 * s) * S, (x + 0.7 * s) * S, (y + 1.0 * s) * S], fill=MOUTH)


def film(d, x, y, w, h):
    d.rounded_rectangle([x * S, y * S, (x + w) * S, (y + h) * S], radius=4 * S, fill=(25, 25, 30))
    for i in range(6):
        fx = x + 6 + i * (w - 12) / 6
        d.rectangle([fx * S, (y + 4) * S, (fx + 6) * S, (y + 10) * S], fill=INK)
        d.rectangle([fx * S, (y + h - 10) * S, (fx + 6) * S, (y + h - 4) * S], fill=INK)
    face(d, x + w / 2 - 14, y + 14, 28)


def text_lines(d, x, y, w, rows=4):
    for r in range(rows):
        d.rounded_rectangle(
            [x * S, (y + r * 14) * S, (x + w * (0.6 + 0.4 * ((r * 7) % 3) / 2)) * S, (y + r * 14 + 7) * S],
            radius=3 * S,
            fill=INK,
        )


def pictogram(d, kind, x, y):
    """One 80×80 pictogram at (x, y)."""
    if kind == "text":
        d.text((x * S, (y - 2) * S), "Aa", font=font(22), fill=INK)
        text_lines(d, x, y + 32, 70, 3)
    elif kind == "voice":
        d.ellipse([(x + 28) * S, (y + 8) * S, (x + 48) * S, (y + 40) * S], fill=INK)  # microphone
        d.line([((x + 38) * S, (y + 40) * S), ((x + 38) * S, (y + 56) * S)], fill=INK, width=3 * S)
        wave(d, x, y + 56, 76, 22, (255, 215, 120), 0.3)
    elif kind == "face":
        face(d, x + 12, y, 56)
    elif kind == "wave":
        wave(d, x - 10, y + 15, 100, 50, (255, 215, 120))
    elif kind == "film":
        film(d, x - 5, y + 8, 90, 64)
    elif kind == "pages":
        for k in range(3):
            d.rounded_rectangle(
                [(x + 8 * k) * S, (y + 8 * k) * S, (x + 50 + 8 * k) * S, (y + 60 + 8 * k) * S],
                radius=3 * S,
                fill=(60, 40, 40),
                outline=INK,
                width=2 * S,
            )
        text_lines(d, x + 22, y + 26, 30, 3)
    elif kind == "segments":
        for k in range(3):
            d.rounded_rectangle(
                [(x - 12 + 34 * k) * S, (y + 20) * S, (x + 16 + 34 * k) * S, (y + 60) * S], radius=4 * S, fill=INK
            )
            d.text(((x - 4 + 34 * k) * S, (y + 26) * S), str(k + 1), font=font(18), fill=(90, 20, 20))


def card(name: str) -> Image.Image:
    title, subtitle, (top, bottom), inputs, outputs = CARDS[name]
    im = Image.new("RGB", (W * S, H * S))
    d = ImageDraw.Draw(im)
    for row in range(H * S):
        t = row / (H * S - 1)
        d.line([(0, row), (W * S, row)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    d.text((24 * S, 18 * S), title, font=font(30), fill=INK)
    d.text((24 * S, 60 * S), subtitle, font=font(16), fill=(225, 220, 210))
    y = 130
    for i, kind in enumerate(inputs):
        pictogram(d, kind, 24 + i * 86, y)
    ax = 24 + len(inputs) * 86 + 4
    d.polygon([(ax * S, (y + 30) * S), ((ax + 26) * S, (y + 40) * S), (ax * S, (y + 50) * S)], fill=INK)
    for i, kind in enumerate(outputs):
        pictogram(d, kind, ax + 44 + i * 96, y)
    return im.resize((W, H), Image.LANCZOS)


def main() -> None:
    for name in CARDS:
        card(name).save(ROOT / "example_workflows" / f"{name}.jpg", quality=88, optimize=True)


if __name__ == "__main__":
    main()
