"""Reliability: out-of-memory while rendering, interruption at random points, endurance through
the node layer, and property tests (fuzzing) of the text and audio front ends."""

from __future__ import annotations

import contextlib
import math
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talker_core import pipeline as P
from talker_core.models import audio_frontend
from talker_core.tokenizer import load_tokenizer, render_prompt
from talker_core.types import MotionCodes
from talker_core.weights import loaders


@pytest.fixture(scope="module")
def models(debug_models):
    found = loaders.find_models(debug_models)
    return {
        "talker": loaders.load_talker(found["talker"]),
        "vae": loaders.load_whisperx_vae(found["whisperx_vae"]),
        "liax": loaders.load_liax(found["liax"]),
        "speaker": loaders.load_speaker_encoder(found["speaker"]),
    }


def tone(seconds: float, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * math.pi * 200 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 2 * t)))[None]


@pytest.fixture(scope="module")
def refs(models):
    voice = P.encode_voice(models["vae"], models["speaker"], tone(1.5), 16000)
    face = P.encode_face(models["liax"], torch.rand(64, 64, 3))
    return voice, face


# ---------------------------------------------------------------------------------- out of memory


class _OomAbove(torch.nn.Module):
    """Wraps a LIA-X generator; rendering more than ``limit`` frames at once runs out of memory."""

    def __init__(self, inner, limit: int, error=torch.cuda.OutOfMemoryError):
        super().__init__()
        self.inner, self.limit, self.error, self.calls = inner, limit, error, []

    def render(self, z, feats, alpha, check=None):
        self.calls.append(alpha.shape[0])
        if alpha.shape[0] > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.render(z, feats, alpha, check=check)


def test_render_halves_the_chunk_on_out_of_memory(models, refs):
    _, face = refs
    motion = MotionCodes(torch.randn(5, 40))
    expected = P.render_motion(models["liax"], face, motion, chunk=2)  # the chunking the fallback ends at
    flaky = _OomAbove(models["liax"], limit=2)
    frames = P.render_motion(flaky, face, motion, chunk=8)
    # the first frame alone (first progress with the first frame), then 8 (clipped to 4) → 2, 2-frame chunks
    assert flaky.calls == [1, 4, 2, 2]
    torch.testing.assert_close(frames, expected, atol=1e-6, rtol=0)


def test_render_out_of_memory_at_one_frame_is_a_clear_error(models, refs):
    _, face = refs
    motion = MotionCodes(torch.randn(3, 40))
    before = motion.codes.clone()
    with pytest.raises(P.RenderOutOfMemory, match="retry the render"):
        P.render_motion(_OomAbove(models["liax"], limit=0, error=RuntimeError), face, motion, chunk=4)
    assert torch.equal(motion.codes, before)  # the generated motion is kept for a retry


def test_other_render_errors_are_not_mistaken_for_memory(models, refs):
    _, face = refs

    class Broken(torch.nn.Module):
        def render(self, *a, **kw):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        P.render_motion(Broken(), face, MotionCodes(torch.randn(2, 40)), chunk=2)


# ---------------------------------------------------------------------------------- interruption


@pytest.mark.slow
def test_interruption_at_random_points_leaves_no_trace(models, refs):
    voice, face = refs
    rng = random.Random(1234)
    for seed in range(8):
        request = P.TalkRequest(text="Interrupt me now.", seed=seed, max_seconds=0.48)
        polls = {"n": 0}
        stop_at = rng.randint(1, 12)

        def cancel(polls=polls, stop_at=stop_at):
            polls["n"] += 1
            return polls["n"] >= stop_at

        with contextlib.suppress(P.Cancelled):
            P.generate(models["talker"], request, voice=voice, face=face, hooks=P.Hooks(should_cancel=cancel))
        after = P.generate(models["talker"], request, voice=voice, face=face)
        fresh = P.generate(models["talker"], request, voice=voice, face=face)
        assert torch.equal(after.speech.latents, fresh.speech.latents), f"seed {seed}, cancelled at poll {stop_at}"
        assert torch.equal(after.motion.codes, fresh.motion.codes)


