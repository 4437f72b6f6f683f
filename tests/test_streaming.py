"""Long clips in flat memory: chunked speech decoding, cancellable rendering, the streaming iterator."""

from __future__ import annotations

import threading

import pytest
import torch

from talker_core import pipeline as P
from talker_core.media import load_audio
from talker_core.models.whisperx_vae import WhisperXVAE, WhisperXVAEConfig
from talker_core.pipeline.render import SpeechDecoder
from talker_core.types import MotionCodes, SpeechLatents


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return WhisperXVAE(WhisperXVAEConfig.tiny()).eval()


def test_decoder_context_covers_the_measured_receptive_field(vae):
    """Perturbing one latent frame changes the output only within the computed context."""
    ctx = vae.decoder_context_frames()
    n, k, hop = 48, 24, vae.hop
    z = torch.randn(1, n, 32)
    bumped = z.clone()
    bumped[0, k] += 3.0
    with torch.no_grad():
        diff = (vae.decode(bumped) - vae.decode(z)).abs()[0, 0]
    changed = torch.nonzero(diff > 0).flatten()
    assert changed.numel() > 0
    first, last = int(changed.min()) / hop, int(changed.max()) / hop
    assert k - ctx <= first and last < k + 1 + ctx, (first, last, ctx)
    # and the bound is not loose by more than the documented one-frame margin plus rounding
    assert (k - first) > ctx - 3 or (last - k) > ctx - 3


@pytest.mark.parametrize("chunk,pieces", [(3, [7, 1, 12, 2, 9]), (16, [81]), (25, [3, 50, 28])])
def test_chunked_decode_equals_one_piece_decode(vae, chunk, pieces):
    torch.manual_seed(1)
    z = torch.randn(sum(pieces), 32)
    with torch.no_grad():
        whole = vae.decode(z[None])[0].float().clamp(-1, 1)
    dec = SpeechDecoder(vae, chunk=chunk)
    out, pos = [], 0
    for p in pieces:
        out.append(dec.push(z[pos : pos + p]))
        pos += p
    out.append(dec.flush())
    got = torch.cat(out, 1)
    assert got.shape == whole.shape
    torch.testing.assert_close(got, whole, atol=1e-5, rtol=1e-4)
    # the one-call helper takes the same path
    torch.testing.assert_close(P.decode_speech(vae, SpeechLatents(z), chunk=chunk), whole, atol=1e-5, rtol=1e-4)


def test_too_little_context_would_differ(vae):
    """The equality above is not vacuous: cutting the latents without context changes the seam."""
    torch.manual_seed(2)
    z = torch.randn(60, 32)
    with torch.no_grad():
        whole = vae.decode(z[None])[0]
        naive = torch.cat([vae.decode(z[None, :30])[0], vae.decode(z[None, 30:])[0]], 1)
    assert (naive - whole).abs().max() > 1e-3


def test_speech_decoder_emits_audio_as_latents_arrive(vae):
    dec = SpeechDecoder(vae, chunk=4)
    ctx = dec.context
    assert dec.push(torch.randn(ctx + 3, 32)).shape[1] == 0  # not enough right context yet
    assert dec.push(torch.randn(1, 32)).shape[1] == 4 * vae.hop
    assert dec.flush().shape[1] == ctx * vae.hop
    assert dec._buf.shape[0] <= ctx + 4 + 1  # only the context is kept


# ---------------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def liax_face():
    from talker_core.models.liax import LiaXConfig, LiaXGenerator

    torch.manual_seed(3)
    gen = LiaXGenerator(LiaXConfig.tiny()).eval()
    return gen, P.encode_face(gen, torch.rand(64, 64, 3))


def _count_blocks(gen):
    """Forward pre-hooks on every decoder block: how many ran (shared counter)."""
    from talker_core.models.liax import FlowResBlock, PlainResBlock

    seen = {"n": 0}
    handles = [
        m.register_forward_pre_hook(lambda *_: seen.__setitem__("n", seen["n"] + 1))
        for m in gen.dec.modules()
        if isinstance(m, (FlowResBlock, PlainResBlock))
    ]
    return seen, handles


