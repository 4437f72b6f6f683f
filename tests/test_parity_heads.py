"""Parity of the Talker heads against the ``heads_units`` fixtures.

Every fixture of the kind: build :class:`TalkerModel` from the fixture's
``config``, load ``golden_weights.make_state_dict(manifest, seed, unit_std)``
through ``TALKER_KEYS``/``load_strict``, feed the stored inputs and compare the
patch encoders (``pe_out_<stream>``), the DiT velocity heads (``dit_v_<stream>``),
the stop head (``stop_logits``) and the sampler runs (``sampler*_out``) by the
parity rule of tests/golden/README.md (``Fixture.check``).
"""

from __future__ import annotations

import pytest
import torch
from conftest import golden_params, load_fixture, on_test_device
from golden_weights import make_state_dict

from talker_core.checkpoint import load_strict
from talker_core.generation.flow_sampler import FlowSampler, FlowSettings
from talker_core.models.talker import TALKER_KEYS, TalkerConfig, TalkerModel

PARAMS = golden_params("heads_units")
_MODELS: dict = {}


def _setup(path):
    fx = load_fixture(path)
    meta = fx.meta
    key = str(path)
    if key not in _MODELS:
        model = TalkerModel(TalkerConfig.from_dict(meta["config"])).eval()
        weights = make_state_dict(meta["manifest"], meta["seed"], meta.get("unit_std", False))
        load_strict(model, weights, TALKER_KEYS, path.name, "Talker-T2AV backbone+heads")
        _MODELS[key] = on_test_device(model)
    return fx, fx.tensors, _MODELS[key]


def _stream_input(tensors, stem, stream):
    """Inputs of a stream are ``<stem>_<stream>`` when stored per stream, else the shared ``<stem>``."""
    return tensors.get(f"{stem}_{stream}", tensors[stem])


def _head(model, stream):
    return getattr(model, f"{stream}_cfm").estimator


@pytest.mark.parametrize("path", PARAMS)
def test_patch_encoders(path):
    fx, tensors, model = _setup(path)
    outputs = [k for k in tensors if k.startswith("pe_out_")]
    assert outputs, "fixture stores no patch encoder output"
    for key in outputs:
        stream = key[len("pe_out_") :]
        encoder = getattr(model, f"{stream}_patch_encoder")
        with torch.no_grad():
            got = encoder(_stream_input(tensors, "pe_in", stream))
        fx.check(key, got)


@pytest.mark.parametrize("path", PARAMS)
def test_dit_velocity_heads(path):
    fx, tensors, model = _setup(path)
    outputs = [k for k in tensors if k.startswith("dit_v_")]
    assert outputs, "fixture stores no DiT output"
    for key in outputs:
        stream = key[len("dit_v_") :]
        x = _stream_input(tensors, "dit_x", stream)
        t = _stream_input(tensors, "dit_t", stream)
        dt = torch.zeros_like(t)  # the fixture's mean-flow interval is zero (see its notes)
        with torch.no_grad():
            got = _head(model, stream)(
                x,
                _stream_input(tensors, "dit_mu", stream),
                t,
                _stream_input(tensors, "dit_cond", stream),
                _stream_input(tensors, "dit_gc", stream),
                dt,
            )
        fx.check(key, got)


@pytest.mark.parametrize("path", PARAMS)
def test_stop_head(path):
    fx, tensors, model = _setup(path)
    with torch.no_grad():
        got = model.stop_logit(tensors["stop_in"])
    assert got.dtype == torch.float32
    fx.check("stop_logits", got)


@pytest.mark.parametrize("path", PARAMS)
def test_flow_sampler_runs(path):
    """Each entry of ``sampler`` (in order) is stored as ``sampler_*``, ``sampler2_*``, …;
    a run without its own ``_mu`` reuses the first run's backbone state."""
    fx, tensors, model = _setup(path)
    runs = list(fx.meta["sampler"].items())
    assert runs, "fixture describes no sampler run"
    sampler = FlowSampler()
    for i, (_name, run) in enumerate(runs):
        prefix = "sampler" if i == 0 else f"sampler{i + 1}"
        settings = FlowSettings(
            steps=run["steps"],
            temperature=run["temperature"],
            cfg=run["cfg"],
            sway=run["sway"],
            cfg_zero_star=run["cfg_zero_star"],
        )
        mu = tensors.get(f"{prefix}_mu", tensors["sampler_mu"])
        got = sampler.sample(
            _head(model, run["head"]),
            tensors[f"{prefix}_noise"],
            mu,
            tensors[f"{prefix}_cond"],
            tensors[f"{prefix}_gc"],
            settings,
        )
        assert got.dtype == torch.float32
        fx.check(f"{prefix}_out", got)
