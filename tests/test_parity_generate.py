"""Parity of the generation engine against the ``heads_generate`` fixtures.

For every case of every fixture of the kind: build the model from the fixture's
``config`` and manifest weights, run :class:`TalkerGenerator` with the case's
mode, prefix, forced stream, step limit, seed and stop settings, and compare
``prefill_hidden``, ``gen_speech``, ``gen_motion``, ``p_stop`` and ``steps``
with the fixture's tolerance.

Two ways of running each case:

* teacher-forced: every patch is sampled exactly as in a free run (same noise
  draws, same stop checks) but the stored patches are fed back, so each output
  is compared one step ahead of the reference's own history. This checks every
  output strictly on any machine.
* free-running: the plain run. Autoregressive sampling amplifies float32
  rounding differences (about 1e-6, which depend on the BLAS kernels and the
  thread count) roughly twofold per patch, so by patch 10 a run on another
  machine can drift past the tolerance. The run uses the fixture's numeric
  regime (eager attention, two intra-op threads, which reproduces the stored
  run bit for bit on x86-64 with MKL). It is strict: on a machine whose float32
  rounding differs it may fail by drift alone, and then the teacher-forced test
  tells a rounding drift from a real difference.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import golden_params, load_fixture
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
        _MODELS[key] = model
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


def _expected(meta, tensors, name) -> dict:
    exp = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(name + ".")}
    p_stop = exp["p_stop"]
    if p_stop.numel() == 1 and float(p_stop[0]) == -1.0:  # "-1 if none"
        exp["p_stop"] = p_stop[:0]
    exp["steps"] = int(exp["steps"].item())
    assert exp["steps"] == meta["cases"][name]["steps_done"]
    return exp


def _compare(out, exp, tol, name):
    torch.testing.assert_close(
        out.prefill_hidden, exp["prefill_hidden"], **tol, msg=lambda m: f"{name}.prefill_hidden: {m}"
    )
    assert out.steps == exp["steps"], f"{name}: {out.steps} patches generated, fixture {exp['steps']}"
    got_p = torch.tensor(out.p_stop, dtype=torch.float32)
    assert got_p.shape == exp["p_stop"].shape, (
        f"{name}: stop evaluated {len(out.p_stop)} times, fixture {exp['p_stop'].numel()}"
    )
    torch.testing.assert_close(got_p, exp["p_stop"], **tol, msg=lambda m: f"{name}.p_stop: {m}")
    torch.testing.assert_close(out.gen_speech, exp["gen_speech"], **tol, msg=lambda m: f"{name}.gen_speech: {m}")
    if "gen_motion" in exp:
        assert out.gen_motion is not None, f"{name}: no motion generated"
        torch.testing.assert_close(out.gen_motion, exp["gen_motion"], **tol, msg=lambda m: f"{name}.gen_motion: {m}")
    else:
        assert out.gen_motion is None, f"{name}: motion generated in a speech-only case"


def _load(path):
    meta, tensors = load_fixture(path)
    tol = dict(atol=meta["tolerance"]["atol"], rtol=meta["tolerance"]["rtol"])
    return meta, tensors, tol


@pytest.mark.parametrize("path,name", CASES)
def test_case_teacher_forced(path, name):
    meta, tensors, tol = _load(path)
    exp = _expected(meta, tensors, name)
    generator = TalkerGenerator(_model(path, meta, "sdpa"))
    out = generator.generate(
        **_request(meta, tensors, name),
        teacher_speech=exp["gen_speech"],
        teacher_motion=exp.get("gen_motion"),
    )
    _compare(out, exp, tol, name)


@pytest.mark.parametrize("path,name", CASES)
def test_case_free_running(path, name):
    meta, tensors, tol = _load(path)
    exp = _expected(meta, tensors, name)
    generator = TalkerGenerator(_model(path, meta, "eager"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = generator.generate(**_request(meta, tensors, name))
    finally:
        torch.set_num_threads(threads)
    _compare(out, exp, tol, name)
