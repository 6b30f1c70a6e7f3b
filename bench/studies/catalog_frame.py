"""The catalog view's frame time and hover cost at 10⁵ points (issue #23), in Debian's headless Chromium
(tests/support/browser.py).

The index: ``--derived`` span means of a real backfill (bench/studies/catalog_payload.py's output, pca map, exact
search), served in-process with TAGGRAM_CATALOG_AUDIO_URL pointing at a local media server (tests/support/
media_server.py, serving the first catalog track's real file). The page loads the compact map; then ``--frames``
wheel events over the canvas (each zooms and redraws every point) and as many drag steps (pans); each redraw is the
page's ``catalog-draw`` measure. Then "Play on hover" is ticked and the pointer makes ``--hover-moves`` moves
across the map (a real input event each, through chromedriver); the canvas's pointermove handler is timed around
each call (performance.now() before and after: finding the nearest point among all, the tooltip's text and
position, the hover sound's bookkeeping; not the style and layout the browser does afterwards for the tooltip).
Reported: the load (fetch + parse + first draw), the redraw time's median and 95th percentile, and the hover
handler's median, 95th percentile and maximum per pointer move. Run::

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.studies.catalog_frame /tmp/cat-corpus/bf \
        --artists /tmp/cat-corpus/subset.csv --derived 100000
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.studies.catalog_payload import derived_output
from service.offline import index_build

TIMEOUT_SECONDS = 120.0
HOVER_STEP_PX = 7  # between two pointer moves: about a fast hand's move per frame
HOVER_MARGIN_PX = 20

# Wraps the canvas's pointermove handler (catalog.js sets it as onpointermove) to time each call.
TIME_HOVER = """
const canvas = document.getElementById('catalog-map');
const handler = canvas.onpointermove;
window.__hover = [];
canvas.onpointermove = (event) => {
  const started = performance.now();
  handler(event);
  window.__hover.push([performance.now() - started, !document.getElementById('catalog-tooltip').hidden]);
};
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def hover_path(width: int, height: int, moves: int) -> list[tuple[int, int]]:
    """Offsets from the canvas's centre, row after row across the map (a zig-zag), HOVER_STEP_PX apart."""
    usable = width - 2 * HOVER_MARGIN_PX
    per_row = usable // HOVER_STEP_PX
    path = []
    for k in range(moves):
        row, step = divmod(k, per_row)
        x = HOVER_MARGIN_PX + (step if row % 2 == 0 else per_row - 1 - step) * HOVER_STEP_PX
        y = HOVER_MARGIN_PX + (row * 3 * HOVER_STEP_PX) % (height - 2 * HOVER_MARGIN_PX)
        path.append((x - width // 2, y - height // 2))
    return path


def main(argv: list[str] | None = None) -> int:
    from tests.support.browser import chromium
    from tests.support.live_server import live_server, server_settings
    from tests.support.media_server import media_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backfill", type=Path)
    parser.add_argument("--artists", type=Path, required=True)
    parser.add_argument("--derived", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--hover-moves", type=int, default=600)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        derived_output(args.backfill, args.artists, args.derived, work / "bf")
        index_build.build(work / "bf", work / "ix", backend="exact")
        with media_server(first_track_file(args.artists)) as cdn:
            template = cdn.url + "/audio/{track_id}"
            settings = server_settings(args.models_dir, index_dir=work / "ix", catalog_audio_url=template)
            with live_server(settings) as live, chromium(work / "chromium") as driver:
                result = measure(driver, live.url, args)
            result["audio_requests"] = len(cdn.requests)
    print(json.dumps(result, indent=1))
    return 0


def first_track_file(artists_csv: Path) -> Path:
    """The catalog's first track's own file: what the media server answers for every track."""
    with artists_csv.open(newline="", encoding="utf-8") as f:
        return Path(next(csv.DictReader(f))["path"])


def measure(driver, url: str, args) -> dict:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.perf_counter()
    driver.get(url + "/")
    WebDriverWait(driver, TIMEOUT_SECONDS, 0.05).until(
        lambda d: d.execute_script("return document.getElementById('catalog-map').dataset.points")
    )
    load_seconds = time.perf_counter() - started
    canvas = driver.find_element(By.ID, "catalog-map")
    points = int(canvas.get_attribute("data-points"))

    # Hover first, on the map as loaded (fitted to the canvas), so the path crosses the whole catalog.
    driver.find_element(By.ID, "catalog-sound").click()  # hover sound armed: the handler's whole path runs
    driver.execute_script(TIME_HOVER)
    chain = ActionChains(driver, duration=0)
    for dx, dy in hover_path(canvas.size["width"], canvas.size["height"], args.hover_moves):
        chain.move_to_element_with_offset(canvas, dx, dy)
    chain.perform()
    hover = driver.execute_script("return window.__hover")
    driver.find_element(By.ID, "catalog-sound").click()  # disarmed again: no playback under the redraws below

    for frame in range(args.frames):
        ActionChains(driver).scroll_from_origin(
            ScrollOrigin.from_element(canvas), 0, -100 if frame % 2 == 0 else 100
        ).perform()
        ActionChains(driver).move_to_element(canvas).click_and_hold().move_by_offset(5, 3).release().perform()
    draws = driver.execute_script("return performance.getEntriesByName('catalog-draw').map((e) => e.duration)")
    redraws = sorted(draws[1:])
    handler_ms = [ms for ms, _ in hover]
    return {
        "points": points,
        "load_seconds": load_seconds,
        "first_draw_ms": draws[0],
        "redraws": len(redraws),
        "redraw_ms_median": statistics.median(redraws),
        "redraw_ms_p95": percentile(redraws, 0.95),
        "hover_moves": len(hover),
        "hover_on_a_point": sum(on for _, on in hover) / max(len(hover), 1),
        "hover_handler_ms_median": statistics.median(handler_ms),
        "hover_handler_ms_p95": percentile(handler_ms, 0.95),
        "hover_handler_ms_max": max(handler_ms),
    }


if __name__ == "__main__":
    sys.exit(main())
