"""The fast patch step: one patch as a fixed-shape program over preallocated buffers.

:class:`FastPatchStep` is the step object a :class:`talker_core.generation.engine.TalkerGenerator`
delegates one patch to (``TalkerGenerator(model, step=FastPatchStep())``); the engine keeps
the algorithm (prefill, stop logic, noise order). Per run it holds a :class:`StaticKVCache`
and a :class:`_PatchProgram` whose tensors all live in preallocated buffers and whose indices
(patch, position) are device tensors, so one patch runs without a host synchronisation:

- the heads' per-step work is reduced to what changes between Euler steps
  (:class:`talker_core.fast.heads.PatchVelocity`);
- on the CPU the heads' and patch encoders' linear layers run on weights prepacked for
  oneDNN (:class:`talker_core.fast.kernels.LinearKernels`), and the speech and motion heads
  can run at the same time in two worker threads;
- on CUDA the program is captured once in a CUDA graph and replayed per patch.

The noise of the whole run is drawn up front, in the engine's order (speech, then motion,
per patch), so the draws are the same. Teacher forcing (a diagnostic) runs on the plain
step only. Results equal the plain step's up to float rounding (tests/test_fast_path.py).

Everything the fast path keeps between runs (prepacked weights, shared static caches,
captured programs, worker threads, complex rotary tables) is owned per model and freed by
:func:`release_fast_path`; :func:`fast_path_nbytes` says how much it holds.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from talker_core.fast.backbone import StaticKVCache, run_backbone_static, supports_static_cache
from talker_core.fast.heads import PatchVelocity, patch_tokens, sample_prepared
from talker_core.fast.kernels import (
    Linear,
    LinearKernels,
    forget_rotary_tables,
    plain_linear,
    rotary_tables_nbytes,
    tensor_key,
)
from talker_core.generation.engine import GenerationState, shift_in
from talker_core.generation.flow_sampler import FlowSettings

if TYPE_CHECKING:
    from talker_core.generation.engine import TalkerGenerator
    from talker_core.models.talker import TalkerModel

__all__ = ["FastPath", "FastPatchStep", "release_fast_path", "fast_path_nbytes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastPath:
    """Which parts of the fast path a :class:`FastPatchStep` uses.

    packed_linears: oneDNN-prepacked weights for the heads' and patch encoders' linear
                    layers on the CPU (:class:`talker_core.fast.kernels.LinearKernels`); None = on
                    when oneDNN is available. They cost one extra copy of those weights
                    (about 1.2 GB at release sizes in float32).
    pack_backbone:  also prepack the backbone's linear layers (another copy of the backbone
                    weights; the single-row backbone step gains little from it).
    cuda_graphs:    capture the patch program in a CUDA graph and replay it per patch;
                    None = on when the model is on a CUDA device. A capture that fails
                    falls back to running the same program eagerly (logged once).
    parallel_heads: on the CPU, sample the speech and the motion patch at the same time
                    in two worker threads, each with half of torch's intra-op threads
                    (two independent single-stream jobs use two cores better than
                    one job split over both); None = on when torch uses at least two
                    threads, both streams are sampled and the heads are release-sized
                    (width ≥ 256).
    """

    packed_linears: Optional[bool] = None
    pack_backbone: bool = False
    cuda_graphs: Optional[bool] = None
    parallel_heads: Optional[bool] = None


class FastPatchStep:
    """The fast patch step (see the module docstring); ``options`` = :class:`FastPath` defaults.

    Stateless itself: what one run needs lives in the run's state, what runs share lives
    with the model (:func:`release_fast_path`), so engines built per request reuse it."""

    def __init__(self, options: FastPath | None = None):
        if options is not None and not isinstance(options, FastPath):
            raise ValueError(f"options must be a FastPath, got {type(options).__name__}")
        self.options = options or FastPath()

    def supports(self, engine: TalkerGenerator) -> bool:
        if not supports_static_cache(engine.model):
            log.info("fast path off: the backbone config is not plain full-attention Qwen3")
            return False
        return True

    def start(self, engine: TalkerGenerator, embeds: torch.Tensor, patches: int) -> tuple[Any, torch.Tensor, Any]:
        """Run the backbone over the prefill ``embeds`` into a static cache sized for the run."""
        model = engine.model
        res = _model_resources(model, self.options)
        if model.device.type != "cpu":
            res.linear.clear()  # packed CPU copies of a model that has moved to another device
        graphs = res.graphs_enabled(model)
        positions = embeds.shape[1] + patches
        cache = res.shared_cache(positions) if graphs else StaticKVCache(model, positions)
        cache.reset()
        h = run_backbone_static(model, embeds, cache, res.backbone_linear)
        return cache, h, _FastRun(res, cache, graphs)

    def step(self, engine: TalkerGenerator, state: GenerationState) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        run: _FastRun = state.run_data
        if run.program is None:
            run.program = _load_program(engine, state, run)
        program = run.program
        if state.patches_done >= program.loaded_patches:
            raise ValueError(f"the run's budget of {program.loaded_patches} patches is used up")
        program.run()
        speech = program.out_speech.clone()
        state.speech_patches.append(speech)
        motion = None
        if program.out_motion is not None:
            motion = program.out_motion.clone()
            state.motion_patches.append(motion)
        state.patches_done += 1
        return speech, motion


def _load_program(engine: TalkerGenerator, state: GenerationState, run: _FastRun) -> _PatchProgram:
    """Build (or fetch the captured) patch program of this run and load the run into it."""
    variant = (
        "forced" if state.forced_speech is not None else "sample",
        "none" if state.motion_context is None else ("forced" if state.forced_motion is not None else "sample"),
    )
    if run.graphs:
        program = run.resources.program(engine, variant, state.flow, run.cache)
    else:
        program = _PatchProgram(engine, variant, state.flow, run.cache, run.resources, graphs=False)
    program.load(state)
    state.h = program.h
    state.speech_context = program.speech_context
    if state.motion_context is not None:
        assert program.motion_context is not None
        state.motion_context = program.motion_context
    return program


# --------------------------------------------------------------------------- per-model resources


class _ModelResources:
    """Fast-path resources kept per model: linear kernels, shared caches and captured programs."""

    MAX_PROGRAMS = 4
    CACHE_BUCKET = 256

    def __init__(self, model: TalkerModel, opts: FastPath):
        self._model = weakref.ref(model)
        self.opts = opts
        self.linear = LinearKernels(pack=opts.packed_linears)
        self.backbone_linear: Linear = LinearKernels(pack=opts.packed_linears) if opts.pack_backbone else plain_linear
        self.caches: dict[int, StaticKVCache] = {}
        self.programs: collections.OrderedDict[tuple, _PatchProgram] = collections.OrderedDict()
        self.graphs_failed = False
        self._weights_key: Optional[tuple] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_threads = 0

    def model(self) -> TalkerModel:
        model = self._model()
        if model is None:  # pragma: no cover - the resources die with their model
            raise RuntimeError("internal: fast-path resources outlived their model")
        return model

    def head_pool(self) -> Optional[ThreadPoolExecutor]:
        """Two worker threads with half of torch's intra-op threads each (None below two threads).

        ``torch.set_num_threads`` in a worker sets that thread's count and the default of
        threads started later; the caller's count is set again afterwards so that the
        default stays what it was."""
        threads = torch.get_num_threads()
        if threads < 2:
            return None
        if self._pool is None or self._pool_threads != threads:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(2, thread_name_prefix="talker-heads")
            barrier = threading.Barrier(2)

            def init():
                torch.set_num_threads(threads // 2)
                barrier.wait(timeout=30)

            for f in [pool.submit(init) for _ in range(2)]:
                f.result()
            torch.set_num_threads(threads)
            self._pool, self._pool_threads = pool, threads
        return self._pool

    def graphs_enabled(self, model: TalkerModel) -> bool:
        want = self.opts.cuda_graphs
        on_cuda = _graphs_supported(model)
        if want is None:
            want = on_cuda
        if want and not on_cuda:
            log.debug("cuda_graphs needs the model on a CUDA device; running the patch program eagerly")
            return False
        if want:
            key = _weights_key(model)
            if key != self._weights_key:  # new weights, device or dtype: drop what was built on the old ones
                self.caches.clear()
                self.programs.clear()
                self._weights_key = key
        return bool(want) and not self.graphs_failed

    def shared_cache(self, positions: int) -> StaticKVCache:
        """A cache of at least ``positions`` positions, shared by the captured programs.

        One cache is kept (its capacity a multiple of :attr:`CACHE_BUCKET`); a run that needs
        more replaces it, and the programs captured on the smaller one."""
        fitting = [c for c in self.caches.values() if c.capacity >= positions]
        if fitting:
            return min(fitting, key=lambda c: c.capacity)
        bucket = -(-positions // self.CACHE_BUCKET) * self.CACHE_BUCKET
        self.caches.clear()
        self.programs.clear()
        cache = self.caches[bucket] = StaticKVCache(self.model(), bucket)
        return cache

    def program(
        self, engine: TalkerGenerator, variant: tuple[str, str], flow: FlowSettings, cache: StaticKVCache
    ) -> _PatchProgram:
        key = (variant, flow, cache.capacity)
        program = self.programs.get(key)
        if program is None:
            program = self.programs[key] = _PatchProgram(engine, variant, flow, cache, self, graphs=True)
            while len(self.programs) > self.MAX_PROGRAMS:
                self.programs.popitem(last=False)
        program.engine = engine  # pipelines build one engine per call; the captured graph does not depend on it
        self.programs.move_to_end(key)
        return program

    def nbytes(self) -> int:
        total = self.linear.packed_bytes
        if isinstance(self.backbone_linear, LinearKernels):
            total += self.backbone_linear.packed_bytes
        total += sum(c.nbytes for c in self.caches.values())
        total += sum(p.nbytes for p in self.programs.values())
        return total

    def clear(self) -> None:
        self.linear.clear()
        if isinstance(self.backbone_linear, LinearKernels):
            self.backbone_linear.clear()
        self.caches.clear()
        self.programs.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


_RESOURCES: weakref.WeakKeyDictionary[TalkerModel, _ModelResources] = weakref.WeakKeyDictionary()


def release_fast_path(model: TalkerModel) -> None:
    """Free what the fast path keeps for ``model`` (prepacked weights, static caches, CUDA graphs,
    worker threads, rotary tables); it is rebuilt on the next generation. For hosts that manage
    memory. A no-op when nothing is held."""
    res = _RESOURCES.pop(model, None)
    if res is not None:
        res.clear()
    forget_rotary_tables(model)


def fast_path_nbytes(model: TalkerModel) -> int:
    """Bytes the fast path currently holds for ``model`` (prepacked weights, shared static
    caches, captured programs' buffers, rotary tables); 0 after :func:`release_fast_path`."""
    res = _RESOURCES.get(model)
    return (res.nbytes() if res is not None else 0) + rotary_tables_nbytes(model)


def _model_resources(model: TalkerModel, opts: FastPath) -> _ModelResources:
    res = _RESOURCES.get(model)
    if res is None or res.opts != opts:
        if res is not None:
            res.clear()
        res = _RESOURCES[model] = _ModelResources(model, opts)
    return res


def _weights_key(model: TalkerModel) -> tuple:
    return tuple(tensor_key(p) for p in model.parameters())


@dataclass
class _FastRun:
    """What one run of the fast step carries (``GenerationState.run_data``)."""

    resources: _ModelResources
    cache: StaticKVCache
    graphs: bool
    program: Optional[_PatchProgram] = None


# --------------------------------------------------------------------------- the patch program


class _PatchProgram:
    """One patch of the loop as a fixed-shape program over preallocated buffers.

    Buffers (device): ``h`` (1, D) backbone state; ``speech_context`` (1, 32, ctx) and
    ``motion_context`` (1, 40, ctx); ``speaker`` (1, 256); ``first_motion`` (1, 40);
    the run's noise (N, 1, C, P) and forced patches (N, 1, C, P); ``patch`` and ``position``
    (1,) int64 counters; ``out_speech`` (1, 32, P), ``out_motion`` (1, 40, P). :meth:`body`
    reads and writes only these and the static cache, so on CUDA it is captured once and
    replayed.

    variant: (speech "sample"/"forced", motion "sample"/"forced"/"none").
    """

    def __init__(
        self,
        engine: TalkerGenerator,
        variant: tuple[str, str],
        flow: FlowSettings,
        cache: StaticKVCache,
        resources: _ModelResources,
        graphs: bool,
    ):
        model, cfg = engine.model, engine.config
        self.engine = engine
        self.speech_mode, self.motion_mode = variant
        self.flow = flow
        self.cache = cache
        self.linear = resources.linear
        self.backbone_linear = resources.backbone_linear
        self.resources = resources
        self.graphs = graphs
        self.graph: Any = None
        dev, ps = model.device, cfg.patch_size
        ctx = cfg.context_patches * ps
        capacity = cfg.max_patches
        f32: dict[str, Any] = dict(device=dev, dtype=torch.float32)
        self.h = torch.zeros(1, cfg.llm.hidden_size, device=dev, dtype=model.dtype)
        self.speech_context = torch.zeros(1, cfg.speech_dim, ctx, **f32)
        self.speaker = torch.zeros(1, cfg.speaker_dim, **f32)
        self.out_speech = torch.zeros(1, cfg.speech_dim, ps, **f32)
        self.patch = torch.zeros(1, dtype=torch.long, device=dev)
        self.position = torch.zeros(1, dtype=torch.long, device=dev)
        joint = self.motion_mode != "none"
        self.motion_context = torch.zeros(1, cfg.motion_dim, ctx, **f32) if joint else None
        self.first_motion = torch.zeros(1, cfg.motion_dim, **f32) if joint else None
        self.out_motion = torch.zeros(1, cfg.motion_dim, ps, **f32) if joint else None

        def stream_buffers(mode: str, channels: int) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
            noise = torch.zeros(capacity, 1, channels, ps, **f32) if mode == "sample" else None
            given = torch.zeros(capacity, 1, channels, ps, **f32) if mode == "forced" else None
            return noise, given

        self.noise_speech, self.given_speech = stream_buffers(self.speech_mode, cfg.speech_dim)
        self.noise_motion, self.given_motion = stream_buffers(self.motion_mode, cfg.motion_dim)
        parallel = resources.opts.parallel_heads
        if parallel is None:
            parallel = cfg.dit.hidden_size >= 256
        both = self.speech_mode == "sample" and self.motion_mode == "sample"
        self.parallel = bool(parallel and not graphs and dev.type == "cpu" and both)
        # In a CUDA graph the two heads run on two streams (a fork and a join inside the graph),
        # so their small kernels overlap; outside a graph one stream keeps memory handling simple.
        self.side_stream = torch.cuda.Stream(dev) if (graphs and dev.type == "cuda" and both) else None
        times = engine.sampler.schedule(flow, dev).times
        self.speech_velocity = (
            PatchVelocity(model.speech_cfm.estimator, times, self.linear) if self.speech_mode == "sample" else None
        )
        self.motion_velocity = (
            PatchVelocity(model.motion_cfm.estimator, times, self.linear) if self.motion_mode == "sample" else None
        )
        self.loaded_patches = 0

    @property
    def nbytes(self) -> int:
        """Memory of the program's own buffers (the cache is counted apart)."""
        own = (
            self.h,
            self.speech_context,
            self.speaker,
            self.out_speech,
            self.motion_context,
            self.first_motion,
            self.out_motion,
            self.noise_speech,
            self.given_speech,
            self.noise_motion,
            self.given_motion,
        )
        return sum(t.numel() * t.element_size() for t in own if t is not None)

    # -- per run --------------------------------------------------------------

    def load(self, state: GenerationState) -> None:
        """Copy one run (after its prefill) into the buffers; draws the run's noise from ``state.rng``."""
        cfg = self.engine.config
        ps, n = cfg.patch_size, state.patches_budget
        if n > cfg.max_patches:
            raise ValueError(f"patch budget {n} exceeds the model's {cfg.max_patches}")
        self.h.copy_(state.h)
        self.speech_context.copy_(state.speech_context)
        self.speaker.copy_(state.speaker)
        if self.motion_context is not None:
            assert self.first_motion is not None and state.motion_context is not None
            assert state.first_motion is not None
            self.motion_context.copy_(state.motion_context)
            self.first_motion.copy_(state.first_motion)
        speech_noise, motion_noise = [], []
        for _ in range(n):  # the plain step's draw order: speech, then motion, per patch
            if self.noise_speech is not None:
                speech_noise.append(torch.randn((1, cfg.speech_dim, ps), generator=state.rng))
            if self.noise_motion is not None:
                motion_noise.append(torch.randn((1, cfg.motion_dim, ps), generator=state.rng))
        if n:
            if self.noise_speech is not None:
                self.noise_speech[:n].copy_(torch.stack(speech_noise))
            if self.noise_motion is not None:
                self.noise_motion[:n].copy_(torch.stack(motion_noise))
            for given, frames in ((self.given_speech, state.forced_speech), (self.given_motion, state.forced_motion)):
                if given is None:
                    continue
                assert frames is not None
                covered = min(n, frames.shape[-1] // ps)
                given.zero_()
                if covered:
                    patches = frames[:, :, : covered * ps].reshape(1, frames.shape[1], covered, ps)
                    given[:covered].copy_(patches.permute(2, 0, 1, 3))
        self.patch.zero_()
        self.position.fill_(state.cache.length)
        self.loaded_patches = n

    def run(self) -> None:
        """One patch: replay the captured graph, or run :meth:`body`."""
        if self.graphs and self.graph is None and not self.resources.graphs_failed:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body()

    # -- the program ------------------------------------------------------------

    def body(self) -> None:
        engine = self.engine
        model, sampler, flow = engine.model, engine.sampler, self.flow
        idx = self.patch
        mu = self.h.float()

        def stream(
            mode: str,
            velocity: Optional[PatchVelocity],
            noise: Optional[torch.Tensor],
            given: Optional[torch.Tensor],
            context: torch.Tensor,
            global_cond: torch.Tensor,
        ) -> torch.Tensor:
            if mode == "forced":
                assert given is not None
                return given.index_select(0, idx)[0]
            assert velocity is not None and noise is not None
            return sample_prepared(sampler, velocity, noise.index_select(0, idx)[0], mu, context, global_cond, flow)

        speech_args = (
            self.speech_mode,
            self.speech_velocity,
            self.noise_speech,
            self.given_speech,
            self.speech_context,
            self.speaker,
        )
        motion_args = (
            self.motion_mode,
            self.motion_velocity,
            self.noise_motion,
            self.given_motion,
            self.motion_context,
            self.first_motion,
        )
        motion: Optional[torch.Tensor] = None
        pool = self.resources.head_pool() if self.parallel else None
        if self.side_stream is not None:
            main = torch.cuda.current_stream()
            self.side_stream.wait_stream(main)  # everything the motion head reads is ready
            with torch.cuda.stream(self.side_stream):
                motion = stream(*motion_args)  # type: ignore[arg-type]
            speech = stream(*speech_args)
            main.wait_stream(self.side_stream)
        elif pool is not None:
            inference = torch.is_inference_mode_enabled()
            futures = [pool.submit(_worker_call, inference, stream, a) for a in (speech_args, motion_args)]
            speech, motion = (f.result() for f in futures)
        else:
            speech = stream(*speech_args)
            if self.motion_mode != "none":
                motion = stream(*motion_args)  # type: ignore[arg-type]
        self.out_speech.copy_(speech)
        token = patch_tokens(model, "speech", speech.transpose(1, 2), self.linear)
        if motion is not None:
            assert self.out_motion is not None and self.motion_context is not None
            self.out_motion.copy_(motion)
            token = token + patch_tokens(model, "motion", motion.transpose(1, 2), self.linear)
            self.motion_context.copy_(shift_in(self.motion_context, motion))
        else:
            token = token + model.motion_pad_emb
        self.speech_context.copy_(shift_in(self.speech_context, speech))
        h = run_backbone_static(model, token, self.cache, self.backbone_linear, position=self.position)
        self.h.copy_(h)
        self.patch.add_(1)
        self.position.add_(1)

    def _mutable(self) -> list[torch.Tensor]:
        return [
            t
            for t in (
                self.h,
                self.speech_context,
                self.motion_context,
                self.patch,
                self.position,
                self.out_speech,
                self.out_motion,
            )
            if t is not None
        ]

    def _capture(self) -> None:
        """Capture :meth:`body` (see :func:`_capture_graph`); on failure run eagerly from now on."""
        try:
            self.graph = _capture_graph(self.body, self._mutable())
            log.info("captured the patch program in a CUDA graph")
        except Exception as exc:  # noqa: BLE001 — any capture failure: run eagerly instead
            self.resources.graphs_failed = True
            self.graph = None
            log.warning(
                "CUDA graph capture of the patch step failed (%s: %s); running it eagerly", type(exc).__name__, exc
            )


def _graphs_supported(model: TalkerModel) -> bool:
    return model.device.type == "cuda"


def _capture_graph(body: Callable[[], None], mutable: list[torch.Tensor]) -> Any:
    """A CUDA graph of ``body()``: two warm-up runs on a side stream (lazy initialisations,
    rotary tables), then the capture; the ``mutable`` buffers are restored after each, so
    the graph starts from the state the caller loaded. Returns the graph (``.replay()``)."""
    saved = [t.clone() for t in mutable]

    def restore() -> None:
        for t, s in zip(mutable, saved, strict=True):
            t.copy_(s)

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                body()
                restore()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:  # other threads (the overlapped stream's renderer) may use the GPU meanwhile
            capture = torch.cuda.graph(graph, capture_error_mode="thread_local")
        except TypeError:  # torch < 2.1
            capture = torch.cuda.graph(graph)
        with capture:
            body()
        return graph
    finally:
        restore()


def _worker_call(inference: bool, fn: Callable[..., torch.Tensor], args: tuple) -> torch.Tensor:
    """Run ``fn(*args)`` in a worker thread under the caller's grad mode (those modes are per thread)."""
    with torch.inference_mode() if inference else torch.no_grad():
        return fn(*args)
