"""talker_core is a plain library: importing it touches no host state, and no code path unpickles unsafely."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, logging, pkgutil, importlib, sys
import torch

def flags():
    return {
        "cudnn.enabled": torch.backends.cudnn.enabled,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "default_dtype": str(torch.get_default_dtype()),
        "default_device": str(torch.get_default_device()),
        "grad_enabled": torch.is_grad_enabled(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "num_threads": torch.get_num_threads(),
        "root_handlers": len(logging.getLogger().handlers),
        "root_level": logging.getLogger().level,
        "rng": torch.random.get_rng_state().sum().item(),
    }

before = flags()
import talker_core
names = sorted(
    m.name for m in pkgutil.walk_packages(talker_core.__path__, "talker_core.") if not m.name.endswith("__main__")
)
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
after = flags()
host = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes")
)
optional = sorted(m for m in sys.modules if m.split(".")[0] in ("ray",))
print(json.dumps({"modules": names, "failed": failed, "before": before, "after": after, "host": host, "optional": optional}))
"""


def test_importing_every_module_leaves_the_host_alone():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 10
    assert report["failed"] == {}
    assert report["host"] == [], "talker_core imported ComfyUI modules"
    assert report["optional"] == [], "importing talker_core imported an optional extra (Ray is for batch --ray only)"
    assert "talker_core.batch.ray_runner" in report["modules"]
    changed = {k: (v, report["after"][k]) for k, v in report["before"].items() if report["after"][k] != v}
    assert changed == {}, f"importing talker_core changed global state: {changed}"


# --------------------------------------------------------------------------- static checks

_SKIP_DIRS = {
    ".git",
    "__pycache__",
    ".venv",
    "venv",
    "env",
    "node_modules",
    "build",
    "dist",
    ".mypy_cache",
    ".pytest_cache",
    ".tox",
    "site-packages",
}


def _project_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        out.append(path)
    return sorted(out)


def _is_torch_load(func: ast.expr) -> bool:
    # torch.load(...), torch.serialization.load(...), or a bare load imported from torch
    if isinstance(func, ast.Attribute) and func.attr == "load":
        base = func.value
        if isinstance(base, ast.Name) and base.id == "torch":
            return True
        if isinstance(base, ast.Attribute) and base.attr == "serialization":
            return True
    return False


def _weights_only_true(call: ast.Call) -> bool:
    for kw in call.keywords:
        if kw.arg == "weights_only":
            return isinstance(kw.value, ast.Constant) and kw.value.value is True
    return False


def test_every_torch_load_is_weights_only_and_nothing_evaluates_code():
    files = _project_files()
    assert any(p.parts[-3:] == ("talker_core", "weights", "loaders.py") for p in files)
    problems = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imported_load = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization")
            for alias in node.names
            if alias.name == "load"
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            func = node.func
            is_load = _is_torch_load(func) or (isinstance(func, ast.Name) and func.id in imported_load)
            if is_load and not _weights_only_true(node):
                problems.append(f"{where}: torch.load without weights_only=True")
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                problems.append(f"{where}: call to {func.id}()")
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("eval", "exec")
                and (isinstance(func.value, ast.Name) and func.value.id == "builtins")
            ):
                problems.append(f"{where}: call to builtins.{func.attr}()")
    assert problems == [], "\n".join(problems)


def test_the_static_check_catches_what_it_should():
    code = "import torch\nfrom torch import load as L\ntorch.load('x')\ntorch.load('x', weights_only=False)\nL('y')\neval('1')\nm.eval()\n"
    tree = ast.parse(code)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    flagged = [n.lineno for n in calls if _is_torch_load(n.func) and not _weights_only_true(n)]
    assert flagged == [3, 4]
    assert [n.lineno for n in calls if isinstance(n.func, ast.Name) and n.func.id == "eval"] == [6]


# --------------------------------------------------------------------------- layering

HOST_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes")


def _imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module an ``import`` / ``from ... import`` statement of the file names, resolved
    (relative imports included), anywhere in the file (function-level imports too)."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def _layer_violations(files, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    bad = []
    for path in files:
        for module in sorted(_imported_modules(path, root)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(root).as_posix()} imports {module}")
    return bad


def test_the_core_never_imports_the_fast_path_or_the_host():
    """models/ and generation/ are the reference: the fast path depends on them, never the reverse;
    nothing in talker_core imports ComfyUI or the pack's node layer."""
    pkg = ROOT / "talker_core"
    core = [*sorted((pkg / "models").rglob("*.py")), *sorted((pkg / "generation").rglob("*.py"))]
    assert len(core) > 10
    assert _layer_violations(core, ("talker_core.fast",)) == []
    assert _layer_violations(sorted(pkg.rglob("*.py")), HOST_MODULES) == []


def test_the_layering_check_catches_what_it_should(tmp_path):
    probe = tmp_path / "talker_core" / "models" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "def f():\n    from talker_core.fast import kernels\n    from ..fast.program import FastPath\n"
        "    import nodes.host\n    from . import blocks\n"
    )
    fast = _layer_violations([probe], ("talker_core.fast",), tmp_path)
    assert "talker_core/models/probe.py imports talker_core.fast.kernels" in fast
    assert "talker_core/models/probe.py imports talker_core.fast.program" in fast
    assert _layer_violations([probe], HOST_MODULES, tmp_path) == ["talker_core/models/probe.py imports nodes.host"]
    assert "talker_core.models.blocks" in _imported_modules(probe, tmp_path)
