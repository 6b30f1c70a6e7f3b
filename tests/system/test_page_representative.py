"""The representative segment on the track page (issue #23), in a real headless Chromium against the real server.

The band over the heatmap must span what ``POST /taggram`` answers as ``representative`` on the heatmap's own time
axis (read back through ``window.taggramPage.timeAtX``), and its button must play exactly that window in the page's
audio element. Browser missing → skip locally, fail under ``CI=true`` (tests/support/browser.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.audio_factory import chord, noise, sweep, write_audio
from tests.support.browser import csp_violations
from tests.support.live_server import live_server, server_settings
from tests.system.test_page import PAGE_TIMEOUT_SECONDS, analyse_in_page, api_post, wait_for

SAMPLE_RATE = 22_050
PART_SECONDS = 20.0  # three parts: a 60 s track, twice the 30 s window
PLAYBACK_RATE = 4.0  # the test listens to the 30 s window in 7.5 s; the page's logic does not depend on the rate
PLAYBACK_TIMEOUT_SECONDS = 60.0
# How late the pause may come after end_seconds: one frame at PLAYBACK_RATE, with room for a loaded machine.
LATE_PAUSE_SECONDS = 0.5


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    parts = [
        chord((220, 277, 330), PART_SECONDS, SAMPLE_RATE),
        noise(PART_SECONDS, SAMPLE_RATE, seed=23),
        sweep(200, 4000, PART_SECONDS, SAMPLE_RATE),
    ]
    path = tmp_path_factory.mktemp("representative") / "three long parts.wav"
    write_audio(path, np.concatenate(parts, axis=1), SAMPLE_RATE, "wav")
    return path


@pytest.fixture(scope="module")
def server(models_dir):
    with live_server(server_settings(models_dir)) as live:
        yield live


@pytest.fixture(scope="module")
def window(server, long_file) -> dict:
    answer = api_post(server.url, "/taggram", long_file)
    representative = answer["representative"]
    # The fixture's own precondition: a window that ends before the track does, so a pause at its end is the page's.
    assert representative["end_seconds"] < answer["duration_seconds"] - 1, representative
    return representative


def band_edges(driver) -> dict:
    """The band's left and right edges, top and bottom in the heatmap canvas's CSS pixels."""
    return driver.execute_script(
        """
        const c = document.getElementById('heatmap').getBoundingClientRect();
        const b = document.getElementById('representative').getBoundingClientRect();
        return {left: b.left - c.left, right: b.right - c.left, top: b.top - c.top, bottom: b.bottom - c.top};
        """
    )


def test_the_representative_window_is_drawn_where_the_api_says(driver, server, long_file, window):
    drawn = analyse_in_page(driver, server.url, long_file)
    wait_for(driver, "return !document.getElementById('representative').hidden")
    edges = band_edges(driver)
    seconds_per_px = driver.execute_script("return window.taggramPage.timeAtX(201) - window.taggramPage.timeAtX(200)")
    at = lambda x: driver.execute_script("return window.taggramPage.timeAtX(arguments[0])", x)  # noqa: E731
    assert abs(at(edges["left"]) - window["start_seconds"]) <= 1.5 * seconds_per_px
    assert abs(at(edges["right"]) - window["end_seconds"]) <= 1.5 * seconds_per_px
    # It spans the heatmap's rows, top to bottom, down to the time axis.
    first = driver.execute_script("return window.taggramPage.cellRect(0, 0)")
    last = driver.execute_script("return window.taggramPage.cellRect(arguments[0], 0)", len(drawn["labels"]) - 1)
    assert abs(edges["top"] - first["y"]) <= 1 and abs(edges["bottom"] - (last["y"] + last["height"])) <= 1
    label = driver.execute_script("return document.getElementById('play-representative').textContent")
    start, end = window["start_seconds"], window["end_seconds"]
    assert f"{int(start // 60)}:{start % 60:04.1f}" in label and f"{int(end // 60)}:{end % 60:04.1f}" in label
    assert csp_violations(driver) == []


def test_the_play_button_plays_just_the_window(driver, server, long_file, window):
    from selenium.webdriver.common.by import By

    analyse_in_page(driver, server.url, long_file)
    wait_for(driver, "return document.getElementById('audio').readyState >= 1")  # metadata: seekable
    # Start somewhere outside the window, and record every position playback resumes from.
    outside = 0.0 if window["start_seconds"] > 1 else window["end_seconds"] + 0.5
    driver.execute_script(
        """
        const audio = document.getElementById('audio');
        audio.currentTime = arguments[0];
        audio.playbackRate = arguments[1];
        window.__playedFrom = [];
        audio.addEventListener('playing', () => window.__playedFrom.push(audio.currentTime));
        """,
        outside,
        PLAYBACK_RATE,
    )
    wait_for(driver, "return Math.abs(document.getElementById('audio').currentTime - arguments[0]) < 0.01", 10, outside)
    driver.find_element(By.ID, "play-representative").click()
    wait_for(driver, "return window.__playedFrom.length > 0", PAGE_TIMEOUT_SECONDS)
    played_from = driver.execute_script("return window.__playedFrom[0]")
    assert abs(played_from - window["start_seconds"]) < 0.1
    wait_for(driver, "return document.getElementById('audio').paused", PLAYBACK_TIMEOUT_SECONDS)
    state = driver.execute_script(
        "const a = document.getElementById('audio'); return {time: a.currentTime, ended: a.ended};"
    )
    assert not state["ended"]
    assert window["end_seconds"] <= state["time"] <= window["end_seconds"] + LATE_PAUSE_SECONDS, state
    assert csp_violations(driver) == []
