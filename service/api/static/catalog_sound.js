// The catalog map's hover sound (docs/catalog.md, docs/page.md). When the operator configured where catalog audio is
// fetched (TAGGRAM_CATALOG_AUDIO_URL: the map body's `audio_url_template`), resting the pointer on a track for DWELL_MS
// plays that track's representative window (the map body's `representative`) from its start to its end, in one
// audio element reused for every track; moving to another track, off the map or starting a drag stops it.
//
// Browsers let a page start sound only after a user gesture (Chromium's autoplay policy; a pointer passing over a
// canvas is none). So hover sound starts off, and the "Play on hover" box arms it: ticking it is the gesture. The page
// says so beside the box, and says so again if the browser still refuses.

import { formatTime } from "./axis.js";

export const DWELL_MS = 250;  // how long the pointer rests on a track before it plays: passing over points stays silent
// A track without a window (an index built from a backfill output that predates the columns): its first 30 s, the
// length of a representative window.
export const FALLBACK_SECONDS = 30;
const HAVE_METADATA = 1;  // HTMLMediaElement.readyState: duration known, seekable
const PLACEHOLDER = "{track_id}";

const sound = {
  template: null,  // the map body's audio_url_template; null: no playback, the control stays hidden
  map: null,
  track: -1,  // the point under the pointer (dwelling or playing), -1 for none
  timer: 0,
  url: null,  // what the audio element holds (audio.src reads back normalised, so it is not compared)
  stopAt: null,  // while a window plays: the second it pauses at
  pending: null,  // waiting for the new source's metadata: what to do then
};
const $ = (id) => document.getElementById(id);

// encodeURIComponent leaves !'()* as they are, though RFC 3986 reserves them: encode those too, so the page builds
// exactly the URL that service.config.audio_url builds (every byte but A-Z a-z 0-9 - . _ ~ percent-encoded).
export function encodeTrackId(trackId) {
  return encodeURIComponent(trackId).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export function audioUrl(template, trackId) {
  return template.replace(PLACEHOLDER, () => encodeTrackId(trackId));  // a function: no "$&" patterns in the id
}

// [start, end] seconds to play for point i, and whether it is the track's representative window.
export function windowOf(map, i) {
  const windows = map.representative;
  const start = windows ? windows.start_seconds[i] : null;
  if (start === null || start === undefined) return [0, FALLBACK_SECONDS, false];
  return [start, windows.end_seconds[i], true];
}

// The tooltip's note on what hovering plays, or "" when the map plays nothing.
export function soundNote(i) {
  if (!sound.template || !sound.map) return "";
  const [start, end, representative] = windowOf(sound.map, i);
  return representative ? `▶ ${formatTime(start)}–${formatTime(end)}` : `▶ first ${FALLBACK_SECONDS} s`;
}

function armed() {
  return sound.template !== null && $("catalog-sound").checked;
}

function say(text) {
  $("catalog-sound-note").textContent = text;
}

// Pauses once playback reaches the window's end: checked every frame while playing, as `timeupdate` fires only about
// every 250 ms.
function stopAtEnd() {
  const audio = $("catalog-audio");
  if (sound.stopAt === null) return;
  if (audio.currentTime >= sound.stopAt) {
    sound.stopAt = null;
    audio.pause();
  } else if (!audio.paused) {
    requestAnimationFrame(stopAtEnd);
  }
}

function play(i) {
  const audio = $("catalog-audio");
  const url = audioUrl(sound.template, sound.map.track_ids[i]);
  const [start, end] = windowOf(sound.map, i);
  const begin = () => {
    audio.currentTime = start;
    sound.stopAt = end;
    audio.play().then(stopAtEnd).catch((error) => {
      // AbortError: stopped meanwhile (another track, the pointer left, the box unticked), on purpose
      if (sound.track !== i || error.name === "AbortError") return;
      sound.stopAt = null;
      say(error.name === "NotAllowedError"
        ? "The browser refused to play sound (its autoplay policy): click anywhere on the page, then hover again."
        : `Could not play ${sound.map.track_ids[i]}: ${error.message}`);
    });
  };
  if (sound.url === url && audio.readyState >= HAVE_METADATA) {
    begin();
    return;
  }
  sound.pending = begin;
  if (sound.url !== url || audio.error) {  // the same track again: its download goes on (a failed one is retried)
    sound.url = url;
    audio.src = url;  // one element for every track: a new source aborts the previous one's download
  }
}

// Silence, and forget what was waiting to play.
export function stopSound() {
  clearTimeout(sound.timer);
  sound.pending = null;
  sound.stopAt = null;
  const audio = $("catalog-audio");
  if (!audio.paused) audio.pause();
}

// The pointer is over point i (-1: over no point, off the map or dragging): play it after DWELL_MS, stop the last one.
export function hoverTrack(i) {
  if (i === sound.track) return;
  stopSound();
  sound.track = i;
  if (i >= 0 && armed()) sound.timer = setTimeout(() => play(i), DWELL_MS);
}

// A newly loaded map: its template and windows; shows the control only when the operator configured audio.
export function configureSound(map) {
  stopSound();
  sound.map = map;
  sound.track = -1;
  sound.template = map.audio_url_template || null;
  $("catalog-sound-control").hidden = sound.template === null;
}

let wired = false;

export function wireSound() {
  if (wired) return;
  wired = true;
  const audio = $("catalog-audio");
  audio.addEventListener("loadedmetadata", () => {
    const begin = sound.pending;
    sound.pending = null;
    if (begin) begin();
  });
  audio.addEventListener("timeupdate", stopAtEnd);
  audio.addEventListener("error", () => {
    if (sound.track < 0 || sound.pending === null) return;
    sound.pending = null;
    say(`Could not load ${sound.map.track_ids[sound.track]} from the catalog audio server`
      + ` (media error ${audio.error ? audio.error.code : "?"}).`);
  });
  $("catalog-sound").addEventListener("change", (event) => {
    if (!event.target.checked) stopSound();
    say(event.target.checked ? "Rest the pointer on a track to hear its representative segment." : "");
  });
}
