// The page's wiring: models and taxonomies from GET /models, the picked file analysed and drawn, playback with a
// cursor, and the read-only `window.taggramPage` view that the browser tests read the drawing back through.
//
// Heads, extra taxonomies and the similarity index are feature-detected from GET /models: a server without them
// shows the taggram, top tags and tag-taxonomy suggestions only.

import { getModels, hasApiKey, setApiKey, upload } from "./api.js";
import { placeUpload, showCatalog } from "./catalog.js";
import { formatTime } from "./axis.js";
import { colourOf } from "./colour.js";
import { cellAt, cellRect, drawHeatmap, heatmapData } from "./heatmap.js";
import { renderFacts, renderNeighbours, renderSuggestions, renderTopTags, renderWarnings } from "./panels.js";
import { placeRepresentative, showRepresentative, wireRepresentative } from "./representative.js";
import { drawSegmentChart, headSeries, subgenreSeries } from "./segments.js";

const TOP_TAGS = 10;
const SUGGESTIONS_K = 5;
const NEIGHBOURS_K = 10;
const TOOLTIP_OFFSET_PX = 14;
const MARK_PICKED = "taggram-file-picked";
const MARK_DRAWN = "taggram-heatmap-drawn";
const MEASURE_TO_HEATMAP = "time-to-heatmap";  // pick → heatmap drawn (bench/page.py reads it)
const MEASURE_DRAW = "heatmap-draw";  // the drawing alone

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  file: null,
  objectUrl: null,
  run: 0,  // each analysis gets a number; answers for an older one are dropped
  measurePending: false,
  taggram: null,
  heat: null,
  layout: null,
  suggestions: null,
  selected: null,
  series: null,
  chartLayout: null,
};

// ---- messages ------------------------------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

