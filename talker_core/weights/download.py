"""Fetch the released model files from their public sources into the documented layout.

Sources (all public on the Hugging Face Hub):

| file in the models folder        | repository                                   | file there                  |
|----------------------------------|----------------------------------------------|-----------------------------|
| ``talker-t2av/`` (weights+tokenizer) | ``HKUSTAudio/Talker-T2AV``               | ``talker-t2av/*``           |
| ``whisperx-vae/model.ckpt``      | ``HKUSTAudio/Talker-T2AV``                   | ``whisperx-vae/model.ckpt`` |
| ``lia-x.pt``                     | ``YaohuiW/LIA-X``                            | ``lia-x.pt``                |
| ``wavlm_large_finetune.pth``     | ``yfyeung/wavlm-large-speaker-verification`` | ``wavlm-large.pt`` (a mirror of Microsoft UniSpeech's WavLM-Large + ECAPA-TDNN speaker-verification checkpoint) |

Downloads resume (the hub client keeps partial files), and every file is checked
against the size and, for large (LFS) files, the SHA-256 the hub reports before it
is moved into place. Nothing here runs unless asked: the command line's
``download`` and the ComfyUI loaders' explicit ``download_if_missing`` switch.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["Source", "SOURCES", "DownloadError", "download_models", "plan_downloads"]

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A model file could not be fetched or failed its check."""


@dataclass(frozen=True)
class Source:
    kind: str  # "talker", "whisperx_vae", "liax", "speaker"
    repo_id: str
    remote: str  # path in the repository; may be a glob ("talker-t2av/*")
    local: str  # path under the models folder; for a glob, the folder that receives the matches

    @property
    def is_glob(self) -> bool:
        return any(c in self.remote for c in "*?[")


SOURCES: tuple[Source, ...] = (
    Source("talker", "HKUSTAudio/Talker-T2AV", "talker-t2av/*", "talker-t2av"),
    Source("whisperx_vae", "HKUSTAudio/Talker-T2AV", "whisperx-vae/model.ckpt", "whisperx-vae/model.ckpt"),
    Source("liax", "YaohuiW/LIA-X", "lia-x.pt", "lia-x.pt"),
    Source("speaker", "yfyeung/wavlm-large-speaker-verification", "wavlm-large.pt", "wavlm_large_finetune.pth"),
)


@dataclass(frozen=True)
class RemoteFile:
    repo_id: str
    path: str  # in the repository
    size: Optional[int]
    sha256: Optional[str]  # LFS files only
    local: Path


class HubClient:
    """The few hub calls we need, behind one seam so tests can stand in for the network."""

    def list_files(self, repo_id: str) -> list[tuple[str, Optional[int], Optional[str]]]:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo_id, files_metadata=True)
        out = []
        for s in info.siblings or []:
            sha = getattr(getattr(s, "lfs", None), "sha256", None)
            out.append((s.rfilename, s.size, sha))
        return out

    def fetch(self, repo_id: str, path: str, cache_dir: Path) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, path, local_dir=str(cache_dir)))


def plan_downloads(models_dir: Path, client: HubClient, kinds: Optional[Iterable[str]] = None) -> list[RemoteFile]:
    """Which remote files land where, for the requested component kinds (default: all)."""
    wanted = set(kinds) if kinds else {s.kind for s in SOURCES}
    unknown = wanted - {s.kind for s in SOURCES}
    if unknown:
        raise ValueError(f"unknown model kind(s) {sorted(unknown)}; choose from {[s.kind for s in SOURCES]}")
    listings: dict[str, list] = {}
    plan: list[RemoteFile] = []
    for src in SOURCES:
        if src.kind not in wanted:
            continue
        if src.repo_id not in listings:
            listings[src.repo_id] = client.list_files(src.repo_id)
        files = listings[src.repo_id]
        if src.is_glob:
            base = src.remote.split("*")[0]
            matches = [f for f in files if fnmatch.fnmatch(f[0], src.remote)]
            for name, size, sha in matches:
                plan.append(RemoteFile(src.repo_id, name, size, sha, models_dir / src.local / name[len(base) :]))
        else:
            matches = [f for f in files if f[0] == src.remote]
            for name, size, sha in matches:
                plan.append(RemoteFile(src.repo_id, name, size, sha, models_dir / src.local))
        if not matches:
            raise DownloadError(
                f"{src.repo_id} has no file matching {src.remote!r}; the release layout may have changed. "
                f"Place {src.local} under {models_dir} by hand (see README: Model files)."
            )
    return plan


