// The per-segment score of one suggestion, as a step chart on the heatmap's time axis (same left edge and
// width, so a segment sits at the same x in both and the cursor lines up).
//
// For a tag taxonomy a subgenre's score per segment is the highest score among its tags in that segment: the
// per-segment version of how the API scores suggestions (the highest track-level mean among the tags). For a
// trained head it is the head's own per-segment output (`POST /taggram?head=NAME`).

import { drawTimeTicks, makeAxis, sizeCanvas } from "./axis.js";

const HEIGHT_PX = 150;
const TOP_PX = 8;
const AXIS_HEIGHT_PX = 22;
const INK = "#333";
const GRID = "#ddd";
const LINE = "#1f6f8b";
const FILL = "rgba(31, 111, 139, 0.18)";

// Per segment: the highest score among `tags` (tag names from the taxonomy in GET /models).
export function subgenreSeries(taggram, tags) {
  const indices = tags.map((tag) => taggram.labels.indexOf(tag)).filter((i) => i >= 0);
  if (!indices.length) return null;
  return taggram.segments.map((segment) => Math.max(...indices.map((i) => segment.scores[i])));
}

// Per segment: the head's score for `className`, or null when the response has no such head or class.
export function headSeries(taggram, headName, className) {
  const head = taggram.head;
  if (!head || head.name !== headName || !Array.isArray(head.segments)) return null;
  const index = head.classes.indexOf(className);
  return index < 0 ? null : head.segments.map((row) => row[index]);
}

export function drawSegmentChart(canvas, heatmapAxis, data, values) {
  const width = canvas.parentElement.clientWidth;
  const { ctx } = sizeCanvas(canvas, width, HEIGHT_PX);
  const axis = makeAxis(heatmapAxis.left, heatmapAxis.width, heatmapAxis.end);
  const plotHeight = HEIGHT_PX - TOP_PX - AXIS_HEIGHT_PX;
  const y = (v) => TOP_PX + (1 - Math.min(Math.max(v, 0), 1)) * plotHeight;

  ctx.clearRect(0, 0, width, HEIGHT_PX);
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const level of [0, 0.5, 1]) {
    ctx.strokeStyle = GRID;
    ctx.beginPath();
    ctx.moveTo(axis.left, Math.round(y(level)) + 0.5);
    ctx.lineTo(axis.left + axis.width, Math.round(y(level)) + 0.5);
    ctx.stroke();
    ctx.fillStyle = INK;
    ctx.fillText(String(level), axis.left - 6, y(level));
  }

  ctx.beginPath();
  ctx.moveTo(axis.x(data.starts[0] || 0), y(0));
  values.forEach((v, i) => {
    const stop = i + 1 < data.starts.length ? data.starts[i + 1] : data.ends[i];
    ctx.lineTo(axis.x(data.starts[i]), y(v));
    ctx.lineTo(axis.x(stop), y(v));
  });
  const lastStop = data.ends.length ? data.ends[data.ends.length - 1] : 0;
  ctx.lineTo(axis.x(lastStop), y(0));
  ctx.fillStyle = FILL;
  ctx.fill();
  ctx.strokeStyle = LINE;
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.lineWidth = 1;
  drawTimeTicks(ctx, axis, TOP_PX + plotHeight, INK);
  return { axis, top: TOP_PX, plotHeight };
}
