"""Parity of the generation engine against the ``heads_generate`` fixtures.

For every case of every fixture of the kind: build the model from the fixture's
``config`` and manifest weights, run :class:`TalkerGenerator` with the case's
mode, prefix, forced stream, step limit, seed and stop settings, and compare
``prefill_hidden``, ``gen_speech``, ``gen_motion``, ``p_stop`` and ``steps``.

Two ways of running each case:

* teacher-forced: every patch is sampled exactly as in a free run (same noise
  draws, same stop checks) but the stored patches are fed back, so each output
  is compared one step ahead of the reference's own history. Strict: the plain
  tolerance, on any machine and thread count.
* free-running: the plain run. Autoregressive sampling amplifies float32
  rounding differences roughly twofold per patch, so the comparison uses the
  noise-aware rule of tests/golden/README.md (the reference's second run,
  ``heads_generate.alt.safetensors``, bounds how far the reference itself
  drifts); it runs with the session's thread count (``TALKER_TEST_THREADS``).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import golden_params, load_fixture, on_test_device
from golden_weights import make_state_dict

from talker_core.checkpoint import load_strict
from talker_core.generation.engine import GenerationMode, SamplingSettings, TalkerGenerator
from talker_core.models.talker import TALKER_KEYS, TalkerConfig, TalkerModel

_MODELS: dict = {}


def _case_params():
    params = []
    for p in golden_params("heads_generate"):
        path = p.values[0]
        if path is None:
            params.append(pytest.param(None, None, id=p.id))
            continue
        for name in json.loads(path.read_text())["cases"]:
            params.append(pytest.param(path, name, id=f"{p.id}-{name}"))
    return params


CASES = _case_params()


def _model(path, meta, attn: str) -> TalkerModel:
    key = (str(path), attn)
    if key not in _MODELS:
        model = TalkerModel(TalkerConfig.from_dict(meta["config"]), attn_implementation=attn).eval()
        weights = make_state_dict(meta["manifest"], meta["seed"], meta.get("unit_std", False))
        load_strict(model, weights, TALKER_KEYS, path.name, "Talker-T2AV backbone+heads")
        _MODELS[key] = on_test_device(model)
    return _MODELS[key]


def _request(meta, tensors, name) -> dict:
    """generate() arguments of one case, all taken from the fixture."""
    case = meta["cases"][name]
    sampling = meta["sampling"]
    mode = GenerationMode(case.get("mode", GenerationMode.JOINT.value))
    joint = mode is GenerationMode.JOINT
    stop = sampling["stop"] if joint else sampling["speech_only_stop"]
    settings = SamplingSettings(
        steps=sampling["steps"],
        temperature=sampling["temperature"],
        cfg=sampling["cfg"],
        sway=sampling["sway"],
        cfg_zero_star=sampling["cfg_zero_star"],
        stop_threshold=case.get("stop_threshold", stop["threshold"]),
        stop_consecutive=stop["consecutive"],
        stop_min_patches=stop["min_patches"],
        seed=case["seed"],
    )
    if "prefix_frames" in case:
        prefix_frames = case["prefix_frames"]
    else:
        prefix_frames = case.get("prefix_patches", 0) * meta["config"]["patch_size"]
    forced = case.get("forced")
    return dict(
        prompt_ids=tensors["text_ids"],
        speaker=tensors["speaker"],
        ref_speech=tensors["ref_speech"],
        ref_motion=tensors["ref_motion"] if joint else None,
        prefix_frames=prefix_frames,
        mode=mode,
        forced_speech=tensors["forced_speech"] if forced == "speech" else None,
        forced_motion=tensors["forced_motion"] if forced == "motion" else None,
        settings=settings,
        max_patches=case["max_steps"] or None,  # 0: no limit besides the forced stream's length
    )


def _p_stop(p_stop: torch.Tensor) -> torch.Tensor:
    if p_stop.numel() == 1 and float(p_stop[0]) == -1.0:  # "-1 if none"
        return p_stop[:0]
    return p_stop


def _expected(fx, name) -> dict:
    exp = {k.split(".", 1)[1]: v for k, v in fx.tensors.items() if k.startswith(name + ".")}
    exp["steps"] = int(exp["steps"].item())
    assert exp["steps"] == fx.meta["cases"][name]["steps_done"]
    return exp


def _compare(fx, out, exp, name, strict: bool):
    """Every stored output of case ``name``: strict (plain tolerance) or noise-aware."""
    fx.check(f"{name}.prefill_hidden", out.prefill_hidden, strict=strict)
    assert out.steps == exp["steps"], f"{name}: {out.steps} patches generated, fixture {exp['steps']}"
    fx.check(f"{name}.steps", torch.tensor([out.steps]), strict=True)
    got_p = torch.tensor(out.p_stop, dtype=torch.float32)
    key = f"{name}.p_stop"
    alt_p = None if strict or fx.alt is None else _p_stop(fx.alt[key])
    fx.check(key, got_p, expected=_p_stop(fx.tensors[key]), alt=alt_p, strict=strict)
    fx.check(f"{name}.gen_speech", out.gen_speech, strict=strict)
    if "gen_motion" in exp:
        assert out.gen_motion is not None, f"{name}: no motion generated"
        fx.check(f"{name}.gen_motion", out.gen_motion, strict=strict)
    else:
        assert out.gen_motion is None, f"{name}: motion generated in a speech-only case"


@pytest.mark.parametrize("path,name", CASES)
def test_case_teacher_forced(path, name):
    fx = load_fixture(path)
    exp = _expected(fx, name)
    generator = TalkerGenerator(_model(path, fx.meta, "sdpa"))
    out = generator.generate(
        **_request(fx.meta, fx.tensors, name),
        teacher_speech=exp["gen_speech"],
        teacher_motion=exp.get("gen_motion"),
    )
    _compare(fx, out, exp, name, strict=True)


@pytest.mark.parametrize("path,name", CASES)
def test_case_free_running(path, name):
    fx = load_fixture(path)
    exp = _expected(fx, name)
    generator = TalkerGenerator(_model(path, fx.meta, "eager"))
    out = generator.generate(**_request(fx.meta, fx.tensors, name))
    _compare(fx, out, exp, name, strict=False)
