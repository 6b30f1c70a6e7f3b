// The page's lists and tables, built with textContent only: tag names, subgenres and catalog titles come from
// manifests and catalogs, and none of them is ever parsed as HTML.

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// A labelled horizontal bar for a score in [0, 1].
function scoreRow(label, score) {
  const row = element("div", "score-row");
  row.append(element("span", "score-label", label));
  const track = element("span", "score-track");
  const bar = element("span", "score-bar");
  bar.style.width = `${(Math.min(Math.max(score, 0), 1) * 100).toFixed(1)}%`;  // CSSOM: allowed by the CSP
  track.append(bar);
  row.append(track, element("span", "score-value", score.toFixed(3)));
  return row;
}

export function renderTopTags(list, labels, mean, count) {
  const order = mean.map((_, i) => i).sort((a, b) => mean[b] - mean[a]).slice(0, count);
  list.replaceChildren(...order.map((i) => {
    const item = element("li");
    item.append(scoreRow(labels[i], mean[i]));
    return item;
  }));
}

export function renderSuggestions(list, suggestions, selected, onSelect) {
  list.replaceChildren(...suggestions.map((suggestion) => {
    const item = element("li");
    const button = element("button", "suggestion");
    button.type = "button";
    button.dataset.subgenre = suggestion.subgenre;
    button.setAttribute("aria-pressed", String(suggestion.subgenre === selected));
    button.append(scoreRow(suggestion.subgenre, suggestion.score));
    button.addEventListener("click", () => onSelect(suggestion.subgenre));
    item.append(button);
    return item;
  }));
}

export function renderNeighbours(body, neighbours) {
  body.replaceChildren(...neighbours.map((n) => {
    const row = element("tr");
    row.append(
      element("td", "", n.title || n.track_id),
      element("td", "muted", n.artist_id || "—"),
      element("td", "num", Number(n.score).toFixed(3)),
      element("td", "", n.duplicate ? "duplicate" : ""),
    );
    row.title = `track ${n.track_id}`;
    return row;
  }));
}

// Decode warnings (contract: "warnings": [{code, detail}]), merged over responses so each shows once.
export function renderWarnings(list, responses) {
  const seen = new Map();
  for (const response of responses) {
    for (const warning of (response && response.warnings) || []) {
      if (!seen.has(warning.code)) seen.set(warning.code, warning.detail || "");
    }
  }
  list.replaceChildren(...[...seen].map(([code, detail]) => {
    const item = element("li");
    item.append(element("code", "", code), document.createTextNode(detail ? ` — ${detail}` : ""));
    return item;
  }));
  list.hidden = seen.size === 0;
}

// One line of facts about the analysis: cached or computed, duration, segments, and the decoder when known.
export function renderFacts(node, taggram) {
  const facts = [
    taggram.cached ? "from the cache" : "freshly analysed",
    `${taggram.duration_seconds.toFixed(1)} s`,
    `${taggram.segments.length} segments of ${taggram.patch_seconds.toFixed(2)} s every ${taggram.hop_seconds.toFixed(2)} s`,
    `model ${taggram.model}`,
  ];
  const decode = taggram.decode;
  if (decode && decode.decoder) facts.push(`decoded by ${decode.decoder}${decode.codec ? ` (${decode.codec})` : ""}`);
  node.textContent = facts.join(" · ");
  node.dataset.cached = String(Boolean(taggram.cached));
}