function showError(error) {
  const box = $("error");
  box.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = error.title || "Something went wrong";
  box.append(title);
  if (error.detail) box.append(document.createTextNode(`: ${error.detail}`));
  box.dataset.code = error.code || "";
  box.dataset.status = String(error.status || "");
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function showAuth(message) {
  $("auth").hidden = false;
  $("auth-message").textContent = message;
  $("api-key").focus();
}

function handleError(error) {
  if (error.needsKey) {
    showAuth(hasApiKey() ? "The service refused this API key. Enter another one." : "This service needs an API key.");
  }
  showError(error);
  setStatus("");
}

// ---- models and taxonomies --------------------------------------------------------------------------------------

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

// The model's tag taxonomy, any further tag taxonomies and any trained heads (the last two only on servers with
// the heads feature).
function taxonomyChoices(model) {
  const choices = [];
  if (model.taxonomy && model.taxonomy.name) choices.push({ kind: "tags", name: model.taxonomy.name });
  for (const name of model.taxonomies || []) {
    if (!choices.some((c) => c.name === name)) choices.push({ kind: "tags", name });
  }
  for (const head of model.heads || []) choices.push({ kind: "head", name: head.name, preferred: Boolean(head.default) });
  return choices;
}

function fillTaxonomies() {
  const choices = taxonomyChoices(currentModel());
  $("taxonomy").replaceChildren(...choices.map((c) => {
    const option = new Option(`${c.name} (${c.kind === "head" ? "trained head" : "tags"})`, `${c.kind}:${c.name}`);
    option.selected = Boolean(c.preferred);
    return option;
  }));
  $("taxonomy").disabled = choices.length < 2;
}

function currentChoice() {
  const value = $("taxonomy").value;
  const colon = value.indexOf(":");
  return { kind: value.slice(0, colon), name: value.slice(colon + 1) };
}

async function loadModels() {
  try {
    const body = await getModels();
    state.models = body.models;
    $("model").replaceChildren(...body.models.map((m) => new Option(m.name, m.name, false, m.name === body.default)));
    $("model").disabled = body.models.length < 2;
    fillTaxonomies();
    $("auth").hidden = true;
    clearError();
    document.body.dataset.ready = "true";
    showCatalog(currentModel()).catch(handleError);
    setStatus(state.file ? "" : "Drop or choose an audio file.");
    if (state.file) analyse();
  } catch (error) {
    handleError(error);
  }
}

// ---- analysis ---------------------------------------------------------------------------------------------------

function pickFile(file) {
  if (!file) return;
  state.file = file;
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(file);
  $("audio").src = state.objectUrl;
  $("file-name").textContent = `${file.name} (${(file.size / 1e6).toFixed(1)} MB)`;
  performance.clearMarks(MARK_PICKED);
  performance.clearMarks(MARK_DRAWN);
  performance.clearMeasures(MEASURE_TO_HEATMAP);
  performance.mark(MARK_PICKED);
  state.measurePending = true;
  analyse();
}

async function analyse() {
  if (!state.file) return;
  if (!state.models.length) {
    setStatus("Enter the API key first: the file is analysed once the models are listed.");
    return;
  }
  const run = ++state.run;
  const model = currentModel();
  const choice = currentChoice();
  clearError();
  document.body.dataset.analysing = "true";
  setStatus(`Analysing ${state.file.name} with ${model.name}…`);
  try {
    const taggram = await upload("/taggram", state.file, {
      model: model.name, head: choice.kind === "head" ? choice.name : undefined,
    });
    if (run !== state.run) return;
    showTaggram(taggram);
    const [suggestions, similar] = await Promise.all([
      upload("/suggest-subgenres", state.file, { model: model.name, taxonomy: choice.name, k: SUGGESTIONS_K }),
      model.index ? upload("/similar", state.file, { model: model.name, k: NEIGHBOURS_K }).catch((e) => e) : null,
    ]);
    if (run !== state.run) return;
    showSuggestions(suggestions);
    showNeighbours(similar);
    renderWarnings($("warnings"), [taggram, suggestions, similar instanceof Error ? null : similar]);
    setStatus("");
  } catch (error) {
    if (run !== state.run) return;
    $("result").hidden = true;
    handleError(error);
  } finally {
    if (run === state.run) document.body.dataset.analysing = "false";
  }
}

function showTaggram(taggram) {
  state.taggram = taggram;
  state.heat = heatmapData(taggram);
  state.suggestions = null;
  state.selected = null;
  state.series = null;
  $("result").hidden = false;  // before drawing: a hidden box has no width to draw into
  $("segment-panel").hidden = true;
  $("suggestions").replaceChildren();
  $("neighbours-panel").hidden = true;
  redraw();
  showRepresentative(taggram.representative, state.layout);
  renderTopTags($("top-tags"), taggram.labels, taggram.mean, TOP_TAGS);
  renderFacts($("facts"), taggram);
  renderWarnings($("warnings"), [taggram]);
  if (state.measurePending) {
    state.measurePending = false;
    performance.mark(MARK_DRAWN);
    performance.measure(MEASURE_TO_HEATMAP, MARK_PICKED, MARK_DRAWN);
  }
}

function showSuggestions(response) {
  state.suggestions = response;
  const kind = response.kind || "tags";  // servers before the heads feature only have tag taxonomies
  $("suggestions-meta").textContent = `${response.taxonomy} (${kind === "head" ? "trained head" : "tags"})`
    + (response.cached ? " · from the cache" : "");
  const first = response.suggestions[0];
  selectSuggestion(first ? first.subgenre : null);
}

function selectSuggestion(subgenre) {
  state.selected = subgenre;
  renderSuggestions($("suggestions"), state.suggestions.suggestions, subgenre, selectSuggestion);
  state.series = subgenre === null ? null : seriesFor(subgenre);
  drawSelected();
}

function seriesFor(subgenre) {
  const response = state.suggestions;
  if ((response.kind || "tags") === "head") return headSeries(state.taggram, response.taxonomy, subgenre);
  const taxonomy = currentModel().taxonomy;
  // GET /models gives the tag mapping of the model's own taxonomy only.
  if (!taxonomy || taxonomy.name !== response.taxonomy || !taxonomy.subgenres[subgenre]) return null;
  return subgenreSeries(state.taggram, taxonomy.subgenres[subgenre]);
}

function drawSelected() {
  const panel = $("segment-panel");
  if (state.selected === null || !state.layout) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  $("segment-title").textContent = `${state.selected}, segment by segment`;
  const head = (state.suggestions.kind || "tags") === "head";
  const tags = !head && state.series !== null ? currentModel().taxonomy.subgenres[state.selected] : [];
  $("segment-note").textContent = state.series === null
    ? "Per-segment scores are not available for this taxonomy."
    : head ? "The head's score for this class in each segment."
      : `Highest score in each segment among its tags: ${tags.join(", ")}.`;
  $("segment-chart-wrap").hidden = state.series === null;
  state.chartLayout = state.series === null ? null
    : drawSegmentChart($("segment-chart"), state.layout.axis, state.heat, state.series);
  moveCursors();
}

function showNeighbours(similar) {
  const panel = $("neighbours-panel");
  if (similar === null) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  if (similar instanceof Error) {
    $("neighbours-note").textContent = similar.message;
    $("neighbours").replaceChildren();
    return;
  }
  $("neighbours-note").textContent = (similar.duplicate ? "A near-duplicate is in the catalog. " : "")
    + (similar.cached ? "From the cache." : "");
  renderNeighbours($("neighbours"), similar.neighbours || []);
  placeUpload(similar);
}

// ---- drawing, hover, playback ---------------------------------------------------------------------------------

function redraw() {
  if (!state.heat || $("result").hidden) return;
  const started = performance.now();
  state.layout = drawHeatmap($("heatmap"), state.heat);
  performance.measure(MEASURE_DRAW, { start: started, end: performance.now() });
  $("heatmap").dataset.segments = String(state.heat.starts.length);
  placeRepresentative(state.layout);
  if (state.series !== null && state.selected !== null) drawSelected();
  moveCursors();
}

function placeCursor(cursor, axis, top, height) {
  const x = axis.x(Math.min($("audio").currentTime || 0, axis.end));
  cursor.style.transform = `translateX(${x.toFixed(1)}px)`;
  cursor.style.top = `${top}px`;
  cursor.style.height = `${height}px`;
  cursor.hidden = false;
}

function moveCursors() {
  if (state.layout) placeCursor($("cursor"), state.layout.axis, state.layout.top, state.layout.plotHeight);
  if (state.chartLayout) placeCursor($("segment-cursor"), state.chartLayout.axis, state.chartLayout.top, state.chartLayout.plotHeight);
}

function followPlayback() {
  moveCursors();
  if (!$("audio").paused) requestAnimationFrame(followPlayback);
}

function seekTo(seconds) {
  $("audio").currentTime = seconds;
  moveCursors();
}

function showTooltip(event) {
  const cell = state.layout && cellAt(state.layout, event.offsetX, event.offsetY);
  const tip = $("tooltip");
  if (!cell) {
    tip.hidden = true;
    return;
  }
  const heat = state.heat;
  tip.textContent = `${heat.labels[cell.row]} · ${formatTime(heat.starts[cell.col])}–${formatTime(heat.ends[cell.col])}`
    + ` · ${heat.matrix[cell.row][cell.col].toFixed(3)}`;
  tip.hidden = false;
  const wrap = $("heatmap").parentElement.clientWidth;
  const x = Math.min(event.offsetX + TOOLTIP_OFFSET_PX, wrap - tip.offsetWidth - 4);
  tip.style.transform = `translate(${Math.max(x, 0)}px, ${event.offsetY + TOOLTIP_OFFSET_PX}px)`;
}

// ---- the read-only view the browser tests use ----------------------------------------------------------------

function testView() {
  return Object.freeze({
    // What the heatmap drew: tags in row order, the scores matrix (rows = tags, columns = segments), segment bounds.
    get heatmap() {
      return state.heat ? structuredClone(state.heat) : null;
    },
    get segmentSeries() {
      return state.series ? { subgenre: state.selected, values: [...state.series] } : null;
    },
    get devicePixelRatio() {
      return state.layout ? state.layout.ratio : null;
    },
    colourOf: (value) => [...colourOf(value, state.heat ? state.heat.scaleMax : 1)],
    cellRect: (row, col) => (state.layout ? cellRect(state.layout, row, col) : null),
    timeAtX: (x) => (state.layout ? state.layout.axis.seconds(x) : null),
  });
}

// ---- events -------------------------------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", () => pickFile($("file").files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("dragging");
    pickFile(e.dataTransfer.files[0]);
  });
  // A file dropped anywhere else would make the browser navigate to it, losing the page.
  for (const type of ["dragover", "drop"]) document.addEventListener(type, (e) => e.preventDefault());

  $("model").addEventListener("change", () => {
    fillTaxonomies();
    showCatalog(currentModel()).catch(handleError);
    analyse();
  });
  $("taxonomy").addEventListener("change", () => analyse());

  // A form, so Enter submits; the submit never leaves the page (and the CSP's form-action 'none' would stop it
  // if this handler failed to load): the key must not end up in a URL.
  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey($("api-key").value);
    $("api-key").value = "";
    loadModels();
  });

  const heatmap = $("heatmap");
  heatmap.addEventListener("mousemove", showTooltip);
  heatmap.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  heatmap.addEventListener("click", (e) => state.layout && seekTo(state.layout.axis.seconds(e.offsetX)));
  $("segment-chart").addEventListener("click", (e) => state.chartLayout && seekTo(state.chartLayout.axis.seconds(e.offsetX)));

  const audio = $("audio");
  audio.addEventListener("play", () => requestAnimationFrame(followPlayback));
  for (const type of ["timeupdate", "seeked", "loadedmetadata"]) audio.addEventListener(type, moveCursors);
  wireRepresentative(audio);

  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      redraw();
    });
  });
}

Object.defineProperty(window, "taggramPage", { value: testView(), writable: false, configurable: false });
wire();
loadModels();
