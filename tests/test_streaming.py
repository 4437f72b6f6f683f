"""Long clips in flat memory: chunked speech decoding, cancellable rendering, the streaming iterator."""

from __future__ import annotations

import pytest
import torch

from talker_core import pipeline as P
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