def test_cancel_during_render_stops_within_a_frame(liax_face):
    """A cancel raised while a 4-frame batch renders stops it at the next decoder block, long
    before the batch (or even one frame's share of it) is done."""
    gen, face = liax_face
    seen, handles = _count_blocks(gen)
    try:
        P.render_motion(gen, face, MotionCodes(torch.zeros(1, 40)), chunk=1)
        per_frame = seen["n"]  # blocks in one render call
        assert per_frame >= 40
        seen["n"] = 0
        state = {"cancel_at": None}

        def should_cancel():
            if state["cancel_at"] is None and seen["n"] >= per_frame + 10:  # 10 blocks into the 4-frame batch
                state["cancel_at"] = seen["n"]
            return state["cancel_at"] is not None

        reports = []
        with pytest.raises(P.Cancelled):
            P.render_motion(
                gen,
                face,
                MotionCodes(torch.zeros(5, 40)),
                chunk=4,
                hooks=P.Hooks(should_cancel=should_cancel, progress=lambda d, t, s, p: reports.append((d, p))),
            )
        assert state["cancel_at"] is not None
        assert seen["n"] == state["cancel_at"]  # not one more block ran after the cancel was asked for
        assert [d for d, _ in reports] == [1]  # the first frame was reported (with a preview), the batch never
        assert reports[0][1] is not None and reports[0][1].shape == (512, 512, 3)
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------------- the stream


class _CheapLiax(torch.nn.Module):
    """A LIA-X stand-in that renders in microseconds: each frame a colour computed from its motion
    row (rows independent, like LIA-X), polling ``check`` once per row. It stands in for the
    renderer's arithmetic only; everything around it is the production path."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.w = torch.nn.Parameter(torch.randn(40, 3))

    def render(self, z, feats, alpha, check=None):
        out = []
        for row in alpha:
            if check is not None:
                check()
            out.append(torch.tanh(row @ self.w)[:, None, None].expand(3, 512, 512))
        return torch.stack(out)


@pytest.fixture(scope="module")
def talk(debug_models):
    from talker_core import loaders
    from talker_core.types import Identity

    found = loaders.find_models(debug_models)
    bundle = loaders.load_talker(found["talker"])
    vae = loaders.load_whisperx_vae(found["whisperx_vae"])
    speaker = loaders.load_speaker_encoder(found["speaker"])
    t = torch.arange(48000) / 24000
    voice = P.encode_voice(vae, speaker, (0.3 * torch.sin(2 * torch.pi * 220 * t))[None], 24000)
    face = Identity(z=torch.zeros(1, 8), feats=[torch.zeros(1, 1, 1, 1)], first_motion=torch.zeros(40))
    motion = MotionCodes(torch.randn(40, 40) * 0.3)
    return {"bundle": bundle, "vae": vae, "voice": voice, "face": face, "motion": motion, "liax": _CheapLiax()}


def _request(**kw):
    base = dict(text="The first sentence is here. And a second one follows it.", seed=3, max_seconds=0.96)
    base.update(kw)
    return P.TalkRequest(**base)


@pytest.mark.parametrize("variant,overlap", [("long_form", True), ("prefix", False)])
def test_stream_equals_generate_decode_render(talk, variant, overlap):
    kw = (
        {"max_segment_chars": 30, "segment_prefix_seconds": 0.16, "max_segment_seconds": 0.48}
        if variant == "long_form"
        else {"prefix_seconds": 0.32}
    )
    request = _request(**kw)
    ref_motion = talk["motion"] if variant == "prefix" else None
    common = dict(voice=talk["voice"], face=talk["face"], reference_motion=ref_motion)
    expected = P.generate(talk["bundle"], request, **common)
    stream = P.stream_talk(
        talk["bundle"], talk["vae"], talk["liax"], request, render_chunk=3, overlap=overlap, speech_chunk=5, **common
    )
    chunks = list(stream)
    result = stream.result
    assert torch.equal(result.speech.latents, expected.speech.latents)
    assert torch.equal(result.motion.codes, expected.motion.codes)
    if variant == "long_form":
        assert result.segments == 2
    else:
        assert result.prefix_frames == 8
    frames = torch.cat([c.frames for c in chunks])
    audio = torch.cat([c.audio for c in chunks], 1)
    # positions are consecutive
    assert [c.frame_start for c in chunks] == [sum(c.frames.shape[0] for c in chunks[:i]) for i in range(len(chunks))]
    assert [c.audio_start for c in chunks] == [sum(c.audio.shape[1] for c in chunks[:i]) for i in range(len(chunks))]
    want_frames = P.render_motion(talk["liax"], talk["face"], expected.motion, as_uint8=True)
    assert torch.equal(frames, want_frames)
    torch.testing.assert_close(audio, P.decode_speech(talk["vae"], expected.speech), atol=1e-5, rtol=1e-4)
    assert chunks[0].frames.shape[0] == 1  # the first frame comes alone
    if not overlap:  # every latent is there: the sound of the first frames comes with the first frame
        assert chunks[0].audio.shape[1] > 0
    assert audio.shape[1] - sum(c.audio.shape[1] for c in chunks if c.frames.shape[0]) < audio.shape[1]
    assert len(chunks) > 3  # it really streamed
    # the sound is paced by the frames, also when every latent is there at once (sequential): no chunk
    # carries more audio than the decoder's look-ahead beyond its frames, so a long clip's waveform never
    # waits whole in memory for its frames
    from talker_core.pipeline.render import SpeechDecoder

    decoder = SpeechDecoder(talk["vae"], 5)
    lead = decoder.context + decoder.chunk
    assert 1 + lead < frames.shape[0]  # the bound below is tighter than the clip
    for c in chunks:
        if c.frames.shape[0]:
            assert c.audio_start + c.audio.shape[1] <= (c.frame_start + c.frames.shape[0] + lead) * 960
    t = stream.times
    assert t.first_frame is not None and t.first_audio is not None and t.done >= t.first_frame


def test_stream_cancel_stops_and_leaves_no_file(talk, tmp_path):
    before = threading.active_count()
    state = {"frames": 0}

    def progress(done, total, stage, preview):
        if stage == "render":
            state["frames"] = done

    hooks = P.Hooks(progress=progress, should_cancel=lambda: state["frames"] >= 4)
    stream = P.stream_talk(
        talk["bundle"],
        talk["vae"],
        talk["liax"],
        _request(),
        voice=talk["voice"],
        face=talk["face"],
        hooks=hooks,
        render_chunk=2,
        overlap=True,
    )
    out = tmp_path / "clip.mp4"
    with pytest.raises(P.Cancelled):
        P.stream_to_mp4(stream, out, preset="ultrafast")
    assert state["frames"] == 5  # frame 1 alone, then 2 + 2: the cancel came before frame 6's row was rendered
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == before  # the generation thread was stopped and joined


def test_stream_to_mp4_writes_a_complete_file(talk, tmp_path):
    import av

    request = _request(max_seconds=0.8)
    for fragmented in (False, True):
        stream = P.stream_talk(
            talk["bundle"], talk["vae"], talk["liax"], request, voice=talk["voice"], face=talk["face"]
        )
        out = P.stream_to_mp4(
            stream,
            tmp_path / f"f{int(fragmented)}.mp4",
            preset="ultrafast",
            metadata={"prompt": "{}"},
            fragmented=fragmented,
        )
        n = out.result.motion.frames
        assert out.frames == n
        with av.open(str(out.path)) as c:
            assert c.metadata.get("prompt") == "{}"
            assert sum(1 for _ in c.decode(video=0)) == n
        wav, sr = load_audio(out.path)
        assert abs(wav.shape[1] / sr - n / 25) <= 1 / 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.mp4", "f1.mp4"]


# ---------------------------------------------------------------------------------- the writer


_WRITER_CHILD = """
import resource, sys, numpy as np
from talker_core.media import Mp4Writer
n = int(sys.argv[1])
w = Mp4Writer(sys.argv[2], 25, sample_rate=24000, preset="ultrafast")
img = np.zeros((256, 256, 3), np.uint8)
for i in range(n):
    img[:] = (i * 7) % 256
    w.write_frames(img)
    w.write_audio(np.zeros((1, 960), np.float32))
