"""TAGGRAM_CATALOG_AUDIO_URL (issue #23): the template is checked when the settings are parsed, the track id is
substituted URL-encoded, and the page's policy widens media-src to that origin alone."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from pydantic import ValidationError

from service.api.page import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, page_security_headers
from service.config import Settings, audio_origin, audio_url, audio_url_template_problem


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


@pytest.mark.parametrize(
    "template",
    [
        "https://cdn.example.com/audio/{track_id}.mp3",
        "http://127.0.0.1:9000/play?id={track_id}&format=ogg",
        "HTTPS://CDN.Example.com:8443/a/{track_id}",
        "https://media-1.example.org/{track_id}",
    ],
)
def test_a_good_template_is_accepted(template):
    assert audio_url_template_problem(template) is None
    assert Settings(catalog_audio_url=template).catalog_audio_url == template


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("https://cdn.example.com/audio/latest.mp3", "exactly once (found 0 times)"),
        ("https://cdn.example.com/{track_id}/{track_id}", "exactly once (found 2 times)"),
        ("https://cdn.example.com/{artist}/{track_id}", "no placeholder but {track_id}"),
        ("https://cdn.example.com/{track_id}/{", "no placeholder but {track_id}"),
        ("https://cdn.example.com/{TRACK_ID}", "exactly once (found 0 times)"),
        ("/audio/{track_id}.mp3", "absolute http:// or https:// URL"),
        ("ftp://cdn.example.com/{track_id}", "absolute http:// or https:// URL"),
        ("file:///srv/audio/{track_id}", "absolute http:// or https:// URL"),
        ("javascript:alert({track_id})", "absolute http:// or https:// URL"),
        ("https://{track_id}.cdn.example.com/a.mp3", "in the path or the query, not in the host"),
        ("https://user:secret@cdn.example.com/{track_id}", "user:password@"),
        ("https://cdn.example.com/{track_id}#t=10", "#fragment"),
        ("https://cdn.example.com/{track_id} x", "spaces"),
        ("https://cdn.example.com;script-src/{track_id}", "DNS name or an IPv4 address"),
        ("https://cdn.example.com,evil.example/{track_id}", "DNS name or an IPv4 address"),
        ("https://[::1]:8000/{track_id}", "DNS name or an IPv4 address"),
        ("https://cdn.example.com:0/{track_id}", "port between 1 and 65535"),
        ("https://cdn.example.com:99999/{track_id}", "is not a URL"),
    ],
)
def test_a_bad_template_is_refused_when_the_settings_are_parsed(template, says):
    assert says in audio_url_template_problem(template)
    with pytest.raises(ValidationError) as raised:
        Settings(catalog_audio_url=template)
    (error,) = raised.value.errors()
    assert error["loc"] == ("catalog_audio_url",) and says in error["msg"]


def test_unset_means_no_playback():
    assert Settings().catalog_audio_url is None
    assert page_security_headers(None) == SECURITY_HEADERS


def test_the_environment_variable_is_read(monkeypatch):
    monkeypatch.setenv("TAGGRAM_CATALOG_AUDIO_URL", "https://cdn.example.com/{track_id}.ogg")
    assert Settings().catalog_audio_url == "https://cdn.example.com/{track_id}.ogg"
    monkeypatch.setenv("TAGGRAM_CATALOG_AUDIO_URL", "https://cdn.example.com/all.ogg")
    with pytest.raises(ValidationError, match="catalog_audio_url"):
        Settings()


@pytest.mark.parametrize(
    ("track_id", "encoded"),
    [
        ("plain-track_1.0~", "plain-track_1.0~"),  # RFC 3986's unreserved characters stay as they are
        ("pkg/track", "pkg%2Ftrack"),  # one path segment: a "/" in an id never opens another folder
        ("a b#c?d&e=f", "a%20b%23c%3Fd%26e%3Df"),
        ("100%", "100%25"),
        ("it's (live)*!", "it%27s%20%28live%29%2A%21"),  # what encodeURIComponent leaves alone: catalog.js encodes it
        ("Ünïcødé 🎵", "%C3%9Cn%C3%AFc%C3%B8d%C3%A9%20%F0%9F%8E%B5"),  # UTF-8 bytes
        ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd"),
        ("{track_id}", "%7Btrack_id%7D"),
    ],
)
def test_the_track_id_is_substituted_url_encoded(track_id, encoded):
    template = "https://cdn.example.com/audio/{track_id}.mp3?q=1"
    url = audio_url(template, track_id)
    assert url == f"https://cdn.example.com/audio/{encoded}.mp3?q=1"
    parts = urlsplit(url)
    assert parts.netloc == "cdn.example.com" and unquote(parts.path) == f"/audio/{track_id}.mp3"


def test_in_the_query_the_id_stays_one_value():
    url = audio_url("https://cdn.example.com/play?id={track_id}&fmt=mp3", "a&fmt=wav")
    assert url == "https://cdn.example.com/play?id=a%26fmt%3Dwav&fmt=mp3"


def test_the_origin_is_scheme_host_and_the_port_given():
    assert audio_origin("https://cdn.example.com/a/{track_id}") == "https://cdn.example.com"
    assert audio_origin("HTTP://CDN.Example.com:8080/{track_id}?x=1") == "http://cdn.example.com:8080"


def test_the_pages_policy_widens_media_src_to_the_origin_and_nothing_else():
    headers = page_security_headers("https://cdn.example.com:8443/audio/{track_id}.mp3")
    widened, base = directives(headers["content-security-policy"]), directives(CONTENT_SECURITY_POLICY)
    assert widened.pop("media-src") == f"{base.pop('media-src')} https://cdn.example.com:8443"
    assert widened == base  # connect-src, script-src, …: unchanged
    assert {k: v for k, v in headers.items() if k != "content-security-policy"} == {
        k: v for k, v in SECURITY_HEADERS.items() if k != "content-security-policy"
    }
