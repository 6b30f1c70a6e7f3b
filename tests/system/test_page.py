"""The exploration page (``GET /``) in a real headless Chromium against the real server over HTTP.

What the page draws is read back from the page itself (``window.taggramPage``, a read-only view of the matrix the
heatmap was drawn from, plus the canvas pixels) and compared with what ``POST /taggram`` answers for the same file.
Browser missing → skip locally, fail under ``CI=true`` (tests/support/browser.py).
"""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.audio_factory import chord, encode_audio, noise, sweep, write_audio
from tests.support.browser import csp_violations
from tests.support.live_server import live_server, server_settings

SAMPLE_RATE = 22_050
PAGE_TIMEOUT_SECONDS = 30.0
ANALYSIS_TIMEOUT_SECONDS = 120.0  # the machine is shared; a 24 s clip usually takes about 1 s
API_KEY = "page-test-key-1234"
VIRIDIS_LOW, VIRIDIS_HIGH = [68, 1, 84], [253, 231, 37]
CSP_DIRECTIVES = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "connect-src": "'self'",
    "media-src": "'self' blob:",
    "img-src": "'self' data:",
    "form-action": "'none'",
}


# Records CSP violations from the first script of every document on (CDP scripts are not subject to the CSP).
@pytest.fixture(scope="module")
def audio_file(tmp_path_factory) -> Path:
    """24 s in three distinct 8 s parts (a chord, noise, a sweep), so the segments score differently."""
    parts = [
        chord((220, 277, 330), 8.0, SAMPLE_RATE),
        noise(8.0, SAMPLE_RATE, seed=14),
        sweep(200, 4000, 8.0, SAMPLE_RATE),
    ]
    path = tmp_path_factory.mktemp("page") / "three parts.wav"
    write_audio(path, np.concatenate(parts, axis=1), SAMPLE_RATE, "wav")
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "notes.txt"
    path.write_text("these are not the sounds you are looking for\n" * 200)
    return path


@pytest.fixture(scope="module")
def server(models_dir):
    with live_server(server_settings(models_dir)) as live:
        yield live


@pytest.fixture(scope="module")
def keyed_server(models_dir):
    with live_server(server_settings(models_dir, api_key=API_KEY)) as live:
        yield live


# ---- helpers ----------------------------------------------------------------------------------------------------


def wait_for(driver, script: str, timeout: float = PAGE_TIMEOUT_SECONDS, *args):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(script, *args), message=f"timed out waiting for: {script}"
    )


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait_for(driver, "return document.readyState === 'complete' && window.taggramPage !== undefined")


def pick(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(path))


def analyse_in_page(driver, url: str, path: Path) -> dict:
    """Open the page, pick the file, wait until the heatmap and the suggestions are shown; the drawn heatmap."""
    open_page(driver, url)
    wait_for(driver, "return document.body.dataset.ready === 'true'")
    pick(driver, path)
    wait_for(
        driver,
        "return document.body.dataset.analysing === 'false' && window.taggramPage.heatmap !== null"
        " && document.getElementById('suggestions').children.length > 0",
        ANALYSIS_TIMEOUT_SECONDS,
    )
    return driver.execute_script("return window.taggramPage.heatmap")


def api_post(url: str, endpoint: str, path: Path, key: str | None = None, **params) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with path.open("rb") as body:
        response = httpx.post(
            url + endpoint,
            params=params,
            files={"file": (path.name, body)},
            headers=headers,
            timeout=ANALYSIS_TIMEOUT_SECONDS,
        )
    response.raise_for_status()
    return response.json()


def by_mean(taggram: dict) -> list[int]:
    """Tag indices by mean score, highest first; ties in label order (Python's sort is stable, like the page's)."""
    return sorted(range(len(taggram["labels"])), key=lambda i: -taggram["mean"][i])


def expected_matrix(taggram: dict) -> list[list[float]]:
    """Rows = tags by mean, columns = segments: what the heatmap must draw."""
    return [[segment["scores"][i] for segment in taggram["segments"]] for i in by_mean(taggram)]