_NETWORK_ERROR_NAMES = ("Connect", "Timeout", "Proxy", "NameResolution", "Offline", "NetworkError", "SSLError")


def _network_failure(exc: BaseException) -> Optional[BaseException]:
    """The exception in ``exc``'s chain that says the network is down or the hub unreachable (None if none)."""
    import socket

    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError, socket.gaierror)):
            return current
        if any(part in type(current).__name__ for part in _NETWORK_ERROR_NAMES):
            return current
        current = current.__cause__ or current.__context__
    return None


def _unreachable_message(models_dir: Path, cause: BaseException) -> str:
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    reason = " ".join(str(cause).split())[:160] or type(cause).__name__
    layout = ", ".join(f"{s.local}{'/' if s.is_glob else ''} (from {s.repo_id}: {s.remote})" for s in SOURCES)
    return (
        f"the Hugging Face hub cannot be reached at {endpoint} ({reason}). Check the network connection, any proxy "
        "(HTTPS_PROXY / HTTP_PROXY), and HF_ENDPOINT if you use a mirror. Files fetched by other means go under "
        f"{models_dir}: {layout}"
    )


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, rf: RemoteFile) -> None:
    size = path.stat().st_size
    if rf.size is not None and size != rf.size:
        raise DownloadError(
            f"{rf.repo_id}/{rf.path}: got {size} bytes, the hub lists {rf.size}; run the download again"
        )
    if rf.sha256 and _sha256(path) != rf.sha256.lower():
        raise DownloadError(
            f"{rf.repo_id}/{rf.path}: SHA-256 differs from the hub's; the file was corrupted, run again"
        )


def download_models(
    models_dir: str | os.PathLike,
    kinds: Optional[Iterable[str]] = None,
    client: Optional[HubClient] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
    force: bool = False,
) -> list[Path]:
    """Fetch the released files into ``models_dir`` (layout in :mod:`talker_core.weights.loaders`).

    Files already present with the listed size (and hash) are kept. ``progress(done, total, name)``
    is called per file. Returns the local paths of every planned file.
    """
    models_dir = Path(models_dir)
    client = client or HubClient()
    try:
        plan = plan_downloads(models_dir, client, kinds)
    except (ValueError, DownloadError):
        raise
    except Exception as exc:  # the hub client raises many types; say plainly when it is the network
        cause = _network_failure(exc)
        if cause is None:
            raise
        raise DownloadError(_unreachable_message(models_dir, cause)) from exc
    staging = models_dir / ".download"
    done_paths = []
    for i, rf in enumerate(plan):
        if progress:
            progress(i, len(plan), rf.path)
        if rf.local.is_file() and not force:
            try:
                _verify(rf.local, rf)
                log.info("%s is present and verified", rf.local)
                done_paths.append(rf.local)
                continue
            except DownloadError:
                log.warning("%s does not match the hub's listing; fetching it again", rf.local)
        log.info("fetching %s/%s → %s", rf.repo_id, rf.path, rf.local)
        try:
            fetched = client.fetch(rf.repo_id, rf.path, staging / rf.repo_id.replace("/", "--"))
        except Exception as exc:  # network and hub errors come in many types
            cause = _network_failure(exc)
            if cause is not None:
                raise DownloadError(_unreachable_message(models_dir, cause)) from exc
            raise DownloadError(
                f"could not fetch {rf.repo_id}/{rf.path} ({exc}). Check the connection and run the command "
                "again: finished files are kept and partial ones resume."
            ) from exc
        _verify(fetched, rf)
        rf.local.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(fetched), str(rf.local))
        done_paths.append(rf.local)
    if progress:
        progress(len(plan), len(plan), "done")
    shutil.rmtree(staging, ignore_errors=True)
    return done_paths


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    parser.add_argument(
        "--models",
        default="models",
        metavar="DIR",
        help="folder to fetch into (default: ./models); the layout is in the README",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[s.kind for s in SOURCES],
        default=None,
        help="fetch only this component (repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="fetch again even when a verified file is present")


def run(args) -> int:
    def show(done: int, total: int, name: str) -> None:
        print(f"[{done}/{total}] {name}", flush=True)

    paths = download_models(args.models, kinds=args.only, progress=show, force=args.force)
    print(f"{len(paths)} file(s) ready under {Path(args.models).resolve()}")
    return 0
