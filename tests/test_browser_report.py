"""In a real browser: the run report of the sampler and Render Video after a run, after a second run
with other values, and after a workflow-tab switch, in the classic canvas and in Nodes 2.0.

Runs when ``COMFYUI_DIR`` names a ComfyUI checkout (like tests/test_comfyui_e2e.py, whose server
fixture it shares) and Chromium, its driver and the ``selenium`` package are installed
(``bash scripts/get_chromium.sh`` installs Debian's ``chromium chromium-driver``; selenium is pinned
in requirements-dev.txt). Without them the tests are skipped, with ``TALKER_REQUIRE_COMFYUI=1`` (CI,
scripts/test.sh) they fail. Headless
Chromium loads the ComfyUI frontend from the server on 127.0.0.1, loads the ``1 Text to talking video``
template, queues it from the page (``app.queuePrompt``) and reads back what the page painted:
every ``fillText`` on any canvas is recorded, so "shown" means drawn, in either renderer.
``COMFYUI_ARGS="--front-end-root DIR"`` runs it against another frontend build (e.g. an unpacked
``comfyui-frontend-package`` wheel's ``comfyui_frontend_package/static``).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        python -m pytest -q tests/test_browser_report.py
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest
from test_comfyui_e2e import COMFYUI_DIR, comfyui, uploaded  # noqa: F401  (shared fixtures)

PACK_FOLDER = "ComfyUI-Talker-T2AV"  # the folder the server fixture links the pack in as

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or shutil.which("chromium-browser"))
DRIVER = os.environ.get("CHROMEDRIVER", shutil.which("chromedriver"))
RUN_TIMEOUT = float(os.environ.get("COMFYUI_RUN_TIMEOUT", 900))

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.slow,
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no ComfyUI checkout to run the pack in"),
]


def _unavailable(what: str) -> NoReturn:
    message = (
        f"{what}: the browser test cannot run; `bash scripts/get_chromium.sh` installs Chromium and its driver "
        "(or set CHROMIUM and CHROMEDRIVER), `pip install -r requirements-dev.txt` installs selenium"
    )
    if os.environ.get("TALKER_REQUIRE_COMFYUI") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# Nodes 2.0 draws a custom canvas widget through its legacy-widget component (which gives the widget
# its triggerDraw); the experimental Vue nodes of older frontends (1.27.10, ComfyUI 0.3.64's) have no
# such component and draw no custom widget of any pack. Checked on 1.32.9 (ComfyUI 0.3.75's, what CI
# runs), 1.45.21 (ComfyUI 0.28's) and 1.58.1; older ones are skipped.
NODES2_MIN_FRONTEND = (1, 32)

# Recorded before any script of the page runs: every text painted on a canvas.
RECORDER = """
window.__talkerTexts = [];
window.__talkerErrors = [];
window.addEventListener("error", (e) => window.__talkerErrors.push(String(e.message)));
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
  if (typeof text === "string" && text.length > 8) window.__talkerTexts.push(text);
  return fillText.call(this, text, ...rest);
};
"""


@pytest.fixture(scope="module", autouse=True)
def browser_tools():
    """Chromium, its driver and selenium, checked before the ComfyUI server is started."""
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not path]
    if missing:
        _unavailable(f"{' and '.join(missing)} not found on PATH")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        _unavailable(f"the selenium package does not import ({err})")
    return webdriver, Service


@pytest.fixture
def browser(browser_tools, tmp_path):
    webdriver, Service = browser_tools
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(120)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            logs = driver.execute_script("return (window.__talkerErrors || []).slice(-5)")
            pytest.fail(f"timed out waiting for {what}; page errors: {logs}")
        time.sleep(0.5)


def history(server: str, prompt_id: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{server}/history/{prompt_id}", timeout=30).read()).get(prompt_id)


def queue_from_page(driver, server: str, max_seconds: float) -> dict:
    """Set the sampler's length, queue the graph from the page, wait; the history entry of the run."""
    before = driver.execute_script("return Object.keys(window.__talkerRuns || {}).length")
    driver.execute_script(
        """
        const node = app.graph._nodes.find((n) => n.type === "TalkerSampler");
        node.widgets.find((w) => w.name === "max_seconds").value = arguments[0];
        window.__talkerRuns ??= {};
        app.api.addEventListener("execution_success", (e) => { window.__talkerRuns[e.detail.prompt_id] = true; });
        app.queuePrompt(0, 1);
        """,
        max_seconds,
    )
    prompt_id = wait_for(
        driver,
        f"const ids = Object.keys(window.__talkerRuns || {{}}); return ids.length > {before} ? ids[ids.length - 1] : null",
        RUN_TIMEOUT,
        "the run to finish",
    )
    entry = history(server, prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry


def reports(entry: dict, workflow: dict) -> dict[str, str]:
    """Node type → the summary line the server sent for it."""
    types = {str(n["id"]): n["type"] for n in workflow["nodes"]}
    return {types[nid]: out["text"][0] for nid, out in entry["outputs"].items() if "text" in out}


def painted(driver, text: str, timeout: float = 20) -> bool:
    """Whether the page paints ``text`` (the canvas redraws on its own; Nodes 2.0 only when asked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script("return window.__talkerTexts.some((t) => t.startsWith(arguments[0]))", text[:40]):
            return True
        time.sleep(0.5)
    return False


def node_report(driver, node_type: str):
    return driver.execute_script(
        "const n = app.graph._nodes.find((x) => x.type === arguments[0]);"
        "return n ? [n.talkerSummary || null, n.talkerPlot ? n.talkerPlot.seconds : null] : null",
        node_type,
    )


@pytest.mark.parametrize("vue_nodes", [False, True], ids=["classic-canvas", "nodes-2.0"])
def test_report_after_runs_and_a_tab_switch(vue_nodes, comfyui, uploaded, browser):  # noqa: F811
    server, log_path, _ = comfyui
    driver = browser
    driver.get(server)
    wait_for(driver, "return !!(window.app && app.graph && app.extensionManager)", 180, "the frontend to start")
    wait_for(
        driver,
        "return (app.extensions || []).some((e) => e.name === 'TalkerT2AV.Report')",
        60,
        "the pack's web extension",
    )
    version = driver.execute_script("return window.__COMFYUI_FRONTEND_VERSION__ || ''")
    print(f"frontend {version}, {'Nodes 2.0' if vue_nodes else 'classic canvas'}")
    if vue_nodes and tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < NODES2_MIN_FRONTEND:
        pytest.skip(f"frontend {version} has no Nodes 2.0 renderer for custom widgets (see NODES2_MIN_FRONTEND)")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "app.extensionManager.setting.set('Comfy.VueNodes.Enabled', arguments[0]).then(() => done(true));",
        vue_nodes,
    )
    workflow = json.loads((ROOT / "example_workflows" / "1 Text to talking video.json").read_text())
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.resolve(app.loadGraphData(arguments[0], true, true, '1 Text to talking video')).then(() => done(true));",
        workflow,
    )

    first = reports(queue_from_page(driver, server, 0.16), workflow)
    assert {"TalkerSampler", "TalkerRenderVideo"} <= set(first)
    mounted = driver.execute_script(
        "const n = app.graph._nodes.find((x) => x.type === 'TalkerSampler');"
        "const w = n && n.widgets.find((x) => x.name === 'talker_report');"
        "return w ? typeof w.triggerDraw === 'function' : null"
    )
    assert mounted is vue_nodes, "the report widget is not drawn by the renderer under test"
    for node_type in ("TalkerSampler", "TalkerRenderVideo"):
        assert painted(driver, first[node_type]), f"{node_type}: run 1's report was not drawn"
    assert painted(driver, "speech activity"), "the plot's legend was not drawn"

    driver.execute_script("window.__talkerTexts.length = 0")
    second = reports(queue_from_page(driver, server, 0.32), workflow)
    assert second["TalkerSampler"] != first["TalkerSampler"]
    for node_type in ("TalkerSampler", "TalkerRenderVideo"):
        assert painted(driver, second[node_type]), f"{node_type}: run 2's report was not drawn"
    summary, seconds = node_report(driver, "TalkerSampler")
    assert summary == second["TalkerSampler"] and seconds == pytest.approx(0.32, abs=0.17)
    if not vue_nodes:  # the saved sizes leave room for the report and the video player a run adds
        found = overlaps(settled_layout(driver))
        assert not found, f"nodes overlap after a run: {found}"

    # a tab switch: a new blank workflow, then back to this one
    run = "return app.extensionManager.command.execute(arguments[0]).then(() => true)"
    driver.execute_script(run, "Comfy.NewBlankWorkflow")
    wait_for(driver, "return !app.graph._nodes.some((n) => n.type === 'TalkerSampler')", 30, "the blank tab")
    driver.execute_script("window.__talkerTexts.length = 0")
    driver.execute_script(run, "Workspace.PreviousOpenedWorkflow")
    wait_for(driver, "return app.graph._nodes.some((n) => n.type === 'TalkerSampler')", 30, "the workflow's tab")
    for node_type in ("TalkerSampler", "TalkerRenderVideo"):
        summary, _ = node_report(driver, node_type)
        assert summary == second[node_type], f"{node_type}: the report is gone after the tab switch"
        assert painted(driver, second[node_type]), f"{node_type}: the restored report was not drawn"
    assert painted(driver, "speech activity"), "the plot was not drawn after the tab switch"


def blueprint_workflow(max_seconds: float) -> dict:
    """The blueprint node wired to Load Audio, Load Image and Save Video, as a user would place it."""
    blueprint = json.loads((ROOT / "subgraphs" / "talker_text_to_talking_video.json").read_text())
    template = {
        n["type"]: n
        for n in json.loads((ROOT / "example_workflows" / "1 Text to talking video.json").read_text())["nodes"]
    }
    sg = blueprint["definitions"]["subgraphs"][0]
    sampler = next(n for n in sg["nodes"] if n["type"] == "TalkerSampler")
    sampler["widgets_values"][10] = (
        max_seconds  # widgets: text, speech_only, seed, control, steps, cfg, ..., max_seconds
    )
    outer = blueprint["nodes"][0]
    extra = []
    for new_id, (ntype, link_id) in enumerate((("LoadAudio", 10), ("LoadImage", 11), ("SaveVideo", 12)), start=2):
        node = json.loads(json.dumps(template[ntype]))
        node["id"], node["pos"] = new_id, [-400 if ntype != "SaveVideo" else 500, 300 * (new_id - 2)]
        for o in node.get("outputs", []):
            o["links"] = [link_id] if o["type"] in ("AUDIO", "IMAGE") and o["name"] in ("AUDIO", "IMAGE") else []
        for i in node.get("inputs", []):
            i["link"] = link_id if i["type"] == "VIDEO" else None
        extra.append(node)
    outer["inputs"][0]["link"], outer["inputs"][1]["link"] = 10, 11
    outer["outputs"][0]["links"] = [12]
    blueprint["nodes"] += extra
    blueprint["links"] = [[10, 2, 0, 1, 0, "AUDIO"], [11, 3, 0, 1, 1, "IMAGE"], [12, 1, 0, 4, 0, "VIDEO"]]
    blueprint["last_node_id"], blueprint["last_link_id"] = 4, 12
    return blueprint


def test_blueprint_runs_from_the_frontend(comfyui, uploaded, browser):  # noqa: F811
    """Cores with blueprints list it; the frontend flattens the subgraph into the prompt: it makes a video."""
    server, _, _ = comfyui
    try:
        listed = json.loads(urllib.request.urlopen(server + "/global_subgraphs", timeout=30).read())
    except urllib.error.HTTPError as err:  # a core without subgraph blueprints (0.3.64): the folder is ignored
        assert err.code == 404
        listed = None
    if listed is not None:
        names = {(e["name"], e["source"]) for e in listed.values()}
        assert ("talker_text_to_talking_video", "custom_node") in names, sorted(names)
    driver = browser
    driver.get(server)
    wait_for(driver, "return !!(window.app && app.graph && app.extensionManager)", 180, "the frontend to start")
    workflow = blueprint_workflow(0.16)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.resolve(app.loadGraphData(arguments[0], true, true, 'blueprint')).then(() => done(true));",
        workflow,
    )
    assert driver.execute_script("return app.graph._nodes.some((n) => n.isSubgraphNode?.())")
    before = driver.execute_script("return Object.keys(window.__talkerRuns || {}).length")
    driver.execute_script(
        "window.__talkerRuns ??= {};"
        "app.api.addEventListener('execution_success', (e) => { window.__talkerRuns[e.detail.prompt_id] = true; });"
        "app.queuePrompt(0, 1);"
    )
    prompt_id = wait_for(
        driver,
        f"const ids = Object.keys(window.__talkerRuns || {{}}); return ids.length > {before} ? ids[ids.length - 1] : null",
        RUN_TIMEOUT,
        "the blueprint's run to finish",
    )
    entry = history(server, prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    classes = {n["class_type"] for n in entry["prompt"][2].values()}
    assert {"TalkerSampler", "TalkerRenderVideo", "CreateVideo", "SaveVideo"} <= classes
    videos = [
        item for out in entry["outputs"].values() for item in out.get("images", []) if item["filename"].endswith(".mp4")
    ]
    assert videos, entry["outputs"]


def settled_layout(driver, timeout: float = 60) -> list[dict]:
    """Each node's id, type and bounding box [x, y, w, h] (title bar included), once no node has changed
    size for 3 s (the Load nodes grow when their image, clip or player has loaded)."""
    script = (
        "return app.graph._nodes.map((n) => ({id: n.id, type: n.type, box: Array.from(n.getBounding()),"
        " imgs: n.imgs ? n.imgs.every((i) => i.complete && i.naturalWidth > 0) : true}))"
    )
    deadline = time.monotonic() + timeout
    last, stable_since = None, time.monotonic()
    while True:
        now = driver.execute_script(script)
        key = [(n["id"], [round(v) for v in n["box"]]) for n in now]
        if key != last:
            last, stable_since = key, time.monotonic()
        elif time.monotonic() - stable_since >= 3 and all(n["imgs"] for n in now):
            return now
        if time.monotonic() > deadline:
            pytest.fail(f"the node sizes did not settle within {timeout:.0f} s: {now}")
        time.sleep(0.5)


def overlaps(layout: list[dict]) -> list[str]:
    found = []
    for i, a in enumerate(layout):
        for b in layout[i + 1 :]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["box"], b["box"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                boxes = f"{[round(v) for v in a['box']]} and {[round(v) for v in b['box']]}, [x, y, w, h]"
                found.append(f"{a['type']} (node {a['id']}) and {b['type']} (node {b['id']}) ({boxes})")
    return found


def test_templates_load_as_saved_without_overlaps(comfyui, uploaded, browser):  # noqa: F811
    """Each UI template, loaded in the real frontend with its inputs uploaded: the graph it sends is
    the API file's (plus the defaults of widgets a newer core added, e.g. 0.28's Create Video
    ``bit_depth``), no node is missing or in error, and once the previews have loaded no two nodes
    overlap (the classic canvas, whose sizes the saved files carry). Inputs the node's schema lacks are
    the frontend's own widgets (1.45 sends the players of Load Audio/Video as ``audioUI`` and
    ``video-preview``); the server ignores them."""
    server, _, _ = comfyui
    driver = browser
    info = json.loads(urllib.request.urlopen(server + "/object_info", timeout=60).read())
    # the template browser's list and the thumbnail it shows per card (distinct: tests/test_pack_polish.py)
    listed = json.loads(urllib.request.urlopen(server + "/workflow_templates", timeout=30).read())
    stems = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    assert sorted(listed.get(PACK_FOLDER, [])) == stems, listed
    for stem in stems:
        url = f"{server}/api/workflow_templates/{PACK_FOLDER}/{urllib.parse.quote(stem)}.jpg"
        served = urllib.request.urlopen(url, timeout=30).read()
        assert served == (ROOT / "example_workflows" / f"{stem}.jpg").read_bytes(), f"{url} is not the thumbnail"
    driver.get(server)
    wait_for(driver, "return !!(window.app && app.graph && app.extensionManager)", 180, "the frontend to start")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false).then(() => done(true));"
    )
    problems = []
    for path in sorted((ROOT / "example_workflows").glob("*.json")):
        workflow = json.loads(path.read_text())
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Promise.resolve(app.loadGraphData(arguments[0], true, true, arguments[1])).then(() => done(true));",
            workflow,
            path.stem,
        )
        layout = settled_layout(driver)
        sent = driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; app.graphToPrompt().then((r) => done(r.output));"
        )
        api = json.loads((ROOT / "workflows_api" / path.name).read_text())
        assert set(sent) == set(api), (
            f"{path.name}: the frontend sends nodes {sorted(sent)}, the API file has {sorted(api)}"
        )
        for nid, entry in api.items():
            got = sent[nid]
            assert got["class_type"] == entry["class_type"], f"{path.name}: node {nid}"
            spec = info[entry["class_type"]]["input"]
            options = {**spec.get("required", {}), **spec.get("optional", {})}
            for name, value in got["inputs"].items():
                if name in entry["inputs"]:
                    want = entry["inputs"][name]
                    ok = value == want or (isinstance(want, float) and value == pytest.approx(want))
                    assert ok, f"{path.name}: node {nid} {entry['class_type']}.{name}: sent {value!r}, saved {want!r}"
                elif name in options:  # a widget the file has no value for (a newer core's): its default
                    default = (
                        options.get(name, [None, {}])[1].get("default") if len(options.get(name, [])) > 1 else None
                    )
                    assert default is not None and value == default, (
                        f"{path.name}: node {nid} {entry['class_type']} sends {name}={value!r} (default {default!r})"
                    )
            assert set(entry["inputs"]) <= set(got["inputs"]), f"{path.name}: node {nid} lost inputs"
        # saving it again keeps our nodes' widget values as they were (the report widget is not saved)
        resaved = driver.execute_script(
            "return Object.fromEntries(app.graph._nodes.map((n) => [n.id, n.serialize().widgets_values ?? []]))"
        )
        for node in workflow["nodes"]:
            if node["type"].startswith("Talker"):
                assert resaved[str(node["id"])] == pytest.approx(node["widgets_values"]), (
                    f"{path.name}: node {node['id']} {node['type']} is saved as {resaved[str(node['id'])]}"
                )
        errors = driver.execute_script(
            "return app.graph._nodes.filter((n) => n.has_errors || n.type === undefined).map((n) => n.id)"
        )
        assert not errors, f"{path.name}: nodes in error on load: {errors}"
        problems += [f"{path.name}: {pair} overlap" for pair in overlaps(layout)]
    assert not problems, "; ".join(problems)
