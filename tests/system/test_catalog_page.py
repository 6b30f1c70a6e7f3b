"""The catalog view on the page (issue #23), in real Chromium: every indexed track drawn, hover names it, a click
lists its neighbours in /similar's order, an artist is highlighted, an uploaded file appears where the API puts it.

The index: 10⁵ constructed vectors (clusters on a low-dimensional subspace, as real embeddings are) with the real
msd-musicnn onnx hash and labels, built by the real `index build` (exact search, pca map), served in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.api.page import CONTENT_SECURITY_POLICY
from service.artefacts.manifest import load_manifest
from service.offline import index_build
from service.offline.backfill.output import OUTPUT_FORMAT, RUN_FILE
from service.offline.catalog_build import BACKFILL_METADATA
from tests.support.browser import chromium, require_browser
from tests.support.live_server import live_server, server_settings
from tests.system.test_page import ANALYSIS_TIMEOUT_SECONDS, audio_file, csp_violations, pick, wait_for  # noqa: F401

MODEL = "msd-musicnn"
POINTS = 100_000
ARTISTS = 500


def catalog_output(
    out: Path,
    models_dir: Path,
    points: int = POINTS,
    track_ids: list[str] | None = None,
    windows: np.ndarray | None = None,
) -> None:
    """A backfill output of ``points`` constructed tracks; ``windows``: float64 [points, 2] representative (start,
    end) seconds, NaN for none (null in the columns), or None for an output without the columns."""
    manifest = load_manifest(models_dir / f"{MODEL}.json")
    rng = np.random.default_rng(23)
    basis = rng.standard_normal((12, manifest.embedding_dim))
    centres = rng.standard_normal((40, 12))
    vectors = (centres[rng.integers(0, 40, points)] + 0.4 * rng.standard_normal((points, 12))) @ basis
    scores = rng.random((points, len(manifest.labels)), np.float32)
    columns = {
        "track_id": track_ids or [f"pkg{i % 7}/track-{i}" for i in range(points)],
        "model": [MODEL] * points,
        "onnx_sha256": [manifest.onnx.sha256] * points,
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.astype(np.float32).reshape(-1)), manifest.embedding_dim
        ),
        "tag_scores": pa.FixedSizeListArray.from_arrays(pa.array(scores.reshape(-1)), len(manifest.labels)),
        "artist_id": [f"artist-{i % ARTISTS}" for i in range(points)],
    }
    if windows is not None:
        for i, name in enumerate(("representative_start_seconds", "representative_end_seconds")):
            columns[name] = pa.array(windows[:, i], pa.float64(), mask=np.isnan(windows[:, i]))
    table = pa.table(columns).replace_schema_metadata(
        {BACKFILL_METADATA: json.dumps({"labels": manifest.labels}).encode()}
    )
    (out / "results").mkdir(parents=True)
    identity = {"format": OUTPUT_FORMAT, "model": MODEL, "onnx_sha256": manifest.onnx.sha256}
    (out / RUN_FILE).write_text(json.dumps(identity))
    pq.write_table(table, out / "results" / "part-n0001-i0000-000000.parquet")


@pytest.fixture(scope="module")
def live(models_dir, tmp_path_factory):
    require_browser()
    root = tmp_path_factory.mktemp("catalog-page")
    catalog_output(root / "backfill", models_dir)
    index_build.build(root / "backfill", root / "index", backend="exact")
    with live_server(server_settings(models_dir, index_dir=root / "index")) as server:
        yield server


@pytest.fixture(scope="module")
def page(live, tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        driver.get(live.url + "/")
        wait_for(
            driver,
            "return document.getElementById('catalog-map').dataset.points !== undefined",
            ANALYSIS_TIMEOUT_SECONDS,
        )
        yield driver


def drawn_pixels(driver, colour: list[int]) -> int:
    return driver.execute_script(
        """
        const c = document.getElementById('catalog-map');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] === arguments[0][0] && d[i + 1] === arguments[0][1]
            && d[i + 2] === arguments[0][2] && d[i + 3] === 255) n += 1;
        return n;""",
        colour,
    )


def pointer_to(driver, x: float, y: float):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "catalog-map")
    size = canvas.size
    return ActionChains(driver).move_to_element_with_offset(
        canvas, int(x - size["width"] / 2), int(y - size["height"] / 2)
    )


def test_the_map_draws_every_indexed_track(page, live):
    body = httpx.get(live.url + "/catalog/map").json()
    assert int(page.execute_script("return document.getElementById('catalog-map').dataset.points")) == body["count"]
    assert page.execute_script("return window.taggramCatalog.trackIds().length") == POINTS
    assert page.execute_script("return performance.getEntriesByName('catalog-draw').length") >= 1
    assert csp_violations(page) == []
    # No catalog audio configured: no sound control, and the page's policy is the one without catalog media.
    assert body["audio_url_template"] is None and body["representative"] is None
    assert page.execute_script("return document.getElementById('catalog-sound-control').hidden") is True
    assert httpx.get(live.url + "/").headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_hover_names_the_track_and_a_click_lists_its_neighbours_in_similars_order(page, live):
    from selenium.webdriver.common.by import By

    ids = page.execute_script("return window.taggramCatalog.trackIds()")
    for row in range(0, POINTS, 997):  # a point no other point is drawn within a pixel of
        x, y = page.execute_script("return window.taggramCatalog.pointScreen(arguments[0])", row)
        if 5 < x < 1000 and 5 < y < 470:
            break
    pointer_to(page, x, y).perform()
    tooltip = page.find_element(By.ID, "catalog-tooltip")
    wait_for(page, "return !document.getElementById('catalog-tooltip').hidden")
    hovered = tooltip.text.split(" · ")[0]
    assert hovered in ids
    pointer_to(page, x, y).click().perform()
    wait_for(
        page, "return document.getElementById('catalog-neighbours').children.length === 10", ANALYSIS_TIMEOUT_SECONDS
    )
    expected = httpx.get(f"{live.url}/similar/{hovered}").json()["neighbours"]
    shown = [li.text.split(" (")[0] for li in page.find_elements(By.CSS_SELECTOR, "#catalog-neighbours li")]
    assert shown == [n["track_id"] for n in expected]


def test_an_artist_is_highlighted(page):
    from selenium.webdriver.common.by import By

    red = [214, 39, 40]
    before = drawn_pixels(page, red)
    box = page.find_element(By.ID, "catalog-artist")
    box.clear()
    box.send_keys("artist-7")
    assert drawn_pixels(page, red) > before + POINTS // ARTISTS // 4  # its 200 tracks, some sharing a pixel
    box.clear()
    box.send_keys("nobody")
    assert drawn_pixels(page, red) == before


def test_an_uploaded_file_appears_where_the_api_places_it(page, live, audio_file):
    with audio_file.open("rb") as body:
        similar = httpx.post(
            live.url + "/similar", files={"file": (audio_file.name, body)}, timeout=ANALYSIS_TIMEOUT_SECONDS
        ).json()
    pick(page, audio_file)
    wait_for(page, "return document.getElementById('neighbours').children.length > 0", ANALYSIS_TIMEOUT_SECONDS)
    x, y = page.execute_script(
        "return window.taggramCatalog.screenOf(arguments[0], arguments[1])",
        similar["position"]["x"],
        similar["position"]["y"],
    )
    pixel = page.execute_script(
        """
        const d = document.getElementById('catalog-map').getContext('2d')
            .getImageData(Math.round(arguments[0]), Math.round(arguments[1]), 1, 1).data;
        return [d[0], d[1], d[2], d[3]];""",
        x,
        y,
    )
    assert pixel == [0, 0, 0, 255]  # the upload's black square, centred on the API's position
