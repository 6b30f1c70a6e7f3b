// The catalog view: every indexed track on the map (GET /catalog/map, compact columns), coloured by label; drag to
// pan, wheel to zoom; hover names the track, its artist and label; click lists its neighbours (GET /similar/{id}) and
// rings them; an artist typed in the box is highlighted; an upload appears at POST /similar's position with lines to
// its nearest catalog tracks. Points are written straight into an ImageData (no path per point): 10⁵ points redraw
// in a few milliseconds (docs/catalog.md), each redraw is a performance measure named MEASURE_DRAW. Where the
// operator configured catalog audio, resting on a track plays its representative segment (catalog_sound.js).

import { getCatalogMap, getSimilar } from "./api.js";
import { configureSound, hoverTrack, soundNote, stopSound, wireSound } from "./catalog_sound.js";
import { cssColour } from "./colour.js";

export const MEASURE_DRAW = "catalog-draw";
const HOVER_PIXELS = 6;  // how close the pointer must be to a point to name it
const MARGIN = 12;  // CSS pixels around the points at the initial zoom
const ZOOM_STEP = 1.2;
const DIM = [200, 200, 200];
const HIGHLIGHT = [214, 39, 40];
// Ten distinguishable colours (Tableau 10) for the most frequent labels; the rest share grey.
const PALETTE = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [148, 103, 189], [140, 86, 75], [227, 119, 194],
  [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232]];

const view = { map: null, scale: 1, x0: 0, y0: 0, neighbours: [], upload: null, artist: -1, screen: null };
const $ = (id) => document.getElementById(id);

function labelColours(map) {
  const counts = new Array(map.labels.length).fill(0);
  for (const l of map.label) if (l >= 0) counts[l] += 1;
  const ranked = counts.map((c, i) => [c, i]).sort((a, b) => b[0] - a[0]).slice(0, PALETTE.length);
  const colours = map.labels.map(() => DIM);
  ranked.forEach(([, i], rank) => { colours[i] = PALETTE[rank]; });
  return colours;
}

function fit(canvas) {
  const { x, y } = view.map;
  const [minX, maxX, minY, maxY] = [Math.min(...x), Math.max(...x), Math.min(...y), Math.max(...y)];
  const width = canvas.clientWidth - 2 * MARGIN;
  const height = canvas.clientHeight - 2 * MARGIN;
  view.scale = Math.min(width / (maxX - minX || 1), height / (maxY - minY || 1));
  view.x0 = minX - MARGIN / view.scale;
  view.y0 = maxY + MARGIN / view.scale;
}

function toScreen(i) {
  return [(view.map.x[i] - view.x0) * view.scale, (view.y0 - view.map.y[i]) * view.scale];
}

