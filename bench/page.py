"""The exploration page in the browser: page weight, and time from picking a 3-minute track to its heatmap.

``taggram serve`` runs as a subprocess; Debian's headless Chromium (tests/support/browser.py: nothing is downloaded)
opens the page with an empty profile and picks real music (``corpus.music``: 3-minute clips cut without re-encoding from
the lincity-ng soundtrack). Measured in the page with the Performance API:

* page weight: bytes transferred for the page and its static files (Resource Timing ``transferSize``: headers +
  body as sent; the service does not compress), and the same files gzip -9'd for reference;
* time to heatmap: the page's own ``time-to-heatmap`` measure, from the file being picked to the heatmap drawn
  (upload, analysis, JSON, drawing), for a clip the service has not seen (cold) and again after a reload (cached);
  the same clip's ``POST /taggram`` from Python, interleaved, gives the API's share;
* the drawing alone (``heatmap-draw``).

``--screenshots`` also writes docs/page.png (the page on a real track, hovering a cell, the cursor a third in), made
small with pngquant when it is installed.

    .venv/bin/python -m bench.page --runs 3 --screenshots

Writes docs/page.md, "Page weight and time to heatmap".
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import common
from corpus.music import cut_clip, duration_seconds, ensure_music
from service.api.page import STATIC_DIR

SECTION = "page"
REPORT = common.REPO_ROOT / "docs" / "page.md"
SCREENSHOT = common.REPO_ROOT / "docs" / "page.png"
CLIP_SECONDS = 180.0
OFFSETS_SECONDS = (0.0, 17.0, 29.0)  # distinct clips of the same track: distinct bytes, so the cache misses
TIMEOUT_SECONDS = 300.0
SCREENSHOT_WIDTH_PX = 1200


def clips(runs: int, workdir: Path) -> list[Path]:
    """``runs`` distinct 3-minute .ogg clips from the tracks long enough to hold one."""
    long_tracks = [t for t in ensure_music() if duration_seconds(t) >= CLIP_SECONDS + max(OFFSETS_SECONDS)]
    if not long_tracks:
        raise SystemExit(f"no track of {CLIP_SECONDS + max(OFFSETS_SECONDS):.0f} s or more in corpus.music")
    paths = []
    for i in range(runs):
        track = long_tracks[i % len(long_tracks)]
        offset = OFFSETS_SECONDS[(i // len(long_tracks)) % len(OFFSETS_SECONDS)] + i // (
            len(long_tracks) * len(OFFSETS_SECONDS)
        )
        path = workdir / f"clip{i} - {track.stem}.ogg"
        path.write_bytes(cut_clip(track, offset, CLIP_SECONDS))
        paths.append(path)
    return paths


def wait(driver, script: str, timeout: float = TIMEOUT_SECONDS):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait(driver, "return document.body.dataset.ready === 'true'")


def page_weight(driver) -> dict[str, int]:
    """Bytes of the page and of its /static/ files, as transferred and as decoded, on a load with an empty cache."""
    return driver.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0];
        const assets = performance.getEntriesByType('resource').filter((r) => r.name.includes('/static/'));
        const sum = (key) => assets.reduce((total, r) => total + r[key], 0);
        const elsewhere = performance.getEntriesByType('resource')
          .filter((r) => new URL(r.name).origin !== location.origin).map((r) => r.name);
        return {files: 1 + assets.length, transferred: nav.transferSize + sum('transferSize'),
                body: nav.decodedBodySize + sum('decodedBodySize'), elsewhere};""")


def gzipped_bytes() -> int:
    return sum(len(gzip.compress(p.read_bytes(), 9)) for p in STATIC_DIR.iterdir() if p.is_file())


def time_to_heatmap(driver, url: str, clip: Path) -> tuple[float, float]:
    """Seconds from picking ``clip`` to its heatmap drawn, and of the drawing alone, on a freshly loaded page."""
    from selenium.webdriver.common.by import By

    open_page(driver, url)
    driver.find_element(By.ID, "file").send_keys(str(clip))
    wait(driver, "return performance.getEntriesByName('time-to-heatmap').length > 0")
    to_heatmap, draw = driver.execute_script(
        "return [performance.getEntriesByName('time-to-heatmap')[0].duration,"
        " performance.getEntriesByName('heatmap-draw')[0].duration]"
    )
    wait(driver, "return document.body.dataset.analysing === 'false'")  # suggestions too: the next run starts idle
    return to_heatmap / 1000, draw / 1000


def api_seconds(url: str, clip: Path) -> float:
    started = time.perf_counter()
    with clip.open("rb") as body:
        response = httpx.post(url + "/taggram", files={"file": (clip.name, body, "audio/ogg")}, timeout=TIMEOUT_SECONDS)
    response.raise_for_status()
    return time.perf_counter() - started


