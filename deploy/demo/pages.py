"""HTML of the demo site: plain strings with every dynamic value escaped (no template engine).

The beacon tag: `<script defer src="<collector>/beacon.js" data-site="...">`,
preceded by the optional loader stub so the hero exposure made in the page head is replayed
before the first page view (which then carries the variant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

#: Landing pages: path name -> (title, pitch). Two landings make `v_landing_pages` worth reading.
LANDINGS: dict[str, tuple[str, str]] = {
    "analytics": ("Web analytics you host", "Page views, sessions and campaigns in your own ClickHouse."),
    "privacy": ("Privacy-first analytics", "No third-party cookies, no raw IPs, Global Privacy Control honoured."),
}

#: The A/B hero (experiment "hero"): variant -> headline.
HERO: dict[str, str] = {
    "A": "See every visit. Own every byte.",
    "B": "Your analytics, on your servers, in five minutes.",
}

#: Arrivals offered on the hub page: label -> landing URL with UTM parameters.
ARRIVALS: list[tuple[str, str]] = [
    ("Google Ads (paid search)",
     "/lp/analytics?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&utm_term=web+analytics"),
    ("Newsletter (email)", "/lp/privacy?utm_source=newsletter&utm_medium=email&utm_campaign=launch_week"),
    ("Social post", "/lp/analytics?utm_source=twitter&utm_medium=social&utm_campaign=launch_week&utm_content=thread"),
    ("Direct (no campaign)", "/lp/privacy"),
]

_CSS = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7fb}
header,main,footer{max-width:46rem;margin:0 auto;padding:1rem 1.5rem}
header{display:flex;gap:1.2rem;align-items:center}header b{margin-right:auto}
a{color:#2952cc}a.active{font-weight:700;text-decoration:none}
.hero{background:#1d2330;color:#fff;padding:2rem;border-radius:12px}
.hero small{opacity:.7}button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:8px;
background:#2952cc;color:#fff;cursor:pointer}form{display:grid;gap:.6rem;background:#fff;
padding:1.5rem;border-radius:12px;margin-top:1.5rem}input,select{font:inherit;padding:.4rem}
pre{background:#fff;padding:1rem;border-radius:8px;overflow:auto;font-size:13px}
.error{background:#fde8e8;padding:1rem;border-radius:8px}
"""


@dataclass(frozen=True)
class Page:
    """What every page needs to know about the deployment."""

    collector_url: str
    site_id: str
    respect_dnt: bool = False
    pipeline_hint: str = ""


def _beacon(page: Page, exposures: dict[str, str]) -> str:
    stub = ""
    if exposures:
        calls = "".join(f"clickstream.expose({json.dumps(k)},{json.dumps(v)});" for k, v in exposures.items())
        stub = ("<script>window.clickstream=window.clickstream||[];clickstream.expose=clickstream.expose||"
                f"((...a)=>clickstream.push([\"expose\",...a]));{calls}</script>\n")
    dnt = " data-respect-dnt" if page.respect_dnt else ""
    # data-local: the demo runs on 127.0.0.1, where beacon.js sends nothing unless told to
    return (f"{stub}<script defer src=\"{escape(page.collector_url)}/beacon.js\" "
            f"data-site=\"{escape(page.site_id)}\" data-local{dnt}></script>\n"
            "<script defer src=\"/static/demo.js\"></script>")


def layout(page: Page, title: str, body: str, *, tracked: bool = True, exposures: dict[str, str] | None = None,
           nav: str = "") -> str:
    head_js = _beacon(page, exposures or {}) if tracked else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{escape(title)}</title><link rel="icon" href="data:,"><style>{_CSS}</style>
{head_js}</head>
<body><header><b>clickstream demo</b>{nav}</header>
<main>{body}</main>
<footer><small>Tracked by beacon.js from {escape(page.collector_url)} as site
<code>{escape(page.site_id)}</code>.</small></footer></body></html>"""


def hub(page: Page) -> str:
    """The start page (not tracked): arrive on a landing page as if from a campaign."""
    links = "".join(f'<li><a rel="noreferrer" href="{escape(url)}">{escape(label)}</a> '
                    f"<code>{escape(url)}</code></li>" for label, url in ARRIVALS)
    body = f"""<h1>Arrive as a visitor</h1>
