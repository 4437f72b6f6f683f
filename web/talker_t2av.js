// Talker-T2AV: draws the summary line and a small speech/motion plot on our nodes.
//
// The sampler (and the render/save nodes) return a `ui` payload: `text` (one summary line) and,
// for the sampler, `talker_plot` ({seconds, prefix_seconds, series: [{name, seconds, values}]}).
// ComfyUI hands it to `onExecuted`; we keep it on the node and draw it in a canvas widget.
//
// What the widget shows is also kept in the node's properties (`talker_report`), which travel with
// the workflow: switching workflow tabs (or reloading the page) rebuilds the node from them in
// `onConfigure`, so the report comes back with the core previews. Nodes 2.0 (the Vue renderer)
// repaints a custom widget only when asked (`widget.triggerDraw()`, absent in the classic canvas).
// The widget exists from the node's creation (empty, a few pixels high until a run): the Nodes 2.0
// of frontend 1.32 (ComfyUI 0.3.75) mounts only the widgets a node has when it is first shown.
import { app } from "../../scripts/app.js";

const PROPERTY = "talker_report";

const NODES = new Set([
  "TalkerSampler",
  "TalkerRenderVideo",
  "TalkerSaveSpeechLatents",
  "TalkerSaveMotionLatents",
]);
const COLORS = ["#f2c14e", "#5fb3f9", "#e36f6f", "#7ed67e", "#c58cf2", "#f29f72"];
const TEXT_HEIGHT = 18;
const PLOT_HEIGHT = 120;
const MARGIN = 8;

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function drawSeries(ctx, s, color, x0, y0, w, h, totalSeconds) {
  const values = Array.isArray(s.values) ? s.values.filter(finite) : [];
  if (values.length < 2) return;
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const span = finite(s.seconds) && s.seconds > 0 ? s.seconds : totalSeconds;
  const xw = w * Math.min(1, span / totalSeconds);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = x0 + (xw * i) / (values.length - 1);
    const y = y0 + h - ((v - lo) / (hi - lo)) * h;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function drawPlot(ctx, plot, x0, y0, w, h) {
  ctx.fillStyle = "#1b1b1f";
  ctx.fillRect(x0, y0, w, h);
  const series = Array.isArray(plot.series) ? plot.series : [];
  const total = finite(plot.seconds) && plot.seconds > 0 ? plot.seconds : 1;
  const legendH = 14;
  const py = y0 + legendH + 2;
  const ph = h - legendH - 16;
  if (finite(plot.prefix_seconds) && plot.prefix_seconds > 0) {
    ctx.fillStyle = "rgba(255,255,255,0.08)";
    ctx.fillRect(x0, py, (w * Math.min(plot.prefix_seconds, total)) / total, ph);
  }
  series.forEach((s, i) => drawSeries(ctx, s, COLORS[i % COLORS.length], x0, py, w, ph, total));
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "top";
  let lx = x0 + 4;
  series.forEach((s, i) => {
    const label = String(s.name ?? "");
    ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.fillText(label, lx, y0 + 2);
    lx += ctx.measureText(label).width + 10;
  });
  ctx.fillStyle = "#999";
  ctx.textBaseline = "bottom";
  ctx.fillText("0 s", x0 + 2, y0 + h - 1);
  const end = `${total.toFixed(2)} s`;
  ctx.fillText(end, x0 + w - ctx.measureText(end).width - 2, y0 + h - 1);
}

function fitText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let t = text;
  while (t.length > 1 && ctx.measureText(t + "…").width > width) t = t.slice(0, -1);
  return t + "…";
}

function ensureWidget(node) {
  if (!node.widgets?.some((w) => w.name === "talker_report")) addWidget(node);
  if (!node.talkerSummary && !node.talkerPlot) return;
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
}

function addWidget(node) {
  node.addCustomWidget({
    name: "talker_report",
    type: "talker_report",
    value: "",
    serialize: false,
    options: { serialize: false },
    computeSize(width) {
      if (!node.talkerSummary && !node.talkerPlot) return [width, 0];
      const h = TEXT_HEIGHT + (node.talkerPlot ? PLOT_HEIGHT + MARGIN : 0) + MARGIN;
      return [width, h];
    },
    draw(ctx, n, width, y) {
      const x0 = MARGIN;
      const w = Math.max(10, width - 2 * MARGIN);
      ctx.save();
      if (n.talkerSummary) {
        ctx.font = "12px sans-serif";
        ctx.fillStyle = "#ddd";
        ctx.textBaseline = "middle";
        ctx.fillText(fitText(ctx, n.talkerSummary, w), x0, y + TEXT_HEIGHT / 2);
      }
      if (n.talkerPlot) drawPlot(ctx, n.talkerPlot, x0, y + TEXT_HEIGHT + 4, w, PLOT_HEIGHT);
      ctx.restore();
    },
  });
}

function validSummary(text) {
  return typeof text === "string" && text ? text : null;
}

function validPlot(plot) {
  return plot && typeof plot === "object" && !Array.isArray(plot) ? plot : null;
}

// Show a report on the node: keep it, persist it in the node's properties, (re)draw it.
function showReport(node, summary, plot, persist) {
  node.talkerSummary = validSummary(summary);
  node.talkerPlot = validPlot(plot);
  if (persist) {
    node.properties ??= {};
    if (node.talkerSummary || node.talkerPlot) {
      node.properties[PROPERTY] = { summary: node.talkerSummary, plot: node.talkerPlot };
    } else {
      delete node.properties[PROPERTY];
    }
    // The frontend keeps each tab's graph as its change tracker last saw it; a run changes no
    // widget, so tell it, or a tab switch would bring back the report of an earlier run.
    try {
      app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
    } catch (err) {
      console.warn("Talker-T2AV: could not record the run report in the workflow", err);
    }
  }
  ensureWidget(node);
  const widget = node.widgets?.find((w) => w.name === "talker_report");
  widget?.triggerDraw?.();
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "TalkerT2AV.Report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData?.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      try {
        const text = message?.text;
        const plot = message?.talker_plot;
        const summary = Array.isArray(text) && text.length ? String(text[text.length - 1]) : null;
        const last = Array.isArray(plot) && plot.length ? plot[plot.length - 1] : null;
        showReport(this, summary, last, true);
      } catch (err) {
        console.warn("Talker-T2AV: could not show the run report", err);
      }
    };
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      try {
        ensureWidget(this);
      } catch (err) {
        console.warn("Talker-T2AV: could not add the run report widget", err);
      }
      return result;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      try {
        const saved = this.properties?.[PROPERTY];
        if (saved && typeof saved === "object") showReport(this, saved.summary, saved.plot, false);
      } catch (err) {
        console.warn("Talker-T2AV: could not restore the run report", err);
      }
      return result;
    };
  },
});
