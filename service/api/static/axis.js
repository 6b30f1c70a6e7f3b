// The time axis the heatmap and the segment chart share, so a second sits at the same x in both and the
// playback cursor lines up over each.

const TICK_STEPS_SECONDS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
const MIN_TICK_GAP_PX = 64;

export function makeAxis(left, width, endSeconds) {
  const end = Math.max(endSeconds, 1e-6);
  return {
    left,
    width,
    end,
    x: (seconds) => left + (seconds / end) * width,
    seconds: (x) => Math.min(Math.max((x - left) / width, 0), 1) * end,
  };
}

export function formatTime(seconds) {
  const whole = Math.max(seconds, 0);
  const minutes = Math.floor(whole / 60);
  const rest = whole - minutes * 60;
  return `${minutes}:${rest.toFixed(1).padStart(4, "0")}`;
}

export function tickSeconds(axis) {
  const step = TICK_STEPS_SECONDS.find((s) => (s / axis.end) * axis.width >= MIN_TICK_GAP_PX)
    || TICK_STEPS_SECONDS[TICK_STEPS_SECONDS.length - 1];
  const ticks = [];
  for (let t = 0; t <= axis.end + 1e-9; t += step) ticks.push(t);
  return ticks;
}

// Ticks and m:ss labels below the plot, from y = `top`.
export function drawTimeTicks(ctx, axis, top, colour) {
  ctx.fillStyle = colour;
  ctx.strokeStyle = colour;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of tickSeconds(axis)) {
    const x = Math.round(axis.x(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + 4);
    ctx.stroke();
    ctx.fillText(formatTime(t).replace(/\.0$/, ""), x, top + 6);
  }
}

// A canvas sized to its box in CSS pixels and backed at the device's pixel ratio, so text and cells stay sharp.
export function sizeCanvas(canvas, cssWidth, cssHeight) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  canvas.style.width = `${cssWidth}px`;  // CSSOM writes are allowed by style-src 'self'; style="" is not
  canvas.style.height = `${cssHeight}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, ratio };
}
