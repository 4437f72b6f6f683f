"""Shared test plumbing: the golden fixture set and tiny debug models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
for p in (str(ROOT), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

GOLDEN_DIR = Path(os.environ.get("TALKER_GOLDEN_DIR", TESTS / "golden"))

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


def load_fixture(path: Path | None):
    """(sidecar dict, tensors dict) of one fixture; fails loudly if absent."""
    if path is None:
        pytest.fail(f"no fixture of this kind in {GOLDEN_DIR}")
    from safetensors.torch import load_file

    meta = json.loads(path.read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    return meta, tensors


@pytest.fixture(scope="session")
def debug_models(tmp_path_factory):
    """A complete tiny random-weight model set in the published layout (written once per run)."""
    from talker_core.weights.debug_models import write_debug_models

    out = tmp_path_factory.mktemp("debug_models")
    write_debug_models(out, seed=0)
    return out
