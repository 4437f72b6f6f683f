"""Talker-T2AV backbone and heads: configuration, module tree, key map.

Implements the autoregressive model of Talker-T2AV (arXiv 2604.23586; reference
``speech_llm.py``, ``SpeechLLM``), spec MODEL.md §1–§2: a Qwen3 causal LM
(``llm``) reads one token per 4-frame patch; its hidden state drives a speech
and a motion DiT velocity head (``speech_cfm.estimator``, ``motion_cfm.estimator``)
and a stop head; patches come back in through linear projectors and CLS-pooling
patch encoders. This file only builds the modules and exposes the pieces the
generation engine (:mod:`talker_core.generation.engine`) needs; the sampler is
:mod:`talker_core.generation.flow_sampler`.

The backbone is built offline from the sizes in :class:`TalkerConfig`, never
from the hub; all weights come from the published ``model.safetensors`` through
:data:`TALKER_KEYS` and :func:`talker_core.checkpoint.load_strict`.

The fast path of generation (static key/value cache, prepared heads, ...) is
:mod:`talker_core.fast`; this file does not depend on it.

Legend: B batch, L sequence length, T patches, P frames per patch (4),
D backbone width, C latent channels (32 speech, 40 motion), G speaker width (256).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import logging
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from talker_core.checkpoint import KeyMap, load_strict
from talker_core.models.dit_head import DitConfig, DiTHead
from talker_core.models.patch_encoder import PatchEncoder, PatchEncoderConfig

__all__ = [
    "BackboneConfig",
    "TalkerConfig",
    "TalkerModel",
    "TALKER_KEYS",
    "ATTN_IMPLEMENTATIONS",
    "ATTN_HELP",
    "check_attn_implementation",
    "cache_kwargs",
]

log = logging.getLogger(__name__)

#: The backbone attention kernels, the default first, each with its help text: the one list the loader
#: node's combo and the command line's ``--attn`` offer.
ATTN_HELP: dict[str, str] = {
    "sdpa": "PyTorch's fused attention (default)",
    "eager": "plain matmuls (debugging)",
    "flash_attention_2": "needs the flash-attn package",
}
ATTN_IMPLEMENTATIONS: tuple[str, ...] = tuple(ATTN_HELP)

# Published keys are the module's own names. The LM head is tied to the token
# embedding (it may or may not be in a file and is never used); rotary tables
# (``*.rope.w``) are functions of the sizes and are recomputed.
TALKER_KEYS = KeyMap(
    ignore=(r"llm\.lm_head\.weight", r".*\.rope\.w"),
    derived=(r"llm\.lm_head\.weight",),
)


@dataclass
class BackboneConfig:
    """Qwen3 sizes of the backbone (``config.json`` names; defaults = Qwen3-0.6B)."""

    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    max_position_embeddings: int = 40960

    MODEL_TYPE = "qwen3"  # class constant, written to/accepted from dicts as ``model_type``

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"backbone {name} must be positive, got {getattr(self, name)!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"backbone num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"backbone head_dim must be even, got {self.head_dim}")
        if not self.tie_word_embeddings:
            raise ValueError("the Talker backbone ties its LM head to the token embedding (tie_word_embeddings=True)")

    @classmethod
    def tiny(cls) -> BackboneConfig:
        return cls(
            vocab_size=320,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=4096,
        )

    def to_qwen3(self, attn_implementation: str = "sdpa"):
        """A transformers ``Qwen3Config`` with these sizes (built locally, no download)."""
        from transformers import Qwen3Config

        # a dict: transformers' typed signature does not list every accepted keyword
        kwargs: dict[str, Any] = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            attention_bias=self.attention_bias,
            max_position_embeddings=self.max_position_embeddings,
            use_cache=True,
            attn_implementation=attn_implementation,
        )
        return Qwen3Config(**kwargs)


@dataclass
class TalkerConfig:
    """Hyper-parameters of the backbone+heads file (release values as defaults, MODEL.md §2).

    llm:             Qwen3 sizes of the backbone.
    patch_encoder:   depth of the speech and motion patch encoders (width = llm.hidden_size).
    dit:             sizes of the speech and motion DiT heads (hidden_size = llm.hidden_size).
    speech_dim:      WhisperX-VAE latent channels (32).
    motion_dim:      LIA-X motion code channels (40).
    speaker_dim:     speaker embedding width, the speech head's global condition (256).
    patch_size:      frames per backbone token (4 = 160 ms at 25 Hz).
    delay:           motion delay in patches; the release uses 0 and so does this code.
    context_patches: patches of history each head sees as its ``cond`` (1).
    fps:             latent / video frame rate (25).
    max_frames:      longest generation per segment the model was trained on (750 = 30 s).
    """

    llm: BackboneConfig = field(default_factory=BackboneConfig)
    patch_encoder: PatchEncoderConfig = field(default_factory=PatchEncoderConfig)
    dit: DitConfig = field(default_factory=DitConfig)
    speech_dim: int = 32
    motion_dim: int = 40
    speaker_dim: int = 256
    patch_size: int = 4
    delay: int = 0
    context_patches: int = 1
    fps: int = 25
    max_frames: int = 750

    def __post_init__(self):
        for name in ("speech_dim", "motion_dim", "speaker_dim", "patch_size", "context_patches", "fps", "max_frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TalkerConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.delay != 0:
            raise ValueError(f"TalkerConfig.delay={self.delay}: only delay 0 (the released model) is supported")
        if self.dit.hidden_size != self.llm.hidden_size:
            raise ValueError(
                f"DiT hidden_size ({self.dit.hidden_size}) must equal the backbone hidden_size "
                f"({self.llm.hidden_size}): the backbone state is the heads' conditioning"
            )
        self.patch_encoder.check_width(self.llm.hidden_size)
        if self.max_frames < self.patch_size:
            raise ValueError(f"TalkerConfig.max_frames ({self.max_frames}) is shorter than one patch")

    @property
    def max_patches(self) -> int:
        """Most patches one generation may produce: max_frames / patch_size, rounded down."""
        return self.max_frames // self.patch_size

    @classmethod
    def tiny(cls) -> TalkerConfig:
        """Test sizes (those of the ``heads_*`` parity fixtures)."""
        return cls(llm=BackboneConfig.tiny(), patch_encoder=PatchEncoderConfig.tiny(), dit=DitConfig.tiny())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (nested ``llm``/``patch_encoder``/``dit``); inverse of :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        out["llm"]["model_type"] = BackboneConfig.MODEL_TYPE
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TalkerConfig:
        """Build from a dict as written by :meth:`to_dict` (missing fields take release values).

        Unknown keys are an error, so that a sidecar from another model is not
        silently read as this one.
        """
        data = dict(data)
        llm = dict(data.pop("llm", {}))
        model_type = llm.pop("model_type", BackboneConfig.MODEL_TYPE)
        if model_type != BackboneConfig.MODEL_TYPE:
            raise ValueError(f"backbone model_type {model_type!r} is not supported (expected 'qwen3')")
        nested = {
            "llm": _build(BackboneConfig, llm, "llm"),
            "patch_encoder": _build(PatchEncoderConfig, data.pop("patch_encoder", {}), "patch_encoder"),
            "dit": _build(DitConfig, data.pop("dit", {}), "dit"),
        }
        return _build(cls, {**data, **nested}, "TalkerConfig", nested=tuple(nested))


def _build(cls, data: Mapping[str, Any], where: str, nested: tuple[str, ...] = ()):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field(s) in {where}: {unknown} (known: {sorted(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name not in nested and f.type in ("int", int) and isinstance(value, float) and value.is_integer():
            value = int(value)
        kwargs[f.name] = value
    return cls(**kwargs)


class _Projector(nn.Module):
    """Frame projector into the backbone width (published name ``linear1``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear1(x)


class _FlowHead(nn.Module):
    """Container that gives a DiT head its published prefix ``*_cfm.estimator``."""

    def __init__(self, estimator: DiTHead):
        super().__init__()
        self.estimator = estimator


class _StopHead(nn.Module):
    """``head(silu(proj(h)))`` → stop logit (published names ``proj``, ``head``)."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Linear(width, width, bias=True)
        self.head = nn.Linear(width, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(…, D) → (…) logits, computed in float32 whatever the module dtype."""
        x = F.linear(h.float(), self.proj.weight.float(), self.proj.bias.float())
        return F.linear(F.silu(x), self.head.weight.float()).squeeze(-1)


def check_attn_implementation(name: str) -> None:
    """``ValueError`` saying what to do when ``name`` is not one of :data:`ATTN_IMPLEMENTATIONS` or cannot run here."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation {name!r} is not one of {ATTN_IMPLEMENTATIONS}")
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError(
            "attn_implementation='flash_attention_2' needs the flash_attn package, which is not installed; "
            f"choose '{ATTN_IMPLEMENTATIONS[0]}' (the default, as fast on most GPUs) or install flash-attn for your "
            "CUDA build"
        )


class TalkerModel(nn.Module):
    """Backbone (Qwen3) + projectors + patch encoders + DiT heads + stop head.

    Attributes use the published names: ``llm``, ``projector_speech.linear1``,
    ``projector_motion.linear1``, ``speech_patch_encoder``, ``motion_patch_encoder``,
    ``speech_cfm.estimator``, ``motion_cfm.estimator``, ``head_stop.{proj,head}``,
    ``task_embedding`` (0 = speech only, 1 = joint), ``motion_pad_emb``.

    ``.to(dtype)`` casts everything; the stop probability and the flow sampler
    keep their own arithmetic in float32.
    """

    TASK_SPEECH_ONLY = 0
    TASK_JOINT = 1

    def __init__(self, config: TalkerConfig | None = None, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import Qwen3ForCausalLM

        config = config or TalkerConfig()
        check_attn_implementation(attn_implementation)
        self.config = config
        width = config.llm.hidden_size
        self.llm = Qwen3ForCausalLM(config.llm.to_qwen3(attn_implementation))
        self.projector_speech = _Projector(config.speech_dim, width)
        self.projector_motion = _Projector(config.motion_dim, width)
        self.speech_patch_encoder = PatchEncoder(config.patch_encoder, width, width)
        self.motion_patch_encoder = PatchEncoder(config.patch_encoder, width, width)
        self.speech_cfm = _FlowHead(DiTHead(config.dit, config.speech_dim, config.speaker_dim))
        self.motion_cfm = _FlowHead(DiTHead(config.dit, config.motion_dim, config.motion_dim))
        self.head_stop = _StopHead(width)
        self.task_embedding = nn.Embedding(2, width)
        self.motion_pad_emb = nn.Parameter(torch.zeros(1, 1, width))

    def _apply(self, fn, recurse=True):
        # The backbone's rotary frequencies are float32 buffers; a cast of the whole
        # model (``.to(torch.bfloat16)``) would round them and shift every rotary
        # angle. Keep them float32 and only follow the device.
        kept = [
            (module, name, buf)
            for module in self.llm.modules()
            for name, buf in module._buffers.items()
            if name in ("inv_freq", "original_inv_freq") and buf is not None and buf.dtype == torch.float32
        ]
        super()._apply(fn, recurse)
        for module, name, original in kept:
            moved = module._buffers[name]
            if moved is not None and moved.dtype != torch.float32:
                module._buffers[name] = original.to(device=moved.device)
        return self

    # ------------------------------------------------------------------ loading

    def load_published(
        self, state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike, strict: bool | None = None
    ) -> None:
        """Load a published backbone+heads state dict (see :data:`TALKER_KEYS`).

        Raises :class:`talker_core.checkpoint.CheckpointError` naming ``source`` on
        any missing or misshapen key, a key of another component, and (under the
        strict switch, :func:`talker_core.checkpoint.strict_loading`) any unlisted key.
        """
        lm_head = state_dict.get("llm.lm_head.weight")
        embed = state_dict.get("llm.model.embed_tokens.weight")
        if (
            lm_head is not None
            and embed is not None
            and lm_head.shape == embed.shape
            and not torch.equal(lm_head, embed)
        ):
            log.warning(
                "%s: llm.lm_head.weight differs from the token embedding; it is tied and unused, ignoring it", source
            )
        load_strict(self, state_dict, TALKER_KEYS, source, "Talker-T2AV backbone+heads", kind="talker", strict=strict)

    # ------------------------------------------------------------------ helpers

    @property
    def device(self) -> torch.device:
        return self.task_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.task_embedding.weight.dtype

    @property
    def attn_implementation(self) -> str:
        return self.llm.config._attn_implementation

    def embed_prompt(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings: prompt_ids (B, L) int64 → (B, L, D) in the model dtype."""
        return self.llm.get_input_embeddings()(prompt_ids.to(self.device))

    def task_token(self, task: int) -> torch.Tensor:
        """Task embedding (1, D): ``TASK_SPEECH_ONLY`` (0) or ``TASK_JOINT`` (1)."""
        return self.task_embedding.weight[task].unsqueeze(0)

    def speech_tokens(self, frames: torch.Tensor, n_patches: int | None = None) -> torch.Tensor:
        """Speech latents (B, F, 32) → patch tokens (B, T, D).

        Frames are projected, then cut or extended to T·P frames with zero
        vectors in the projected space (T = ceil(F / P) unless ``n_patches``
        is given, :meth:`patches_of`), and encoded patch by patch.
        """
        frames = frames.to(device=self.device, dtype=self.dtype)
        return self.speech_patch_encoder(self.patches_of(self.projector_speech(frames), n_patches))

    def motion_tokens(self, frames: torch.Tensor, n_patches: int | None = None) -> torch.Tensor:
        """Normalised motion codes (B, F, 40) → patch tokens (B, T, D); see :meth:`speech_tokens`."""
        frames = frames.to(device=self.device, dtype=self.dtype)
        return self.motion_patch_encoder(self.patches_of(self.projector_motion(frames), n_patches))

    def patches_of(self, proj: torch.Tensor, n_patches: int | None = None) -> torch.Tensor:
        """Projected frames (B, F, D) → (B, T, P, D): cut or zero-extended to T·P frames
        (T = ceil(F / P) unless ``n_patches`` is given)."""
        ps = self.config.patch_size
        b, f, _ = proj.shape
        if n_patches is None:
            n_patches = -(-f // ps)
        total = n_patches * ps
        if f > total:
            proj = proj[:, :total]
        elif f < total:
            proj = F.pad(proj, (0, 0, 0, total - f))
        return proj.view(b, n_patches, ps, -1)

    def stop_logit(self, h: torch.Tensor) -> torch.Tensor:
        """Stop logits: h (…, D) → (…), float32."""
        return self.head_stop(h)

    def stop_probability(self, h: torch.Tensor) -> torch.Tensor:
        """sigmoid(stop logit): h (…, D) → (…), float32."""
        return torch.sigmoid(self.head_stop(h))

    def new_cache(self):
        """An empty key/value cache for :meth:`run_backbone`."""
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.llm.config)
        except TypeError:  # transformers < 4.56 builds it without a config
            return DynamicCache()

    def run_backbone(self, embeds: torch.Tensor, cache: Any) -> torch.Tensor:
        """Feed embeds (1, L, D) after what ``cache`` (a transformers cache, :meth:`new_cache`)
        holds; returns the final-norm hidden state at the last position (1, D) and extends
        ``cache`` in place."""
        out = self.llm.model(inputs_embeds=embeds.to(self.dtype), use_cache=True, **cache_kwargs(self.llm.model, cache))
        return out.last_hidden_state[:, -1]


def cache_kwargs(module: nn.Module, cache) -> dict[str, Any]:
    """The keyword argument that hands ``cache`` to a transformers model's ``forward``.

    transformers renames ``past_key_values`` to ``cache`` (announced for removal in
    5.40; 4.x knows only ``past_key_values``): whichever the installed ``forward``
    declares is used, so neither a deprecation warning nor a removed keyword
    reaches the user. Use as ``module(..., **cache_kwargs(module, cache))``.
    """
    return {_cache_keyword(cast(Hashable, type(module))): cache}  # one signature look-up per class


@functools.cache
def _cache_keyword(cls: Any) -> str:
    params = inspect.signature(cls.forward).parameters  # follows functools.wraps of the deprecation decorator
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise TypeError(f"{cls.__module__}.{cls.__qualname__}.forward takes neither `cache` nor `past_key_values`")
