"""The catalog map's hover sound (issue #23), in real Chromium: with TAGGRAM_CATALOG_AUDIO_URL pointing at a second
real HTTP server (tests/support/media_server.py: one real wav for every track, byte ranges honoured), resting the
pointer on a track fetches that track's URL (its id URL-encoded into the template exactly as
``service.config.audio_url`` does) and plays its representative window from start to end; leaving the track stops
it; nothing plays before the "Play on hover" box is ticked; the page's CSP allows media from that origin and from
no other, and nothing else is widened.

The index: constructed tracks whose ids hold characters a URL reserves, with short windows (so the test listens to
whole windows in seconds), built by the real `index build`, served by the real app under uvicorn.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from service.config import audio_url
from tests.support.audio_factory import chord, write_audio
from tests.support.browser import csp_violations
from tests.support.live_server import live_server, server_settings
from tests.support.media_server import media_server
from tests.system.test_catalog_page import catalog_output, pointer_to
from tests.system.test_page import CSP_DIRECTIVES, PAGE_TIMEOUT_SECONDS, wait_for

POINTS = 300
SAMPLE_RATE = 22_050
AUDIO_SECONDS = 8.0
SHORT_WINDOW_SECONDS = 1.5  # the whole window is listened to: keep it short
LONG_WINDOW_SECONDS = 5.0  # long enough to leave the track while it plays
NO_WINDOW_EVERY = 10  # every tenth track has no window (null columns): it plays from 0
HOVER_PIXELS = 6  # catalog.js: how close the pointer must be to a point to name it
DWELL_SECONDS = 0.25  # catalog_sound.js DWELL_MS
# How late the pause may come after end_seconds: a few frames, with room for a loaded machine.
LATE_PAUSE_SECONDS = 0.35
START_TOLERANCE_SECONDS = 0.05


def track_id(i: int) -> str:
    """Ids with what a URL reserves or escapes: "/", space, "#", "?", "&", "%", quotes, parentheses, non-ASCII."""
    return f"pkg {i % 3}/tr#ck?{i}&'(x)*!%20ü"


def windows() -> np.ndarray:
    rows = np.arange(POINTS)
    start = 0.5 + (rows % 3) * 0.5
    end = start + np.where(rows % 2 == 0, SHORT_WINDOW_SECONDS, LONG_WINDOW_SECONDS)
    out = np.stack([start, end], axis=1).astype(np.float64)
    out[rows % NO_WINDOW_EVERY == 0] = np.nan
    return out


@pytest.fixture(scope="module")
def cdn(tmp_path_factory):
    path = tmp_path_factory.mktemp("cdn") / "tone.wav"
    write_audio(path, chord((220, 277, 330), AUDIO_SECONDS, SAMPLE_RATE), SAMPLE_RATE, "wav")
    with media_server(path) as server:
        yield server


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """A third real server the policy must not allow."""
    path = tmp_path_factory.mktemp("elsewhere") / "tone.wav"
    write_audio(path, chord((330,), 2.0, SAMPLE_RATE), SAMPLE_RATE, "wav")
    with media_server(path) as server:
        yield server


@pytest.fixture(scope="module")
def template(cdn) -> str:
    return cdn.url + "/audio/{track_id}.wav?v=1"


@pytest.fixture(scope="module")
def live(models_dir, tmp_path_factory, template):
    from service.offline import index_build

    root = tmp_path_factory.mktemp("catalog-sound")
    catalog_output(root / "backfill", models_dir, POINTS, [track_id(i) for i in range(POINTS)], windows())
    index_build.build(root / "backfill", root / "index", backend="exact")
    with live_server(server_settings(models_dir, index_dir=root / "index", catalog_audio_url=template)) as server:
        yield server


@pytest.fixture(scope="module")
def page(driver, live):
    driver.get(live.url + "/")
    wait_for(driver, "return document.getElementById('catalog-map').dataset.points !== undefined", 120)
    return driver


def isolated_rows(page) -> list[tuple[int, float, float]]:
    """(row, x, y) of points well inside the canvas with no other point within twice the hover distance."""
    screen = np.array(
        page.execute_script(
            "return window.taggramCatalog.trackIds().map((_, i) => window.taggramCatalog.pointScreen(i))"
        )
    )
    width, height = page.execute_script(
        "const c = document.getElementById('catalog-map'); return [c.clientWidth, c.clientHeight]"
    )
    distance = np.linalg.norm(screen[:, None, :] - screen[None, :, :], axis=2)
    np.fill_diagonal(distance, np.inf)
    alone = distance.min(axis=1) > 2 * HOVER_PIXELS
    inside = (screen[:, 0] > 10) & (screen[:, 0] < width - 10) & (screen[:, 1] > 10) & (screen[:, 1] < height - 10)
    return [(int(r), *screen[r]) for r in np.flatnonzero(alone & inside)]


def empty_spot(page) -> tuple[float, float]:
    """A place on the canvas with no point within three times the hover distance."""
    screen = np.array(
        page.execute_script(
            "return window.taggramCatalog.trackIds().map((_, i) => window.taggramCatalog.pointScreen(i))"
        )
    )
    for x in range(20, 1000, 15):
        for y in range(20, 460, 15):
            if np.linalg.norm(screen - [x, y], axis=1).min() > 3 * HOVER_PIXELS:
                return float(x), float(y)
    raise AssertionError("no empty spot on the map")


def pick_row(page, kind: str) -> tuple[int, float, float]:
    """An isolated point whose window is "short", "long" or "none"."""

    def kind_of(row: int) -> str:
        if row % NO_WINDOW_EVERY == 0:
            return "none"
        return "short" if row % 2 == 0 else "long"

    return next(r for r in isolated_rows(page) if kind_of(r[0]) == kind)


def set_sound(page, on: bool) -> None:
    from selenium.webdriver.common.by import By

    box = page.find_element(By.ID, "catalog-sound")
    if box.is_selected() != on:
        box.click()  # a real click: the user gesture browsers want before sound
    assert box.is_selected() == on


def leave(page) -> None:
    x, y = empty_spot(page)
    pointer_to(page, x, y).perform()
    wait_for(page, "return document.getElementById('catalog-audio').paused", 5)


def record_playback(page) -> None:
    """From now on: where each playback started and every position seen while playing."""
    page.execute_script(
        """
        const audio = document.getElementById('catalog-audio');
        window.__playedFrom = [];
        window.__seen = [];
        if (!window.__recording) {
          window.__recording = true;
          audio.addEventListener('playing', () => window.__playedFrom.push(audio.currentTime));
          const sample = () => {
            if (!audio.paused) window.__seen.push(audio.currentTime);
            requestAnimationFrame(sample);
          };
          requestAnimationFrame(sample);
        }"""
    )


def requests_for(cdn, template: str, track: str) -> list[str]:
    expected = urlsplit(audio_url(template, track))
    return [r for r in cdn.requests if r == f"{expected.path}?{expected.query}"]


def wait_until(condition, timeout: float = PAGE_TIMEOUT_SECONDS):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_map_body_carries_the_template_and_every_window(live, template):
    body = httpx.get(live.url + "/catalog/map").json()
    assert body["audio_url_template"] == template
    expected = windows()
    for i in range(POINTS):
        start, end = body["representative"]["start_seconds"][i], body["representative"]["end_seconds"][i]
        if i % NO_WINDOW_EVERY == 0:
            assert start is None and end is None
        else:
            assert (start, end) == pytest.approx(tuple(expected[i]), abs=1e-3)


def test_nothing_plays_until_the_box_is_ticked(page, cdn):
    from selenium.webdriver.common.by import By

    set_sound(page, False)
    assert page.find_element(By.ID, "catalog-sound-control").is_displayed()
    before = len(cdn.requests)
    _, x, y = pick_row(page, "short")
    pointer_to(page, x, y).perform()
    wait_for(page, "return !document.getElementById('catalog-tooltip').hidden")
    time.sleep(DWELL_SECONDS + 1.0)
    assert len(cdn.requests) == before
    assert page.execute_script("return document.getElementById('catalog-audio').paused") is True
    leave(page)


def test_resting_on_a_track_plays_its_window_from_start_to_end(page, cdn, template):
    from selenium.webdriver.common.by import By

    leave(page)
    set_sound(page, True)
    record_playback(page)
    row, x, y = pick_row(page, "short")
    track = track_id(row)
    start, end = windows()[row]
    pointer_to(page, x, y).perform()
    wait_until(lambda: requests_for(cdn, template, track))
    assert cdn.requests[-1].startswith(urlsplit(audio_url(template, track)).path)  # the hovered track's, nothing else
    assert "%2F" in cdn.requests[-1] and "%23" in cdn.requests[-1] and "%C3%BC" in cdn.requests[-1]
    wait_for(page, "return window.__playedFrom.length > 0", PAGE_TIMEOUT_SECONDS)
    assert abs(page.execute_script("return window.__playedFrom[0]") - start) < START_TOLERANCE_SECONDS
    assert page.find_element(By.ID, "catalog-tooltip").text.split(" · ")[0] == track
    wait_for(page, "return document.getElementById('catalog-audio').paused", PAGE_TIMEOUT_SECONDS)
    state = page.execute_script(
        "const a = document.getElementById('catalog-audio'); return {time: a.currentTime, ended: a.ended};"
    )
    assert not state["ended"]
    assert end <= state["time"] <= end + LATE_PAUSE_SECONDS, state
    seen = page.execute_script("return window.__seen")
    assert seen and all(start - START_TOLERANCE_SECONDS <= t <= end + LATE_PAUSE_SECONDS for t in seen), seen
    assert csp_violations(page) == []
    leave(page)


def test_leaving_the_track_stops_it(page, cdn, template):
    leave(page)
    set_sound(page, True)
    record_playback(page)
    row, x, y = pick_row(page, "long")
    start, end = windows()[row]
    pointer_to(page, x, y).perform()
    wait_for(
        page,
        "const a = document.getElementById('catalog-audio'); return !a.paused && a.currentTime > arguments[0]",
        PAGE_TIMEOUT_SECONDS,
        start + 0.2,
    )
    ex, ey = empty_spot(page)
    pointer_to(page, ex, ey).perform()
    wait_for(page, "return document.getElementById('catalog-audio').paused", 2)
    stopped_at = page.execute_script("return document.getElementById('catalog-audio').currentTime")
    assert start < stopped_at < end - 1.0
    time.sleep(0.5)
    assert page.execute_script("return document.getElementById('catalog-audio').paused") is True
    assert requests_for(cdn, template, track_id(row))


def test_a_track_without_a_window_plays_its_first_seconds(page, cdn, template):
    from selenium.webdriver.common.by import By

    leave(page)
    set_sound(page, True)
    record_playback(page)
    row, x, y = pick_row(page, "none")
    pointer_to(page, x, y).perform()
    wait_for(page, "return window.__playedFrom.length > 0", PAGE_TIMEOUT_SECONDS)
    assert abs(page.execute_script("return window.__playedFrom[0]")) < START_TOLERANCE_SECONDS
    assert page.find_element(By.ID, "catalog-tooltip").text.endswith("first 30 s")
    assert requests_for(cdn, template, track_id(row))
    leave(page)


def test_the_policy_allows_media_from_the_template_origin_and_nothing_else(page, live, cdn, elsewhere):
    policy = httpx.get(live.url + "/").headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives == CSP_DIRECTIVES | {"media-src": f"'self' blob: {cdn.url}"}
    # In the browser: the same media from a third real server is refused by media-src, and the template's origin
    # is not reachable by fetch (connect-src stays this service alone: the API key cannot go there).
    page.execute_script("window.__cspViolations.length = 0")
    page.execute_script("new Audio(arguments[0]).play().catch(() => {})", elsewhere.url + "/other.wav")
    page.execute_script("fetch(arguments[0]).catch(() => {})", cdn.url + "/audio/by-fetch")
    violations = wait_for(page, "const v = window.__cspViolations; return v.length >= 2 ? v : false", 10)
    assert sorted(violations) == sorted(
        [f"media-src {elsewhere.url}/other.wav", f"connect-src {cdn.url}/audio/by-fetch"]
    ), violations
    assert elsewhere.requests == [] and not any(r.endswith("by-fetch") for r in cdn.requests)
