"""The pipeline on the tiny debug models: every mode, long form, prefixes, cancellation, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from talker_core import loaders
from talker_core import pipeline as P
from talker_core.types import FPS, SAMPLE_RATE, MotionCodes, SpeechLatents


@pytest.fixture(scope="module")
def models(debug_models):
    found = loaders.find_models(debug_models)
    return {
        "talker": loaders.load_talker(found["talker"]),
        "vae": loaders.load_whisperx_vae(found["whisperx_vae"]),
        "liax": loaders.load_liax(found["liax"]),
        "speaker": loaders.load_speaker_encoder(found["speaker"]),
    }


def tone(seconds: float, sr: int = 22050, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    x = 0.3 * torch.sin(2 * math.pi * 220 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return x.repeat(channels, 1)


@pytest.fixture(scope="module")
def refs(models):
    voice = P.encode_voice(models["vae"], models["speaker"], tone(2.0, channels=2), 22050)
    face = P.encode_face(models["liax"], torch.rand(96, 128, 3))
    motion = P.encode_motion(models["liax"], torch.rand(36, 32, 32, 3), fps=30)
    return voice, face, motion


def test_reference_encoding_shapes(refs):
    voice, face, motion = refs
    assert voice.speech.frames == 50 and voice.embedding.shape == (256,)
    assert torch.isfinite(voice.embedding).all() and torch.isfinite(voice.speech.latents).all()
    assert face.first_motion.shape == (40,) and face.source.shape == (3, 512, 512)
    assert motion.frames == 30  # 36 frames at 30 fps = 1.2 s → 30 frames at 25 fps


def test_reference_audio_is_capped_at_30_seconds(models):
    voice = P.encode_voice(models["vae"], models["speaker"], tone(31.0, sr=8000), 8000)
    assert voice.speech.frames == 750


@pytest.mark.parametrize(
    "wav,match",
    [
        (torch.zeros(1, 44100), "silent"),
        (tone(0.1), "at least"),
        (torch.full((1, 22050), float("nan")), "NaN"),
    ],
)
def test_bad_reference_audio(models, wav, match):
    with pytest.raises(ValueError, match=match):
        P.encode_voice(models["vae"], models["speaker"], wav, 22050)


def test_face_batch_is_refused(models):
    with pytest.raises(ValueError, match="batch"):
        P.encode_face(models["liax"], torch.rand(2, 64, 64, 3))


def _run(models, refs, **kw):
    voice, face, motion = refs
    extra = {k: kw.pop(k) for k in ("forced_speech", "forced_motion") if k in kw}
    request = P.TalkRequest(**{"text": "Hello there.", "max_seconds": 0.64, **kw})
    return P.generate(models["talker"], request, voice=voice, face=face, reference_motion=motion, **extra)


def test_t2av_with_prefix_includes_the_reference_prefix(models, refs):
    voice, _, motion = refs
    r = _run(models, refs, prefix_seconds=0.32, seed=3)
    assert r.prefix_frames == 8
    assert r.speech.frames == r.motion.frames == 8 + round(r.generated_seconds * FPS)
    torch.testing.assert_close(r.speech.latents[:8], voice.speech.latents[:8])
    torch.testing.assert_close(r.motion.codes[:8], motion.codes[:8])
    assert 0 < r.generated_seconds <= 0.64


def test_same_seed_same_result_other_seed_differs(models, refs):
    a, b, c = (_run(models, refs, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.speech.latents, b.speech.latents) and torch.equal(a.motion.codes, b.motion.codes)
    assert not torch.equal(a.speech.latents, c.speech.latents)


def test_a2v_keeps_the_driving_speech(models, refs):
    drive = SpeechLatents(torch.randn(22, 32))
    r = _run(models, refs, mode="a2v", forced_speech=drive, text="")
    assert r.speech.frames == r.motion.frames == 16  # cut to max_seconds (0.64 s)
    torch.testing.assert_close(r.speech.latents, drive.latents[:16])


def test_v2a_keeps_the_driving_motion(models, refs):
    drive = MotionCodes(torch.randn(10, 40))
    r = _run(models, refs, mode="v2a", forced_motion=drive, text="Dub this.")
    assert r.speech.frames == r.motion.frames == 10
    torch.testing.assert_close(r.motion.codes, drive.codes)


def test_speech_only_has_no_motion(models, refs):
    r = _run(models, refs, mode="speech", prefix_seconds=0.2)
    assert r.motion is None and r.prefix_frames == 5


def test_long_form_runs_three_segments_that_continue(models, refs):
    r = _run(
        models,
        refs,
        text="One sentence here. Another one now. And a third one.",
        max_segment_chars=20,
        max_segment_seconds=0.32,
        max_seconds=5.0,
        segment_prefix_seconds=0.16,
    )
    assert r.segments == r.segments_planned == 3
    assert r.speech.frames == r.motion.frames == round(r.generated_seconds * FPS)
    assert torch.isfinite(r.speech.latents).all()


def test_long_form_respects_max_seconds(models, refs):
    r = _run(
        models,
        refs,
        text="One sentence here. Another one now. And a third one.",
        max_segment_chars=20,
        max_segment_seconds=0.32,
        max_seconds=0.48,
    )
    assert r.segments == 2 and r.segments_planned == 3
    assert r.generated_seconds <= 0.48 + 1e-9


def test_cancel_stops_within_a_patch_and_the_engine_is_reusable(models, refs):
    polls = []

    def cancel_after_two():
        polls.append(1)
        return len(polls) > 2

    voice, face, motion = refs
    request = P.TalkRequest(text="Hello there.", max_seconds=0.64, seed=11)
    with pytest.raises(P.Cancelled):
        P.generate(models["talker"], request, voice=voice, face=face, hooks=P.Hooks(should_cancel=cancel_after_two))
    assert len(polls) == 3  # polled before each patch: two patches ran, the third was refused
    again = P.generate(models["talker"], request, voice=voice, face=face)
    fresh = P.generate(models["talker"], request, voice=voice, face=face)
    assert torch.equal(again.speech.latents, fresh.speech.latents)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"text": ""}, "empty"),
        ({"text": "   "}, "empty"),
        ({"text": "x" * (P.MAX_TEXT_CHARS + 1)}, "at most"),
        ({"prefix_seconds": 5.0}, "longer than"),
        ({"mode": "a2v"}, "driving speech"),
        ({"mode": "nope"}, "mode must be"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_requests(models, refs, kw, match):
    with pytest.raises(ValueError, match=match):
        _run(models, refs, **kw)


def test_prompt_too_long_for_one_segment_says_so(models, refs):
    with pytest.raises(ValueError, match="too long"):
        _run(models, refs, text="word " * 400, max_segment_chars=5000, max_prompt_tokens=200)


@pytest.mark.slow
def test_decode_and_render(models, refs):
    voice, face, _ = refs
    wav = P.decode_speech(models["vae"], voice.speech)
    assert wav.shape == (1, voice.speech.frames * SAMPLE_RATE // FPS) and wav.abs().max() <= 1
    seen = []
    motion = MotionCodes(torch.randn(3, 40))
    frames = P.render_motion(
        models["liax"], face, motion, chunk=2, hooks=P.Hooks(progress=lambda d, t, s, p: seen.append((d, t, s)))
    )
    assert frames.shape == (3, 512, 512, 3) and float(frames.min()) >= 0 and float(frames.max()) <= 1
    assert seen == [(1, 3, "render"), (3, 3, "render")]  # the first report comes with the first frame
    with pytest.raises(P.Cancelled):
        P.render_motion(models["liax"], face, motion, chunk=1, hooks=P.Hooks(should_cancel=lambda: True))


def test_split_text_keeps_every_word():
    text = "First. Second sentence, with a clause; and more! 你好。再见。 " + "word " * 60
    parts = P.split_text(text, 40)
    assert all(len(p) <= 40 for p in parts)
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")