<p>Each link opens a landing page the way a campaign would (UTM parameters, no referrer).
Look around, switch sections, click <em>Start free trial</em>, then sign up: the form's
server handler calls the stitcher, which freezes your UTM, landing page and hero variant into a
<code>lead_created</code> event.</p>
<ul>{links}</ul>
<h2>Then look at the data</h2>
<pre>{escape(page.pipeline_hint)}</pre>"""
    return layout(page, "clickstream demo", body, tracked=False)


def _nav(home: str, active: str) -> str:
    items = [(home, "Home"), ("/features", "Features"), ("/pricing", "Pricing")]
    links = "".join(f'<a data-spa href="{escape(href)}"{" class=active" if href == active else ""}>{label}</a>'
                    for href, label in items)
    return links + '<a href="https://clickhouse.com/docs">ClickHouse docs</a>'


def landing(page: Page, landing_name: str, path: str, variant: str) -> str:
    """One page, three SPA sections (landing, /features, /pricing), the hero and the signup form."""
    title, pitch = LANDINGS[landing_name]
    home = f"/lp/{landing_name}"
    sections = [
        (home, title, f"""<div class="hero" data-variant="{escape(variant)}"><small>variant {escape(variant)}</small>
<h1 id="hero-headline">{escape(HERO[variant])}</h1><p>{escape(pitch)}</p>
<a data-spa href="/pricing" style="color:#9fb5ff">See pricing</a></div>"""),
        ("/features", "Features", """<h1>Features</h1><ul><li>One script tag, a few KB, no third-party cookies.</li>
<li>Sessions, channels, landing pages and A/B lift as SQL views.</li>
<li>Leads with attribution frozen at conversion time.</li></ul>"""),
        ("/pricing", "Pricing", """<h1>Pricing</h1><p>Team plan: free while in demo.</p>
<button id="cta" data-cs-event="cta_click" data-cs-prop-plan="team" data-cs-prop-placement="pricing">
Start free trial</button>"""),
    ]
    current = path if any(route == path for route, _, _ in sections) else home
    html_sections = "".join(
        f'<section data-route="{escape(route)}" data-title="{escape(t)}"{"" if route == current else " hidden"}>'
        f"{content}</section>" for route, t, content in sections)
    page_title = next(t for route, t, _ in sections if route == current)
    form = """<form id="signup" method="post" action="/signup">
<h2>Sign up</h2>
<label>Email <input name="email" type="email" required placeholder="you@example.com"></label>
<label>Plan <select name="plan"><option value="starter">Starter</option><option value="team">Team</option>
</select></label>
<input type="hidden" name="anonymous_id"><input type="hidden" name="session_id">
<button type="submit" data-cs-event="signup_submit">Create my account</button></form>"""
    return layout(page, page_title, html_sections + form, exposures={"hero": variant}, nav=_nav(home, current))


def thanks(page: Page, lead_id: str, created: bool, event: dict[str, Any]) -> str:
    """The conversion page: the frozen lead_created event as the stitcher returned it."""
    status = "Lead created" if created else "Already signed up: the lead stays as first recorded"
    ft = event.get("first_touch") or {}
    summary = (f"first touch: {ft.get('utm_source') or '-'} / {ft.get('utm_medium') or '-'} / "
               f"{ft.get('utm_campaign') or '-'}; landing page {event.get('landing_path') or '-'}; "
               f"variants {json.dumps(event.get('variants') or {})}")
    body = f"""<h1 id="status">{escape(status)}</h1><p>Lead <code id="lead-id">{escape(lead_id)}</code>:
{escape(summary)}</p>
<pre id="lead-event">{escape(json.dumps(event, indent=2, sort_keys=True))}</pre>
<h2>See it in SQL</h2><pre>{escape(page.pipeline_hint)}</pre><p><a href="/">Back to the start</a></p>"""
    return layout(page, "Thanks for signing up", body)


def error(page: Page, title: str, message: str) -> str:
    """A conversion that could not be recorded, with what to do about it."""
    body = (f'<h1>{escape(title)}</h1><p class="error" id="error">{escape(message)}</p>'
            '<p><a href="/">Back to the start</a></p>')
    return layout(page, title, body, tracked=False)
