"""Face framing, paste-back, dialogue and the demo quick start (issue 14), on built images and the debug models."""

from __future__ import annotations

import hashlib
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from talker_core import loaders, media
from talker_core import pipeline as P
from talker_core.media import framing
from talker_core.media.paste import Compositor, background_frames, box_in, feather_mask, paste_frame, paste_frames
from talker_core.pipeline import dialogue as D
from talker_core.types import FPS, SAMPLE_RATE, FaceCrop
from talker_core.weights import download as dl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from synthetic import FastLiaX, drawn_face, drawn_face_clip  # noqa: E402

# ---------------------------------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    "width,height,box",
    [
        (640, 480, (270, 150, 100, 100)),  # face in the middle
        (1080, 1920, (100, 300, 200, 200)),  # portrait, face off to the left
        (1920, 1080, (1700, 40, 180, 180)),  # landscape, face in the top-right corner
        (800, 600, (350, 250, 40, 40)),  # a small face
    ],
)
def test_framing_geometry_with_an_injected_detector(width, height, box):
    img = torch.zeros(height, width, 3)
    crop = framing.choose_crop(img, detector=lambda rgb: [box, (0, 0, 10, 10)])  # the largest face wins
    x, y, w, h = box
    assert crop.method == "detected" and (crop.source_width, crop.source_height) == (width, height)
    assert crop.x >= 0 and crop.y >= 0 and crop.x + crop.size <= width and crop.y + crop.size <= height
    assert crop.x <= x and crop.y <= y and crop.x + crop.size >= x + w and crop.y + crop.size >= y + h
    wanted = framing.FACE_TO_CROP * w
    assert crop.size == min(round(wanted), min(width, height))
    want_cx, want_cy = x + w / 2, y + h / 2 - framing.CROP_RAISE * h
    free_x = want_cx - crop.size / 2 > 0 and want_cx + crop.size / 2 < width
    free_y = want_cy - crop.size / 2 > 0 and want_cy + crop.size / 2 < height
    if free_x:  # centred unless the square had to slide inwards at an edge
        assert abs(crop.x + crop.size / 2 - want_cx) <= 1
    if free_y:
        assert abs(crop.y + crop.size / 2 - want_cy) <= 1
    if not (free_x and free_y):
        assert crop.x in (0, width - crop.size) or crop.y in (0, height - crop.size)


def test_an_already_framed_square_photo_is_used_whole():
    # the authors' 512×512 crops: the face box is about 0.55-0.65 of the side
    crop = framing.frame_face((115, 150, 279, 279), 512, 512)
    assert (crop.x, crop.y, crop.size) == (0, 0, 512)
    crop = framing.frame_face((200, 100, 150, 150), 512, 512)  # a small face in a square photo is zoomed in
    assert crop.size == round(framing.FACE_TO_CROP * 150)


@pytest.mark.parametrize(
    "width,height,cx,cy,s",
    [(640, 480, 320, 220, 160), (800, 1200, 250, 400, 220), (1024, 768, 700, 300, 120), (400, 600, 200, 250, 90)],
)
def test_the_real_detector_frames_a_drawn_face(width, height, cx, cy, s):
    pytest.importorskip("cv2", reason="face framing's detector is OpenCV (requirements.txt installs it)")
    assert framing.opencv_detector() is not None, "the installed OpenCV has no face cascade"
    crop = framing.choose_crop(drawn_face(width, height, cx, cy, s))
    assert crop.method == "detected"
    assert 1.6 * s <= crop.size <= 2.8 * s, crop  # head and shoulders, not the whole photo nor the eyes
    assert abs(crop.x + crop.size / 2 - cx) < 0.1 * crop.size
    assert abs(crop.y + crop.size / 2 - cy) < 0.15 * crop.size


def test_no_face_gives_the_centre_crop_and_says_so(caplog):
    pytest.importorskip("cv2", reason="face framing's detector is OpenCV (requirements.txt installs it)")
    g = torch.linspace(0, 1, 300)[None, :, None].expand(200, 300, 3)
    with caplog.at_level(logging.WARNING):
        crop = framing.choose_crop(g, name="portrait")
    assert (crop.x, crop.y, crop.size, crop.method) == (50, 0, 200, "centre")
    assert "no face was found" in caplog.text and "portrait" in caplog.text


def test_without_opencv_framing_falls_back_to_the_centre_crop(monkeypatch, caplog):
    framing.opencv_detector.cache_clear()
    monkeypatch.setitem(sys.modules, "cv2", None)
    try:
        with caplog.at_level(logging.WARNING):
            crop = framing.choose_crop(torch.rand(100, 60, 3))
        assert (crop.x, crop.y, crop.size, crop.method) == (0, 20, 60, "centre")
        assert "opencv-python-headless" in caplog.text
    finally:
        framing.opencv_detector.cache_clear()


