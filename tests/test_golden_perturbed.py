"""The parity tests can fail: run them on copies of the fixtures whose expected outputs are moved by 2 %.

Two copies of $TALKER_GOLDEN_DIR are made, inputs untouched:

* ``shifted``: every expected output ``e`` becomes ``1.02·e`` and the alt run moves with it
  (``alt + 0.02·e``), so the reference's own noise ``alt − e`` is what the real fixtures
  store. This is what an implementation 2 % off looks like to the parity rule. Every
  parity test that compares an output must fail, except a comparison where 2 % of every
  value lies inside the plain tolerance (no tolerance-based test could see it there).
* ``alt unchanged``: only the expected outputs move. The noise-aware rule cannot see this
  by construction (``|alt − e'|`` grows with the shift, and so does the allowance), so the
  guards are the strict checks: the alt-consistency check of the fixture data
  (test_golden_inventory) and the strict teacher-forced generation tests must fail.

Each copy is run by pytest in a subprocess; ``TALKER_PARITY_LOG`` records which test
compared which output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import GOLDEN_DIR, ROOT, alt_path, fixture_kind, is_input
from safetensors.torch import load_file, save_file

SHIFT = 0.02
PARITY_MODULES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_parity_*.py"))
# renders 512×512 frames again and compares them with our own batched render, not with the fixture
NOT_COMPARING = "not test_single_row_equals_batched_row"


def _perturbed_copy(dst: Path, move_alt: bool) -> None:
    dst.mkdir()
    for src in GOLDEN_DIR.iterdir():
        if src.suffix == ".json" or src.name.endswith(".py") or src.name == "README.md":
            shutil.copy2(src, dst / src.name)
    for meta in GOLDEN_DIR.glob("*.json"):
        kind = fixture_kind(meta)
        expected = load_file(str(meta.with_suffix(".safetensors")))
        alt = load_file(str(alt_path(meta))) if alt_path(meta).is_file() else None
        new_e, new_alt = dict(expected), dict(alt or {})
        for key, e in expected.items():
            if is_input(kind, key) or not e.is_floating_point() or (key.endswith("p_stop") and bool((e == -1).all())):
                continue
            new_e[key] = e * (1 + SHIFT)
            if alt is not None and move_alt:
                new_alt[key] = alt[key] + SHIFT * e
        save_file(new_e, str(dst / meta.with_suffix(".safetensors").name))
        if alt is not None:
            save_file(new_alt, str(dst / alt_path(meta).name))


def _run(golden: Path, work: Path, args: list[str]) -> tuple[int, dict[str, str], list[dict], str]:
    log, xml = work / "comparisons.jsonl", work / "junit.xml"
    env = dict(os.environ, TALKER_GOLDEN_DIR=str(golden), TALKER_PARITY_LOG=str(log))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    outcome = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        nodeid = f"{path}::{case.get('name')}"
        failed = case.find("failure") is not None or case.find("error") is not None
        outcome[nodeid] = "failed" if failed else ("skipped" if case.find("skipped") is not None else "passed")
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, outcome, lines, proc.stdout[-3000:]


def _visible(fixture: str, key: str) -> bool:
    """Whether a 2 % change of this output exceeds the plain tolerance somewhere."""
    meta = json.loads((GOLDEN_DIR / fixture).read_text())
    e = load_file(str((GOLDEN_DIR / fixture).with_suffix(".safetensors")))[key].double()
    tol = meta["tolerance"]
    atol = tol.get("mel_atol", tol["atol"]) if key == "mel" else tol["atol"]
    return bool(((SHIFT * e).abs() > atol + tol["rtol"] * (e * (1 + SHIFT)).abs()).any())


def test_parity_tests_fail_on_shifted_outputs(tmp_path):
    golden = tmp_path / "golden"
    _perturbed_copy(golden, move_alt=True)
    rc, outcome, log, tail = _run(golden, tmp_path, [*PARITY_MODULES, "-k", NOT_COMPARING])
    assert rc == 1, f"pytest exit {rc} on the shifted fixtures:\n{tail}"
    comparing: dict[str, list[tuple[str, str]]] = {}
    for entry in log:
        comparing.setdefault(entry["test"], []).append((entry["fixture"], entry["key"]))
    assert comparing, "no parity test compared anything"
    survived = []
    for test, keys in comparing.items():
        if outcome.get(test) != "failed" and any(_visible(f, k) for f, k in keys):
            survived.append(f"{test} ({', '.join(k for _, k in keys)})")
    assert not survived, "parity tests that passed on outputs moved by 2 %:\n" + "\n".join(survived)


def test_strict_checks_fail_when_only_expected_moves(tmp_path):
    golden = tmp_path / "golden"
    _perturbed_copy(golden, move_alt=False)
    args = [
        "tests/test_golden_inventory.py::test_alt_run_is_the_same_computation",
        "tests/test_parity_generate.py::test_case_teacher_forced",
    ]
    rc, outcome, _, tail = _run(golden, tmp_path, args)
    assert rc == 1, f"pytest exit {rc}:\n{tail}"
    assert outcome, tail
    passed = [t for t, o in outcome.items() if o != "failed"]
    assert not passed, f"checks that passed with the expected outputs moved by 2 % and alt unchanged: {passed}"
    assert len([t for t in outcome if "teacher_forced" in t]) >= 1
    assert len([t for t in outcome if "alt_run" in t]) == len(list(GOLDEN_DIR.glob("*.json")))
