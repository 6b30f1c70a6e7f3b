// The taggram as a heatmap on a <canvas>: one row per tag (sorted by the tag's mean over the track, highest on
// top), one column per segment (time on x), colour = score. Drawn by hand: it is a grid of filled rectangles,
// which no chart library makes simpler (docs/page.md, "Why no chart library").

import { drawTimeTicks, makeAxis, sizeCanvas } from "./axis.js";
import { colourOf, cssColour } from "./colour.js";

const ROW_HEIGHT_PX = 11;
const TOP_PX = 4;
const AXIS_HEIGHT_PX = 34;
const RIGHT_PX = 18;  // room for half the last time label
const LABEL_GAP_PX = 6;
const FONT = "11px system-ui, sans-serif";
const INK = "#333";
const LEGEND_WIDTH_PX = 120;

// Tag indices ordered by mean, highest first; ties keep the model's label order (Array.sort is stable).
export function orderByMean(mean) {
  return mean.map((_, i) => i).sort((a, b) => mean[b] - mean[a]);
}

// What the heatmap shows, from a /taggram response: rows are tags in `order`, columns are segments.
export function heatmapData(taggram) {
  const order = orderByMean(taggram.mean);
  const segments = taggram.segments;
  const matrix = order.map((tag) => segments.map((segment) => segment.scores[tag]));
  const lastEnd = segments.length ? segments[segments.length - 1].end : 0;
  let max = 0;
  for (const row of matrix) for (const v of row) if (v > max) max = v;
  return {
    labels: order.map((tag) => taggram.labels[tag]),
    mean: order.map((tag) => taggram.mean[tag]),
    matrix,
    starts: segments.map((s) => s.start),
    ends: segments.map((s) => s.end),
    end: Math.max(taggram.duration_seconds, lastEnd),
    scaleMax: max,
  };
}

// Column i spans from its segment's start to the next segment's start (its own end for the last one), so
// overlapping segments (hop < patch) sit side by side instead of painting over each other.
function columnEdges(data, axis) {
  return data.starts.map((start, i) => {
    const stop = i + 1 < data.starts.length ? data.starts[i + 1] : data.ends[i];
    return [Math.round(axis.x(start)), Math.round(axis.x(stop))];
  });
}

function labelWidth(ctx, labels) {
  ctx.font = FONT;
  return Math.ceil(Math.max(0, ...labels.map((label) => ctx.measureText(label).width)));
}

// "0 [viridis bar] max" in the bottom-right corner, under the time ticks: the scale runs from 0 to this track's
// highest score, so quiet tracks still show their structure.
function drawLegend(ctx, data, right, top) {
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  const maxText = data.scaleMax.toFixed(2);
  const barRight = right - ctx.measureText(maxText).width - 4;
  const barLeft = barRight - LEGEND_WIDTH_PX;
  for (let x = 0; x < LEGEND_WIDTH_PX; x += 1) {
    ctx.fillStyle = cssColour(colourOf((x / (LEGEND_WIDTH_PX - 1)) * data.scaleMax, data.scaleMax));
    ctx.fillRect(barLeft + x, top, 1, 8);
  }
  ctx.fillStyle = INK;
  ctx.fillText(maxText, barRight + 4, top + 4);
  ctx.textAlign = "right";
  ctx.fillText("score 0", barLeft - 4, top + 4);
}

// Draws `data` to fit the canvas's parent width; returns the layout that hit-testing and the cursor use.
export function drawHeatmap(canvas, data) {
  const probe = canvas.getContext("2d");
  const left = labelWidth(probe, data.labels) + 2 * LABEL_GAP_PX;
  const width = canvas.parentElement.clientWidth;
  const plotHeight = data.labels.length * ROW_HEIGHT_PX;
  const { ctx, ratio } = sizeCanvas(canvas, width, TOP_PX + plotHeight + AXIS_HEIGHT_PX);
  const axis = makeAxis(left, width - left - RIGHT_PX, data.end);
  const columns = columnEdges(data, axis);

  ctx.clearRect(0, 0, width, TOP_PX + plotHeight + AXIS_HEIGHT_PX);
  data.matrix.forEach((row, r) => {
    const y = TOP_PX + r * ROW_HEIGHT_PX;
    row.forEach((value, c) => {
      const [x0, x1] = columns[c];
      ctx.fillStyle = cssColour(colourOf(value, data.scaleMax));
      ctx.fillRect(x0, y, Math.max(x1 - x0, 1), ROW_HEIGHT_PX);
    });
  });

  ctx.font = FONT;
  ctx.fillStyle = INK;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  data.labels.forEach((label, r) => ctx.fillText(label, left - LABEL_GAP_PX, TOP_PX + (r + 0.5) * ROW_HEIGHT_PX));
  drawTimeTicks(ctx, axis, TOP_PX + plotHeight, INK);
  drawLegend(ctx, data, width - RIGHT_PX, TOP_PX + plotHeight + 22);

  return { axis, columns, top: TOP_PX, rowHeight: ROW_HEIGHT_PX, plotHeight, ratio };
}

// The cell under CSS pixel (x, y) of the canvas, or null outside the grid.
export function cellAt(layout, x, y) {
  const row = Math.floor((y - layout.top) / layout.rowHeight);
  if (y < layout.top || row < 0 || row * layout.rowHeight >= layout.plotHeight) return null;
  const col = layout.columns.findIndex(([x0, x1]) => x >= x0 && x < Math.max(x1, x0 + 1));
  return col < 0 ? null : { row, col };
}

// The rectangle of cell (row, col) in CSS pixels: what the tests sample to check the drawing.
export function cellRect(layout, row, col) {
  const [x0, x1] = layout.columns[col];
  return { x: x0, y: layout.top + row * layout.rowHeight, width: Math.max(x1 - x0, 1), height: layout.rowHeight };
}