def test_a_manual_box_overrides_and_is_checked():
    img = torch.rand(100, 200, 3)
    called = []
    crop = framing.choose_crop(img, crop=(120, 10, 80), detector=lambda rgb: called.append(1) or [])
    assert (crop.x, crop.y, crop.size, crop.method) == (120, 10, 80, "manual") and not called
    with pytest.raises(media.MediaError, match="does not fit in the 200×100 image"):
        framing.choose_crop(img, crop=(150, 10, 80))
    with pytest.raises(ValueError, match="framing must be one of"):
        framing.choose_crop(img, framing="face")


def test_encode_face_uses_and_records_the_square():
    liax = FastLiaX()
    img = torch.rand(120, 200, 3)
    face = P.encode_face(liax, img, crop=(100, 20, 90))
    assert face.crop == FaceCrop(100, 20, 90, 200, 120, "manual")
    assert torch.equal(face.source, media.prepare_identity_image(img[20:110, 100:190]))
    centre = P.encode_face(liax, img, framing="centre")
    assert (centre.crop.x, centre.crop.size) == (40, 120)
    assert torch.equal(centre.source, media.prepare_identity_image(img))


# ---------------------------------------------------------------------------------------------- framing clips


def test_a_clip_gets_one_stable_square_from_its_first_second():
    """Detections on the probed frames (spread over the first second) → their median box: one odd frame
    does not move it, later frames are not looked at, and every frame is cut by the same square."""
    seen = []
    boxes = {
        0: (100, 50, 80, 80),
        6: (104, 52, 80, 80),
        12: (400, 300, 30, 30),
        18: (98, 48, 84, 84),
        24: (102, 50, 80, 80),
    }

    def detector(rgb):
        i = int(rgb[0, 0, 0])  # the frame index is painted into the corner pixel
        seen.append(i)
        return [boxes[i]] if i in boxes else []

    clip = torch.zeros(60, 480, 640, 3, dtype=torch.uint8)
    clip[:, 0, 0, 0] = torch.arange(60, dtype=torch.uint8)
    crop = framing.choose_clip_crop(clip, detector=detector, name="drive clip")
    assert sorted(seen) == [0, 6, 12, 18, 24]  # the first second only (25 fps)
    # centres (140, 90) (144, 92) (415, 315) (140, 90) (142, 90), sides 80 80 30 84 80: the median is (142, 90), 80
    assert crop == framing.frame_face((102, 50, 80, 80), 640, 480) and crop.method == "detected"
    short = framing.choose_clip_crop(clip[:3], detector=detector)  # shorter than a second: all its frames
    assert short == framing.frame_face(boxes[0], 640, 480)  # only frame 0 has a face
    assert framing._probe_indices(3, 25) == [0, 1, 2] and framing._probe_indices(100, 30) == [0, 7, 14, 22, 29]


def test_clip_framing_manual_box_and_no_face(caplog):
    clip = torch.rand(10, 90, 160, 3)
    crop = framing.choose_clip_crop(clip, crop=(70, 10, 60), detector=lambda rgb: pytest.fail("not asked"))
    assert (crop.x, crop.y, crop.size, crop.method) == (70, 10, 60, "manual")
    with pytest.raises(media.MediaError, match="does not fit in the 160×90 image"):
        framing.choose_clip_crop(clip, crop=(120, 10, 60), name="--drive-video")
    with caplog.at_level(logging.WARNING):
        crop = framing.choose_clip_crop(clip, detector=lambda rgb: [], name="--drive-video")
    assert (crop.x, crop.y, crop.size, crop.method) == (35, 0, 90, "centre")
    assert "--drive-video: no face was found in its first second" in caplog.text
    assert framing.choose_clip_crop(clip, framing="centre") == framing.centre_crop(160, 90)


@pytest.mark.parametrize("width,height,cx,cy,s", [(640, 360, 470, 150, 110), (360, 640, 120, 420, 100)])
def test_the_real_detector_frames_an_off_centre_swaying_clip(width, height, cx, cy, s):
    pytest.importorskip("cv2", reason="face framing's detector is OpenCV (requirements.txt installs it)")
    clip = drawn_face_clip(width, height, cx, cy, s, n=25, sway=6)
    crop = framing.choose_clip_crop(clip, name="clip")
    assert crop.method == "detected" and 1.6 * s <= crop.size <= 2.8 * s, crop
    assert abs(crop.x + crop.size / 2 - cx) < 0.1 * crop.size and abs(crop.y + crop.size / 2 - cy) < 0.15 * crop.size
    centre = framing.centre_crop(width, height)
    assert abs(crop.x - centre.x) + abs(crop.y - centre.y) > 50  # not what the centre crop would cut
    liax = FastLiaX()
    motion = P.encode_motion(liax, clip, FPS, crop=crop)
    cut = clip[:, crop.y : crop.y + crop.size, crop.x : crop.x + crop.size]
    assert torch.allclose(motion.codes, P.encode_motion(liax, cut, FPS).codes, atol=1e-5)
    assert not torch.allclose(motion.codes, P.encode_motion(liax, clip, FPS).codes, atol=1e-3)
    face = P.encode_face(liax, clip[0], crop=crop)
    assert face.crop == crop  # the clip's square, recorded with the identity as it was chosen


