"""``python -m talker_core check-models DIR``: what is in a models folder, and whether it will load.

The first thing to run after a download. For each model file of the component
registry (:mod:`talker_core.weights.components`: the published file, and the converted
sidecar when present) it prints what
was found (format, size, tensors, parameters, dtypes), the key accounting against
the model the file loads into (needed / present / known-unused / unexpected, and
every missing key, wrong shape, wrong dtype or key of another component), and a
one-line verdict. For the talker folder it also checks ``config.json`` against the
sizes built and finds the tokenizer and its chat template. The accounting is the
one the loaders use (:func:`talker_core.checkpoint.account_keys`), under the
strict switch: a key no list names is reported as a problem here even though a
normal load only logs it. The text is meant to be pasted into a bug report as it
is. Exit status: 0 when every file is present and fits, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from talker_core.checkpoint import CheckpointError, account_keys, describe_keys, sniff_format

__all__ = ["FileCheck", "check_file", "check_folder", "add_arguments", "run"]

log = logging.getLogger(__name__)

_LISTED = 8  # keys shown per category


@dataclass
class FileCheck:
    """The findings for one file: ``lines`` to print and ``problems`` (empty: it fits)."""

    kind: str
    path: Path
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.problems:
            return "verdict: OK - loads into the model it is for"
        return f"verdict: PROBLEM - {'; '.join(self.problems)}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _weights_file(kind: str, path: Path) -> Path:
    from talker_core.weights.components import component

    name = component(kind).weights_file
    return path / name if name else path


def check_file(kind: str, path: str | Path) -> FileCheck:
    """Check one file (for a folder component, the talker: its folder) as the loader of ``kind`` would read it."""
    from talker_core.weights import loaders

    path = Path(path)
    weights = _weights_file(kind, path)
    check = FileCheck(kind, weights)
    if not weights.is_file():
        check.problems.append(f"{weights} not found")
        return check
    fmt = sniff_format(weights)
    check.lines.append(f"format: {fmt}, {_size(weights.stat().st_size)} on disk")
    try:
        sd, config = loaders.read_component(kind, weights)
    except CheckpointError as exc:
        check.problems.append(str(exc))
        return check

    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    params = sum(t.numel() for t in tensors.values())
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
    check.lines.append(
        f"tensors: {len(tensors)}, parameters: {_count(params)} ({params}), dtypes: "
        + ", ".join(f"{d} x{n}" for d, n in dtypes.most_common())
    )
    check.lines.append(f"sizes: {_config_summary(kind, config)}")

    if kind == "talker":
        _check_talker_folder(weights.parent, config, check)

    try:
        module = loaders.build_module(kind, config)
    except (ValueError, RuntimeError) as exc:
        check.problems.append(f"cannot build the model these sizes describe ({exc})")
        return check
    report = account_keys(module, tensors, loaders.key_map(kind), kind)
    check.lines.append(
        f"keys: needed {len(report.needed)}, present {len(report.present)}, known-unused {len(report.unused)}, "
        f"unexpected {len(report.unexpected)}"
    )
    if report.unused:
        check.lines.append(f"  known-unused (skipped by design): {describe_keys(report.unused, _LISTED)}")
    loose = report.loose()
    if loose:
        check.lines.append(f"  unexpected: {describe_keys(loose, _LISTED)}")
        check.problems.append(
            f"{len(loose)} key(s) no list names ({describe_keys(loose, 3)}); a normal load skips them with a "
            "warning - please report them"
        )
    for other, keys in report.foreign.items():
        check.lines.append(f"  keys of another component ({other}): {describe_keys(keys, _LISTED)}")
        check.problems.append(f"{len(keys)} key(s) of the {other} component")
    if report.missing:
        check.lines.append(f"  missing: {describe_keys(report.missing, _LISTED)}")
        check.problems.append(f"{len(report.missing)} missing key(s) ({describe_keys(report.missing, 3)})")
    if report.shapes:
        check.lines.append("  wrong shape: " + "; ".join(report.shapes[:_LISTED]))
        check.problems.append(f"{len(report.shapes)} wrong shape(s) ({report.shapes[0]})")
    if report.dtypes:
        check.lines.append("  wrong dtype: " + "; ".join(report.dtypes[:_LISTED]))
        check.problems.append(f"{len(report.dtypes)} non-float tensor(s) ({report.dtypes[0]})")
    return check


def _config_summary(kind: str, config) -> str:
    if kind == "talker":
        llm = config.llm
        return (
            f"backbone {llm.num_hidden_layers} layers x {llm.hidden_size} (vocab {llm.vocab_size}), "
            f"DiT {config.dit.n_layer} layers, patch {config.patch_size}"
        )
    data = config.to_dict()
    flat = []
    for k, v in data.items():
        if isinstance(v, Mapping):
            v = "{" + ", ".join(f"{a}={b}" for a, b in list(v.items())[:4]) + (", ..." if len(v) > 4 else "") + "}"
        flat.append(f"{k}={v}")
    text = ", ".join(flat)
    return text if len(text) <= 200 else text[:197] + "..."


def _check_talker_folder(folder: Path, config, check: FileCheck) -> None:
    from talker_core.tokenizer import CHAT_TEMPLATE_FILE, MOTION_TOKEN, SPEECH_TOKEN, load_tokenizer
    from talker_core.weights.loaders import BACKBONE_CONFIG, check_backbone_config

    cfg = folder / BACKBONE_CONFIG
    if cfg.is_file():
        try:
            check_backbone_config(cfg, config)
            check.lines.append(f"{BACKBONE_CONFIG}: agrees with the sizes built")
        except CheckpointError as exc:
            check.lines.append(f"{BACKBONE_CONFIG}: disagrees")
            check.problems.append(str(exc))
    else:
        check.lines.append(f"{BACKBONE_CONFIG}: absent (sizes from the weights file)")
    try:
        tok = load_tokenizer(folder, add_missing_placeholders=False)
    except CheckpointError as exc:
        check.problems.append(str(exc))
        return
    where = CHAT_TEMPLATE_FILE if (folder / CHAT_TEMPLATE_FILE).is_file() else "tokenizer_config.json"
    ids = {t: tok.convert_tokens_to_ids(t) for t in (SPEECH_TOKEN, MOTION_TOKEN)}
    check.lines.append(
        f"tokenizer: {len(tok)} tokens, chat template from {where}, " + ", ".join(f"{t}={i}" for t, i in ids.items())
    )
    beyond = [t for t, i in ids.items() if i >= config.llm.vocab_size]
    if beyond:
        check.problems.append(
            f"tokenizer ids of {', '.join(beyond)} lie beyond the model's vocabulary of {config.llm.vocab_size}"
        )


def _files_to_check(root: Path) -> list[tuple[str, Path]]:
    from talker_core.weights.components import COMPONENTS

    out = []
    for c in COMPONENTS.values():
        for rel in dict.fromkeys((c.release, c.converted)):  # the talker's two are one
            p = root / rel
            if p.exists():
                out.append((c.kind, p))
    return out


def _environment() -> str:
    import talker_core

    parts = [
        f"talker_core {talker_core.__version__}",
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
    ]
    for name in ("transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy"):
        try:
            mod = __import__(name)
            parts.append(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError:
            parts.append(f"{name} absent")
    parts.append(platform.platform())
    return " | ".join(parts)


def check_folder(models_dir: str | Path) -> tuple[list[str], bool]:
    """(report lines, everything fine) for a models folder."""
    from talker_core.weights.loaders import find_models, missing_models_message

    root = Path(models_dir)
    lines = ["Talker-T2AV model check", f"folder: {root.resolve()}", f"environment: {_environment()}"]
    if not root.is_dir():
        lines.append(f"verdict: PROBLEM - {root} is not a folder")
        return lines, False
    ok = True
    checks = []
    for kind, path in _files_to_check(root):
        check = check_file(kind, path)
        checks.append(check)
        lines.append("")
        lines.append(f"[{kind}] {check.path}")
        lines += [f"  {line}" for line in check.lines]
        lines.append(f"  {check.verdict}")
        ok = ok and not check.problems
    missing = missing_models_message(root, find_models(root))
    lines.append("")
    if missing:
        ok = False
        lines += missing.splitlines()
    bad = sum(1 for c in checks if c.problems)
    lines.append(
        f"summary: {len(checks)} file(s) checked, {bad} with problems"
        + (", some missing" if missing else "")
        + (" -> OK" if ok else " -> PROBLEM")
    )
    return lines, ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from talker_core.weights.components import COMPONENTS

    layout = ", ".join(c.release + ("/" if c.is_folder else "") for c in COMPONENTS.values())
    parser.add_argument("models_dir", metavar="DIR", help=f"the models folder ({layout})")


def run(args: argparse.Namespace) -> int:
    lines, ok = check_folder(args.models_dir)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if ok else 1