def visible_text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, element_id)
    return element.text if element.is_displayed() else ""


def move_to_canvas_point(driver, canvas_id: str, x: float, y: float):
    """An ActionChains that moves the pointer to CSS pixel (x, y) of the canvas, in viewport coordinates.

    Selenium's element offsets count from the centre of the element's *visible* part, which moves whenever a tall
    canvas is cut by the window's edge; the viewport position of the point itself does not depend on that."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, canvas_id)
    left, top = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "window.scrollBy(0, r.top + arguments[1] - window.innerHeight / 2);"  # the point in the middle of the window
        "const s = arguments[0].getBoundingClientRect(); return [s.left, s.top];",
        canvas,
        y,
    )
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(left + x), int(top + y))
    return actions


# ---- the page's HTTP responses ------------------------------------------------------------------------------


class PageAudit(HTMLParser):
    """Everything in the HTML that a strict CSP would refuse or that would reach another origin."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict] = []
        self.inline: list[str] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"{tag} {name}")
            if name in ("src", "href", "action", "poster") and value is not None:
                self.urls.append(value)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append(f"script body {data.strip()[:40]!r}")


def test_the_page_is_public_and_served_with_a_strict_csp_and_no_inline_script(keyed_server):
    with keyed_server.client() as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert anonymous.get("/models").status_code == 401  # the page is public; the API behind it is not
        static = {name: anonymous.get(f"/static/{name}") for name in ("page.js", "api.js", "heatmap.js", "page.css")}
        missing = anonymous.get("/static/nope.js")

    for response in (page, *static.values(), missing):
        policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
        assert policy == CSP_DIRECTIVES, response.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert all(r.status_code == 200 for r in static.values())
    assert static["page.js"].headers["content-type"].startswith("text/javascript")
    assert static["page.css"].headers["content-type"].startswith("text/css")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    audit = PageAudit()
    audit.feed(page.text)
    assert audit.scripts and all(s.get("src", "").startswith("/static/") for s in audit.scripts), audit.scripts
    assert audit.inline == []
    for url in audit.urls:  # same origin (a path, never "//host") or an inline data: favicon
        assert (url.startswith("/") and not url.startswith("//")) or url.startswith("data:"), url
    for source in static.values():
        assert "eval(" not in source.text and "new Function" not in source.text and "innerHTML" not in source.text


# ---- in the browser ---------------------------------------------------------------------------------------------


def test_the_heatmap_draws_what_post_taggram_answers_sorted_by_mean(driver, server, audio_file):
    drawn = analyse_in_page(driver, server.url, audio_file)
    taggram = api_post(server.url, "/taggram", audio_file)
    assert taggram["cached"] is True  # the page's own request analysed this file first

    order = by_mean(taggram)
    assert drawn["labels"] == [taggram["labels"][i] for i in order]
    assert drawn["mean"] == [taggram["mean"][i] for i in order]
    assert drawn["matrix"] == expected_matrix(taggram)
    assert drawn["starts"] == [s["start"] for s in taggram["segments"]]
    assert drawn["ends"] == [s["end"] for s in taggram["segments"]]
    assert len(drawn["starts"]) == 8  # 24 s at the default hop of 2.992 s

    # The canvas holds those values: every cell's centre pixel has the colour of its score, the highest score is
    # the top of the scale and the scale starts at viridis' dark end.
    pixels = driver.execute_script("""
        const view = window.taggramPage, ratio = view.devicePixelRatio, heat = view.heatmap;
        const ctx = document.getElementById('heatmap').getContext('2d');
        return heat.matrix.map((row, r) => row.map((value, c) => {
          const cell = view.cellRect(r, c);
          const at = ctx.getImageData(Math.floor((cell.x + cell.width / 2) * ratio),
                                      Math.floor((cell.y + cell.height / 2) * ratio), 1, 1).data;
          return {pixel: [at[0], at[1], at[2]], expected: view.colourOf(value)};
        }));""")
    assert all(cell["pixel"] == cell["expected"] for row in pixels for cell in row)
    flat = np.array(drawn["matrix"])
    top_row, top_col = np.unravel_index(np.argmax(flat), flat.shape)
    assert pixels[top_row][top_col]["pixel"] == VIRIDIS_HIGH
    assert driver.execute_script("return window.taggramPage.colourOf(0)") == VIRIDIS_LOW
    assert len({tuple(cell["pixel"]) for row in pixels for cell in row}) > 20  # not one flat colour


