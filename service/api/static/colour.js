// The heatmap's colour scale: viridis (perceptually uniform, readable in greyscale and by most colour-blind
// readers), as a 256-entry table interpolated from matplotlib's viridis at 10 evenly spaced stops.

const STOPS = [
  [68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37],
];
const LEVELS = 256;

function interpolate(t) {
  const position = t * (STOPS.length - 1);
  const i = Math.min(Math.floor(position), STOPS.length - 2);
  const f = position - i;
  return STOPS[i].map((c, j) => Math.round(c + (STOPS[i + 1][j] - c) * f));
}

const TABLE = Array.from({ length: LEVELS }, (_, level) => interpolate(level / (LEVELS - 1)));

// [r, g, b] for `value` on a scale from 0 to `max` (values outside are clamped).
export function colourOf(value, max) {
  const t = max > 0 ? Math.min(Math.max(value / max, 0), 1) : 0;
  return TABLE[Math.round(t * (LEVELS - 1))];
}

export function cssColour([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}
