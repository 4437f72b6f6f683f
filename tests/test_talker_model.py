"""Unit tests of the Talker model, its configuration, the flow sampler and the engine."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from talker_core.checkpoint import CheckpointError, load_strict
from talker_core.generation.engine import (
    GenerationCancelled,
    GenerationMode,
    SamplingSettings,
    TalkerGenerator,
)
from talker_core.generation.flow_sampler import FlowSampler, FlowSettings
from talker_core.models.dit_head import DitConfig
from talker_core.models.patch_encoder import PatchEncoderConfig
from talker_core.models.talker import TALKER_KEYS, BackboneConfig, TalkerConfig, TalkerModel


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = TalkerModel(TalkerConfig.tiny()).eval()
    with torch.no_grad():  # non-zero pad embedding so that speech-only mode exercises it
        model.motion_pad_emb.normal_(std=0.1)
    return model


def _published(model: TalkerModel) -> dict[str, torch.Tensor]:
    """The model's weights under the published names (what a release file holds)."""
    return {k: v.clone() for k, v in model.state_dict().items() if k != "llm.lm_head.weight"}


def _inputs(cfg: TalkerConfig, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        prompt_ids=torch.randint(0, cfg.llm.vocab_size, (1, 7), generator=g),
        speaker=torch.randn(cfg.speaker_dim, generator=g),
        ref_speech=torch.randn(10, cfg.speech_dim, generator=g),
        ref_motion=torch.randn(12, cfg.motion_dim, generator=g),
    )


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("config", [TalkerConfig(), TalkerConfig.tiny()], ids=["release", "tiny"])
def test_config_round_trip(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert TalkerConfig.from_dict(data) == config
    assert data["llm"]["model_type"] == "qwen3"


def test_release_defaults():
    cfg = TalkerConfig()
    assert (cfg.llm.hidden_size, cfg.llm.num_hidden_layers, cfg.llm.vocab_size) == (1024, 28, 151936)
    assert (cfg.dit.n_layer, cfg.dit.n_head, cfg.patch_encoder.n_layer, cfg.patch_encoder.n_head) == (8, 8, 4, 8)
    assert (cfg.speech_dim, cfg.motion_dim, cfg.speaker_dim, cfg.patch_size, cfg.delay) == (32, 40, 256, 4, 0)
    assert cfg.max_patches == 187


def test_config_partial_dict_takes_release_values():
    cfg = TalkerConfig.from_dict({"llm": {"num_hidden_layers": 2}})
    assert cfg.llm.num_hidden_layers == 2 and cfg.llm.hidden_size == 1024


@pytest.mark.parametrize(
    "data, words",
    [
        ({"dit": {"hidden_size": 64, "feat_dim": 64, "n_head": 4}}, "backbone hidden_size"),
        ({"delay": 5}, "delay"),
        ({"unknown_field": 1}, "unknown"),
        ({"llm": {"model_type": "llama"}}, "model_type"),
        ({"llm": {"num_key_value_heads": 3}}, "num_key_value_heads"),
        ({"patch_encoder": {"n_head": 3}}, "heads"),
        ({"dit": {"feat_dim": 512}}, "feat_dim"),
        ({"speech_dim": 0}, "speech_dim"),
    ],
)
def test_config_invariants(data, words):
    with pytest.raises(ValueError, match=words):
        TalkerConfig.from_dict(data)


def test_component_configs_validate():
    with pytest.raises(ValueError):
        DitConfig(hidden_size=64, feat_dim=64, n_head=3)
    with pytest.raises(ValueError):
        PatchEncoderConfig(n_layer=0)
    with pytest.raises(ValueError):
        BackboneConfig(head_dim=15)


# ---------------------------------------------------------------- model and loading


def test_model_has_published_names(tiny_model):
    keys = set(tiny_model.state_dict())
    for name in (
        "projector_speech.linear1.weight",
        "projector_motion.linear1.bias",
        "speech_patch_encoder.cls_token",
        "motion_patch_encoder.norm.scale",
        "speech_cfm.estimator.decoder.blocks.0.attn.qkv.weight",
        "motion_cfm.estimator.delta_time_mlp.linear_2.bias",
        "head_stop.proj.weight",
        "head_stop.head.weight",
        "task_embedding.weight",
        "motion_pad_emb",
        "llm.model.embed_tokens.weight",
    ):
        assert name in keys, name
    assert not any(k.endswith("rope.w") for k in keys)


def test_load_accepts_tied_head_and_rope_tables(tiny_model):
    published = _published(tiny_model)
    published["llm.lm_head.weight"] = published["llm.model.embed_tokens.weight"].clone()
    published["speech_patch_encoder.rope.w"] = torch.zeros(1024, 8, 2)
    model = TalkerModel(TalkerConfig.tiny())
    model.load_published(published, "release.safetensors")
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.llm.lm_head.weight.data_ptr() == model.llm.model.embed_tokens.weight.data_ptr()


def test_load_strict_missing_key(tiny_model):
    published = _published(tiny_model)
    del published["head_stop.proj.bias"]
    with pytest.raises(CheckpointError, match=r"missing.*head_stop\.proj\.bias") as err:
        load_strict(TalkerModel(TalkerConfig.tiny()), published, TALKER_KEYS, "bad.safetensors", "Talker")
    assert "bad.safetensors" in str(err.value)


def test_load_strict_wrong_shape(tiny_model):
    published = _published(tiny_model)
    published["projector_motion.linear1.weight"] = torch.zeros(64, 41)
    with pytest.raises(CheckpointError, match=r"projector_motion\.linear1\.weight: file \(64, 41\)"):
        load_strict(TalkerModel(TalkerConfig.tiny()), published, TALKER_KEYS, "bad.safetensors", "Talker")


def test_load_strict_unexpected_key(tiny_model):
    published = _published(tiny_model)
    published["pretrained_speech_encoder.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected"):
        TalkerModel(TalkerConfig.tiny()).load_published(published, "bad.safetensors")


def test_attn_implementation_choice():
    assert TalkerModel(TalkerConfig.tiny(), attn_implementation="eager").attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation"):
        TalkerModel(TalkerConfig.tiny(), attn_implementation="xformers")
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(ValueError, match="flash_attn"):
            TalkerModel(TalkerConfig.tiny(), attn_implementation="flash_attention_2")


def test_patch_tokens_pad_in_projected_space(tiny_model):
    frames = torch.randn(1, 5, 32)
    with torch.no_grad():
        tokens = tiny_model.speech_tokens(frames)
        proj = tiny_model.projector_speech(frames)
        padded = torch.cat([proj, torch.zeros(1, 3, proj.shape[-1])], dim=1).view(1, 2, 4, -1)
        expected = tiny_model.speech_patch_encoder(padded)
    assert tokens.shape == (1, 2, tiny_model.config.llm.hidden_size)
    torch.testing.assert_close(tokens, expected)


# ---------------------------------------------------------------- sampler


def test_flow_schedule():
    sampler = FlowSampler()
    settings = FlowSettings(steps=10)
    sched = sampler.schedule(settings, "cpu")
    assert sched is sampler.schedule(settings, "cpu")  # cached
    assert sched.times.shape == (10, 1) and float(sched.times[0]) == 1.0
    assert sum(sched.deltas) == pytest.approx(1.0, abs=1e-6)
    assert sched.first == 1  # CFG-zero-star skips max(1, int(0.04 * 11)) = 1 step
    assert sampler.schedule(FlowSettings(steps=10, cfg_zero_star=False), "cpu").first == 0
    uniform = sampler.schedule(FlowSettings(steps=4, sway=0.0), "cpu")
    assert uniform.deltas == pytest.approx((0.25,) * 4)


def test_flow_settings_validate():
    for bad in (dict(steps=0), dict(temperature=-1.0), dict(cfg=float("nan"))):
        with pytest.raises(ValueError):
            FlowSettings(**bad)


def test_sampler_zero_temperature_one_step_is_noise_free(tiny_model):
    noise = torch.randn(1, 32, 4)
    out = FlowSampler().sample(
        tiny_model.speech_cfm.estimator,
        noise,
        torch.randn(1, 64),
        torch.zeros(1, 32, 4),
        torch.randn(1, 256),
        FlowSettings(steps=1),
    )
    # CFG-zero-star zeroes the only step: the result is the scaled noise.
    torch.testing.assert_close(out, noise * 0.3)


# ---------------------------------------------------------------- dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_runs(dtype):
    torch.manual_seed(0)
    model = TalkerModel(TalkerConfig.tiny()).eval()
    inv_freq = model.llm.model.rotary_emb.inv_freq.clone()
    model = model.to(dtype)
    cfg = model.config
    assert model.task_embedding.weight.dtype == dtype
    # the backbone's rotary frequencies stay float32 (a bf16 copy would shift every angle)
    assert torch.equal(model.llm.model.rotary_emb.inv_freq, inv_freq)
    with torch.no_grad():
        tokens = model.speech_tokens(torch.randn(1, 8, 32))
        assert tokens.dtype == dtype
        logit = model.stop_logit(tokens)
        assert logit.dtype == torch.float32
        x = FlowSampler().sample(
            model.motion_cfm.estimator,
            torch.randn(1, 40, 4),
            torch.randn(1, 64),
            torch.zeros(1, 40, 4),
            torch.randn(1, 40),
        )
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
    out = TalkerGenerator(model).generate(
        **_inputs(cfg), prefix_frames=4, settings=SamplingSettings(seed=1), max_patches=3
    )
    assert out.gen_speech.dtype == torch.float32 and out.gen_speech.shape == (12, 32)
    assert out.gen_motion.shape == (12, 40)
    assert torch.isfinite(out.gen_speech).all() and torch.isfinite(out.gen_motion).all()


# ---------------------------------------------------------------- engine


def test_cancel_then_reproduce(tiny_model):
    generator = TalkerGenerator(tiny_model)
    inputs = _inputs(tiny_model.config)
    settings = SamplingSettings(seed=7)
    reference = generator.generate(**inputs, settings=settings, max_patches=4)

    polls = []

    def cancel_at_third():
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(GenerationCancelled) as err:
        generator.generate(**inputs, settings=settings, max_patches=4, should_cancel=cancel_at_third)
    assert err.value.patches_done == 2

    seen = []
    again = generator.generate(**inputs, settings=settings, max_patches=4, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert again.steps == reference.steps == 4
    assert torch.equal(again.gen_speech, reference.gen_speech)
    assert torch.equal(again.gen_motion, reference.gen_motion)
    assert torch.equal(again.prefill_hidden, reference.prefill_hidden)


def test_seed_changes_output(tiny_model):
    generator = TalkerGenerator(tiny_model)
    inputs = _inputs(tiny_model.config)
    a = generator.generate(**inputs, settings=SamplingSettings(seed=1), max_patches=2)
    b = generator.generate(**inputs, settings=SamplingSettings(seed=2), max_patches=2)
    assert not torch.equal(a.gen_speech, b.gen_speech)


def test_modes_and_prefix_outputs(tiny_model):
    generator = TalkerGenerator(tiny_model)
    inputs = _inputs(tiny_model.config)
    joint = generator.generate(**inputs, prefix_frames=7, max_patches=2)  # rounded down to one patch
    assert joint.prefix_speech.shape == (4, 32) and joint.prefix_motion.shape == (4, 40)
    tts = generator.generate(**{**inputs, "ref_motion": None}, prefix_frames=7, mode="speech-only", max_patches=2)
    assert tts.gen_motion is None and tts.prefix_motion is None
    assert tts.prefix_speech.shape == (7, 32) and tts.gen_speech.shape == (8, 32)
    forced = torch.randn(9, 32)
    a2v = generator.generate(**inputs, forced_speech=forced)
    assert a2v.steps == 3 and a2v.p_stop == [] and a2v.gen_motion.shape == (12, 40)
    torch.testing.assert_close(a2v.gen_speech[:9], forced)
    assert torch.count_nonzero(a2v.gen_speech[9:]) == 0


def test_first_motion_is_the_motion_condition(tiny_model):
    generator = TalkerGenerator(tiny_model)
    inputs = _inputs(tiny_model.config)
    implicit = generator.generate(**inputs, max_patches=2)
    explicit = generator.generate(**{**inputs, "ref_motion": None}, first_motion=inputs["ref_motion"][0], max_patches=2)
    assert torch.equal(implicit.gen_motion, explicit.gen_motion)
    other = generator.generate(**inputs, first_motion=torch.zeros(40), max_patches=2)
    assert not torch.equal(implicit.gen_motion, other.gen_motion)


def test_stop_head_ends_generation(tiny_model):
    generator = TalkerGenerator(tiny_model)
    inputs = _inputs(tiny_model.config)
    out = generator.generate(
        **inputs, max_patches=10, settings=SamplingSettings(stop_threshold=0.0, stop_min_patches=2)
    )
    # threshold 0 votes stop at every check: checks at patches 2, 3, 4 end the run before patch 4.
    assert out.stopped and out.steps == 4 and len(out.p_stop) == 3


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(ref_motion=None), "first_motion"),
        (dict(first_motion=torch.zeros(2, 40)), "first_motion"),
        (dict(speaker=torch.zeros(255)), "speaker"),
        (dict(prompt_ids=torch.zeros(1, 0, dtype=torch.long)), "prompt_ids"),
        (dict(ref_speech=torch.zeros(5, 31)), "ref_speech"),
        (dict(max_patches=10_000), "max_patches"),
        (dict(forced_speech=torch.zeros(4, 32), forced_motion=torch.zeros(4, 40)), "at most one"),
        (dict(mode="speech-only", forced_speech=torch.zeros(4, 32)), "joint mode"),
    ],
)
def test_bad_inputs(tiny_model, change, words):
    generator = TalkerGenerator(tiny_model)
    with pytest.raises(ValueError, match=words):
        generator.generate(**{**_inputs(tiny_model.config), **change})


def test_mode_enum_accepts_strings():
    assert GenerationMode("speech-only") is GenerationMode.SPEECH_ONLY