def test_top_tags_suggestions_and_the_chosen_suggestion_per_segment(driver, server, audio_file):
    from selenium.webdriver.common.by import By

    analyse_in_page(driver, server.url, audio_file)
    taggram = api_post(server.url, "/taggram", audio_file)
    suggest = api_post(server.url, "/suggest-subgenres", audio_file, k=5)
    with server.client() as http:
        mapping = http.get("/models").json()["models"][0]["taxonomy"]["subgenres"]

    top_tags = [
        li.find_element(By.CLASS_NAME, "score-label").text
        for li in driver.find_elements(By.CSS_SELECTOR, "#top-tags li")
    ]
    best = by_mean(taggram)[:10]
    assert top_tags == [taggram["labels"][i] for i in best]

    buttons = driver.find_elements(By.CSS_SELECTOR, "#suggestions button")
    assert [b.get_attribute("data-subgenre") for b in buttons] == [s["subgenre"] for s in suggest["suggestions"]]
    assert buttons[0].get_attribute("aria-pressed") == "true"  # the best suggestion is shown first

    def expected_series(subgenre: str) -> list[float]:
        columns = [taggram["labels"].index(tag) for tag in mapping[subgenre]]
        return [max(segment["scores"][i] for i in columns) for segment in taggram["segments"]]

    shown = driver.execute_script("return window.taggramPage.segmentSeries")
    assert shown == {"subgenre": suggest["suggestions"][0]["subgenre"], "values": expected_series(shown["subgenre"])}
    buttons[2].click()
    chosen = suggest["suggestions"][2]["subgenre"]
    shown = driver.execute_script("return window.taggramPage.segmentSeries")
    assert shown == {"subgenre": chosen, "values": expected_series(chosen)}
    assert visible_text(driver, "segment-title").startswith(chosen)
    assert not driver.find_element(By.ID, "neighbours-panel").is_displayed()  # no "index" in /models here
    assert not driver.find_element(By.ID, "warnings").is_displayed()  # a clean file has no decode warnings