# ---------------------------------------------------------------------------------------------- paste-back


def test_paste_geometry_core_outside_and_seam():
    bg = torch.full((300, 400, 3), 0.5)
    crop = FaceCrop(100, 50, 200, 400, 300)
    face = torch.zeros(512, 512, 3)
    face[..., 0] = 1.0  # red
    out = paste_frame(face, bg, crop, feather=0.1).float() / 255
    band = 20  # 0.1 × 200
    core = out[50 + band : 250 - band, 100 + band : 300 - band]
    assert torch.allclose(core, torch.tensor([1.0, 0.0, 0.0]).expand_as(core), atol=1 / 255)
    outside = torch.ones(300, 400, dtype=torch.bool)
    outside[50:250, 100:300] = False
    assert torch.equal(out[outside], torch.full_like(out[outside], 128 / 255))
    row = out[150, 100 : 100 + band + 1, 0]  # red rises steadily across the seam
    assert row[0] < 0.6 and row[-1] > 0.99 and bool((row[1:] >= row[:-1] - 1e-6).all())


def test_edges_on_the_picture_border_stay_hard():
    bg = torch.zeros(200, 300, 3)
    crop = FaceCrop(0, 0, 200, 300, 200)  # touches the left, top and bottom border
    out = paste_frame(torch.ones(64, 64, 3), bg, crop, feather=0.2)
    assert int(out[100, 0, 0]) == 255 and int(out[0, 100, 0]) == 255 and int(out[199, 100, 0]) == 255
    assert int(out[100, 199, 0]) < 30  # the right edge, inside the picture, fades
    mask = feather_mask(10, 10, 0.0)
    assert torch.equal(mask, torch.ones(10, 10))


def test_any_frame_size_and_an_upscaled_background():
    crop = FaceCrop(40, 30, 100, 200, 160)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 512), torch.linspace(0, 1, 512), indexing="ij")
    face512 = torch.stack([xs, ys, 1 - xs], -1)
    face1024 = torch.nn.functional.interpolate(face512.permute(2, 0, 1)[None], size=1024, mode="bilinear")[0]
    face1024 = face1024.permute(1, 2, 0)
    bg = torch.rand(160, 200, 3)
    a = paste_frame(face512, bg, crop, 0.1).int()
    b = paste_frame(face1024, bg, crop, 0.1).int()
    assert (a - b).abs().max() <= 3  # an upscaler's output lands in the same place
    big = torch.rand(320, 400, 3)  # the photo itself upscaled 2×
    assert box_in(crop, 400, 320) == (80, 60, 280, 260)
    out = paste_frame(torch.ones(512, 512, 3), big, crop, 0.0)
    assert int(out[60:260, 80:280].min()) == 255 and torch.equal(out[:60].float(), (big[:60] * 255).round())


def test_colour_matching_removes_a_tint():
    g = torch.Generator().manual_seed(0)
    bg = torch.rand(256, 256, 3, generator=g) * 0.6 + 0.2
    crop = FaceCrop(28, 28, 200, 256, 256)
    original = bg[28:228, 28:228]
    tinted = (original * 0.7 + torch.tensor([0.2, 0.0, 0.1])).clamp(0, 1)  # the render came back tinted
    plain = next(paste_frames([tinted], bg, crop, feather=0.0, colour_match=False)).float() / 255
    matched = next(paste_frames([tinted], bg, crop, feather=0.0, colour_match=True)).float() / 255
    err_plain = (plain[28:228, 28:228] - original).abs().mean()
    err_matched = (matched[28:228, 28:228] - original).abs().mean()
    assert err_matched < 0.01 < err_plain


def colour_clip(n: int, h: int = 48, w: int = 64) -> torch.Tensor:
    """(n, h, w, 3) uint8 frames whose red channel is 20·i: each frame says which it is."""
    return (torch.arange(n, dtype=torch.uint8) * 20)[:, None, None, None].expand(n, h, w, 3).contiguous()


def frame_ids(frames) -> list[int]:
    return [int(round(float(torch.as_tensor(f)[..., 0].float().mean()) / 20)) for f in frames]


