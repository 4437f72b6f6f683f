"""Every fixture in the golden folder is one the parity tests check."""

from conftest import FIXTURE_KINDS, GOLDEN_DIR, fixture_kind


def test_every_fixture_is_claimed():
    jsons = sorted(GOLDEN_DIR.glob("*.json"))
    assert jsons, f"no fixtures in {GOLDEN_DIR}"
    unclaimed = [p.name for p in jsons if fixture_kind(p) is None]
    assert not unclaimed, f"fixtures no parity test reads: {unclaimed} (known kinds: {FIXTURE_KINDS})"


def test_every_fixture_has_its_tensors():
    for p in GOLDEN_DIR.glob("*.json"):
        assert p.with_suffix(".safetensors").is_file(), f"{p.name} has no .safetensors beside it"
