"""The fast paths compute what the plain paths compute (tiny models, float32, CPU).

Each fast path is compared with the plain implementation it replaces: the
generation engine (static cache + fixed-shape patch program + prepared heads +
prepacked linears + parallel heads) against the plain engine in every mode; its
pieces one by one (static backbone == transformers' cache, prepared velocity ==
DiT head on the CFG pair, fast patch encoder == module); the LIA-X fast renderer
(activation modulation, in-place activations, channels-last, batched rows)
against the reference-style renderer; the folded WhisperX-VAE against the
weight-normed one. CUDA-only parts (graph capture) are checked where a GPU is
present.
"""

from __future__ import annotations

import pytest
import torch

import talker_core.fast.program as fast_mod
from talker_core.fast import (
    FastPatchStep,
    FastPath,
    LinearKernels,
    PatchVelocity,
    StaticKVCache,
    block_forward,
    encode_patches,
    fast_path_nbytes,
    patch_tokens,
    release_fast_path,
    run_backbone_static,
    sample_prepared,
)
from talker_core.generation.engine import GenerationMode, SamplingSettings, TalkerGenerator
from talker_core.generation.flow_sampler import FlowSampler, FlowSettings
from talker_core.models.blocks import AdjacentPairRotary, TransformerBlock
from talker_core.models.liax import LiaXConfig, LiaXGenerator
from talker_core.models.liax_ops import modulated_conv2d, upfirdn2d
from talker_core.models.talker import TalkerConfig, TalkerModel
from talker_core.models.whisperx_vae import WhisperXVAE, WhisperXVAEConfig

TOL = dict(atol=2e-5, rtol=2e-5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TalkerModel(TalkerConfig.tiny()).eval()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        prompt=torch.randint(0, 320, (1, 17), generator=g),
        speaker=torch.randn(256, generator=g),
        ref_speech=torch.randn(30, 32, generator=g),
        ref_motion=torch.randn(30, 40, generator=g),
        forced=torch.randn(21, 32, generator=g),
        forced_motion=torch.randn(19, 40, generator=g),
    )


CASES = {
    "t2av": dict(),
    "t2av_prefix": dict(prefix_frames=8),
    "a2v": dict(forced_speech="forced"),
    "v2a_prefix": dict(forced_motion="forced_motion", prefix_frames=4),
    "tts_prefix": dict(mode="speech-only", prefix_frames=6),
    "teacher": dict(teacher=True),
}

FAST_VARIANTS = {
    "unpacked": FastPath(packed_linears=False, parallel_heads=False),
    "packed": FastPath(packed_linears=True, parallel_heads=False),
    "parallel_heads": FastPath(parallel_heads=True),
}


def _run(model, fast, case, seed=5, max_patches=9):
    x = _inputs()
    spec = CASES[case]
    mode = GenerationMode(spec.get("mode", "joint"))
    kwargs = dict(
        ref_speech=x["ref_speech"],
        ref_motion=x["ref_motion"] if mode is GenerationMode.JOINT else None,
        prefix_frames=spec.get("prefix_frames", 0),
        mode=mode,
        settings=SamplingSettings(seed=seed, stop_threshold=0.5, stop_min_patches=3),
        max_patches=max_patches,
    )
    if "forced_speech" in spec:
        kwargs["forced_speech"] = x[spec["forced_speech"]]
        kwargs["max_patches"] = None
    if "forced_motion" in spec:
        kwargs["forced_motion"] = x[spec["forced_motion"]]
        kwargs["max_patches"] = None
    if spec.get("teacher"):
        kwargs["teacher_speech"] = x["ref_speech"][:14]  # covers 3 patches, then free running
        kwargs["teacher_motion"] = x["ref_motion"][:22]
    step = None if fast is False else FastPatchStep(fast)
    return TalkerGenerator(model, step=step).generate(x["prompt"], x["speaker"], **kwargs)


