"""Shared test plumbing: the golden fixture set and tiny debug models."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# tests/golden is an exact copy of ../shared/golden; its golden_weights.py builds the fixtures' weights.
for p in (str(ROOT), str(TESTS), str(TESTS / "golden")):
    if p not in sys.path:
        sys.path.insert(0, p)

GOLDEN_DIR = Path(os.environ.get("TALKER_GOLDEN_DIR", TESTS / "golden"))

# Loading is strict in the tests: an unexpected key in a model file is an error here
# (users get a one-line report instead; see talker_core.checkpoint.STRICT_ENV).
os.environ.setdefault("TALKER_STRICT_LOADING", "1")

# TALKER_TEST_THREADS=N runs the whole session with N intra-op threads (CI runs the
# parity tests with 1 and with 2); unset leaves torch's default.
_THREADS = os.environ.get("TALKER_TEST_THREADS")
if _THREADS:
    import torch

    torch.set_num_threads(int(_THREADS))

# TALKER_TEST_DEVICE=cuda (or cuda:1, mps, ...) runs the parity fixtures on that device: the
# fixtures' tensors and the models built from them go there, in float32 with TF32 off, and every
# comparison is made on the CPU in float64. Unset: the CPU. The device must exist (no fallback).
TEST_DEVICE = os.environ.get("TALKER_TEST_DEVICE", "cpu")


def _check_test_device() -> None:
    import torch

    try:
        probe = torch.zeros(1, device=TEST_DEVICE)
    except (RuntimeError, AssertionError, ValueError) as e:
        raise pytest.UsageError(
            f"TALKER_TEST_DEVICE={TEST_DEVICE!r} is not usable here ({e}); unset it for the CPU"
        ) from e
    if probe.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


if TEST_DEVICE != "cpu":
    _check_test_device()


def on_test_device(obj):
    """``obj`` (a module, a tensor, or a dict/list/tuple of them) on ``TEST_DEVICE``."""
    import torch

    if isinstance(obj, (torch.nn.Module, torch.Tensor)):
        return obj.to(TEST_DEVICE)
    if isinstance(obj, dict):
        return {k: on_test_device(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_test_device(v) for v in obj)
    return obj


# Fixture kinds, by the stem their file name starts with. Every *.json in the
# golden folder must belong to one kind (tests/test_golden_inventory.py checks it).
FIXTURE_KINDS = ("heads_units", "heads_generate", "whisperx_vae", "liax", "speaker")


def fixture_kind(path: Path) -> str | None:
    for kind in FIXTURE_KINDS:
        if path.stem == kind or path.stem.startswith(kind + "_") or path.stem.startswith(kind + "-"):
            return kind
    return None


def golden_fixtures(kind: str) -> list[Path]:
    """Every fixture JSON of one kind in $TALKER_GOLDEN_DIR (sorted)."""
    return sorted(p for p in GOLDEN_DIR.glob("*.json") if fixture_kind(p) == kind)


def golden_params(kind: str):
    """pytest parameters over the fixtures of one kind; a missing kind is a failure, not a skip."""
    paths = golden_fixtures(kind)
    if not paths:
        return [pytest.param(None, id=f"{kind}-missing")]
    return [pytest.param(p, id=p.stem) for p in paths]


# Tensors of each fixture kind that are inputs (full-match regexes); every other stored tensor
# is an expected output that some parity test must compare (checked at the end of a full run).
FIXTURE_INPUTS: dict[str, tuple[str, ...]] = {
    "heads_units": (r"pe_in(_\w+)?", r"dit_(x|t|mu|cond|gc)(_\w+)?", r"stop_in", r"sampler\d*_(noise|mu|cond|gc)"),
    "heads_generate": (r"text_ids", r"speaker", r"ref_(speech|motion)", r"forced_(speech|motion)"),
    "whisperx_vae": (r"wav_44k",),
    "liax": (r"source", r"motion"),
    "speaker": (r"wav_16k",),
}

# Outputs the README of the fixtures lists as amplifying float32 rounding (the reference
# disagrees with itself beyond the plain tolerance there). Everywhere else the two reference
# runs must agree within the plain tolerance: tests/test_golden_inventory.py checks it.
NOISY_OUTPUTS: dict[str, tuple[str, ...]] = {
    "heads_generate": (r"\w+\.gen_(speech|motion)",),  # free-running generations of every case
    "whisperx_vae": (r"recon", r"latent"),
    "liax": (r"frames",),
}


def is_input(kind: str, key: str) -> bool:
    return any(re.fullmatch(p, key) for p in FIXTURE_INPUTS[kind])


def output_keys(kind: str, tensors) -> list[str]:
    return sorted(k for k in tensors if not is_input(kind, k))


def alt_path(path: Path) -> Path:
    return path.with_name(path.stem + ".alt.safetensors")


def assert_parity(actual, expected, alt=None, *, atol: float, rtol: float, what: str = "") -> None:
    """The parity rule of tests/golden/README.md, element by element.

    With ``alt`` (the reference's second run on the same inputs):
    ``|actual - expected| <= atol + rtol*|expected| + 2*|alt - expected|``; without it the
    plain ``atol + rtol*|expected|``. Shapes and dtypes must match exactly. The message
    names the worst element and how many elements fail.
    """
    import torch

    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    a = actual.detach().cpu().double()
    e = expected.detach().cpu().double()
    bound = atol + rtol * e.abs()
    if alt is not None:
        alt = torch.as_tensor(alt)
        assert alt.shape == expected.shape, f"{what}: alt shape {tuple(alt.shape)} != expected {tuple(e.shape)}"
        bound = bound + 2 * (alt.detach().cpu().double() - e).abs()
    diff = (a - e).abs()
    bad = ~(diff <= bound)  # NaN counts as a failure
    if bool(bad.any()):
        excess = torch.where(bad, (diff - bound).nan_to_num(float("inf")), torch.zeros_like(diff))
        i = int(excess.flatten().argmax())
        idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), e.shape)) if e.ndim else ()
        rule = "atol + rtol*|e| + 2*|alt - e|" if alt is not None else "atol + rtol*|e|"
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {e.numel()} elements outside {rule} (atol={atol}, rtol={rtol}); "
            f"worst at {idx}: actual {a.flatten()[i].item():.6g}, expected {e.flatten()[i].item():.6g}, "
            f"allowed |diff| {bound.flatten()[i].item():.3g}, got {diff.flatten()[i].item():.3g}"
        )


# (fixture file name, output key) pairs compared so far in this session
COMPARED: set[tuple[str, str]] = set()


def _log_comparison(fixture: str, key: str) -> None:
    """With $TALKER_PARITY_LOG set, append ``test id, fixture, key`` (JSON lines) before comparing."""
    log = os.environ.get("TALKER_PARITY_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        with open(log, "a") as f:
            f.write(json.dumps({"test": test, "fixture": fixture, "key": key}) + "\n")


@dataclass
class Fixture:
    """One fixture: its sidecar, its tensors, and the reference's second run (``alt``, or None)."""

    path: Path
    meta: dict
    tensors: dict
    alt: dict | None = None
    kind: str = field(default="")

    def tol(self, atol_key: str = "atol") -> dict:
        return dict(atol=self.meta["tolerance"][atol_key], rtol=self.meta["tolerance"]["rtol"])

    def check(self, key: str, actual, *, expected=None, alt=None, strict: bool = False, atol_key: str = "atol"):
        """Compare ``actual`` with the stored output ``key`` by :func:`assert_parity`.

        ``expected``/``alt`` override the stored tensors (same transform applied to both, e.g.
        a reshape); ``strict`` uses the plain tolerance even where an alt run exists
        (teacher-forced generation)."""
        assert not is_input(self.kind, key), f"{key} is an input of {self.path.name}, not an output"
        exp = self.tensors[key] if expected is None else expected
        if strict:
            ref2 = None
        elif alt is not None:
            ref2 = alt
        else:
            ref2 = None if self.alt is None else self.alt[key]
        COMPARED.add((self.path.name, key))
        _log_comparison(self.path.name, key)
        assert_parity(actual, exp, ref2, **self.tol(atol_key), what=f"{self.path.name}:{key}")


def load_fixture(path: Path | None) -> Fixture:
    """A fixture (its tensors on ``TEST_DEVICE``) and, when ``<name>.alt.safetensors`` is beside it, the
    reference's second run (on the CPU: only compared against); fails loudly if absent."""
    if path is None:
        pytest.fail(f"no fixture of this kind in {GOLDEN_DIR}")
    from safetensors.torch import load_file

    meta = json.loads(path.read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    alt = None
    if alt_path(path).is_file():
        alt = load_file(str(alt_path(path)))
        assert set(alt) == set(tensors), f"{alt_path(path).name} does not hold the same tensors as its fixture"
    return Fixture(path, meta, on_test_device(tensors), alt, fixture_kind(path) or "")


# --------------------------------------------------------------------------- every output compared

# the parity test module of each fixture kind
PARITY_MODULES = {
    "heads_units": "test_parity_heads.py",
    "heads_generate": "test_parity_generate.py",
    "whisperx_vae": "test_parity_whisperx_vae.py",
    "liax": "test_parity_liax.py",
    "speaker": "test_parity_speaker.py",
}
_DESELECTED: set[str] = set()


def pytest_deselected(items):
    for item in items:
        _DESELECTED.add(Path(str(item.fspath)).name)


def uncompared_outputs(kind: str, compared: set[tuple[str, str]]) -> list[str]:
    """``fixture:key`` of every stored output of ``kind`` in GOLDEN_DIR that no comparison touched."""
    from safetensors import safe_open

    missing = []
    for path in golden_fixtures(kind):
        with safe_open(str(path.with_suffix(".safetensors")), framework="pt") as f:
            keys = list(f.keys())
        missing += [
            f"{path.name}:{k}" for k in sorted(keys) if not is_input(kind, k) and (path.name, k) not in compared
        ]
    return missing


def pytest_sessionfinish(session, exitstatus):
    """After a passing run that included a whole parity module, fail if a stored output was never compared."""
    if exitstatus != 0 or not session.items:
        return
    ran = {Path(str(item.fspath)).name for item in session.items}
    partial = {Path(a.split("::")[0]).name for a in session.config.args if "::" in a}
    problems = []
    for kind, module in PARITY_MODULES.items():
        if module in ran and module not in _DESELECTED and module not in partial:
            problems += uncompared_outputs(kind, COMPARED)
    if problems:
        session.config.get_terminal_writer().line(
            "ERROR: stored outputs no parity test compared: " + ", ".join(problems), red=True
        )
        session.exitstatus = 1


@pytest.fixture(scope="session")
def debug_models(tmp_path_factory):
    """A complete tiny random-weight model set in the published layout (written once per run)."""
    from talker_core.weights.debug_models import write_debug_models

    out = tmp_path_factory.mktemp("debug_models")
    write_debug_models(out, seed=0)
    return out