@pytest.mark.slow
def test_render_interruption_then_full_render_matches(models, refs):
    _, face = refs
    motion = MotionCodes(torch.randn(4, 40))
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] == 2

    with pytest.raises(P.Cancelled):
        P.render_motion(models["liax"], face, motion, chunk=2, hooks=P.Hooks(should_cancel=cancel))
    again = P.render_motion(models["liax"], face, motion, chunk=2)
    once = P.render_motion(models["liax"], face, motion, chunk=2, hooks=P.Hooks(should_cancel=lambda: False))
    torch.testing.assert_close(again, once, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------- endurance


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


RSS_GROWTH_BOUND_MB = 150


@pytest.mark.comfyui
@pytest.mark.slow
def test_thirty_runs_through_the_nodes_with_flat_memory(debug_models, tmp_path_factory):
    import comfy_host
    from comfy_host import run_node
    from synthetic import voice_waveform

    comfy_host.require()
    base = tmp_path_factory.mktemp("endurance_base")
    comfy_host.use_base(base)
    (base / "models" / "talker_t2av").symlink_to(debug_models, target_is_directory=True)
    decoders = comfy_host.module("nodes.decoders")
    encoders = comfy_host.module("nodes.encoders")
    sampler = comfy_host.module("nodes.sampler")
    node_loaders = comfy_host.module("nodes.loaders")

    model = run_node(node_loaders.TalkerLoadModel)[0]
    codec = run_node(node_loaders.TalkerLoadCodec)[0]
    face_model = run_node(node_loaders.TalkerLoadFaceModel)[0]
    speaker = run_node(node_loaders.TalkerLoadSpeakerEncoder)[0]
    audio = {"waveform": voice_waveform(1.5, 16000)[None], "sample_rate": 16000}
    voice = run_node(encoders.TalkerEncodeVoice, codec=codec, speaker_encoder=speaker, audio=audio)[0]
    face = run_node(encoders.TalkerEncodeFace, face_model=face_model, image=torch.rand(1, 64, 64, 3))[0]
    drive = run_node(encoders.TalkerEncodeSpeech, codec=codec, audio=audio)[0]

    modes = [
        dict(text="Run number one."),
        dict(text="Speech alone.", speech_only=True),
        dict(text="", forced_speech=drive),
        dict(text="Dub it."),  # V2A: forced_motion filled in below from the first T2AV run
    ]
    results, rss = {}, []
    compared = 0
    first_motion = None
    for i in range(30):
        kind = i % 4
        kw = dict(modes[kind])
        if kind == 3:
            kw["forced_motion"] = first_motion
        out = run_node(sampler.TalkerSampler, model=model, voice=voice, face=face, seed=i % 8, max_seconds=0.16, **kw)
        speech, motion = out[0], out[1]
        wav = run_node(decoders.TalkerDecodeSpeech, codec=codec, speech=speech)[0]
        assert wav["sample_rate"] == 24000 and torch.isfinite(wav["waveform"]).all()
        if kind == 0:  # rendering is the slow part on a CPU: once per cycle of modes
            frames = run_node(decoders.TalkerRenderVideo, face_model=face_model, face=face, motion=motion, chunk=4)[0]
            assert frames.shape[1:] == (512, 512, 3)
        if kind == 0 and first_motion is None:
            first_motion = motion
        key = (kind, i % 8)
        if key in results:
            assert torch.equal(results[key], speech.latents), f"run {i}: same seed, different speech"
            compared += 1
        results[key] = speech.latents.clone()
        rss.append(_rss_mb())
    growth = max(rss[8:]) - rss[7]
    assert growth < RSS_GROWTH_BOUND_MB, f"RSS grew {growth:.0f} MB over runs 9-30 (bound {RSS_GROWTH_BOUND_MB} MB)"
    assert compared >= 2, "the same-seed comparison must actually run"


# ---------------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def tokenizer(debug_models):
    return load_tokenizer(debug_models / "talker-t2av")


@FUZZ
@given(text=st.text(max_size=400))
def test_fuzz_text_front_end(tokenizer, text):
    parts = P.split_text(text, 60)
    assert all(len(p) <= 60 for p in parts)
    assert "".join(parts).replace(" ", "") == "".join(text.split()).replace(" ", "")
    for part in parts or [text]:
        try:
            ids = render_prompt(tokenizer, part, max_length=1000)
        except ValueError as exc:  # empty text or control tokens: a clear message, nothing else
            assert str(exc)
            continue
        assert ids.dtype == torch.long and ids.shape[0] == 1
        assert int(ids.min()) >= 0 and int(ids.max()) < len(tokenizer)


@FUZZ
@given(
    n=st.integers(min_value=0, max_value=6000),
    channels=st.integers(min_value=1, max_value=8),
    rate=st.sampled_from([8000, 11025, 16000, 22050, 24000, 44100, 48000, 96000]),
    kind=st.sampled_from(["noise", "silence", "loud", "nan", "inf", "impulse"]),
)
def test_fuzz_audio_front_end(n, channels, rate, kind):
    g = torch.Generator().manual_seed(n * 31 + channels)
    wav = {
        "noise": lambda: torch.randn(channels, n, generator=g) * 0.1,
        "silence": lambda: torch.zeros(channels, n),
        "loud": lambda: torch.randn(channels, n, generator=g) * 100,
        "nan": lambda: torch.full((channels, n), float("nan")),
        "inf": lambda: torch.full((channels, n), float("inf")),
        "impulse": lambda: torch.nn.functional.pad(torch.ones(channels, min(n, 1)), (0, max(n - 1, 0))),
    }[kind]()
    try:
        mono = audio_frontend.to_mono(wav)
        y16 = audio_frontend.resample(mono, rate, 16000)
        y24 = audio_frontend.resample(mono, rate, 24000)
        mel = audio_frontend.whisper_log_mel(y16)
    except ValueError as exc:
        assert str(exc) and (n == 0 or kind in ("nan", "inf")), f"unexpected refusal: {exc}"
        return
    assert kind not in ("nan", "inf"), "non-finite audio must be refused"
    assert mono.shape == (1, n)
    assert y16.shape[-1] == math.ceil(n * 16000 / rate) and y24.shape[-1] == math.ceil(n * 24000 / rate)
    assert mel.shape == (128, 3000) and torch.isfinite(mel).all()