function draw() {
  const canvas = $("catalog-map");
  const map = view.map;
  if (!map) return;
  const started = performance.now();
  const width = canvas.width = canvas.clientWidth;
  const height = canvas.height = canvas.clientHeight;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const pixels = image.data;
  const screen = new Float32Array(2 * map.count);
  for (let i = 0; i < map.count; i += 1) {
    const [sx, sy] = toScreen(i);
    screen[2 * i] = sx;
    screen[2 * i + 1] = sy;
    const px = Math.round(sx);
    const py = Math.round(sy);
    if (px < 0 || py < 0 || px >= width || py >= height) continue;
    const colour = map.artist[i] === view.artist && view.artist >= 0 ? HIGHLIGHT
      : (map.label[i] >= 0 ? view.colours[map.label[i]] : DIM);
    const at = 4 * (py * width + px);
    pixels[at] = colour[0]; pixels[at + 1] = colour[1]; pixels[at + 2] = colour[2]; pixels[at + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  view.screen = screen;
  context.strokeStyle = cssColour(HIGHLIGHT);
  for (const i of view.neighbours) ring(context, screen[2 * i], screen[2 * i + 1]);
  if (view.upload) drawUpload(context, screen);
  performance.measure(MEASURE_DRAW, { start: started, end: performance.now() });
}

function ring(context, x, y) {
  context.beginPath();
  context.arc(x, y, 4, 0, 2 * Math.PI);
  context.stroke();
}

function drawUpload(context, screen) {
  const { position, rows } = view.upload;
  const ux = (position.x - view.x0) * view.scale;
  const uy = (view.y0 - position.y) * view.scale;
  context.strokeStyle = "black";
  for (const i of rows) {
    context.beginPath();
    context.moveTo(ux, uy);
    context.lineTo(screen[2 * i], screen[2 * i + 1]);
    context.stroke();
  }
  context.fillStyle = "black";
  context.fillRect(ux - 4, uy - 4, 8, 8);
}

// The index of the point nearest to (x, y) in CSS pixels, or -1 when none is within HOVER_PIXELS.
export function pointAt(x, y) {
  if (!view.screen) return -1;
  let best = -1;
  let bestDistance = HOVER_PIXELS * HOVER_PIXELS;
  for (let i = 0; i < view.map.count; i += 1) {
    const dx = view.screen[2 * i] - x;
    const dy = view.screen[2 * i + 1] - y;
    const distance = dx * dx + dy * dy;
    if (distance <= bestDistance) { best = i; bestDistance = distance; }
  }
  return best;
}

function describe(i) {
  const map = view.map;
  const artist = map.artist[i] >= 0 ? map.artists[map.artist[i]] : "unknown artist";
  const label = map.label[i] >= 0 ? map.labels[map.label[i]] : "no label";
  return `${map.track_ids[i]} · ${artist} · ${label}`;
}

async function showNeighbours(i, model) {
  const list = $("catalog-neighbours");
  try {
    const similar = await getSimilar(view.map.track_ids[i], model);
    const rows = new Map(view.map.track_ids.map((t, row) => [t, row]));
    view.neighbours = similar.neighbours.map((n) => rows.get(n.track_id)).filter((row) => row !== undefined);
    list.replaceChildren(...similar.neighbours.map((n) => {
      const item = document.createElement("li");
      item.textContent = `${n.track_id} (${n.score.toFixed(3)})`;
      return item;
    }));
    $("catalog-selected").textContent = `Neighbours of ${describe(i)}`;
  } catch (error) {
    $("catalog-selected").textContent = error.message;
  }
  draw();
}

function wire(canvas, model) {
  let drag = null;
  canvas.onpointerdown = (event) => { drag = { x: event.clientX, y: event.clientY, moved: false }; };
  canvas.onpointerup = (event) => {
    const clicked = drag && !drag.moved;
    drag = null;
    if (!clicked) return;
    const i = pointAt(event.offsetX, event.offsetY);
    if (i >= 0) showNeighbours(i, model);
  };
  canvas.onpointermove = (event) => {
    if (drag && (event.buttons & 1)) {
      view.x0 -= (event.clientX - drag.x) / view.scale;
      view.y0 += (event.clientY - drag.y) / view.scale;
      drag = { x: event.clientX, y: event.clientY, moved: true };
      hoverTrack(-1);
      draw();
      return;
    }
    const i = pointAt(event.offsetX, event.offsetY);
    const tooltip = $("catalog-tooltip");
    tooltip.hidden = i < 0;
    if (i >= 0) {
      const note = soundNote(i);
      tooltip.textContent = note ? `${describe(i)} · ${note}` : describe(i);
      tooltip.style.left = `${event.offsetX + 12}px`;
      tooltip.style.top = `${event.offsetY + 12}px`;
    }
    hoverTrack(i);
  };
  canvas.onpointerleave = () => {
    $("catalog-tooltip").hidden = true;
    hoverTrack(-1);
  };
  canvas.onwheel = (event) => {
    event.preventDefault();
    const factor = event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP;
    const [mx, my] = [view.x0 + event.offsetX / view.scale, view.y0 - event.offsetY / view.scale];
    view.scale *= factor;
    view.x0 = mx - event.offsetX / view.scale;
    view.y0 = my + event.offsetY / view.scale;
    draw();
  };
  $("catalog-artist").oninput = (event) => {
    view.artist = view.map.artists.indexOf(event.target.value.trim());
    draw();
  };
}

// Load and draw the model's map; hides the section when the model has no index (or the index no map).
export async function showCatalog(model) {
  const section = $("catalog");
  if (!model.index || !model.index.map) {
    section.hidden = true;
    stopSound();
    return;
  }
  view.map = await getCatalogMap(model.name);
  configureSound(view.map);
  wireSound();
  view.colours = labelColours(view.map);
  view.neighbours = [];
  view.upload = null;
  section.hidden = false;
  const canvas = $("catalog-map");
  fit(canvas);
  wire(canvas, model.name);
  $("catalog-count").textContent = `${view.map.count} tracks, ${view.map.projection}, coloured by ${view.map.label_kind}`;
  draw();
  canvas.dataset.points = String(view.map.count);
}

// The upload's place (POST /similar's position) with lines to its neighbours on the map.
export function placeUpload(similar) {
  if (!view.map || !similar || similar instanceof Error || !similar.position) return;
  const rows = new Map(view.map.track_ids.map((t, row) => [t, row]));
  view.upload = { position: similar.position, rows: similar.neighbours.map((n) => rows.get(n.track_id))
    .filter((row) => row !== undefined) };
  draw();
}

// For the browser tests, as window.taggramPage: where a map position or a point is on the canvas (CSS pixels).
window.taggramCatalog = {
  screenOf: (x, y) => [(x - view.x0) * view.scale, (view.y0 - y) * view.scale],
  pointScreen: (i) => toScreen(i),
  trackIds: () => (view.map ? view.map.track_ids : []),
};