def test_background_rules_loop_hold_and_cut(tmp_path):
    clip = colour_clip(4)
    take = lambda it, n: [next(it) for _ in range(n)]  # noqa: E731
    assert frame_ids(take(background_frames(clip, "loop"), 9)) == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert frame_ids(take(background_frames(clip, "hold"), 6)) == [0, 1, 2, 3, 3, 3]
    assert frame_ids(take(background_frames(clip[0], "loop"), 3)) == [0, 0, 0]  # a still
    with pytest.raises(ValueError, match="loop, hold"):
        next(background_frames(clip, "bounce"))
    # a file at another rate: re-timed to 25 fps (nearest frame), then looped / held; 10 fps × 4 frames = 10 at 25
    path = media.write_mp4(tmp_path / "bg10.mp4", colour_clip(4), 10)
    at25 = [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]  # frame k at 25 fps shows the 10 fps frame nearest to k / 25 s
    assert frame_ids(take(background_frames(path, "loop"), 14)) == at25 + at25[:4]
    assert frame_ids(take(background_frames(path, "hold"), 12)) == at25 + [3, 3]
    with open(path, "rb") as fh:  # a file object (ComfyUI's in-memory VIDEO) loops by seeking back
        assert frame_ids(take(background_frames(fh, "loop"), 12)) == at25 + at25[:2]
    # a longer background is cut: the output has the rendered frames' length
    faces = torch.zeros(3, 32, 32, 3)
    assert len(list(paste_frames(faces, path, FaceCrop(8, 0, 48, 64, 48)))) == 3


def test_iter_video_frames_matches_the_whole_clip_decoder(tmp_path):
    frames = colour_clip(9)
    path = media.write_mp4(tmp_path / "c30.mp4", frames, 30)
    whole, fps = media.load_video_frames(path, target_fps=FPS)
    lazy = list(media.iter_video_frames(path, target_fps=FPS))
    assert fps == FPS and len(lazy) == whole.shape[0] and frame_ids(lazy) == frame_ids(whole)
    assert frame_ids(media.iter_video_frames(path)) == list(range(9))  # without a clock: as decoded
    assert len(list(media.iter_video_frames(path, target_fps=FPS, max_frames=3))) == 3


class SpyWriter:
    """Records what an Mp4Writer is given, and how far the background had been read at each write."""

    def __init__(self, monkeypatch, read_so_far):
        from talker_core.media import output

        self.batches, self.read, self.audio = [], [], 0
        spy = self
        real = output.Mp4Writer

        class Writer(real):
            def write_frames(self, frames):
                spy.batches.append(tuple(frames.shape))
                spy.read.append(read_so_far())
                super().write_frames(frames)

            def write_audio(self, audio):
                spy.audio += int(audio.shape[-1])
                super().write_audio(audio)

        monkeypatch.setattr(output, "Mp4Writer", Writer)

    @property
    def written(self) -> list[int]:
        return list(np.cumsum([b[0] for b in self.batches]))


def test_paste_back_streams_from_a_lazily_decoded_video_into_the_writer(tmp_path, monkeypatch):
    """Rendering with paste-back: each batch is composited and written at once; the background video is
    decoded only as far as the frames written (never the whole clip, never all frames in memory)."""
    from talker_core.media import video as V

    liax = FastLiaX()
    clip = drawn_face_clip(200, 150, 120, 60, 50, n=60)  # 2 s at 30 fps, more than the render needs
    bg = media.write_mp4(tmp_path / "footage.mp4", clip, 30)
    decoded = [0]
    real_rgb = V._frame_rgb

    def counting(frame, p=None):
        decoded[0] += 1
        return real_rgb(frame, p)

    monkeypatch.setattr(V, "_frame_rgb", counting)
    spy = SpyWriter(monkeypatch, lambda: decoded[0])
    face = P.encode_face(liax, clip[0], crop=(90, 20, 80))
    motion = P.encode_motion(liax, torch.rand(20, 64, 64, 3), FPS)
    compose = Compositor(bg, face.crop, 0.1, True, "loop")
    audio = torch.zeros(1, 20 * 960)
    out = P.render_to_mp4(
        liax, face, motion, tmp_path / "pasted.mp4", audio=audio, sample_rate=SAMPLE_RATE, chunk=8, compose=compose
    )
    compose.close()
    assert [b[0] for b in spy.batches] == [1, 8, 8, 3] and all(b[1:] == (150, 200, 3) for b in spy.batches)
    # 30 fps → 25: about 1.2 source frames per written frame, plus the one looked ahead; never the whole clip
    assert all(r <= 1.2 * w + 2 for r, w in zip(spy.read, spy.written, strict=True)), (spy.read, spy.written)
    assert decoded[0] < 30 and compose.pulled == 20
    v = next(s for s in media.probe_media(out)["streams"] if s["type"] == "video")
    assert (v["width"], v["height"], v["frames"]) == (200, 150, 20)
    frames, _ = media.load_video_frames(out)
    # the same as pasting in memory, frame for frame (up to the video codec)
    source, _ = media.load_video_frames(bg, target_fps=FPS)
    rendered = P.render_motion(liax, face, motion, as_uint8=True)
    expected = torch.stack(list(paste_frames(rendered, source[:20], face.crop, 0.1, True)))
    assert (frames.float() - expected.float()).abs().mean() < 3
    outside = torch.ones(150, 200, dtype=torch.bool)
    outside[20:100, 90:170] = False
    assert torch.equal(expected[:, outside], source[:20, outside])  # the footage itself away from the square


