"""The run report widget (web/talker_t2av.js) across runs and workflow-tab switches, under Node.js.

Nodes 2.0 repaints a custom widget only through ``widget.triggerDraw()``; a tab switch rebuilds
every node from the saved workflow (``properties`` included) and calls ``onConfigure``. The
stand-in node below does what LiteGraph does in those two steps; the browser test
(tests/test_browser_report.py) checks the same in a real frontend.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_nodes_web import APP, sampler_payload

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")

DRIVER = r"""
import { registered } from "../../scripts/app.js";
await import("./talker_t2av.js");
const [first, second] = JSON.parse(process.argv[2]);
const ext = registered[0];
function NodeType() { this.properties = {}; this.widgets = []; this.size = [300, 100]; }
NodeType.prototype.addCustomWidget = function (w) { this.widgets.push(w); return w; };
NodeType.prototype.computeSize = function () {
  return [300, 100 + this.widgets.reduce((h, w) => h + w.computeSize(300)[1], 0)];
};
NodeType.prototype.setSize = function (s) { this.size = s; };
NodeType.prototype.setDirtyCanvas = function () {};
// LiteGraph's configure: copy the saved fields, then call onConfigure
NodeType.prototype.configure = function (info) {
  this.properties = JSON.parse(JSON.stringify(info.properties));
  this.onConfigure?.(info);
};
NodeType.prototype.serialize = function () { return { properties: this.properties }; };
await ext.beforeRegisterNodeDef(NodeType, { name: "TalkerSampler" });

function drawn(node) {
  const texts = [];
  const ctx = {
    save() {}, restore() {}, beginPath() {}, stroke() {}, moveTo() {}, lineTo() {}, fillRect() {},
    fillText(t) { texts.push(String(t)); }, measureText(t) { return { width: String(t).length * 6 }; },
  };
  for (const w of node.widgets) w.draw(ctx, node, 300, 40, 20);
  return texts;
}

const out = {};
const node = new NodeType();
node.onExecuted(first);
// the Vue renderer (Nodes 2.0) gives the widget a triggerDraw once it mounts it
let redraws = 0;
node.widgets[0].triggerDraw = () => { redraws += 1; };
node.onExecuted(second);
out.redraws = redraws;
out.afterSecond = drawn(node);
out.widgets = node.widgets.length;
const saved = JSON.stringify(node.serialize());
out.savedBytes = saved.length;
// a tab switch: a fresh node built from the saved workflow
const again = new NodeType();
again.configure(JSON.parse(saved));
out.afterSwitch = drawn(again);
out.switchWidgets = again.widgets.map((w) => w.name);
// a node never run: nothing restored, no widget
const fresh = new NodeType();
fresh.configure({ properties: {} });
out.freshWidgets = fresh.widgets.length;
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_report_redraws_on_later_runs_and_survives_a_tab_switch(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(APP)
    ext_dir = tmp_path / "extensions" / "talker"
    ext_dir.mkdir(parents=True)
    shutil.copy(ROOT / "web" / "talker_t2av.js", ext_dir / "talker_t2av.js")
    (ext_dir / "driver.mjs").write_text(DRIVER)
    (tmp_path / "package.json").write_text('{"type": "module"}')

    first = sampler_payload()
    second = json.loads(json.dumps(first))
    second["text"] = ["T2AV: 2.40 s generated in 0.90 s (RTF 0.38, 1 segment)"]
    second["talker_plot"][0]["seconds"] = 2.4
    out = subprocess.run(
        [NODE, str(ext_dir / "driver.mjs"), json.dumps([first, second])], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["redraws"] == 1, "the second run did not ask Nodes 2.0 to repaint the widget"
    assert result["widgets"] == 1
    assert any(t.startswith("T2AV: 2.40 s") for t in result["afterSecond"])
    assert "2.40 s" in result["afterSecond"]  # the plot's time axis follows the second run
    assert any(t.startswith("T2AV: 2.40 s") for t in result["afterSwitch"]), "the report did not survive the switch"
    assert {"speech activity", "motion energy"} <= set(result["afterSwitch"])
    assert result["switchWidgets"] == ["talker_report"]
    assert result["freshWidgets"] == 0
    assert result["savedBytes"] < 30_000
