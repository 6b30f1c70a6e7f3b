// The track's representative segment (GET /taggram's `representative`, docs/catalog.md): a band over the
// heatmap's rows, from start_seconds to end_seconds on the heatmap's own time axis, and a button that plays just
// that window in the page's audio element: it seeks to the start, plays, and pauses at the end.

import { formatTime } from "./axis.js";

const $ = (id) => document.getElementById(id);

let current = null;  // { start_seconds, end_seconds } of the track on the page; null before one or on old servers
let stopAt = null;  // while the button's playback runs: the second it pauses at

// Pauses once playback reaches the window's end; checked every frame while playing, as `timeupdate` fires only
// about every 250 ms (docs/page.md).
function stopAtEnd(audio) {
  if (stopAt === null) return;
  if (audio.currentTime >= stopAt) {
    stopAt = null;
    audio.pause();
  } else if (!audio.paused) {
    requestAnimationFrame(() => stopAtEnd(audio));
  }
}

export function playRepresentative(audio) {
  if (current === null) return;
  audio.currentTime = current.start_seconds;
  stopAt = current.end_seconds;
  audio.play().then(() => stopAtEnd(audio)).catch(() => {
    stopAt = null;  // the browser refused playback: the controls still work by hand
  });
}

// Places the band over the heatmap drawn with `layout` (drawHeatmap's), or hides it without a window.
export function placeRepresentative(layout) {
  const band = $("representative");
  if (current === null || !layout) {
    band.hidden = true;
    return;
  }
  const x0 = layout.axis.x(Math.min(current.start_seconds, layout.axis.end));
  const x1 = layout.axis.x(Math.min(current.end_seconds, layout.axis.end));
  band.style.transform = `translateX(${x0.toFixed(1)}px)`;  // CSSOM writes: allowed by style-src 'self'
  band.style.width = `${Math.max(x1 - x0, 1).toFixed(1)}px`;
  band.style.top = `${layout.top}px`;
  band.style.height = `${layout.plotHeight}px`;
  band.hidden = false;
}

export function showRepresentative(representative, layout) {
  current = representative || null;
  stopAt = null;
  const button = $("play-representative");
  button.hidden = current === null;
  button.textContent = current === null ? ""
    : `Play the representative segment (${formatTime(current.start_seconds)}–${formatTime(current.end_seconds)})`;
  placeRepresentative(layout);
}

// A seek or pause by hand ends the window's playback: the listener has taken over.
export function wireRepresentative(audio) {
  $("play-representative").addEventListener("click", () => playRepresentative(audio));
  audio.addEventListener("timeupdate", () => stopAtEnd(audio));
  audio.addEventListener("seeking", () => {
    if (stopAt !== null && current !== null && Math.abs(audio.currentTime - current.start_seconds) > 1e-3) stopAt = null;
  });
  audio.addEventListener("pause", () => {
    stopAt = null;
  });
}
