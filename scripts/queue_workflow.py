"""Queue an API-format workflow on a running ComfyUI, wait for it, and download what it made.

Standard library only. Example, with ComfyUI listening on 127.0.0.1:8188:

    python scripts/queue_workflow.py "workflows_api/1 Text to talking video.json" \\
        --input talker_face.png=me.png --input talker_voice.wav=me.wav \\
        --set 9.text="Hello from the command line." --out out/

- ``--input NAME=PATH`` uploads PATH to ComfyUI's input folder as NAME (the file name the
  workflow's Load nodes use); ``--input PATH`` keeps PATH's own name.
- ``--set NODE.INPUT=VALUE`` changes one input (VALUE read as JSON when it parses, else a string).
- The matching UI workflow (``example_workflows/<same name>.json``, or ``--workflow``) is sent
  as ``extra_pnginfo``, so saved videos carry the editable graph, as when queued from the browser.
- Outputs listed in ``/history`` (videos, audio, images) are downloaded into ``--out``; text
  payloads (our nodes' summary lines) are printed. Exit status 0 on success, 1 on an error.

Many jobs over several ComfyUI servers (one prompt in flight per server):

    python scripts/queue_workflow.py "workflows_api/1 Text to talking video.json" --jobs jobs.jsonl \
        --server http://gpu1:8188 --server http://gpu2:8188 --out out/

Each line of ``--jobs`` is one JSON object: ``name`` (the job's id; default ``line-N``),
``workflow`` (optional: another API workflow, relative to the jobs file), ``inputs`` (files to
upload: ``{"NAME": "PATH"}`` or ``["PATH", ...]``, relative to the jobs file) and ``set``
(``{"NODE.INPUT": VALUE}``); or the batch command's job keys (``text``, ``text_file``, ``seed``,
``steps``, ... set on the TalkerSampler; ``ref_audio``, ``ref_image``, ``ref_video``,
``drive_audio``, ``drive_video`` uploaded to the workflow's one Load node of their kind). A job's files are downloaded into ``OUT/NAME/``, and
``OUT/manifest.jsonl`` records every job as the ``python -m talker_core batch`` command does
(the same format and module): a rerun skips the jobs whose output is complete and redoes the
rest; a server that stops answering is dropped and its job put back for the others.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import mimetypes
import os
import queue as queue_mod
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

MEDIA_KEYS = ("images", "gifs", "video", "videos", "audio")


def request(server: str, path: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 60):
    req = urllib.request.Request(server.rstrip("/") + path, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def upload(server: str, path: Path, name: str) -> str:
    """POST /upload/image (any file type); returns the name ComfyUI stored it under."""
    boundary = uuid.uuid4().hex
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
        f"--{boundary}--\r\n".encode(),
    ]
    reply = json.loads(
        request(server, "/upload/image", b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    )
    return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]


def apply_set(prompt: dict, spec: str) -> None:
    target, _, raw = spec.partition("=")
    node, _, name = target.partition(".")
    if node not in prompt or not name:
        raise SystemExit(f"--set {spec}: expected NODE.INPUT=VALUE with NODE one of {sorted(prompt)}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    prompt[node]["inputs"][name] = value


def queue(server: str, prompt: dict, workflow: dict | None, client_id: str) -> str:
    body = {"prompt": prompt, "client_id": client_id}
    if workflow is not None:
        body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
    try:
        reply = json.loads(request(server, "/prompt", json.dumps(body).encode(), {"Content-Type": "application/json"}))
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        raise SystemExit(f"ComfyUI refused the prompt ({err.code}): {detail}") from None
    return reply["prompt_id"]


def wait(server: str, prompt_id: str, timeout: float, poll: float = 1.0, stop=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        history = json.loads(request(server, f"/history/{prompt_id}"))
        entry = history.get(prompt_id)
        if (
            entry
            and entry.get("status", {}).get("completed") is not None
            and (entry["status"]["completed"] or entry["status"].get("status_str") == "error")
        ):
            return entry
        time.sleep(poll)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for prompt {prompt_id}")


def download(server: str, item: dict, out: Path) -> Path:
    query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
    dest = out / (item.get("subfolder") or "") / item["filename"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(request(server, f"/view?{query}", timeout=300))
    return dest


# --------------------------------------------------------------------------- many jobs


class Refused(Exception):
    """ComfyUI answered but refused or failed the job: the job's fault, not the server's."""


def _manifest_module():
    # One manifest format for this script and the batch command: the pack's own stdlib-only module.
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from talker_core.batch import manifest

    return manifest


# The batch command's job keys that have a place in our workflows: sampler settings go to the
# TalkerSampler node, media files to the one Load node of their kind (uploaded under a name
# derived from their content). "mode" and "output" are the batch command's; here the workflow
# decides the mode and the files land in OUT/NAME/, so they are accepted and not used.
SAMPLER_KEYS = (
    "text",
    "seed",
    "steps",
    "cfg",
    "temperature",
    "sway",
    "stop_threshold",
    "max_seconds",
    "prefix_seconds",
    "segment_prefix_seconds",
    "speech_only",
)
FILE_KEYS = {
    "ref_audio": ("LoadAudio", "audio"),
    "drive_audio": ("LoadAudio", "audio"),
    "ref_image": ("LoadImage", "image"),
    "ref_video": ("LoadVideo", "file"),
    "drive_video": ("LoadVideo", "file"),
}
QUEUE_KEYS = ("name", "workflow", "inputs", "set", "text_file", "mode", "output")


def load_queue_jobs(path: Path, default_workflow: Path | None) -> list[dict]:
    """The jobs of a JOBS file; a line that cannot be used comes back with an ``error``."""
    base = path.resolve().parent
    jobs, seen = [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        job = {"id": f"line-{number}", "line": number}
        jobs.append(job)
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object ({...} on one line)")
        except (json.JSONDecodeError, ValueError) as exc:
            job["error"] = f"not a JSON object: {exc}"
            continue
        obj = {str(k).replace("-", "_"): v for k, v in obj.items()}
        unknown = sorted(set(obj) - set(QUEUE_KEYS) - set(SAMPLER_KEYS) - set(FILE_KEYS))
        name = obj.get("name", job["id"])
        if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name:
            job["error"] = f"name must be a non-empty string without slashes, got {name!r}"
            continue
        job["id"] = name
        if name in seen:
            raise SystemExit(f"{path}: lines {seen[name]} and {number} are both job {name!r}; give each its own name")
        seen[name] = number
        workflow = obj.get("workflow")
        workflow = (base / workflow) if workflow else default_workflow
        inputs = obj.get("inputs", {})
        if isinstance(inputs, list):
            inputs = {Path(p).name: p for p in inputs}
        problems = [
            f"unknown key {k!r} (a job takes {', '.join(QUEUE_KEYS + SAMPLER_KEYS + tuple(FILE_KEYS))})"
            for k in unknown
        ]
        sampler = {k: obj[k] for k in SAMPLER_KEYS if k in obj}
        if obj.get("text_file"):
            text_path = Path(obj["text_file"]) if Path(obj["text_file"]).is_absolute() else base / obj["text_file"]
            if "text" in sampler:
                problems.append("give text or text_file, not both")
            elif not text_path.is_file():
                problems.append(f"text_file {text_path} does not exist")
            else:
                sampler["text"] = text_path.read_text(encoding="utf-8")
        media = {}
        for key in FILE_KEYS:
            if key in obj:
                media_path = Path(obj[key]) if Path(obj[key]).is_absolute() else base / obj[key]
                if not media_path.is_file():
                    problems.append(f"{key} {media_path} does not exist")
                media[key] = str(media_path)
        if workflow is None:
            problems.append("no workflow: give one on the command line or as the job's workflow")
        elif not workflow.is_file():
            problems.append(f"workflow {workflow} does not exist")
        if not isinstance(inputs, dict):
            problems.append("inputs must be {NAME: PATH} or [PATH, ...]")
            inputs = {}
        files = {}
        for stored, src in inputs.items():
            src_path = Path(src) if Path(src).is_absolute() else base / src
            if not src_path.is_file():
                problems.append(f"input {src_path} does not exist")
            files[stored] = str(src_path)
        sets = obj.get("set", {})
        if not isinstance(sets, dict):
            problems.append('set must be {"NODE.INPUT": VALUE}')
            sets = {}
        if problems:
            job["error"] = "; ".join(problems)
            continue
        job.update(workflow=str(workflow), inputs=files, set=sets, sampler=sampler, media=media)
        definition = json.dumps({k: job[k] for k in ("workflow", "inputs", "set", "sampler", "media")}, sort_keys=True)
        job["digest"] = hashlib.sha256(definition.encode()).hexdigest()[:16]
    if not jobs:
        raise SystemExit(f"jobs file {path} has no jobs (one JSON object per line)")
    return jobs


def run_queue_job(server: str, job: dict, out: Path, timeout: float, stop) -> dict:
    """One job on one server: upload, queue, wait, download. Refused: the job failed; OSError: the server."""
    prompt = json.loads(Path(job["workflow"]).read_text())
    workflow_name = Path(job["workflow"]).name

    def the_node(class_type: str, key: str) -> str:
        nodes = [k for k, v in prompt.items() if v.get("class_type") == class_type]
        if len(nodes) != 1:
            raise Refused(
                f"{key}: workflow {workflow_name} has {len(nodes)} {class_type} nodes, not one; "
                'use "inputs" and "set" to say which input gets what'
            )
        return nodes[0]

    for key, value in job["sampler"].items():
        node = the_node("TalkerSampler", key)
        if key not in prompt[node]["inputs"]:
            raise Refused(f"{key}: the TalkerSampler of workflow {workflow_name} has no input {key}")
        prompt[node]["inputs"][key] = value
    for key, src in job["media"].items():
        class_type, field = FILE_KEYS[key]
        node = the_node(class_type, key)
        data = Path(src).read_bytes()
        stored = upload(server, Path(src), f"talker_{hashlib.sha256(data).hexdigest()[:16]}{Path(src).suffix.lower()}")
        prompt[node]["inputs"][field] = stored
    for node_input, value in job["set"].items():
        node, _, name = node_input.partition(".")
        if node not in prompt or not name:
            raise Refused(f"set {node_input}: expected NODE.INPUT with NODE one of {sorted(prompt)}")
        prompt[node]["inputs"][name] = value
    for stored, src in job["inputs"].items():
        upload(server, Path(src), stored)
    ui_path = Path(job["workflow"]).resolve().parents[1] / "example_workflows" / Path(job["workflow"]).name
    workflow = json.loads(ui_path.read_text()) if ui_path.is_file() else None
    body = {"prompt": prompt, "client_id": uuid.uuid4().hex}
    if workflow is not None:
        body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
    try:
        reply = json.loads(request(server, "/prompt", json.dumps(body).encode(), {"Content-Type": "application/json"}))
    except urllib.error.HTTPError as err:
        raise Refused(f"ComfyUI refused the prompt ({err.code}): {err.read().decode(errors='replace')[:500]}") from None
    prompt_id = reply["prompt_id"]
    try:
        entry = wait(server, prompt_id, timeout, poll=0.2, stop=stop)
    except KeyboardInterrupt:
        for path, payload in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            with contextlib.suppress(OSError):
                request(server, path, json.dumps(payload).encode(), {"Content-Type": "application/json"}, timeout=10)
        raise
    except SystemExit as exc:  # wait()'s timeout
        raise Refused(str(exc)) from None
    status = entry.get("status", {})
    if status.get("status_str") != "success":
        details = [
            f"{kind}: node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_message', '')}".strip()
            for kind, data in status.get("messages", [])
            if kind in ("execution_error", "execution_interrupted")
        ]
        raise Refused("; ".join(details) or f"ComfyUI reported {status.get('status_str')!r}")
    files, seconds = [], None
    partial = out / f".{job['id']}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for outputs in entry.get("outputs", {}).values():
        for text in outputs.get("text", []):
            found = re.search(r"([0-9.]+) s generated", str(text))
            seconds = float(found.group(1)) if found and seconds is None else seconds
        for key in MEDIA_KEYS:
            for item in outputs.get(key, []):
                if isinstance(item, dict) and "filename" in item:
                    files.append(download(server, item, partial))
    if not files:
        raise Refused("the workflow finished but saved no file (no Save node output in /history)")
    final = out / job["id"]
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)  # the job's folder appears whole or not at all
    files = [final / f.relative_to(partial) for f in files]
    return {"output": str(files[0]), "files": [str(f) for f in files], "seconds": seconds, "prompt_id": prompt_id}


def run_jobs(jobs: list[dict], servers: list[str], out: Path, timeout: float) -> int:
    """Spread the jobs over the servers, one prompt in flight each; returns the exit status."""
    manifest_mod = _manifest_module()
    manifest = manifest_mod.Manifest(out)
    lock = threading.Lock()
    state = manifest.last_rows()
    failed: list[str] = []
    done: list[str] = []

    def write(job_id, status, **fields):
        with lock:
            row = manifest.write(job_id, status, **fields)
        head = f"{job_id}: {status}" + (f" on {fields.get('worker')}" if fields.get("worker") else "")
        print(
            head
            + (
                f" -> {fields['output']}" if status == "done" else f": {fields['error']}" if fields.get("error") else ""
            ),
            flush=True,
        )
        return row

    todo: queue_mod.Queue = queue_mod.Queue()
    skipped = 0
    for job in jobs:
        row = state.get(job["id"])
        output = Path(row["output"]) if row and row.get("output") else None
        if output is not None and manifest_mod.is_complete(row, output, job.get("digest")):
            skipped += 1
        elif job.get("error"):
            write(job["id"], "failed", error=job["error"], line=job["line"])
            failed.append(job["id"])
        else:
            todo.put(job)
    stop = threading.Event()
    alive = set(servers)

    def serve(server: str) -> None:
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue_mod.Empty:
                return
            write(job["id"], "running", worker=server, line=job["line"])
            t0 = time.monotonic()
            try:
                result = run_queue_job(server, job, out, timeout, stop)
            except KeyboardInterrupt:
                write(job["id"], "cancelled", worker=server, error="stopped by the user")
                return
            except Refused as exc:
                write(job["id"], "failed", worker=server, error=str(exc), wall=time.monotonic() - t0)
                with lock:
                    failed.append(job["id"])
                continue
            except (OSError, ValueError, KeyError) as exc:  # the server went away or answered nonsense
                write(job["id"], "crashed", worker=server, error=f"server {server} failed ({exc}); job put back")
                todo.put(job)
                with lock:
                    alive.discard(server)
                return
            size = Path(result["output"]).stat().st_size
            write(
                job["id"], "done", worker=server, wall=time.monotonic() - t0, bytes=size, digest=job["digest"], **result
            )
            with lock:
                done.append(job["id"])

    threads = [threading.Thread(target=serve, args=(s,), name=f"queue {s}", daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        print("stopped; run the same command again to resume", file=sys.stderr)
        return 130
    left = todo.qsize()
    print(
        f"{len(jobs)} jobs: {len(done)} done, {skipped} already complete, {len(failed)} failed"
        + (
            f", {left} not run (no server left: {', '.join(sorted(set(servers) - alive))} stopped answering)"
            if left
            else ""
        )
        + f"; manifest {out / manifest_mod.MANIFEST_NAME}",
        flush=True,
    )
    return 0 if not failed and not left else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "workflow",
        type=Path,
        nargs="?",
        help="API-format workflow (workflows_api/*.json); with --jobs, the default one",
    )
    ap.add_argument(
        "--server",
        action="append",
        default=None,
        help="ComfyUI address (default http://127.0.0.1:8188); repeat with --jobs to spread the jobs",
    )
    ap.add_argument("--jobs", type=Path, default=None, help="JSON Lines file of jobs (see above)")
    ap.add_argument("--input", action="append", default=[], metavar="[NAME=]PATH", help="file to upload")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="override an input")
    ap.add_argument(
        "--workflow-ui",
        type=Path,
        default=None,
        help="UI-format workflow to embed (default: example_workflows/<same name>.json)",
    )
    ap.add_argument("--out", type=Path, default=Path("out"), help="download folder (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait (default %(default)s)")
    args = ap.parse_args(argv)
    servers = args.server or ["http://127.0.0.1:8188"]
    if args.jobs is not None:
        if args.input or args.set:
            ap.error("--input and --set apply to one workflow; in --jobs mode give them per job")
        return run_jobs(load_queue_jobs(args.jobs, args.workflow), servers, args.out, args.timeout)
    if args.workflow is None:
        ap.error("give a workflow (or --jobs)")
    if len(servers) > 1:
        ap.error("several --server addresses need --jobs")
    args.server = servers[0]

    prompt = json.loads(args.workflow.read_text())
    ui_path = args.workflow_ui or args.workflow.resolve().parents[1] / "example_workflows" / args.workflow.name
    workflow = json.loads(ui_path.read_text()) if ui_path.is_file() else None
    for spec in args.input:
        name, _, path = spec.rpartition("=")
        path = Path(path)
        stored = upload(args.server, path, name or path.name)
        print(f"uploaded {path} as {stored}")
    for spec in args.set:
        apply_set(prompt, spec)

    prompt_id = queue(args.server, prompt, workflow, uuid.uuid4().hex)
    print(f"queued {args.workflow.name} as {prompt_id}")
    entry = wait(args.server, prompt_id, args.timeout)
    status = entry.get("status", {})
    ok = status.get("status_str") == "success"
    for kind, data in status.get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            print(f"{kind}: node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_message', '')}")
    for node_id, outputs in entry.get("outputs", {}).items():
        for text in outputs.get("text", []):
            print(f"node {node_id}: {text}")
        for key in MEDIA_KEYS:
            for item in outputs.get(key, []):
                if isinstance(item, dict) and "filename" in item:
                    print(f"node {node_id}: saved {download(args.server, item, args.out)}")
    print("done" if ok else f"failed ({status.get('status_str')})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
