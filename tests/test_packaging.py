"""The Comfy Registry package: what `comfy node pack` puts in the zip, and the registry metadata.

The zip's file list is computed the way comfy-cli's ``zip_files`` does it: the git-tracked files
(every file when git cannot tell), minus the ``.comfyignore`` patterns matched with ``pathspec``'s
gitwildmatch (the library comfy-cli uses). ``python scripts/check_pack.py`` builds the real zip with
comfy-cli and prints its size and file list.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What runs in ComfyUI: the only top-level entries the zip may hold.
SHIPPED_TOP = {
    "__init__.py",
    "install.py",
    "nodes",
    "talker_core",
    "web",
    "example_workflows",
    "subgraphs",
    "locales",
    "requirements.txt",
    "pyproject.toml",
    "README.md",
    "LICENSE",
}
# Nothing that ships starts a subprocess (the MP4 writer is PyAV; the Registry flags any subprocess).
KNOWN_SUBPROCESS: set[str] = set()


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return [line for line in out.stdout.splitlines() if line.strip() and (ROOT / line).exists()]
    # not a git checkout: every file, less what .gitignore keeps out of the repository
    files = []
    for dirpath, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".ruff_cache")]  # ruff's cache ignores itself
        names = [n for n in names if n != ".git"]  # a worktree's pointer file
        files += [os.path.relpath(os.path.join(dirpath, n), ROOT).replace(os.sep, "/") for n in names]
    ignored = _spec(ROOT / ".gitignore")
    return [f for f in files if not ignored.match_file(f)]


def _spec(path: Path):
    pathspec = pytest.importorskip("pathspec")
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    with warnings.catch_warnings():  # newer pathspec deprecates the name; comfy-cli still uses it
        warnings.simplefilter("ignore", DeprecationWarning)
        return pathspec.PathSpec.from_lines("gitwildmatch", patterns)


def packed_files() -> list[str]:
    spec = _spec(ROOT / ".comfyignore")
    return sorted(f for f in tracked_files() if not spec.match_file(f))


def test_the_zip_carries_only_what_runs():
    files = packed_files()
    tops = {f.split("/")[0] for f in files}
    assert tops <= SHIPPED_TOP, f"not for the zip: {sorted(tops - SHIPPED_TOP)}"
    for f in files:
        assert not f.startswith(("tests/", "bench/", ".ci/", "scripts/", "docs/", "workflows_api/")), f
        assert not f.endswith((".safetensors", ".pt", ".pth", ".ckpt", ".npz")), f"a weights/fixture file: {f}"
        assert "/__pycache__/" not in f
    must = {
        "__init__.py",
        "nodes/__init__.py",
        "talker_core/__init__.py",
        "talker_core/data/motion_stats.json",
        "web/talker_t2av.js",
        "requirements.txt",
        "LICENSE",
        "example_workflows/1 Text to talking video.json",
        "subgraphs/talker_text_to_talking_video.json",
    }
    assert must <= set(files), sorted(must - set(files))
    docs = {f for f in files if f.startswith("web/docs/") and f.endswith(".md")}
    assert len(docs) >= 15, "the help pages must ship"
    size = sum((ROOT / f).stat().st_size for f in files)
    assert size < 3_000_000, f"{size} bytes before compression"


def test_every_python_file_the_pack_imports_ships():
    """Nothing the nodes or the library import lives in a folder the zip leaves out."""
    files = set(packed_files())
    for f in files:
        if not f.endswith(".py"):
            continue
        text = (ROOT / f).read_text(encoding="utf-8")
        for mod in re.findall(r"^\s*(?:from|import)\s+(tests|bench|scripts|comfy_stubs)\b", text, re.M):
            pytest.fail(f"{f} imports {mod}, which is not shipped")


def test_no_shipped_code_starts_processes():
    """The Registry's scanner flags subprocess use; a flagged version is not served by ComfyUI-Manager."""
    offenders = set()
    for f in packed_files():
        if f.endswith(".py"):
            text = (ROOT / f).read_text(encoding="utf-8")
            if re.search(r"^\s*(import subprocess|from subprocess import)|os\.system\(|os\.popen\(", text, re.M):
                offenders.add(f)
    assert offenders <= KNOWN_SUBPROCESS, sorted(offenders - KNOWN_SUBPROCESS)


def test_registry_metadata():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project, comfy = meta["project"], meta["tool"]["comfy"]
    name = project["name"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) and "comfy" not in name.lower(), name
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert any(c.startswith("Operating System :: ") for c in project["classifiers"])
    assert any(c.startswith("Environment :: GPU :: ") for c in project["classifiers"])
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert comfy["PublisherId"] and comfy["DisplayName"] == "Talker-T2AV"
    icon = comfy["Icon"]
    repo = project["urls"]["Repository"].replace("https://github.com/", "https://raw.githubusercontent.com/")
    assert icon.startswith(repo + "/main/"), icon
    local = ROOT / icon[len(repo + "/main/") :]
    assert local.is_file() and local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert local.stat().st_size < 100_000
