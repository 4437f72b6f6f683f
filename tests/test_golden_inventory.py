"""Every fixture in the golden folder is one the parity tests check, with sound data.

The noise-aware parity rule trusts ``<name>.alt.safetensors`` as the reference's own
rounding noise. These checks make sure that trust is earned: the alt run holds the same
tensors, identical inputs, and agrees with the expected outputs within the plain
tolerance wherever the fixtures' README says the reference is stable.
"""

import json
import re

import pytest
import torch
from conftest import (
    FIXTURE_KINDS,
    GOLDEN_DIR,
    NOISY_OUTPUTS,
    alt_path,
    assert_parity,
    fixture_kind,
    is_input,
    load_fixture,
    uncompared_outputs,
)

FIXTURES = sorted(GOLDEN_DIR.glob("*.json"))


def test_every_fixture_is_claimed():
    assert FIXTURES, f"no fixtures in {GOLDEN_DIR}"
    unclaimed = [p.name for p in FIXTURES if fixture_kind(p) is None]
    assert not unclaimed, f"fixtures no parity test reads: {unclaimed} (known kinds: {FIXTURE_KINDS})"


def test_every_fixture_has_its_tensors():
    for p in FIXTURES:
        assert p.with_suffix(".safetensors").is_file(), f"{p.name} has no .safetensors beside it"


def test_sidecar_lists_the_stored_tensors():
    for p in FIXTURES:
        fx = load_fixture(p)
        listed = json.loads(p.read_text()).get("tensors")
        if isinstance(listed, dict):
            assert set(listed) == set(fx.tensors), f"{p.name}: 'tensors' does not list what the file holds"


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in FIXTURES])
def test_alt_run_is_the_same_computation(path):
    """Inputs identical; outputs within the plain tolerance except where the README says the reference is noisy."""
    fx = load_fixture(path)
    if fx.alt is None:
        assert not alt_path(path).exists()
        return
    noisy = NOISY_OUTPUTS.get(fx.kind, ())
    for key, expected in fx.tensors.items():
        alt = fx.alt[key]
        assert alt.shape == expected.shape and alt.dtype == expected.dtype, key
        if is_input(fx.kind, key) or not expected.is_floating_point():
            assert torch.equal(alt, expected), f"{path.name}: {key} differs between the two reference runs"
        elif not any(re.fullmatch(p, key) for p in noisy):
            atol_key = "mel_atol" if key == "mel" and "mel_atol" in fx.meta["tolerance"] else "atol"
            assert_parity(alt, expected, None, **fx.tol(atol_key), what=f"{path.name}:{key} (alt vs expected)")


def test_uncompared_outputs_are_found():
    """The end-of-run check that every stored output was compared sees a missing comparison."""
    kind = "speaker"
    path = next(p for p in FIXTURES if fixture_kind(p) == kind)
    assert uncompared_outputs(kind, set()) == [f"{path.name}:embedding", f"{path.name}:hidden_states"]
    assert uncompared_outputs(kind, {(path.name, "embedding"), (path.name, "hidden_states")}) == []


def test_parity_rule():
    e = torch.tensor([1.0, 100.0, -2.0])
    alt = torch.tensor([1.0, 100.5, -2.0])
    assert_parity(e + torch.tensor([1e-4, 1.0, 0.0]), e, alt, atol=1e-3, rtol=0.0)  # 1.0 <= 2*0.5
    with pytest.raises(AssertionError, match="1 of 3"):
        assert_parity(e + torch.tensor([1e-4, 1.2, 0.0]), e, alt, atol=1e-3, rtol=0.0)
    with pytest.raises(AssertionError, match="1 of 3"):  # without alt: the plain tolerance
        assert_parity(e + torch.tensor([1e-4, 1.0, 0.0]), e, None, atol=1e-3, rtol=0.0)
    with pytest.raises(AssertionError, match="1 of 3"):  # the noise allowance is per element
        assert_parity(e + torch.tensor([2e-3, 0.0, 0.0]), e, alt, atol=1e-3, rtol=0.0)
    with pytest.raises(AssertionError):
        assert_parity(torch.tensor([float("nan"), 100.0, -2.0]), e, alt, atol=1e-3, rtol=0.0)
    with pytest.raises(AssertionError, match="shape"):
        assert_parity(e[:2], e, alt, atol=1.0, rtol=0.0)


def test_the_device_switch_refuses_a_device_that_is_not_there(tmp_path):
    """TALKER_TEST_DEVICE names a device that must exist: a run with one that does not stops at once
    with the variable's name, instead of quietly comparing on the CPU."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "TALKER_TEST_DEVICE": "cuda:99"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "tests/test_parity_speaker.py",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "TALKER_TEST_DEVICE='cuda:99' is not usable here" in run.stdout + run.stderr
