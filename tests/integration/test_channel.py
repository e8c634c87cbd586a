"""The channel rules in ClickHouse (sql/0007_ingest.sql) agree with flusher/channel.py, the
documented reference (GA4 default channel group), case by case and on generated inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickstream.core.clickhouse import connect, migrate
from tests.channel_reference import SEARCH_ENGINES, SOCIAL_NETWORKS, classify, site_label

CASES = [
    # (utm_source, utm_medium, referrer_host) -> channel
    (("", "", ""), "direct"),
    (("google", "cpc", ""), "paid_search"),
    (("bing", "ppc", "bing.com"), "paid_search"),
    (("facebook", "paid_social", ""), "paid_social"),
    (("", "", "google.com"), "organic_search"),
    (("", "", "www.google.co.uk"), "organic_search"),
    (("", "", "l.facebook.com"), "organic_social"),
    (("", "social", ""), "organic_social"),
    (("newsletter", "email", ""), "email"),
    (("Newsletter", "", ""), "email"),
    (("partner", "affiliate", ""), "affiliates"),
    (("ads.example", "display", ""), "display"),
    (("ads.example", "cpm", ""), "display"),
    (("ads.example", "paid", ""), "paid_other"),
    (("", "", "blog.partner.example"), "referral"),
    (("blog", "referral", ""), "referral"),
    (("something", "weird", ""), "unassigned"),
    (("www.google.com", "", ""), "organic_search"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    path: Path = tmp_path_factory.mktemp("channel") / "clickhouse"
    c = connect(f"chdb://{path}")
    migrate(c)
    yield c
    c.close()


def sql_channel(client: Client, source: str, medium: str, referrer_host: str) -> str:
    result: str = client.query("SELECT clickstream_channel({s:String}, {m:String}, {r:String})",
                               parameters={"s": source, "m": medium, "r": referrer_host}).result_rows[0][0]
    return result


@pytest.mark.parametrize(("args", "channel"), CASES)
def test_documented_cases(client: Client, args: tuple[str, str, str], channel: str) -> None:
    assert classify(*args) == channel
    assert sql_channel(client, *args) == channel


# hosts and UTM values are ASCII or Latin in practice (IDN hosts travel as punycode)
texts = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F), max_size=12)
labels = st.sampled_from(sorted(SEARCH_ENGINES | SOCIAL_NETWORKS | {"partner", "blog", "news", "newsletter"}))
hosts = st.one_of(
    st.just(""),
    st.builds(lambda sub, label, tld: ".".join(p for p in (sub, label, tld) if p),
              st.sampled_from(["", "www", "l", "m", "search", "news"]), labels,
              st.sampled_from(["com", "co.uk", "de", "org", "com.au", "co"])),
)
mediums = st.one_of(st.sampled_from(["", "cpc", "ppc", "paid_social", "paid", "retargeting", "email", "e-mail",
                                     "social", "organic", "referral", "affiliate", "display", "cpm", "banner",
                                     "Email", " CPC "]), texts)
sources = st.one_of(labels, hosts, texts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=sources, medium=mediums, referrer_host=hosts)
def test_sql_agrees_with_reference(client: Client, source: str, medium: str, referrer_host: str) -> None:
    assert sql_channel(client, source, medium, referrer_host) == classify(source, medium, referrer_host)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.one_of(hosts, texts))
def test_site_label_agrees(client: Client, host: str) -> None:
    got = client.query("SELECT clickstream_site_label({h:String})", parameters={"h": host}).result_rows[0][0]
    assert got == site_label(host)
