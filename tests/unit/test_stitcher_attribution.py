"""The attribution rules on hand-made sessions and exposures (stitcher.attribution.resolve / pick_site)."""

from __future__ import annotations

from stitcher.attribution import Exposure, Missing, Session, Touch, missing_telemetry, pick_site, resolve

T0 = 1_780_000_000_000


def session(sid: str, minute: int, channel: str, path: str = "/", site: str = "s.com", source: str = "") -> Session:
    start = T0 + minute * 60_000
    return Session(site, sid, start, start + 1000, Touch(utm_source=source, channel=channel, landing_path=path,
                                                           ts_ms=start))


def test_first_touch_is_the_earliest_campaign_session_last_touch_the_latest_non_direct() -> None:
    sessions = [
        session("d1", 0, "direct", "/"),
        session("o1", 10, "organic_search", "/blog"),
        session("p1", 20, "paid_search", "/pricing", source="google"),
        session("d2", 30, "direct", "/signup"),
    ]
    got = resolve(sessions, [], site_id="s.com", session_id=None, occurred_at_ms=T0 + 31 * 60_000)
    assert got.first_touch.landing_path == "/blog"
    assert got.last_touch.utm_source == "google"
    assert (got.session_id, got.landing_path) == ("d2", "/signup")


def test_only_direct_sessions_first_touch_is_the_earliest_and_last_touch_equals_it() -> None:
    sessions = [session("d2", 5, "direct", "/b"), session("d1", 1, "direct", "/a")]
    got = resolve(sessions, [], site_id="s.com", session_id="d2", occurred_at_ms=T0 + 10 * 60_000)
    assert got.first_touch == got.last_touch
    assert got.first_touch.landing_path == "/a"
    assert got.landing_path == "/b"


def test_no_session_gives_an_empty_direct_touch() -> None:
    got = resolve([], [], site_id="s.com", session_id=None, occurred_at_ms=T0)
    assert got.first_touch == Touch() == got.last_touch
    assert (got.session_id, got.landing_path, got.variants) == ("", "", {})


def test_unknown_session_id_is_kept_with_an_empty_landing_path() -> None:
    got = resolve([session("a", 0, "email", "/x")], [], site_id="s.com", session_id="zz", occurred_at_ms=T0 + 1)
    assert (got.session_id, got.landing_path) == ("zz", "")


def test_variants_first_exposure_before_occurred_at_ties_by_variant_id_other_sites_ignored() -> None:
    exposures = [
        Exposure("s.com", "hero", "B", T0 + 5),
        Exposure("s.com", "hero", "A", T0 + 9),
        Exposure("s.com", "cta", "red", T0 + 7),
        Exposure("s.com", "cta", "blue", T0 + 7),
        Exposure("s.com", "late", "x", T0 + 100),
        Exposure("other.com", "hero", "Z", T0),
    ]
    got = resolve([], exposures, site_id="s.com", session_id=None, occurred_at_ms=T0 + 50)
    assert got.variants == {"cta": "blue", "hero": "B"}


def test_site_comes_from_the_request_then_the_named_session_then_the_latest() -> None:
    sessions = [session("a", 0, "direct", site="one.com"), session("b", 5, "direct", site="two.com")]
    assert pick_site(sessions, "three.com", "a") == "three.com"
    assert pick_site(sessions, None, "a") == "one.com"
    assert pick_site(sessions, None, "unknown") == "two.com"
    assert pick_site(sessions, None, None) == "two.com"
    assert pick_site([], None, None) is None
    got = resolve(sessions, [], site_id="one.com", session_id=None, occurred_at_ms=T0 + 10 * 60_000)
    assert got.session_id == "a"  # sessions of other sites are ignored


def test_missing_telemetry_names_what_the_stitcher_waits_for() -> None:
    sessions = [session("a", 0, "direct"), session("b", 5, "email", site="other.com")]
    assert missing_telemetry(sessions, "s.com", None) is None
    assert missing_telemetry(sessions, "s.com", "a") is None
    assert missing_telemetry(sessions, "s.com", "b") is Missing.SESSION_NOT_SEEN  # b is another site's
    assert missing_telemetry(sessions, "s.com", "zz") is Missing.SESSION_NOT_SEEN
    assert missing_telemetry(sessions, "third.com", None) is Missing.NO_VISITOR_DATA
    assert missing_telemetry([], "s.com", "a") is Missing.NO_VISITOR_DATA


def test_a_converting_session_without_a_page_view_is_waited_for() -> None:
    """An exposure or click sent ahead of the batch with the page view: the session is seen, its
    landing page is not yet."""
    sessions = [session("a", 0, "direct", "/a"), session("b", 5, "cpc", path="")]
    assert missing_telemetry(sessions, "s.com", "b") is Missing.PAGE_VIEW_NOT_SEEN
    assert missing_telemetry(sessions, "s.com", None) is Missing.PAGE_VIEW_NOT_SEEN  # b is the latest
    assert missing_telemetry(sessions, "s.com", "a") is None
    assert missing_telemetry([*sessions, session("c", 9, "direct", "/c")], "s.com", None) is None
