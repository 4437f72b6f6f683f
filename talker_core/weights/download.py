"""Fetch the released model files from their public sources into the documented layout.

Sources (all public on the Hugging Face Hub): each component's ``source`` in the registry,
:mod:`talker_core.weights.components` (repository, file there, and where it lands).

Demo media (the quick start): the authors' sample voice and talking clip from their public GitHub
repository (``zhenye234/Talker-T2AV``, Apache-2.0), pinned to one commit and checked against their
size and SHA-256, land in ``demo/`` of the models folder (:data:`DEMO_FILES`); the first frame of the
clip is saved as ``demo/face.png``. They are fetched with the models (``--no-demo`` skips them, ``--only
demo`` fetches only them) and used by ``generate`` when no reference is given.

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

from talker_core.weights.components import COMPONENTS

__all__ = [
    "Source",
    "SOURCES",
    "DemoFile",
    "DEMO_FILES",
    "DEMO_KIND",
    "DEMO_VOICE",
    "DEMO_FACE",
    "DEMO_CLIP",
    "DownloadError",
    "download_models",
    "download_demo",
    "find_demo",
    "plan_downloads",
    "DEMO_INPUTS",
    "install_demo_inputs",
]

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A model file could not be fetched or failed its check."""


@dataclass(frozen=True)
class Source:
    kind: str  # a component kind of the registry
    repo_id: str
    remote: str  # path in the repository; may be a glob ("folder/*")
    local: str  # path under the models folder; for a glob, the folder that receives the matches

    @property
    def is_glob(self) -> bool:
        return any(c in self.remote for c in "*?[")


#: One source per component, read from the registry.
SOURCES: tuple[Source, ...] = tuple(
    Source(c.kind, c.source.repo_id, c.source.remote, c.release) for c in COMPONENTS.values()
)


DEMO_KIND = "demo"
DEMO_REPO = "zhenye234/Talker-T2AV"
DEMO_COMMIT = "6712f62ace8eba06ac70a69c6b241024c9d3955e"
DEMO_VOICE = "demo/voice.wav"  # under the models folder
DEMO_CLIP = "demo/face_video.mp4"
DEMO_FACE = "demo/face.png"  # the clip's first frame, written after the download


@dataclass(frozen=True)
class DemoFile:
    remote: str  # path in DEMO_REPO at DEMO_COMMIT
    local: str  # path under the models folder
    size: int
    sha256: str

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{DEMO_REPO}/{DEMO_COMMIT}/{self.remote}"


DEMO_FILES: tuple[DemoFile, ...] = (
    DemoFile(
        "samples/reference_audio.wav",
        DEMO_VOICE,
        240046,
        "bf9685e6ca1b82572b4d284fee73794acf4ce458b746aeeb1328840055335203",
    ),
    DemoFile(
        "samples/reference_video.mp4",
        DEMO_CLIP,
        228341,
        "e6efed29ba084ffb28a9818e80fdc8177ad86e74cc6cbfbe9cd48f58919b75d2",
    ),
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

    def fetch_url(self, url: str, dest: Path, timeout: float = 60.0) -> Path:
        """Fetch a plain HTTPS file (the demo media) to ``dest``."""
        import urllib.request

        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:  # noqa: S310
            shutil.copyfileobj(response, f, 1 << 20)
        return dest


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


def _demo_ok(path: Path, df: DemoFile) -> bool:
    return path.is_file() and path.stat().st_size == df.size and _sha256(path) == df.sha256


def _write_demo_face(clip: Path, out: Path) -> None:
    """The first frame of the demo clip as a PNG (what LoadImage and --ref-image take)."""
    from PIL import Image

    from talker_core.media import load_video_frames

    frames, _ = load_video_frames(clip, max_frames=1)
    tmp = out.with_name(out.name + ".part")
    Image.fromarray(frames[0].numpy()).save(tmp, format="PNG")
    os.replace(tmp, out)


def download_demo(
    models_dir: str | os.PathLike,
    client: Optional[HubClient] = None,
    files: tuple[DemoFile, ...] = DEMO_FILES,
    force: bool = False,
) -> list[Path]:
    """Fetch the demo voice and clip (:data:`DEMO_FILES`) into ``models_dir/demo`` and write the demo face."""
    models_dir = Path(models_dir)
    client = client or HubClient()
    staging = models_dir / ".download" / "demo"
    out = []
    for df in files:
        local = models_dir / df.local
        if force or not _demo_ok(local, df):
            log.info("fetching the demo file %s → %s", df.url, local)
            try:
                fetched = client.fetch_url(df.url, staging / Path(df.remote).name)
            except Exception as exc:  # network errors come in many types
                raise DownloadError(
                    f"could not fetch the demo file {df.url} ({exc}). Check the connection and run again, or "
                    "skip the demo with --no-demo and give your own --ref-audio/--ref-image"
                ) from exc
            if not _demo_ok(fetched, df):
                fetched.unlink(missing_ok=True)
                raise DownloadError(f"{df.url}: size or SHA-256 differs from the pinned file; run the download again")
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(fetched), str(local))
        out.append(local)
    clip = models_dir / DEMO_CLIP
    face = models_dir / DEMO_FACE
    if any(df.local == DEMO_CLIP for df in files) and (force or not face.is_file()):
        _write_demo_face(clip, face)
    if face.is_file():
        out.append(face)
    shutil.rmtree(models_dir / ".download", ignore_errors=True)
    return out


