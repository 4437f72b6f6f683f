"""The web extension (web/talker_t2av.js) run under Node.js with a stand-in ``app`` and canvas.

Checks that it registers, draws the summary and the plot from a real sampler payload, and
shrugs off malformed payloads. Skipped where Node.js is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")

APP = """
export const registered = [];
export const app = { registerExtension(ext) { registered.push(ext); } };
"""

DRIVER = r"""
import { registered } from "../../scripts/app.js";
await import("./talker_t2av.js");
const payloads = JSON.parse(process.argv[2]);
const ext = registered[0];
const out = { name: ext.name, nodes: {} };
for (const name of ["TalkerSampler", "TalkerRenderVideo", "TalkerLoadModel"]) {
  function NodeType() {}
  NodeType.prototype.onExecuted = function () { this.baseCalled = true; };
  await ext.beforeRegisterNodeDef(NodeType, { name });
  const node = new NodeType();
  node.widgets = [];
  node.size = [300, 100];
  node.addCustomWidget = function (w) { this.widgets.push(w); return w; };
  node.computeSize = function () { return [300, 100 + this.widgets.reduce((h, w) => h + w.computeSize(300)[1], 0)]; };
  node.setSize = function (s) { this.size = s; };
  node.setDirtyCanvas = function () { this.dirty = true; };
  const record = { texts: [], lines: 0, rects: 0, errors: 0 };
  for (const p of payloads) {
    try { node.onExecuted(p); } catch (e) { record.errors += 1; }
  }
  const ctx = {
    save() {}, restore() {}, beginPath() {}, stroke() {}, moveTo() {},
    lineTo() { record.lines += 1; }, fillRect() { record.rects += 1; },
    fillText(t) { record.texts.push(String(t)); },
    measureText(t) { return { width: String(t).length * 6 }; },
  };
  for (const w of node.widgets) w.draw(ctx, node, 300, 40, 20);
  record.widgets = node.widgets.map((w) => [w.name, w.serialize]);
  record.baseCalled = !!node.baseCalled;
  record.height = node.size[1];
  out.nodes[name] = record;
}
console.log(JSON.stringify(out));
"""


def sampler_payload() -> dict:
    """The ui payload of a sampler run (1.2 s, with a 0.16 s prefix), as the node builds it."""
    import importlib.util

    import torch

    # nodes/plot.py needs neither ComfyUI nor the rest of the pack: load that file alone.
    spec = importlib.util.spec_from_file_location("talker_nodes_plot", ROOT / "nodes" / "plot.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    motion_plot, summary_ui = plot.motion_plot, plot.summary_ui
    from talker_core.types import MotionCodes, SpeechLatents

    g = torch.Generator().manual_seed(0)
    speech = SpeechLatents(torch.randn(30, 32, generator=g))
    motion = MotionCodes(torch.randn(30, 40, generator=g))
    return summary_ui("T2AV: 1.20 s generated in 0.50 s (RTF 0.42, 1 segment)", motion_plot(speech, motion, 4))


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_web_extension_draws_the_report(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(APP)
    ext_dir = tmp_path / "extensions" / "talker"
    ext_dir.mkdir(parents=True)
    shutil.copy(ROOT / "web" / "talker_t2av.js", ext_dir / "talker_t2av.js")
    (ext_dir / "driver.mjs").write_text(DRIVER)
    (tmp_path / "package.json").write_text('{"type": "module"}')

    good = sampler_payload()
    payloads = [
        None,
        {"text": 5},
        {"talker_plot": [None]},
        {"talker_plot": [{"series": "x"}]},
        {"talker_plot": [{"seconds": 0, "series": [{"name": "a", "values": [1, "x", None]}]}]},
        good,
    ]
    out = subprocess.run(
        [NODE, str(ext_dir / "driver.mjs"), json.dumps(payloads)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["name"] == "TalkerT2AV.Report"
    sampler = result["nodes"]["TalkerSampler"]
    assert sampler["errors"] == 0 and sampler["baseCalled"]
    assert sampler["widgets"] == [["talker_report", False]]
    assert any(t.startswith("T2AV: 1.20 s") for t in sampler["texts"])
    assert {"speech activity", "motion energy"} <= set(sampler["texts"])
    assert sampler["lines"] > 100 and sampler["height"] > 100
    assert result["nodes"]["TalkerLoadModel"]["widgets"] == []  # other nodes are left alone
