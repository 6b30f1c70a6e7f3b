"""The catalog view's frame time at 10⁵ points (issue #23), in Debian's headless Chromium (tests/support/browser.py).

The index: ``--derived`` span means of a real backfill (bench/studies/catalog_payload.py's output, pca map, exact
search), served in-process. The page loads the compact map; then ``--frames`` wheel events over the canvas (each
zooms and redraws every point) and as many drag steps (pans); each redraw is the page's ``catalog-draw`` measure.
Reported: the load (fetch + parse + first draw) and the redraw time's median and 95th percentile. Run::

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.studies.catalog_frame /tmp/cat-corpus/bf \
        --artists /tmp/cat-corpus/subset.csv --derived 100000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.studies.catalog_payload import derived_output
from service.offline import index_build

TIMEOUT_SECONDS = 120.0


def main(argv: list[str] | None = None) -> int:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.browser import chromium
    from tests.support.live_server import live_server, server_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backfill", type=Path)
    parser.add_argument("--artists", type=Path, required=True)
    parser.add_argument("--derived", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        derived_output(args.backfill, args.artists, args.derived, work / "bf")
        index_build.build(work / "bf", work / "ix", backend="exact")
        with (
            live_server(server_settings(args.models_dir, index_dir=work / "ix")) as live,
            chromium(work / "chromium") as driver,
        ):
            started = time.perf_counter()
            driver.get(live.url + "/")
            WebDriverWait(driver, TIMEOUT_SECONDS, 0.05).until(
                lambda d: d.execute_script("return document.getElementById('catalog-map').dataset.points")
            )
            load_seconds = time.perf_counter() - started
            canvas = driver.find_element(By.ID, "catalog-map")
            for frame in range(args.frames):
                ActionChains(driver).scroll_from_origin(
                    ScrollOrigin.from_element(canvas), 0, -100 if frame % 2 == 0 else 100
                ).perform()
                ActionChains(driver).move_to_element(canvas).click_and_hold().move_by_offset(5, 3).release().perform()
            draws = driver.execute_script("return performance.getEntriesByName('catalog-draw').map((e) => e.duration)")
            points = int(canvas.get_attribute("data-points"))
    redraws = sorted(draws[1:])
    result = {
        "points": points,
        "load_seconds": load_seconds,
        "first_draw_ms": draws[0],
        "redraws": len(redraws),
        "redraw_ms_median": statistics.median(redraws),
        "redraw_ms_p95": redraws[int(0.95 * (len(redraws) - 1))],
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
