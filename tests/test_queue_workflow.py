"""scripts/queue_workflow.py --jobs: jobs spread over two fake ComfyUI servers on 127.0.0.1.

The fake servers answer the calls the script makes (/upload/image, /prompt, /history/<id>,
/view, /queue, /interrupt) from threads in this process, "run" each prompt for a moment, and
count what they were sent, so the test sees the spreading, the one-prompt-in-flight rule and
that nothing is queued twice.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("queue_workflow", ROOT / "scripts" / "queue_workflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeComfy:
    """A tiny ComfyUI stand-in: a prompt takes ``delay`` seconds and saves one video."""

    def __init__(self, delay: float = 0.3):
        self.delay = delay
        self.lock = threading.Lock()
        self.prompts: list[dict] = []  # what /prompt received
        self.uploads: list[str] = []
        self.history: dict = {}
        self.files: dict = {}
        self.running = 0
        self.max_running = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, payload, code=200, raw=None):
                body = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/prompt":
                    self.reply(fake.queue_prompt(json.loads(body)))
                elif self.path == "/upload/image":
                    name = body.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
                    with fake.lock:
                        fake.uploads.append(name)
                    self.reply({"name": name, "subfolder": "", "type": "input"})
                elif self.path in ("/queue", "/interrupt"):
                    self.reply({})
                else:
                    self.reply({"error": "not found"}, 404)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                if url.path.startswith("/history/"):
                    prompt_id = url.path.rsplit("/", 1)[1]
                    with fake.lock:
                        entry = fake.history.get(prompt_id)
                    self.reply({prompt_id: entry} if entry else {})
                elif url.path == "/view":
                    name = urllib.parse.parse_qs(url.query)["filename"][0]
                    self.reply(None, raw=fake.files[name])
                else:
                    self.reply({"error": "not found"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def queue_prompt(self, body: dict) -> dict:
        prompt_id = uuid.uuid4().hex
        with self.lock:
            self.prompts.append(body["prompt"])
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        threading.Thread(target=self.execute, args=(prompt_id, body["prompt"]), daemon=True).start()
        return {"prompt_id": prompt_id, "number": len(self.prompts)}

    def execute(self, prompt_id: str, prompt: dict) -> None:
        time.sleep(self.delay)
        text = prompt["9"]["inputs"]["text"]
        with self.lock:
            self.running -= 1
            if text == "FAIL":
                self.history[prompt_id] = {
                    "status": {
                        "status_str": "error",
                        "completed": False,
                        "messages": [
                            [
                                "execution_error",
                                {
                                    "node_id": "9",
                                    "node_type": "TalkerSampler",
                                    "exception_message": "the text is empty",
                                },
                            ]
                        ],
                    },
                    "outputs": {},
                }
                return
            name = f"talker_{prompt_id[:8]}.mp4"
            self.files[name] = f"video of {text!r}".encode()
            self.history[prompt_id] = {
                "status": {"status_str": "success", "completed": True, "messages": []},
                "outputs": {
                    "9": {"text": ["0.96 s generated in 2.00 s (RTF 2.08, 1 segment)"]},
                    "13": {"video": [{"filename": name, "subfolder": "video", "type": "output"}]},
                },
            }

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers():
    fakes = [FakeComfy(), FakeComfy()]
    yield fakes
    for fake in fakes:
        fake.close()


def _jobs(tmp_path: Path, texts: list[str]) -> Path:
    (tmp_path / "me.png").write_bytes(b"png")
    lines = [
        json.dumps({"name": f"j{i}", "inputs": ["me.png"], "set": {"9.text": t, "9.seed": i}})
        for i, t in enumerate(texts)
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_jobs_are_spread_over_two_servers_one_prompt_each_and_resume(servers, tmp_path, capsys):
    qw = _script()
    texts = [f"clip {i}" for i in range(8)]
    texts[5] = "FAIL"
    jobs = _jobs(tmp_path, texts)
    out = tmp_path / "out"
    argv = [str(ROOT / "workflows_api" / "1 Text to talking video.json"), "--jobs", str(jobs), "--out", str(out)]
    argv += ["--server", servers[0].url, "--server", servers[1].url]
    assert qw.main(argv) == 1  # j5 failed
    assert "8 jobs: 7 done, 0 already complete, 1 failed" in capsys.readouterr().out

    sent = [p["9"]["inputs"]["text"] for fake in servers for p in fake.prompts]
    assert sorted(sent) == sorted(texts)  # every job queued once, on one server
    assert all(len(fake.prompts) >= 2 for fake in servers)  # both servers worked
    assert [fake.max_running for fake in servers] == [1, 1]  # never two prompts in flight on one server
    state = {r["job"]: r for r in _rows(out)}
    assert state["j5"]["status"] == "failed" and "TalkerSampler" in state["j5"]["error"]
    for i, text in enumerate(texts):
        if i == 5:
            continue
        row = state[f"j{i}"]
        assert row["status"] == "done" and row["worker"] in (servers[0].url, servers[1].url)
        assert row["seconds"] == pytest.approx(0.96)
        assert Path(row["output"]).read_bytes() == f"video of {text!r}".encode()
        assert Path(row["output"]).parent == out / f"j{i}" / "video"
    assert not list(out.glob(".*partial*"))

    # Rerun after mending j5: only j5 is queued again.
    lines = jobs.read_text().splitlines()
    lines[5] = json.dumps({"name": "j5", "inputs": ["me.png"], "set": {"9.text": "mended", "9.seed": 5}})
    jobs.write_text("\n".join(lines) + "\n")
    before = sum(len(fake.prompts) for fake in servers)
    assert qw.main(argv) == 0
    assert sum(len(fake.prompts) for fake in servers) == before + 1
    assert "8 jobs: 1 done, 7 already complete, 0 failed" in capsys.readouterr().out


def test_a_server_that_stops_answering_hands_its_job_to_the_other(servers, tmp_path, capsys):
    qw = _script()
    dead = servers[1]
    dead.close()  # nothing listens there any more
    jobs = _jobs(tmp_path, ["a", "b", "c"])
    out = tmp_path / "out"
    argv = [str(ROOT / "workflows_api" / "1 Text to talking video.json"), "--jobs", str(jobs), "--out", str(out)]
    assert qw.main([*argv, "--server", dead.url, "--server", servers[0].url]) == 0
    rows = _rows(out)
    crashed = [r for r in rows if r["status"] == "crashed"]
    assert len(crashed) == 1 and crashed[0]["worker"] == dead.url
    assert sorted(r["job"] for r in rows if r["status"] == "done") == ["j0", "j1", "j2"]
    assert all(r["worker"] == servers[0].url for r in rows if r["status"] == "done")
    assert len(servers[0].prompts) == 3
    servers.remove(dead)  # already closed


def test_batch_style_job_lines_fill_the_sampler_and_load_nodes(servers, tmp_path):
    qw = _script()
    (tmp_path / "face.png").write_bytes(b"face")
    (tmp_path / "voice.wav").write_bytes(b"voice")
    (tmp_path / "words.txt").write_text("Words from a file.", encoding="utf-8")
    lines = [
        {"name": "a", "text": "Batch style.", "seed": 7, "steps": 4, "ref_audio": "voice.wav", "ref_image": "face.png"},
        {"name": "b", "text_file": "words.txt", "ref_audio": "voice.wav", "ref_image": "face.png", "output": "x.mp4"},
        {"name": "c", "text": "No such input.", "drive_video": "face.png"},  # t2av has no LoadVideo node
        {"name": "d", "text": "x", "colour": "red"},
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out"
    argv = [str(ROOT / "workflows_api" / "1 Text to talking video.json"), "--jobs", str(jobs), "--out", str(out)]
    assert qw.main([*argv, "--server", servers[0].url]) == 1
    (prompt_a, prompt_b) = servers[0].prompts
    assert prompt_a["9"]["inputs"]["text"] == "Batch style."
    assert (prompt_a["9"]["inputs"]["seed"], prompt_a["9"]["inputs"]["steps"]) == (7, 4)
    assert prompt_b["9"]["inputs"]["text"] == "Words from a file."
    image, audio = prompt_a["6"]["inputs"]["image"], prompt_a["5"]["inputs"]["audio"]
    assert image.startswith("talker_") and image.endswith(".png") and audio.endswith(".wav") and image != audio
    assert image in servers[0].uploads and audio in servers[0].uploads
    state = {r["job"]: r for r in _rows(out)}
    assert state["a"]["status"] == "done" and state["b"]["status"] == "done"
    assert state["c"]["status"] == "failed" and "0 LoadVideo nodes" in state["c"]["error"]
    assert state["d"]["status"] == "failed" and "unknown key 'colour'" in state["d"]["error"]
