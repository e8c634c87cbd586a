"""Suite 6, sites and origins: the allowlist CLICKSTREAM_SITES on a real collector process.

Events of a site_id not on the list are rejected (`unknown_site`), counted and kept in rejected/;
an event sent by a browser from an origin not listed for its site is rejected
(`origin_not_allowed`); CORS answers only the listed origins; without the setting any site and
any origin are accepted (README "Sites and origins").
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from clickstream.core.settings import Settings, SettingsError
from tests.conftest import ROOT, Server, make_event
from tests.reliability.leads_support import metric, rejected, report, spooled

SITES = "example.com=https://example.com,https://www.example.com;shop.io=https://shop.io;api.only"


def test_the_setting_parses_and_refuses_what_is_not_a_site_or_an_origin() -> None:
    s = Settings.from_env({"CLICKSTREAM_SITES": SITES + ";"})
    assert s.sites == {"example.com": ("https://example.com", "https://www.example.com"),
                       "shop.io": ("https://shop.io",), "api.only": ()}
    assert s.cors_origins == ("https://example.com", "https://shop.io", "https://www.example.com")
    assert Settings.from_env({}).sites == {} and Settings.from_env({}).cors_origins == ("*",)
    for bad in ("bad site=https://a.com", "a.com=https://a.com/path", "a.com=ftp://a.com"):
        with pytest.raises(SettingsError, match="CLICKSTREAM_SITES"):
            Settings.from_env({"CLICKSTREAM_SITES": bad})


def test_unknown_site_is_rejected_counted_and_kept(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("collector", sites=SITES, spool_fsync_interval_ms=0)
    ok = [make_event(site_id=site) for site in ("example.com", "shop.io", "api.only")]
    stranger = [make_event(site_id="evil.example"), make_event(site_id="example.org")]
    with srv.client() as http:
        answer = http.post("/collect", json=ok + stranger)
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert (body["accepted"], body["rejected"]) == (3, 2)
        assert {e["reason"] for e in body["errors"]} == {"unknown_site"}
        only_stranger = http.post("/collect", json=make_event(site_id="nobody.net"))
        assert only_stranger.status_code == 400 and only_stranger.json()["errors"][0]["path"] == "/site_id"
        text = http.get("/metrics").text
    assert metric(text, "clickstream_events_rejected_total", reason="unknown_site") == 3
    kept = rejected(srv.data_dir)
    assert sorted(k["event"]["site_id"] for k in kept if k["reason"] == "unknown_site") == [
        "evil.example", "example.org", "nobody.net"]
    assert sorted(e["site_id"] for e in spooled(srv.data_dir)) == ["api.only", "example.com", "shop.io"]
    report("sites", sent=6, accepted=3, rejected_unknown_site=3, kept_in_rejected=len(kept))


def test_cors_answers_per_site_and_origin_must_match_the_event_site(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("collector", sites=SITES, spool_fsync_interval_ms=0)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with srv.client() as http:
        for origin in ("https://shop.io", "https://www.example.com"):
            answer = http.options("/collect", headers={"Origin": origin, **preflight})
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
        for origin in ("https://evil.example", "http://shop.io", "https://shop.io.evil.example"):
            answer = http.options("/collect", headers={"Origin": origin, **preflight})
            assert answer.status_code == 400 and "access-control-allow-origin" not in answer.headers, origin
        # a browser on shop.io may write shop.io's events, not example.com's
        mixed = http.post("/collect", json=[make_event(site_id="shop.io"), make_event(site_id="example.com")],
                          headers={"Origin": "https://shop.io"})
        assert mixed.status_code == 202 and mixed.headers["access-control-allow-origin"] == "https://shop.io"
        assert [(e["index"], e["reason"]) for e in mixed.json()["errors"]] == [(1, "origin_not_allowed")]
        # an unlisted origin gets no CORS grant, and its events are refused all the same (sendBeacon's
        # text/plain needs no preflight, so the collector checks the Origin itself)
        forged = http.post("/collect", content=orjson.dumps([make_event(site_id="example.com")]),
                           headers={"Origin": "https://evil.example", "Content-Type": "text/plain"})
        assert forged.status_code == 400 and "access-control-allow-origin" not in forged.headers
        assert forged.json()["errors"][0]["reason"] == "origin_not_allowed"
        # a site without origins (api.only) takes server-side events only (no Origin header)
        assert http.post("/collect", json=make_event(site_id="api.only")).status_code == 202
        assert http.post("/collect", json=make_event(site_id="api.only"),
                         headers={"Origin": "https://example.com"}).status_code == 400
        text = http.get("/metrics").text
    assert metric(text, "clickstream_events_rejected_total", reason="origin_not_allowed") == 3
    assert {k["reason"] for k in rejected(srv.data_dir)} == {"origin_not_allowed"}


def test_unset_accepts_any_site_and_origin_and_the_readme_says_so(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("collector", spool_fsync_interval_ms=0)
    with srv.client() as http:
        answer = http.post("/collect", json=[make_event(site_id="anything.example")],
                           headers={"Origin": "https://whatever.example"})
        assert answer.status_code == 202 and answer.json()["rejected"] == 0
        assert answer.headers["access-control-allow-origin"] == "https://whatever.example"
    readme = (ROOT / "README.md").read_text()
    assert "CLICKSTREAM_SITES" in readme and "accepts events for any site" in readme
    assert "CLICKSTREAM_SITES" in (ROOT / "docs/architecture.md").read_text()


def test_the_allowlist_reaches_the_workers_of_serve(server_factory: Callable[..., Server]) -> None:
    """`serve --workers` hands its settings to each collector process through the environment."""
    assert Settings.from_env({"CLICKSTREAM_SITES": Settings.from_env({"CLICKSTREAM_SITES": SITES}).env_text(
        "sites")}).sites == Settings.from_env({"CLICKSTREAM_SITES": SITES}).sites
    srv = server_factory("serve", sites=SITES, workers="1")
    with srv.client() as http:
        answer = http.post("/collect", json=[make_event(site_id="shop.io"), make_event(site_id="evil.example")])
    assert answer.status_code == 202 and [e["reason"] for e in answer.json()["errors"]] == ["unknown_site"]
