"""Parity of the Talker heads against the ``heads_units`` fixtures.

Every fixture of the kind: build :class:`TalkerModel` from the fixture's
``config``, load ``golden_weights.make_state_dict(manifest, seed, unit_std)``
through ``TALKER_KEYS``/``load_strict``, feed the stored inputs and compare the
patch encoders (``pe_out_<stream>``), the DiT velocity heads (``dit_v_<stream>``),
the stop head (``stop_logits``) and the sampler runs (``sampler*_out``) with the
fixture's tolerance.
"""

from __future__ import annotations

import pytest
import torch
from conftest import golden_params, load_fixture
from golden_weights import make_state_dict

from talker_core.checkpoint import load_strict
from talker_core.generation.flow_sampler import FlowSampler, FlowSettings
from talker_core.models.talker import TALKER_KEYS, TalkerConfig, TalkerModel

PARAMS = golden_params("heads_units")
_MODELS: dict = {}


def _setup(path):
    meta, tensors = load_fixture(path)
    key = str(path)
    if key not in _MODELS:
        model = TalkerModel(TalkerConfig.from_dict(meta["config"])).eval()
        weights = make_state_dict(meta["manifest"], meta["seed"], meta.get("unit_std", False))
        load_strict(model, weights, TALKER_KEYS, path.name, "Talker-T2AV backbone+heads")
        _MODELS[key] = model
    tol = dict(atol=meta["tolerance"]["atol"], rtol=meta["tolerance"]["rtol"])
    return meta, tensors, _MODELS[key], tol


def _stream_input(tensors, stem, stream):
    """Inputs of a stream are ``<stem>_<stream>`` when stored per stream, else the shared ``<stem>``."""
    return tensors.get(f"{stem}_{stream}", tensors[stem])


def _head(model, stream):
    return getattr(model, f"{stream}_cfm").estimator


@pytest.mark.parametrize("path", PARAMS)
def test_patch_encoders(path):
    meta, tensors, model, tol = _setup(path)
    outputs = [k for k in tensors if k.startswith("pe_out_")]
    assert outputs, "fixture stores no patch encoder output"
    for key in outputs:
        stream = key[len("pe_out_") :]
        encoder = getattr(model, f"{stream}_patch_encoder")
        with torch.no_grad():
            got = encoder(_stream_input(tensors, "pe_in", stream))
        torch.testing.assert_close(got, tensors[key], **tol, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("path", PARAMS)
def test_dit_velocity_heads(path):
    meta, tensors, model, tol = _setup(path)
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
        torch.testing.assert_close(got, tensors[key], **tol, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("path", PARAMS)
def test_stop_head(path):
    meta, tensors, model, tol = _setup(path)
    with torch.no_grad():
        got = model.stop_logit(tensors["stop_in"])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, tensors["stop_logits"], **tol)


@pytest.mark.parametrize("path", PARAMS)
def test_flow_sampler_runs(path):
    """Each entry of ``sampler`` (in order) is stored as ``sampler_*``, ``sampler2_*``, …;
    a run without its own ``_mu`` reuses the first run's backbone state."""
    meta, tensors, model, tol = _setup(path)
    runs = list(meta["sampler"].items())
    assert runs, "fixture describes no sampler run"
    sampler = FlowSampler()
    for i, (name, run) in enumerate(runs):
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
        torch.testing.assert_close(
            got, tensors[f"{prefix}_out"], **tol, msg=lambda m, name=name: f"sampler run {name!r}: {m}"
        )


@pytest.mark.parametrize("path", PARAMS)
def test_every_stored_output_is_checked(path):
    meta, tensors, _, _ = _setup(path)
    checked_prefixes = ("pe_out_", "dit_v_", "stop_logits")
    outputs = {k for k in tensors if k.startswith(checked_prefixes) or k.endswith("_out")}
    sampler_outputs = {("sampler" if i == 0 else f"sampler{i + 1}") + "_out" for i in range(len(meta["sampler"]))}
    unchecked = {k for k in outputs if not k.startswith(checked_prefixes) and k not in sampler_outputs}
    assert not unchecked, f"outputs no test compares: {sorted(unchecked)}"