def find_demo(models_dir: str | os.PathLike) -> dict[str, Optional[Path]]:
    """The downloaded demo media: {"voice", "face", "clip"} → path, or None where absent."""
    root = Path(models_dir)
    found = {}
    for key, rel in (("voice", DEMO_VOICE), ("face", DEMO_FACE), ("clip", DEMO_CLIP)):
        path = root / rel
        found[key] = path if path.is_file() else None
    return found


def download_models(
    models_dir: str | os.PathLike,
    kinds: Optional[Iterable[str]] = None,
    client: Optional[HubClient] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
    force: bool = False,
    demo: Optional[bool] = None,
    demo_files: tuple[DemoFile, ...] = DEMO_FILES,
) -> list[Path]:
    """Fetch the released files into ``models_dir`` (layout in :mod:`talker_core.weights.loaders`).

    Files already present with the listed size (and hash) are kept. ``progress(done, total, name)``
    is called per file. ``demo``: also fetch the demo media (:func:`download_demo`); by default it is
    fetched when every component is asked for, or when ``kinds`` names ``"demo"``. Returns the local
    paths of every planned file.
    """
    models_dir = Path(models_dir)
    client = client or HubClient()
    kinds = list(kinds) if kinds else None
    if demo is None:
        demo = kinds is None or DEMO_KIND in kinds
    if kinds is not None:
        kinds = [k for k in kinds if k != DEMO_KIND]
        if not kinds:  # only the demo
            return download_demo(models_dir, client, demo_files, force) if demo else []
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
    shutil.rmtree(staging, ignore_errors=True)
    if demo:
        if progress:
            progress(len(plan), len(plan) + 1, "demo voice and face")
        done_paths.extend(download_demo(models_dir, client, demo_files, force))
    if progress:
        progress(len(plan) + int(bool(demo)), len(plan) + int(bool(demo)), "done")
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
        choices=[s.kind for s in SOURCES] + [DEMO_KIND],
        default=None,
        help="fetch only this component (repeatable); 'demo' is the demo voice and face",
    )
    parser.add_argument(
        "--no-demo",
        action="store_true",
        help="do not fetch the demo voice and face (the authors' samples, used when generate gets no reference)",
    )
    parser.add_argument("--force", action="store_true", help="fetch again even when a verified file is present")


def run(args) -> int:
    def show(done: int, total: int, name: str) -> None:
        print(f"[{done}/{total}] {name}", flush=True)

    demo = False if args.no_demo else None
    paths = download_models(args.models, kinds=args.only, progress=show, force=args.force, demo=demo)
    print(f"{len(paths)} file(s) ready under {Path(args.models).resolve()}")
    return 0


# --------------------------------------------------------------------------- demo inputs for ComfyUI

# Input-folder names the example workflows load → the demo file each one is made from.
DEMO_INPUTS: dict[str, str] = {
    "talker_voice.wav": DEMO_VOICE,
    "talker_speech.wav": DEMO_VOICE,
    "talker_face.png": DEMO_FACE,
    "talker_reference.mp4": DEMO_CLIP,
    "talker_silent.mp4": DEMO_CLIP,
    "talker_voice_b.wav": DEMO_VOICE,  # the dialogue example's second speaker: the same voice…
    "talker_face_b.png": DEMO_FACE,  # …and the demo face mirrored
    "talker_portrait.png": DEMO_FACE,  # paste-back example: the demo face on a larger, non-square canvas
}
PORTRAIT_SIZE = (720, 960)  # (width, height) of the paste-back example's canvas


def _derived_input(name: str, src: Path, dst: Path) -> None:
    from PIL import Image, ImageOps

    with Image.open(src) as img:
        img = img.convert("RGB")
        if name == "talker_face_b.png":
            out = ImageOps.mirror(img)
        else:  # the face 0.6 of the canvas width, a little above the middle; the edges stretched outwards
            import numpy as np

            w, h = PORTRAIT_SIZE
            side = int(0.6 * w)
            face = np.asarray(img.resize((side, side), Image.Resampling.LANCZOS))
            top, left = int(0.22 * h), (w - side) // 2
            out = Image.fromarray(np.pad(face, ((top, h - side - top), (left, w - side - left), (0, 0)), mode="edge"))
        tmp = dst.with_name(dst.name + ".part")
        out.save(tmp, format="PNG")
    os.replace(tmp, dst)


def install_demo_inputs(models_dir: str | os.PathLike, input_dir: str | os.PathLike) -> list[Path]:
    """Put the demo media into ComfyUI's input folder under the example workflows' names.

    Only names that do not exist yet are written (a user's own ``talker_face.png`` is never
    replaced), and only when the demo was downloaded. Returns the files written.
    """
    models_dir, input_dir = Path(models_dir), Path(input_dir)
    written = []
    for name, rel in DEMO_INPUTS.items():
        src, dst = models_dir / rel, input_dir / name
        if dst.exists() or not src.is_file():
            continue
        input_dir.mkdir(parents=True, exist_ok=True)
        if name in ("talker_face_b.png", "talker_portrait.png"):
            _derived_input(name, src, dst)
        else:
            tmp = dst.with_name(dst.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        written.append(dst)
    if written:
        log.info("demo inputs placed in %s: %s", input_dir, ", ".join(p.name for p in written))
    return written