def test_a_dropped_file_is_analysed_like_a_picked_one(driver, server, tmp_path):
    """A real drop event carrying a File in its DataTransfer, dispatched on the drop zone."""
    path = tmp_path / "dropped.wav"
    write_audio(path, sweep(300, 3000, 6.0, SAMPLE_RATE), SAMPLE_RATE, "wav")
    open_page(driver, server.url)
    wait_for(driver, "return document.body.dataset.ready === 'true'")
    driver.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'dropped.wav', {type: 'audio/wav'}));
        document.getElementById('drop').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """,
        base64.b64encode(path.read_bytes()).decode(),
    )
    wait_for(
        driver,
        "return document.body.dataset.analysing === 'false' && window.taggramPage.heatmap !== null",
        ANALYSIS_TIMEOUT_SECONDS,
    )
    drawn = driver.execute_script("return window.taggramPage.heatmap")
    assert drawn["matrix"] == expected_matrix(api_post(server.url, "/taggram", path))
    assert "dropped.wav" in visible_text(driver, "file-name")


def test_the_cached_flag_is_shown(driver, server, audio_file):
    from selenium.webdriver.common.by import By

    analyse_in_page(driver, server.url, audio_file)  # analysed before by this module's tests, or just now
    analyse_in_page(driver, server.url, audio_file)
    facts = driver.find_element(By.ID, "facts")
    assert facts.get_attribute("data-cached") == "true" and "from the cache" in facts.text


def test_hovering_a_cell_shows_its_tag_time_range_and_score(driver, server, audio_file):
    drawn = analyse_in_page(driver, server.url, audio_file)
    row, col = 0, 3
    cell = driver.execute_script("return window.taggramPage.cellRect(arguments[0], arguments[1])", row, col)
    move_to_canvas_point(driver, "heatmap", cell["x"] + cell["width"] / 2, cell["y"] + cell["height"] / 2).perform()
    wait_for(driver, "return !document.getElementById('tooltip').hidden")
    start, end = drawn["starts"][col], drawn["ends"][col]
    expected = f"{drawn['labels'][row]} · 0:{start:04.1f}–0:{end:04.1f} · {drawn['matrix'][row][col]:.3f}"
    assert visible_text(driver, "tooltip") == expected


def test_clicking_the_heatmap_seeks_the_audio_and_moves_the_cursor(driver, server, audio_file):
    drawn = analyse_in_page(driver, server.url, audio_file)
    wait_for(driver, "return document.getElementById('audio').readyState >= 1")  # metadata: seekable
    assert driver.execute_script("return document.getElementById('audio').currentTime") == 0
    cell = driver.execute_script("return window.taggramPage.cellRect(5, 5)")
    x = cell["x"] + cell["width"] / 2
    move_to_canvas_point(driver, "heatmap", x, cell["y"] + cell["height"] / 2).click().perform()
    expected = driver.execute_script("return window.taggramPage.timeAtX(arguments[0])", int(x))
    assert drawn["starts"][5] < expected < drawn["ends"][5]
    wait_for(
        driver, "return Math.abs(document.getElementById('audio').currentTime - arguments[0]) < 0.25", 10, expected
    )
    cursor_x = driver.execute_script(
        "return new DOMMatrixReadOnly(getComputedStyle(document.getElementById('cursor')).transform).m41"
    )
    assert abs(cursor_x - x) < 3


def test_a_file_that_is_not_audio_shows_the_problem_as_a_readable_message(driver, server, text_file):
    from selenium.webdriver.common.by import By

    open_page(driver, server.url)
    wait_for(driver, "return document.body.dataset.ready === 'true'")
    pick(driver, text_file)
    wait_for(driver, "return !document.getElementById('error').hidden", ANALYSIS_TIMEOUT_SECONDS)
    error = driver.find_element(By.ID, "error")
    assert error.get_attribute("data-code") == "undecodable_audio"
    assert error.text.startswith("Unsupported Media Type: ") and len(error.text) > 40, error.text
    assert "{" not in error.text  # a sentence, not a JSON dump
    assert not driver.find_element(By.ID, "result").is_displayed()


def test_with_an_api_key_the_page_asks_for_it_and_then_works(driver, keyed_server, audio_file):
    from selenium.webdriver.common.by import By

    open_page(driver, keyed_server.url)
    wait_for(driver, "return !document.getElementById('auth').hidden")
    assert "needs an API key" in visible_text(driver, "auth-message")
    assert "Unauthorized" in visible_text(driver, "error")

    key_field = driver.find_element(By.ID, "api-key")
    key_field.send_keys("a-wrong-key\n")
    wait_for(driver, "return document.getElementById('auth-message').textContent.includes('refused')")
    key_field.send_keys(API_KEY + "\n")
    wait_for(driver, "return document.body.dataset.ready === 'true'")
    assert not driver.find_element(By.ID, "auth").is_displayed()
    pick(driver, audio_file)
    wait_for(
        driver,
        "return document.body.dataset.analysing === 'false' && window.taggramPage.heatmap !== null",
        ANALYSIS_TIMEOUT_SECONDS,
    )
    drawn = driver.execute_script("return window.taggramPage.heatmap")
    assert drawn["matrix"] == expected_matrix(api_post(keyed_server.url, "/taggram", audio_file, key=API_KEY))
    assert API_KEY not in driver.current_url and "wrong" not in driver.current_url


def test_the_csp_is_enforced_and_the_page_itself_causes_no_violation(driver, server, audio_file):
    analyse_in_page(driver, server.url, audio_file)
    assert csp_violations(driver) == []
    elsewhere = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".map((r) => r.name).filter((url) => new URL(url).origin !== location.origin)"
    )
    assert elsewhere == []  # no third-party request
    # The header is really enforced: an injected inline script and style attribute are refused and reported.
    driver.execute_script("""
        const s = document.createElement('script');
        s.textContent = 'window.__inlineRan = true';
        document.head.append(s);
        document.body.setAttribute('style', 'background: red');""")
    assert driver.execute_script("return window.__inlineRan === true") is False
    assert driver.execute_script("return getComputedStyle(document.body).backgroundColor") != "rgb(255, 0, 0)"
    violations = wait_for(driver, "const v = window.__cspViolations; return v.length >= 2 ? v : false")
    assert any(v.startswith("script-src") for v in violations) and any(v.startswith("style-src") for v in violations)


def test_switching_the_model_redraws_with_that_models_taggram(driver, models_dir, audio_file):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with live_server(server_settings(models_dir, models="msd-musicnn,mtt-musicnn")) as two:
        analyse_in_page(driver, two.url, audio_file)
        select = Select(driver.find_element(By.ID, "model"))
        assert sorted(o.text for o in select.options) == ["msd-musicnn", "mtt-musicnn"]
        assert select.first_selected_option.text == "msd-musicnn"  # the server's default
        select.select_by_visible_text("mtt-musicnn")
        wait_for(
            driver,
            "return document.getElementById('facts').textContent.includes('model mtt-musicnn')"
            " && document.body.dataset.analysing === 'false'",
            ANALYSIS_TIMEOUT_SECONDS,
        )
        drawn = driver.execute_script("return window.taggramPage.heatmap")
        mtt = api_post(two.url, "/taggram", audio_file, model="mtt-musicnn")
        assert drawn["matrix"] == expected_matrix(mtt)
        taxonomy = driver.execute_script("return document.getElementById('taxonomy').value")
        with two.client() as http:
            listed = {m["name"]: m for m in http.get("/models").json()["models"]}
        assert taxonomy == f"tags:{listed['mtt-musicnn']['taxonomy']['name']}"


def test_the_taxonomy_selector_offers_what_get_models_lists(driver, server):
    """Tag taxonomies, then trained heads, as GET /models lists them (heads and extra taxonomies only on servers
    that have them: this branch's server lists the model's own tag taxonomy only)."""
    open_page(driver, server.url)
    wait_for(driver, "return document.body.dataset.ready === 'true'")
    options = driver.execute_script("return [...document.getElementById('taxonomy').options].map(o => o.value)")
    with server.client() as http:
        model = http.get("/models").json()["models"][0]
    tag_taxonomies = list(dict.fromkeys([model["taxonomy"]["name"], *model.get("taxonomies", [])]))
    heads = [head["name"] for head in model.get("heads", [])]
    assert options == [f"tags:{name}" for name in tag_taxonomies] + [f"head:{name}" for name in heads]


def test_a_truncated_file_shows_its_decode_warnings_and_the_decoder(driver, server, tmp_path):
    from selenium.webdriver.common.by import By

    data = encode_audio(chord((220, 330, 440), 12.0, 44_100), 44_100, "flac")
    path = tmp_path / "cut short.flac"
    path.write_bytes(data[: len(data) // 2])  # a download that stopped half way
    analyse_in_page(driver, server.url, path)
    warnings = driver.find_element(By.ID, "warnings")
    assert warnings.is_displayed()
    shown = [item.find_element(By.TAG_NAME, "code").text for item in warnings.find_elements(By.TAG_NAME, "li")]
    expected = [w["code"] for w in api_post(server.url, "/taggram", path)["warnings"]]
    assert shown == expected == ["audio_damaged", "audio_truncated"]
    assert "12.0 s" in warnings.text  # the detail says how much the file declares
    assert "decoded by ffmpeg (flac)" in driver.find_element(By.ID, "facts").text


# ---- heads and neighbours (a server with a trained head and a similarity index) ------------------------------------

CATALOG_HEAD = "timbre-classes"


@pytest.fixture(scope="module")
def catalog_server(models_dir, tmp_path_factory):
    """A server with a head trained on, and an index built from, one backfill of tests/support/head_catalog.py's
    audio."""
    import subprocess
    import sys

    from head_training.train import main as train_head
    from tests.support.head_catalog import make_catalog, run_backfill

    root = tmp_path_factory.mktemp("page-catalog")
    audio, labels = make_catalog(root)
    run_backfill(audio, root / "backfill", models_dir)
    assert (
        train_head(
            [
                str(root / "backfill"),
                str(labels),
                "--name",
                CATALOG_HEAD,
                "--output",
                str(root / "heads"),
                "--models-dir",
                str(models_dir),
                "--candidates",
                "logreg-segments",
            ]
        )
        == 0
    )
    built = subprocess.run(
        [sys.executable, "-m", "service", "index", "build", str(root / "backfill"), "--output", str(root / "index")],
        capture_output=True,
        text=True,
        timeout=ANALYSIS_TIMEOUT_SECONDS,
    )
    assert built.returncode == 0, built.stderr
    settings = server_settings(models_dir, heads_dir=root / "heads", index_dir=root / "index")
    with live_server(settings) as live:
        yield live, audio


def test_a_head_and_the_nearest_catalog_tracks_are_shown_as_the_api_answers(driver, catalog_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    live, audio = catalog_server
    path = sorted(audio.glob("*.wav"))[0]  # a catalog track itself: its own nearest neighbour, a duplicate
    open_page(driver, live.url)
    wait_for(driver, "return document.body.dataset.ready === 'true'")
    Select(driver.find_element(By.ID, "taxonomy")).select_by_value(f"head:{CATALOG_HEAD}")
    pick(driver, path)
    wait_for(
        driver,
        "return document.body.dataset.analysing === 'false'"
        " && document.getElementById('neighbours').children.length > 0"
        " && document.getElementById('suggestions').children.length > 0",
        ANALYSIS_TIMEOUT_SECONDS,
    )

    suggested = api_post(live.url, "/suggest-subgenres", path, taxonomy=CATALOG_HEAD, k=5)
    assert suggested["kind"] == "head"
    shown = [item.text.split("\n")[0] for item in driver.find_elements(By.CSS_SELECTOR, "#suggestions li")]
    assert [s.split(" ")[0] for s in shown] == [s["subgenre"] for s in suggested["suggestions"]]
    assert "trained head" in driver.find_element(By.ID, "suggestions-meta").text

    head = api_post(live.url, "/taggram", path, head=CATALOG_HEAD)["head"]
    series = driver.execute_script("return window.taggramPage.segmentSeries")
    best = suggested["suggestions"][0]["subgenre"]
    assert series["subgenre"] == best
    np.testing.assert_allclose(
        series["values"], [row[head["classes"].index(best)] for row in head["segments"]], rtol=0, atol=1e-9
    )

    similar = api_post(live.url, "/similar", path, k=10)
    rows = driver.find_elements(By.CSS_SELECTOR, "#neighbours tr")
    assert [r.get_attribute("title") for r in rows] == [f"track {n['track_id']}" for n in similar["neighbours"]]
    assert similar["neighbours"][0]["track_id"] == path.name and similar["neighbours"][0]["duplicate"]
    assert "duplicate" in rows[0].text
    assert "near-duplicate" in driver.find_element(By.ID, "neighbours-note").text