@pytest.mark.parametrize("variant", sorted(FAST_VARIANTS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_engine_equals_plain_engine(model, case, variant):
    plain = _run(model, False, case)
    fast = _run(model, FAST_VARIANTS[variant], case)
    assert fast.steps == plain.steps and fast.stopped == plain.stopped
    torch.testing.assert_close(fast.prefill_hidden, plain.prefill_hidden, **TOL)
    torch.testing.assert_close(torch.tensor(fast.p_stop), torch.tensor(plain.p_stop), **TOL)
    torch.testing.assert_close(fast.gen_speech, plain.gen_speech, **TOL)
    if plain.gen_motion is None:
        assert fast.gen_motion is None
    else:
        torch.testing.assert_close(fast.gen_motion, plain.gen_motion, **TOL)
    torch.testing.assert_close(fast.prefix_speech, plain.prefix_speech)


def test_release_fast_path(model, monkeypatch):
    """What the fast path keeps for a model is counted and freed per model."""
    # pack the debug-sized layers too (they stay on F.linear by default), so something is held
    *head, _min_numel = LinearKernels.__init__.__defaults__
    monkeypatch.setattr(LinearKernels.__init__, "__defaults__", (*head, 0))
    other = TalkerModel(TalkerConfig.tiny()).eval()
    release_fast_path(model)
    assert fast_path_nbytes(model) == 0
    want = _run(model, False, "t2av")
    got = _run(model, FastPath(packed_linears=True, parallel_heads=False), "t2av")
    torch.testing.assert_close(got.gen_motion, want.gen_motion, **TOL)
    res = fast_mod._RESOURCES[model]
    held = fast_path_nbytes(model)
    if res.linear.pack:  # oneDNN present: the heads' and encoders' weights were packed
        weights = sum(
            m.weight.numel() * m.weight.element_size()
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and "llm" not in name and "head_stop" not in name
        )
        assert held == res.linear.packed_bytes > 0
        assert held <= weights
    assert fast_path_nbytes(other) == 0  # per model
    release_fast_path(model)
    assert model not in fast_mod._RESOURCES
    assert fast_path_nbytes(model) == 0
    release_fast_path(model)  # a no-op the second time


def test_teacher_forcing_runs_on_the_plain_step(model, monkeypatch):
    def refuse(self, engine, state):
        raise AssertionError("the fast step ran a teacher-forced patch")

    want = _run(model, False, "teacher")
    monkeypatch.setattr(FastPatchStep, "step", refuse)
    got = _run(model, FastPath(), "teacher")
    torch.testing.assert_close(got.gen_motion, want.gen_motion, atol=0, rtol=0)
    with pytest.raises(AssertionError, match="fast step ran"):
        _run(model, FastPath(), "t2av")  # the same step object does run untaught patches


def test_fast_engine_is_reusable_and_deterministic(model):
    a = _run(model, FastPath(), "t2av")
    b = _run(model, FastPath(), "t2av")
    torch.testing.assert_close(a.gen_speech, b.gen_speech, atol=0, rtol=0)
    torch.testing.assert_close(a.gen_motion, b.gen_motion, atol=0, rtol=0)


def test_fast_path_with_inference_mode_weights(model):
    """Weights made under inference mode (no version counters) work with the caches keyed on them."""
    with torch.inference_mode():
        inf = TalkerModel(TalkerConfig.tiny()).eval()
        inf.load_state_dict(model.state_dict())
        got = _run(inf, FastPath(packed_linears=True, parallel_heads=True), "t2av")
        liax = LiaXGenerator(LiaXConfig.tiny()).eval()
        liax.direction(torch.zeros(1, 40))
        liax.direction(torch.zeros(1, 40))  # the cached basis
    want = _run(model, False, "t2av")
    torch.testing.assert_close(got.gen_motion, want.gen_motion, **TOL)


def test_static_cache_backbone_equals_dynamic_cache(model):
    g = torch.Generator().manual_seed(3)
    prompt = torch.randn(1, 12, 64, generator=g)
    tokens = torch.randn(5, 1, 1, 64, generator=g)
    with torch.no_grad():
        dyn = model.new_cache()
        static = StaticKVCache(model, 12 + 5)
        fixed = StaticKVCache(model, 12 + 5)
        h_dyn = model.run_backbone(prompt, dyn)
        h_static = run_backbone_static(model, prompt, static)
        h_fixed = run_backbone_static(model, prompt, fixed, linear=LinearKernels(pack=True, min_numel=0))
        torch.testing.assert_close(h_static, h_dyn, **TOL)
        torch.testing.assert_close(h_fixed, h_dyn, **TOL)
        position = torch.tensor([12])
        for tok in tokens:
            h_dyn = model.run_backbone(tok, dyn)
            h_static = run_backbone_static(model, tok, static)
            h_fixed = run_backbone_static(model, tok, fixed, position=position)
            position += 1
            torch.testing.assert_close(h_static, h_dyn, **TOL)
            torch.testing.assert_close(h_fixed, h_dyn, **TOL)
    assert static.length == 17 and fixed.length == 12


def test_static_cache_rejects_overflow(model):
    cache = StaticKVCache(model, 4)
    with torch.no_grad(), pytest.raises(ValueError, match="capacity"):
        run_backbone_static(model, torch.zeros(1, 5, 64), cache)


@pytest.mark.parametrize("steps,cfg_zero_star", [(10, True), (4, False), (1, True)])
def test_patch_velocity_sampler_equals_plain_sampler(model, steps, cfg_zero_star):
    head = model.motion_cfm.estimator
    settings = FlowSettings(steps=steps, cfg=2.0, cfg_zero_star=cfg_zero_star)
    sampler = FlowSampler()
    g = torch.Generator().manual_seed(4)
    noise, mu = torch.randn(1, 40, 4, generator=g), torch.randn(1, 64, generator=g)
    cond, gc = torch.randn(1, 40, 4, generator=g), torch.randn(1, 40, generator=g)
    plain = sampler.sample(head, noise, mu, cond, gc, settings)
    for linear in (None, LinearKernels(pack=True, min_numel=0)):
        velocity = PatchVelocity(head, sampler.schedule(settings, "cpu").times, *(() if linear is None else (linear,)))
        fast = sample_prepared(sampler, velocity, noise, mu, cond, gc, settings)
        torch.testing.assert_close(fast, plain, **TOL)


def test_patch_velocity_equals_head_on_cfg_pair(model):
    head = model.speech_cfm.estimator
    times = torch.tensor([0.9, 0.5, 0.1])
    g = torch.Generator().manual_seed(5)
    x, mu = torch.randn(2, 32, 4, generator=g), torch.randn(2, 64, generator=g)
    cond, gc = torch.randn(2, 32, 4, generator=g), torch.randn(2, 256, generator=g)
    velocity = PatchVelocity(head, times)
    velocity.begin(mu, cond, gc)
    with torch.no_grad():
        for k in range(3):
            want = head(
                x.repeat(2, 1, 1),
                torch.cat([mu, torch.zeros_like(mu)]),
                times[k].expand(4),
                cond.repeat(2, 1, 1),
                gc.repeat(2, 1),
                torch.zeros(4),
            )
            torch.testing.assert_close(velocity(x, k), want, **TOL)


def test_block_forward_rows_and_packed_linears():
    torch.manual_seed(6)
    block, rope = TransformerBlock(64, 4).eval(), AdjacentPairRotary(16)
    x = torch.randn(3, 9, 64)
    with torch.no_grad():
        full = block(x, rope)
        packed = LinearKernels(pack=True, min_numel=0)
        torch.testing.assert_close(block_forward(block, x, rope, packed), full, **TOL)
        torch.testing.assert_close(block_forward(block, x, rope, rows=slice(5, 9)), full[:, 5:], **TOL)
        torch.testing.assert_close(block_forward(block, x, rope, packed, rows=slice(0, 1)), full[:, :1], **TOL)
        # the CUDA variant (fused RMSNorm, complex rotary), checked on the CPU
        torch.testing.assert_close(block_forward(block, x, rope, fused=True), full, **TOL)
        torch.testing.assert_close(block_forward(block, x, rope, rows=slice(5, 9), fused=True), full[:, 5:], **TOL)


def test_packed_linears_follow_weight_changes():
    lin = torch.nn.Linear(64, 32)
    kernels = LinearKernels(pack=True, min_numel=0)
    x = torch.randn(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(kernels(lin, x), lin(x), **TOL)
        lin.weight.mul_(2)
        torch.testing.assert_close(kernels(lin, x), lin(x), **TOL)
    kernels.clear()
    assert kernels.packed_bytes == 0


def test_fast_patch_encoder_equals_module(model):
    g = torch.Generator().manual_seed(7)
    frames = torch.randn(2, 3, 4, 64, generator=g)
    enc = model.speech_patch_encoder
    with torch.no_grad():
        torch.testing.assert_close(
            encode_patches(enc, frames, LinearKernels(pack=True, min_numel=0)), enc(frames), **TOL
        )
        frames40 = frames[:1, 0, :, :40]
        torch.testing.assert_close(
            patch_tokens(model, "motion", frames40, LinearKernels()), model.motion_tokens(frames40), **TOL
        )
        frames32 = torch.randn(2, 7, 32, generator=g)  # 7 frames: a partial last patch, zero-extended
        torch.testing.assert_close(
            patch_tokens(model, "speech", frames32, LinearKernels(pack=True, min_numel=0)),
            model.speech_tokens(frames32),
            **TOL,
        )


# --------------------------------------------------------------------------- LIA-X


@pytest.fixture(scope="module")
def liax():
    """A tiny LIA-X in float64: random equalised-lr weights make a chaotic renderer (its flow
    warps amplify float32 rounding some 10^4-fold, the plain path's included), so the
    fast renderer is checked for the same function in float64, and in float32 loosely."""
    torch.manual_seed(8)
    gen = LiaXGenerator(LiaXConfig.tiny()).eval().double()
    g = torch.Generator().manual_seed(9)
    image = torch.rand(1, 3, 512, 512, generator=g, dtype=torch.float64) * 2 - 1
    with torch.inference_mode():
        z, feats = gen.encode_identity(image)
    return gen, z, feats, torch.randn(2, 40, generator=g, dtype=torch.float64) * 0.3


def test_modulated_conv_unfused_equals_fused():
    g = torch.Generator().manual_seed(10)
    for stride in (1, 2):
        for demodulate in (True, False):
            x = torch.randn(3, 8, 6, 6, generator=g, dtype=torch.float64)
            w = torch.randn(5, 8, 3, 3, generator=g, dtype=torch.float64)
            s = torch.randn(3, 8, generator=g, dtype=torch.float64)
            torch.testing.assert_close(
                modulated_conv2d(x, w, s, demodulate, stride, fused=False),
                modulated_conv2d(x, w, s, demodulate, stride),
            )
            xc = x.contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(
                modulated_conv2d(xc, w, s, demodulate, stride, fused=False),
                modulated_conv2d(x, w, s, demodulate, stride),
            )


def test_upfirdn2d_channels_last_is_exact():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 7, 6, generator=g)
    k = torch.randn(4, 4, generator=g)
    want = upfirdn2d(x, k, 2, 1, (2, 1, 2, 1))
    got = upfirdn2d(x.contiguous(memory_format=torch.channels_last), k, 2, 1, (2, 1, 2, 1))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_fast_render_equals_plain_render(liax):
    gen, z, feats, alpha = liax
    with torch.inference_mode():
        with gen.render_settings(fast=False):
            plain = gen.render(z, feats, alpha)
            one = gen.render(z, feats, alpha[1:2])
        with gen.render_settings(fast=True):
            fast = gen.render(z, feats, alpha)
            fast_one = gen.render(z, feats, alpha[1:2])
            cl = gen.dec(z + gen.direction(alpha), feats, channels_last=True)
    tol = dict(atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(fast, plain, **tol)
    torch.testing.assert_close(fast_one, one, **tol)
    torch.testing.assert_close(fast[1:2], fast_one, **tol)  # batched rows == single rows
    torch.testing.assert_close(cl, plain, **tol)


@pytest.mark.slow
def test_fast_render_float32_stays_close(liax):
    gen, z, feats, alpha = liax
    gen32 = LiaXGenerator(gen.cfg).eval()
    gen32.load_state_dict({k: v.float() for k, v in gen.state_dict().items()})
    with torch.inference_mode():
        want = gen.render(z, feats, alpha[:1]).float()
        got = gen32.render(z.float(), [f.float() for f in feats], alpha[:1].float())
    assert got.dtype == torch.float32
    # float32 rounding, amplified by the random renderer (the plain path errs as much)
    torch.testing.assert_close(got, want, atol=0.05 * float(want.abs().max()), rtol=0)


@pytest.mark.slow
def test_the_benchmarks_streaming_renderer_equals_render(liax):
    from bench.streaming_renderer import StreamingRenderer

    gen, z, feats, alpha = liax
    rows = alpha  # 2 rows, pushed 1 + 1, rendered in chunks of 1
    with torch.inference_mode():
        want = gen.render(z, feats, rows)
        stream = StreamingRenderer(gen, z, feats, chunk=1)
        stream.push(rows[:1])
        stream.push(rows[1:])
        got = stream.close()
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)


def test_render_settings_restores(liax):
    gen = liax[0]
    assert gen.fast_render
    with gen.render_settings(fast=False):
        assert not gen.fast_render
    assert gen.fast_render


# --------------------------------------------------------------------------- WhisperX-VAE


def test_folded_vae_decodes_like_weight_norm():
    torch.manual_seed(12)
    vae = WhisperXVAE(WhisperXVAEConfig.tiny()).eval()
    lat = torch.randn(1, 9, 32)
    want = vae.decode(lat)
    vae.fold_weight_norm()
    assert vae.weight_norm_folded
    torch.testing.assert_close(vae.decode(lat), want, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- CUDA


class _ReplayGraph:
    """CPU stand-in for a captured graph: replay() runs the captured function again."""

    def __init__(self, body):
        self.body = body
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.body()


def test_graph_mode_program_logic_on_cpu(model, monkeypatch):
    """The graph-mode bookkeeping (shared cache buckets, programs reused across engines and
    runs, warm-up and restore around the capture) with a CPU stand-in for the CUDA graph."""
    graphs = []

    def fake_capture(body, mutable):
        saved = [t.clone() for t in mutable]
        body()  # a warm-up run; the real capture restores the buffers the same way
        for t, s in zip(mutable, saved, strict=True):
            t.copy_(s)
        graphs.append(_ReplayGraph(body))
        return graphs[-1]

    monkeypatch.setattr(fast_mod, "_graphs_supported", lambda m: True)
    monkeypatch.setattr(fast_mod, "_capture_graph", fake_capture)
    fast = FastPath(cuda_graphs=True, parallel_heads=False)
    for case in ("t2av", "t2av_prefix", "a2v", "t2av", "teacher"):
        want = _run(model, False, case)
        got = _run(model, fast, case)
        torch.testing.assert_close(got.gen_speech, want.gen_speech, **TOL)
        if want.gen_motion is not None:
            torch.testing.assert_close(got.gen_motion, want.gen_motion, **TOL)
        assert got.steps == want.steps
    # t2av, t2av_prefix and t2av again share one captured program (same variant, settings and
    # cache bucket); a2v has a program of its own; the teacher-forced run takes the plain step
    assert len(graphs) == 2
    assert sum(g.replays for g in graphs) > 0
    res = fast_mod._RESOURCES[model]
    assert all(c.capacity % res.CACHE_BUCKET == 0 for c in res.caches.values())
    # the shared cache and the captured programs' buffers are what the model's fast path holds
    kept = sum(c.nbytes for c in res.caches.values()) + sum(p.nbytes for p in res.programs.values())
    assert fast_path_nbytes(model) >= kept > 0
    release_fast_path(model)
    assert fast_path_nbytes(model) == 0


def test_failed_capture_falls_back_to_eager(model, monkeypatch):
    def broken(body, mutable):
        raise RuntimeError("no graphs here")

    monkeypatch.setattr(fast_mod, "_graphs_supported", lambda m: True)
    monkeypatch.setattr(fast_mod, "_capture_graph", broken)
    fast = FastPath(cuda_graphs=True, parallel_heads=True)
    want = _run(model, False, "t2av")
    got = _run(model, fast, "t2av")
    torch.testing.assert_close(got.gen_motion, want.gen_motion, **TOL)
    assert fast_mod._RESOURCES[model].graphs_failed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_engine_equals_eager_program(model):
    cuda = TalkerModel(TalkerConfig.tiny()).eval()
    cuda.load_state_dict(model.state_dict())
    cuda = cuda.cuda()
    eager = _run(cuda, FastPath(cuda_graphs=False), "t2av")
    graphed = _run(cuda, FastPath(cuda_graphs=True), "t2av")
    again = _run(cuda, FastPath(cuda_graphs=True), "t2av_prefix")
    ref = _run(cuda, FastPath(cuda_graphs=False), "t2av_prefix")
    torch.testing.assert_close(graphed.gen_speech, eager.gen_speech, **TOL)
    torch.testing.assert_close(graphed.gen_motion, eager.gen_motion, **TOL)
    torch.testing.assert_close(again.gen_motion, ref.gen_motion, **TOL)