def test_paste_to_mp4_writes_ready_frames_a_batch_at_a_time(tmp_path, monkeypatch):
    from talker_core.pipeline.compose import paste_to_mp4

    pulled = [0]

    def photo_frames():  # a background as an iterable: read in step with the frames written
        while True:
            pulled[0] += 1
            yield torch.full((90, 160, 3), 0.5)

    spy = SpyWriter(monkeypatch, lambda: pulled[0])
    faces = torch.rand(11, 256, 256, 3)  # e.g. an upscaler's output: any size
    crop = FaceCrop(50, 10, 60, 160, 90)
    progress = []
    hooks = P.Hooks(progress=lambda d, t, s, p: progress.append((d, t, s, p is not None)))
    wav = torch.zeros(1, 11 * 960)
    out = paste_to_mp4(
        faces,
        photo_frames(),
        crop,
        tmp_path / "p.mp4",
        audio=wav,
        sample_rate=SAMPLE_RATE,
        chunk=4,
        hooks=hooks,
        colour_match=False,
    )
    assert [b[0] for b in spy.batches] == [4, 4, 3] and spy.read == [4, 8, 11] and spy.audio == 11 * 960
    assert [p[:2] for p in progress] == [(4, 11), (8, 11), (11, 11)] and progress[0][3]
    frames, _ = media.load_video_frames(out)
    assert frames.shape == (11, 90, 160, 3) and abs(float(frames[:, :, :40].float().mean()) - 128) < 3
    stopped = P.Hooks(should_cancel=lambda: len(spy.batches) >= 1)
    with pytest.raises(P.Cancelled):
        paste_to_mp4(faces, torch.zeros(90, 160, 3), crop, tmp_path / "c.mp4", chunk=4, hooks=stopped)
    assert not (tmp_path / "c.mp4").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------- dialogue


def test_parse_script():
    turns = D.parse_script("# a scene\nA: Hello there.\n  how are you?\n\nb: Fine, thanks.\nA: Good.", ["A", "B"])
    assert turns == [D.Turn("A", "Hello there. how are you?"), D.Turn("B", "Fine, thanks."), D.Turn("A", "Good.")]
    with pytest.raises(ValueError, match="line 1 has no speaker tag"):
        D.parse_script("Hello\nA: hi")
    with pytest.raises(ValueError, match="speaker 'C' has no voice and face"):
        D.parse_script("A: hi\nC: hello", ["A", "B"])
    with pytest.raises(ValueError, match="turn 1 .* has no words"):
        D.parse_script("A:\nB: hi")
    with pytest.raises(ValueError, match="empty"):
        D.parse_script("\n# nothing\n")


@pytest.fixture(scope="module")
def talk(debug_models):
    found = loaders.find_models(debug_models)
    bundle = loaders.load_talker(found["talker"])
    vae = loaders.load_whisperx_vae(found["whisperx_vae"])
    spk = loaders.load_speaker_encoder(found["speaker"])
    liax = FastLiaX()
    t = torch.arange(int(22050 * 1.5)) / 22050
    speakers = {}
    for tag, f0, seed in (("A", 180.0, 0), ("B", 120.0, 1)):
        wav = (0.3 * torch.sin(2 * math.pi * f0 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t)))[None]
        img = torch.rand(96, 128, 3, generator=torch.Generator().manual_seed(seed))
        speakers[tag] = D.Speaker(P.encode_voice(vae, spk, wav, 22050), P.encode_face(liax, img, framing="centre"))
    return bundle, vae, liax, speakers