w.close()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_writer_memory_does_not_grow_with_length(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def peak_mb(n):
        out = subprocess.run(
            [sys.executable, "-c", _WRITER_CHILD, str(n), str(tmp_path / f"{n}.mp4")],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[-1]) / 1024

    short, long = peak_mb(100), peak_mb(1500)  # 4 s and 60 s
    assert long - short < 20, (short, long)  # a held clip would be 1400 × 196 KB = 275 MB more


def test_writer_temp_name_rename_and_cleanup(tmp_path):
    from talker_core.media import MediaError, Mp4Writer

    target = tmp_path / "a.mp4"
    w = Mp4Writer(target, 25, sample_rate=24000, preset="ultrafast")
    w.write_frames(torch.zeros(3, 16, 16, 3, dtype=torch.uint8))
    w.write_audio(torch.zeros(1, 2880))
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith(".a.mp4.") and names[0].endswith(".tmp.mp4")
    assert w.close() == target and [p.name for p in tmp_path.iterdir()] == ["a.mp4"]
    with pytest.raises(MediaError, match="already closed"):
        w.write_frames(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(KeyboardInterrupt), Mp4Writer(tmp_path / "b.mp4", 25, preset="ultrafast") as w2:
        w2.write_frames(torch.zeros(3, 16, 16, 3, dtype=torch.uint8))
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]
    live = Mp4Writer(tmp_path / "live.mp4", 25, preset="ultrafast", fragmented=True)
    live.write_frames(torch.zeros(30, 16, 16, 3, dtype=torch.uint8))
    assert (tmp_path / "live.mp4").exists()  # under its name while it is written
    live.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]