def screenshot(driver, url: str, clip: Path, target: Path) -> None:
    """The page on ``clip``: full height at 1200 px, hovering a cell of the top row, the cursor a third in."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    time_to_heatmap(driver, url, clip)
    wait(driver, "return document.getElementById('audio').readyState >= 1")
    for _ in range(3):  # the window's outer size includes browser chrome: grow until the whole page fits
        height = driver.execute_script("return document.documentElement.scrollHeight")
        if driver.execute_script("return window.innerHeight") >= height:
            break
        driver.set_window_size(SCREENSHOT_WIDTH_PX, height + 200)
    wait(driver, "return document.getElementById('heatmap').getBoundingClientRect().width > 0")
    driver.execute_script("const a = document.getElementById('audio'); a.currentTime = a.duration / 3;")
    wait(driver, "return document.getElementById('audio').seeking === false")
    canvas = driver.find_element(By.ID, "heatmap")
    cell = driver.execute_script(
        "const v = window.taggramPage; return v.cellRect(2, Math.floor(v.heatmap.starts.length * 0.55))"
    )
    ActionChains(driver).move_to_element_with_offset(
        canvas,
        int(cell["x"] + cell["width"] / 2 - canvas.size["width"] / 2),
        int(cell["y"] + cell["height"] / 2 - canvas.size["height"] / 2),
    ).perform()
    wait(driver, "return !document.getElementById('tooltip').hidden")
    driver.find_element(By.TAG_NAME, "body").screenshot(str(target))
    if shutil.which("pngquant"):  # 256-colour palette: the page is flat colours plus a viridis scale
        subprocess.run(
            ["pngquant", "--force", "--skip-if-larger", "--quality=70-95", "--output", str(target), str(target)],
            check=False,
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="distinct 3-minute clips, each cold then cached")
    parser.add_argument(
        "--screenshots", action="store_true", help=f"also write {SCREENSHOT.relative_to(common.REPO_ROOT)}"
    )
    common.add_service_arguments(parser)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(common.REPO_ROOT / "tests"))
    from tests.support.browser import chromium

    with tempfile.TemporaryDirectory(prefix="taggram-page-bench-") as tmp:
        workdir = Path(tmp)
        paths = clips(args.runs, workdir)
        api_clips = [p.with_name(p.stem + " api.ogg") for p in paths]
        for path, api_path in zip(paths, api_clips):  # the API's own cold clip: same music, 0.5 s later
            api_path.write_bytes(cut_clip(path, 0.5, CLIP_SECONDS - 0.5))
        rows, cold, warm, api, draws = [], [], [], [], []
        with common.running_service(args.port, args.model) as service, chromium(workdir / "profile") as driver:
            open_page(driver, service.url)
            weight = page_weight(driver)
            for i, (clip, api_clip) in enumerate(zip(paths, api_clips)):
                # Alternate which goes first, so neither always meets the other's leftovers on the shared CPU.
                if i % 2:
                    api.append(api_seconds(service.url, api_clip))
                    first, draw = time_to_heatmap(driver, service.url, clip)
                else:
                    first, draw = time_to_heatmap(driver, service.url, clip)
                    api.append(api_seconds(service.url, api_clip))
                cached, _ = time_to_heatmap(driver, service.url, clip)
                cold.append(first)
                warm.append(cached)
                draws.append(draw)
                rows.append(
                    [
                        clip.name.split(" - ", 1)[1],
                        f"{clip.stat().st_size / 1e6:.1f}",
                        f"{first:.2f}",
                        f"{api[-1]:.2f}",
                        f"{cached:.3f}",
                        f"{draw * 1000:.1f}",
                    ]
                )
                print(rows[-1], flush=True)
            if args.screenshots:
                screenshot(driver, service.url, paths[0], SCREENSHOT)

    body = "\n".join(
        [
            "### Measured",
            "",
            *common.environment_lines(["bench.page", *argv]),
            "- browser: Debian Chromium, headless, 1200×1000 window, empty profile",
            "",
            f"Page weight (first load, empty cache): **{weight['transferred'] / 1024:.1f} KiB transferred** in "
            f"{weight['files']} files ({weight['body'] / 1024:.1f} KiB of bodies; {gzipped_bytes() / 1024:.1f} KiB if "
            "gzip -9'd: the service sends them uncompressed). Requests to other origins: "
            f"{', '.join(weight['elsewhere']) or 'none'}.",
            "",
            f"Time to heatmap for a {CLIP_SECONDS / 60:.0f}-minute track (seconds from picking the file to the heatmap "
            'drawn; "API" is `POST /taggram` of a clip of the same track from Python, interleaved; "cached" is the '
            'same file again after a reload; "draw" is the drawing alone):',
            "",
            common.markdown_table(
                ["clip (3 min, ogg)", "MB", "page, cold s", "API, cold s", "page, cached s", "draw ms"], rows
            ),
            "",
            f"Median: page cold {statistics.median(cold):.2f} s, API cold {statistics.median(api):.2f} s, page cached "
            f"{statistics.median(warm):.3f} s (upload, JSON and drawing: the page's own share), drawing "
            f"{statistics.median(draws) * 1000:.1f} ms.",
        ]
    )
    print(body)
    if not args.no_write:
        common.update_report(SECTION, body, REPORT)


if __name__ == "__main__":
    main()