def test_two_speaker_dialogue_both_layouts(talk, monkeypatch, tmp_path):
    import importlib

    G = importlib.import_module("talker_core.pipeline.generate")
    bundle, vae, liax, speakers = talk
    calls = []
    real = G.generate

    def spy(bundle, request, **kw):
        result = real(bundle, request, **kw)
        calls.append((request, kw, result))
        return result

    monkeypatch.setattr(G, "generate", spy)
    turns = D.parse_script("A: Hello there.\nB: Hi, how are you?\nA: Fine.")
    request = P.TalkRequest(steps=2, max_seconds=0.48, seed=5)
    dlg = D.generate_dialogue(bundle, vae, turns, speakers, request, carry_seconds=0.16)
    assert len(calls) == 6  # every turn for both speakers
    assert [(c[0].mode, c[0].seed) for c in calls[:2]] == [("t2av", 5), ("a2v", 5)]
    # the speaker talks with their own voice and face, the listener gets silence of the same length
    assert calls[0][1]["voice"].embedding is speakers["A"].voice.embedding and calls[0][1]["face"] is speakers["A"].face
    assert calls[1][1]["face"] is speakers["B"].face and calls[1][1]["forced_speech"].frames == dlg.turn_frames[0]
    assert calls[0][0].prefix_seconds == 0 and calls[1][0].prefix_seconds == 0
    # A's second turn continues from the tail of A's first (prosody carries over)
    a1, a2 = calls[0], calls[4]
    assert a2[0].mode == "t2av" and a2[0].text == "Fine." and a2[0].prefix_seconds == pytest.approx(0.16)
    first_speech = a1[2].speech.latents[a1[2].prefix_frames :]
    assert torch.equal(a2[1]["voice"].speech.latents, first_speech[-4:])
    assert torch.equal(a2[1]["voice"].embedding, speakers["A"].voice.embedding)
    end_of_listening = dlg.turn_frames[0] + dlg.turn_frames[1]  # …with A's pose from listening to B
    assert torch.equal(a2[1]["reference_motion"].codes, dlg.motions["A"].codes[end_of_listening - 4 : end_of_listening])
    b_listens = calls[5]  # B listening in turn 3 continues from B's own turn 2, as it happened
    b_spoke = calls[2][2].speech.latents[calls[2][2].prefix_frames :]
    assert b_listens[0].mode == "a2v" and torch.equal(b_listens[1]["voice"].speech.latents, b_spoke[-4:])
    # one track, motions aligned with it
    assert dlg.audio.shape == (1, dlg.frames * SAMPLE_RATE // FPS)
    assert all(m.frames == dlg.frames for m in dlg.motions.values())
    assert dlg.active == ["A"] * dlg.turn_frames[0] + ["B"] * dlg.turn_frames[1] + ["A"] * dlg.turn_frames[2]
    wav_a1 = P.decode_speech(vae, a1[2].speech)[:, a1[2].prefix_frames * 960 :][:, : dlg.turn_frames[0] * 960]
    assert torch.equal(dlg.audio[:, : wav_a1.shape[1]], wav_a1)

    side = list(D.dialogue_frames(liax, dlg, speakers, "side_by_side", chunk=4))
    cuts = list(D.dialogue_frames(liax, dlg, speakers, "cuts", chunk=4))
    assert len(side) == len(cuts) == dlg.frames
    assert side[0].shape == (512, 1024, 3) and cuts[0].shape == (512, 512, 3) and side[0].dtype == torch.uint8
    ref_a = P.render_motion(liax, speakers["A"].face, dlg.motions["A"], as_uint8=True)
    ref_b = P.render_motion(liax, speakers["B"].face, dlg.motions["B"], as_uint8=True)
    assert torch.equal(torch.stack(side)[:, :, :512], ref_a) and torch.equal(torch.stack(side)[:, :, 512:], ref_b)
    for i, tag in enumerate(dlg.active):
        assert torch.equal(cuts[i], (ref_a if tag == "A" else ref_b)[i])
    with pytest.raises(ValueError, match="layout must be one of"):
        next(D.dialogue_frames(liax, dlg, speakers, "grid"))
    # into an MP4 a batch at a time, with the one audio track: the same frames as above
    monkeypatch.undo()
    tmp = tmp_path
    for layout, ref in (("side_by_side", torch.stack(side)), ("cuts", torch.stack(cuts))):
        spy = SpyWriter(monkeypatch, lambda: 0)
        progress: list = []
        hooks = P.Hooks(progress=lambda d, t, s, p, got=progress: got.append((d, t, p is not None)))
        out = D.dialogue_to_mp4(liax, dlg, speakers, tmp / f"{layout}.mp4", layout, chunk=4, hooks=hooks, crf=0)
        assert spy.batches[0][0] == 1 and all(b[0] <= 4 for b in spy.batches)  # the first frame alone, then batches
        assert sum(b[0] for b in spy.batches) == dlg.frames
        assert spy.audio == dlg.audio.shape[1] and progress[-1][:2] == (dlg.frames, dlg.frames) and progress[0][2]
        frames, _ = media.load_video_frames(out)
        assert frames.shape == ref.shape and (frames.float() - ref.float()).abs().mean() < 4
        wav, sr = media.load_audio(out)
        assert abs(wav.shape[1] / sr - dlg.seconds) <= 1 / FPS
        monkeypatch.undo()
    assert sorted(p.name for p in tmp.iterdir()) == ["cuts.mp4", "side_by_side.mp4"]
    with pytest.raises(ValueError, match="without a voice and face"):
        D.generate_dialogue(bundle, vae, [D.Turn("C", "hi")], speakers, request)


# ---------------------------------------------------------------------------------------------- quick start


def demo_bytes(tmp_path: Path) -> dict[str, bytes]:
    """A small real WAV and MP4 standing in for the authors' samples."""
    d = tmp_path / "demo_src"
    d.mkdir()
    t = torch.arange(22050 * 2) / 22050
    wav = (0.3 * torch.sin(2 * math.pi * 200 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t)))[None]
    media.write_wav(d / "a.wav", wav, 22050)
    frames = torch.from_numpy(drawn_face(160, 160, 80, 70, 60)).expand(10, 160, 160, 3).contiguous()
    media.write_mp4(d / "v.mp4", frames, 25)
    return {
        "samples/reference_audio.wav": (d / "a.wav").read_bytes(),
        "samples/reference_video.mp4": (d / "v.mp4").read_bytes(),
    }


