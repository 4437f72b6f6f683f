"""Queue an API-format workflow on a running ComfyUI, wait for it, and download what it made.

Standard library only. Example, with ComfyUI listening on 127.0.0.1:8188:

    python scripts/queue_workflow.py workflows_api/talker_t2av.json \\
        --input talker_face.png=me.png --input talker_voice.wav=me.wav \\
        --set 9.text="Hello from the command line." --out out/

- ``--input NAME=PATH`` uploads PATH to ComfyUI's input folder as NAME (the file name the
  workflow's Load nodes use); ``--input PATH`` keeps PATH's own name.
- ``--set NODE.INPUT=VALUE`` changes one input (VALUE read as JSON when it parses, else a string).
- The matching UI workflow (``example_workflows/<same name>.json``, or ``--workflow``) is sent
  as ``extra_pnginfo``, so saved videos carry the editable graph, as when queued from the browser.
- Outputs listed in ``/history`` (videos, audio, images) are downloaded into ``--out``; text
  payloads (our nodes' summary lines) are printed. Exit status 0 on success, 1 on an error.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
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


def wait(server: str, prompt_id: str, timeout: float, poll: float = 1.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workflow", type=Path, help="API-format workflow (workflows_api/*.json)")
    ap.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
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