class FakeWeb(dl.HubClient):
    def __init__(self, files: dict[str, bytes], corrupt: bool = False):
        self.files, self.corrupt, self.fetched = files, corrupt, []

    def fetch_url(self, url, dest: Path, timeout=60.0):
        self.fetched.append(url)
        remote = url.split(f"{dl.DEMO_COMMIT}/", 1)[1]
        data = self.files[remote]
        if self.corrupt:
            data = data[:-1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dest


def pinned(files: dict[str, bytes]) -> tuple[dl.DemoFile, ...]:
    return tuple(
        dl.DemoFile(df.remote, df.local, len(files[df.remote]), hashlib.sha256(files[df.remote]).hexdigest())
        for df in dl.DEMO_FILES
    )


def test_demo_download_face_and_comfyui_inputs(tmp_path):
    files = demo_bytes(tmp_path)
    models = tmp_path / "models"
    with pytest.raises(dl.DownloadError, match="SHA-256"):
        dl.download_demo(models, FakeWeb(files, corrupt=True), pinned(files))
    assert not (models / dl.DEMO_VOICE).exists()
    web = FakeWeb(files)
    paths = dl.download_models(models, kinds=["demo"], client=web, demo_files=pinned(files))
    assert sorted(p.relative_to(models).as_posix() for p in paths) == sorted(
        [dl.DEMO_VOICE, dl.DEMO_CLIP, dl.DEMO_FACE]
    )
    assert all(u.startswith("https://raw.githubusercontent.com/zhenye234/Talker-T2AV/") for u in web.fetched)
    face = media.load_image(models / dl.DEMO_FACE)
    assert face.shape == (160, 160, 3)
    web.fetched.clear()
    dl.download_demo(models, web, pinned(files))
    assert web.fetched == [], "verified demo files are not fetched again"
    assert dl.find_demo(models) == {
        "voice": models / dl.DEMO_VOICE,
        "face": models / dl.DEMO_FACE,
        "clip": models / dl.DEMO_CLIP,
    }

    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "talker_voice.wav").write_bytes(b"the user's own")
    written = dl.install_demo_inputs(models, inputs)
    assert (inputs / "talker_voice.wav").read_bytes() == b"the user's own"  # never replaced
    assert {p.name for p in written} == set(dl.DEMO_INPUTS) - {"talker_voice.wav"}
    assert (inputs / "talker_face.png").read_bytes() == (models / dl.DEMO_FACE).read_bytes()
    mirrored = media.load_image(inputs / "talker_face_b.png")
    assert torch.equal(mirrored, face.flip(1))
    portrait = media.load_image(inputs / "talker_portrait.png")
    assert portrait.shape == (dl.PORTRAIT_SIZE[1], dl.PORTRAIT_SIZE[0], 3)
    assert dl.install_demo_inputs(models, inputs) == []


def cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "talker_core", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def models_with_demo(debug_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("models_demo")
    for item in Path(debug_models).iterdir():
        (root / item.name).symlink_to(item.resolve())
    files = demo_bytes(tmp_path_factory.mktemp("demo"))
    dl.download_demo(root, FakeWeb(files), pinned(files))
    return root


def video_stream(path: Path) -> dict:
    info = media.probe_media(path)
    assert sorted(s["type"] for s in info["streams"]) == ["audio", "video"], info
    return next(s for s in info["streams"] if s["type"] == "video")


def test_generate_with_nothing_of_your_own_uses_the_demo(models_with_demo, debug_models, tmp_path):
    out = tmp_path / "quick.mp4"
    code, stdout, stderr = cli(
        "generate", "--models", models_with_demo, "--text", "Hello.", "--max-seconds", "0.16", "--quiet", "--out", out
    )
    assert code == 0, stderr
    assert "using the demo voice" in stderr and "using the demo face" in stderr
    assert (video_stream(out)["width"], video_stream(out)["height"]) == (512, 512)
    code, _, stderr = cli("generate", "--models", debug_models, "--text", "Hello.", "--out", tmp_path / "x.mp4")
    assert code == 1 and "talker_core download" in stderr and not (tmp_path / "x.mp4").exists()


def test_generate_paste_back_on_a_non_square_photo(debug_models, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(drawn_face(180, 240, 90, 100, 70)).save(photo)
    t = torch.arange(22050) / 22050
    media.write_wav(tmp_path / "v.wav", (0.3 * torch.sin(2 * math.pi * 200 * t))[None], 22050)
    out = tmp_path / "pasted.mp4"
    code, stdout, stderr = cli(
        "generate", "--models", debug_models, "--text", "Hi.", "--ref-audio", tmp_path / "v.wav",
        "--ref-image", photo, "--paste-back", "--max-seconds", "0.16", "--quiet", "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    v = video_stream(out)
    assert (v["width"], v["height"]) == (180, 240)
    frames, _ = media.load_video_frames(out)
    # away from the square, the photo is untouched (up to the video codec)
    original = torch.from_numpy(drawn_face(180, 240, 90, 100, 70)).float()
    assert (frames[0, -20:].float() - original[-20:]).abs().mean() < 4
    code, _, stderr = cli(
        "generate", "--models", debug_models, "--speech-only", "--text", "Hi.", "--ref-audio", tmp_path / "v.wav",
        "--paste-back", "--out", tmp_path / "s.wav",
    )  # fmt: skip
    assert code == 1 and "cannot be combined with --speech-only" in stderr and not (tmp_path / "s.wav").exists()


def test_generate_paste_back_into_footage_framed_on_its_face(debug_models, tmp_path):
    """--ref-video: the face is found in the clip (off-centre), and the render is pasted back into the
    footage's own frames at that square, streamed; the footage is longer than the result, so it is cut."""
    pytest.importorskip("cv2", reason="face framing's detector is OpenCV (requirements.txt installs it)")
    clip = drawn_face_clip(320, 200, 215, 80, 60, n=25, sway=3)
    video = media.write_mp4(tmp_path / "footage.mp4", clip, 25)
    t = torch.arange(22050) / 22050
    media.write_wav(tmp_path / "v.wav", (0.3 * torch.sin(2 * math.pi * 200 * t))[None], 22050)
    out = tmp_path / "pasted.mp4"
    code, stdout, stderr = cli(
        "generate", "--models", debug_models, "--text", "Hi.", "--ref-audio", tmp_path / "v.wav",
        "--ref-video", video, "--paste-back", "--background-end", "hold", "--max-seconds", "0.16", "--quiet",
        "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    frames, _ = media.load_video_frames(out)
    source, _ = media.load_video_frames(video)
    n = frames.shape[0]
    assert frames.shape[1:] == (200, 320, 3) and 0 < n < 25  # the footage's size, the result's length
    reread, _ = media.load_video_frames(video, max_seconds=0.2 + 1 / FPS, target_fps=FPS)  # what the CLI reads
    crop = framing.choose_clip_crop(reread, name="--ref-video")
    assert crop.method == "detected" and crop.x > framing.centre_crop(320, 200).x + 30  # the face, not the centre
    outside = torch.ones(200, 320, dtype=torch.bool)
    outside[crop.y : crop.y + crop.size, crop.x : crop.x + crop.size] = False
    diff = (frames.float() - source[:n].float()).abs()
    assert diff[:, outside].mean() < 3  # the footage itself, frame for frame, away from the square
    inner = diff[
        :, crop.y + crop.size // 4 : crop.y + 3 * crop.size // 4, crop.x + crop.size // 4 : crop.x + 3 * crop.size // 4
    ]
    assert inner.mean() > 10  # the rendered face is inside it


def test_cli_clip_framing_options_reach_the_clip_square():
    """--crop and --framing apply to --drive-video / --ref-video as to images (one square for the clip)."""
    import argparse

    from talker_core.cli import features

    clip = torch.rand(6, 90, 160, 3)
    args = argparse.Namespace(framing="detect", crop=(60, 5, 80))
    assert features.clip_crop(args, clip, "--drive-video") == FaceCrop(60, 5, 80, 160, 90, "manual")
    args = argparse.Namespace(framing="centre", crop=None)
    assert features.clip_crop(args, clip, "--drive-video") == framing.centre_crop(160, 90)
    args = argparse.Namespace(framing="detect", crop=(100, 5, 80))
    with pytest.raises(media.MediaError, match="--drive-video: the crop box"):
        features.clip_crop(args, clip, "--drive-video")


def test_generate_dialogue_from_the_command_line(debug_models, tmp_path):
    from PIL import Image

    t = torch.arange(22050) / 22050
    for tag, f0 in (("a", 180), ("b", 120)):
        media.write_wav(tmp_path / f"{tag}.wav", (0.3 * torch.sin(2 * math.pi * f0 * t))[None], 22050)
        Image.fromarray((np.random.default_rng(f0).random((64, 64, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{tag}.png"
        )
    script = tmp_path / "scene.txt"
    script.write_text("A: Hello.\n", encoding="utf-8")  # one turn: A speaks, B listens (kept short for CI)
    out = tmp_path / "dialogue.mp4"
    code, stdout, stderr = cli(
        "generate", "--models", debug_models, "--dialogue", script,
        "--speaker", f"A={tmp_path / 'a.wav'},{tmp_path / 'a.png'}", "--speaker", f"B={tmp_path / 'b.wav'},{tmp_path / 'b.png'}",
        "--framing", "centre", "--layout", "cuts", "--steps", "2", "--max-seconds", "0.16", "--quiet", "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    v = video_stream(out)
    assert (v["width"], v["height"]) == (512, 512)  # side by side is checked in process (cheap renderer)
    assert "dialogue of 1 turn, 2 speakers" in stdout and "(cuts)" in stdout
    code, _, stderr = cli(
        "generate", "--models", debug_models, "--dialogue", script,
        "--speaker", f"B={tmp_path / 'b.wav'},{tmp_path / 'b.png'}", "--out", tmp_path / "y.mp4",
    )  # fmt: skip
    assert code == 1 and "speaker 'A' has no voice and face" in stderr
