/*! clickstream beacon.js */
// Browser tracker. Event fields: schemas/event/1-1-0.json (values clipped to its bounds); options
// and events: docs/architecture.md "beacon.js". One file, no build step: the collector serves it
// minified (rjsmin: whitespace and comments only, hence the terse code) and gzipped, at most 4 KB
// on the wire with everything on (BENCHMARKS.md "beacon.js size").
// <script defer src="https://collector.example/beacon.js" data-site="example.com">
// data-site: site_id (default: host); data-api: collect URL (default: the collector's collect path
//   beside this src, written in by the collector when it serves the file);
// data-respect-dnt: with Global Privacy Control or Do Not Track on, send and store nothing;
// data-consent="required": until clickstream.consent(true), store nothing and send events without
//   ids (`consent: "pending"`): the collector derives a cookieless visitor and session;
// data-domains="a.com,b.com": send only on these hosts; data-local: send on localhost and file: too;
// data-exclude-search / data-exclude-hash: drop the query / #fragment from the URLs sent;
// data-hash: #fragment changes are page views (hash routing);
// data-outbound="false", data-forms="false": no outbound `click` / `form_submit` events;
// data-downloads="pdf,zip" (or "false"): the extensions a link click gives `file_download` for;
// data-vitals: a `web_vitals` event per page load (LCP, CLS, INP, FCP, TTFB);
// data-404: a `not_found` event {path} (put it on the error page's tag);
// localStorage cs_disabled (any value): send nothing (opt-out, e.g. for your own visits);
// window.clickstreamBeforeSend(event): return the event (changed or not) to send it, null to drop.
// API: clickstream.track(type, props) .expose(experiment, variant) .consent(granted) .anonymousId()
// .sessionId() .flush() .push([method, ...args]); calls queued before load in window.clickstream
// (an array, or an object with a `q` array) are replayed first.
// Names are short because rjsmin keeps them and they count against the budget:
//   ai anonymous id, ap collect URL, at/ha data-* value/presence, bs batches, cc click handler,
//   ck cookie, cl clip, cu current page's URL, de/to scroll depth seen/reported, dm data-domains,
//   dp scroll depth now, eg report engagement, en engaged ms, ex download extensions, fl batches in
//   flight, fs flush, hs host, ld load, lo localStorage usable, ls localStorage, lv page hide/leave,
//   mm session while consent is pending, mp map, nv SPA navigation, nw now, ob object, pa parse,
//   pg page identity, pr prop, ps persist ids, pv page view, qu queue, rf referrer, rt retry,
//   sd send, sf safe (catches), si visible since, sn site, so store, ss session, st stored
//   batches, sv save, tk tick, tm timer, tr track, ur URL as sent, uu uuid, va variants,
//   vt vitals report, xp expose.
(() => { try { // never throw into the host page: here and in sf() below
  const w = window, d = document, n = navigator, loc = location, pre = w.clickstream, MIN = 6e4, js = JSON.stringify,
    ID = /^[A-Za-z0-9._:-]{1,128}$/, VAR = /^[A-Za-z0-9_.:-]{1,64}$/, TYPE = /^[a-z][a-z0-9_]{0,63}$/,
    sf = f => (...a) => { try { return f(...a) } catch (e) {} },
    cl = (s, max) => String(s == null ? "" : s).slice(0, max),
    pa = s => { try { return JSON.parse(s) } catch (e) {} },
    ob = x => (x && typeof x == "object" && !Array.isArray(x) ? x : {}),
    on = (t, k, f, o) => t.addEventListener(k, sf(f), o),
    nw = () => Date.now(),
    // crypto.randomUUID needs a secure context; else an RFC 4122 v4 UUID by hand (in the template,
    // 0 and 1: a random hex digit, 8: one of 8-b (the variant), 4: the version)
    uu = () => crypto.randomUUID ? crypto.randomUUID() : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, c => (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16)),
    el = d.currentScript || d.querySelector("script[data-site]"),
    at = k => el.getAttribute("data-" + k), ha = k => el.hasAttribute("data-" + k),
    ap = at("api") || new URL("collect", el.src).href,
    hs = loc.hostname, sn = at("site") || hs, dm = at("domains"),
    // Storage (keys "cs_*"): localStorage (throws when blocked), else a first-party cookie:
    // 1 year, SameSite=Lax, Secure on https; "" deletes. Nothing is written while consent is
    // pending (`ok` false): `sv` does nothing then, reading is harmless.
    ck = (k, v) => v === undefined
      ? decodeURIComponent((d.cookie.match("(?:^|; )cs_" + k + "=([^;]*)") || [])[1] || "")
      : (d.cookie = `cs_${k}=${encodeURIComponent(v)}; max-age=${v ? 31536000 : 0}; path=/; SameSite=Lax${loc.protocol == "https:" ? "; Secure" : ""}`),
    ls = (k, v) => { try { return v === undefined ? localStorage.getItem("cs_" + k) : (localStorage.setItem("cs_" + k, v), 1) } catch (e) {} },
    ld = k => pa(ls(k) || ck(k)),
    sv = (k, v) => ok && ((v = js(v)), ls(k, v) || ck(k, v)),
    // Off (nothing sent, nothing stored): privacy signals with data-respect-dnt, a host outside
    // data-domains, a local page without data-local (Plausible's rule: localhost, 127.x, [::1], file:).
    off = (ha("respect-dnt") && !!(n.globalPrivacyControl || n.doNotTrack == "1" || w.doNotTrack == "1"))
      || (dm && !dm.split(",").some(x => x.trim() == hs))
      || (!ha("local") && (/^(localhost|127(\.\d+){3}|\[::1?\])$/.test(hs) || loc.protocol == "file:")),
    // Consented: the anonymous id is the cookie, its localStorage copy restores it when cleared;
    // rewritten on each load so the year runs from the last visit.
    ps = () => {
      lo = ls("t", 1);
      ai = ck("id") || ls("id") || "";
      ID.test(ai) || (ai = uu());
      ck("id", ai); ls("id", ai);
    };
  if (pre && pre.anonymousId) return; // loaded twice
  // Consent: given by default; with data-consent="required", pending until clickstream.consent(true)
  // (then remembered in cs_c, so later pages start consented).
  let ok = at("consent") != "required" || !!ld("c"), lo = 0, ai = "", mm = {}, va = ob(ld("v")),
    rf = d.referrer, key = "", cu = "", qu = [], tm = 0, si = 0, en = 0, de = 0, to = 0, vt = 0;
  ok && !off && ps();

  // Session {i: id, t: last activity, u: its campaign}: new after 30 minutes without events, or
  // when the URL carries a campaign (utm_*) other than the session's (docs/architecture.md
  // "Definitions"; GA's rules). The session's UTM rides on all its events. Consent pending: kept in
  // memory (`mm`) for the page's life, only its campaign is sent (the collector assigns the session).
  // `n`: events of the session so far, sent as `seq` (0, 1, ...; ordering events with equal ts),
  // stored with the session (a retried batch keeps its events' seq); counted when `k` (an event).
  const ss = (t, k) => {
      let s = ok ? ob(ld("s")) : mm;
      const q = new URLSearchParams(loc.search), u = {};
      for (const k of ["source", "medium", "campaign", "term", "content"]) q.get("utm_" + k) && (u[k] = cl(q.get("utm_" + k), 256));
      const c = js(u);
      if (!ID.test(s.i || "") || !(t - s.t < 30 * MIN) || (c != "{}" && c != js(s.u))) s = { i: uu(), u };
      s.t = t;
      k && (s.n = -~s.n);
      ok ? sv("s", s) : (mm = s);
      return s;
    },
    // Experiments: assignments persist for the visitor and ride on every later event as `variants`.
    xp = (xe, v) => {
      if (!VAR.test(xe) || !VAR.test(v)) return;
      va = ob(ld("v") || va); // another tab may have added one
      va[xe] = String(v);
      sv("v", va);
      tr("exposure", { experiment: xe, variant: v }); // recorded even if nothing follows
      fs();
    },
    // Maps of at most 32 entries (schema); props values: string <= 512, finite number or boolean;
    // `revenue` a number (a numeric string is converted, anything else left out), `currency` its
    // ISO 4217 code (upper case).
    mp = (m, f) => {
      const o = {};
      let k = 0;
      for (const [key, v] of Object.entries(ob(m))) k < 32 && key && f(key, v, o) && k++;
      return k && o;
    },
    pr = (k, v, o) => k == "revenue" ? isFinite((v = parseFloat(v))) && ((o[k] = v), 1)
      : ((o[cl(k, 64)] = k == "currency" ? cl(v, 3).toUpperCase() : typeof v == "boolean" || (typeof v == "number" && isFinite(v)) ? v : cl(v, 512)), 1),
    // The URL as sent (data-exclude-search / -hash) and the page's identity: a new one is a page view.
    ur = () => { const u = new URL(loc.href); ha("exclude-search") && (u.search = ""); ha("exclude-hash") && (u.hash = ""); return u.href },
    pg = () => (ha("hash") ? loc.href : loc.href.split("#")[0]),
    tr = (type, p, wh) => {
      if (off || ls("disabled") || !TYPE.test(type)) return;
      const t = nw(), s = ss(t, 1), hk = w.clickstreamBeforeSend,
        add = (k, v) => v && (e[k] = v);
      // schema: the event schema version this file writes (schemas/event/, docs/schema-versioning.md)
      let e = { schema: "event/1-1-0", seq: s.n - 1, type, site_id: sn, ts: t, url: cl(wh || ur(), 2048), event_id: uu(), screen: { w: Math.min(screen.width | 0, 1e5), h: Math.min(screen.height | 0, 1e5) } };
      ok ? ((e.anonymous_id = ai), (e.session_id = s.i)) : (e.consent = "pending");
      add("referrer", cl(rf, 2048));
      add("title", cl(d.title, 512));
      add("lang", cl(n.language, 35));
      add("utm", js(s.u) != "{}" && s.u);
      add("variants", mp(va, (k, v, o) => VAR.test(k) && VAR.test(v) && (o[k] = v)));
      add("props", mp(p, pr));
      // The hook sees the finished event; one that throws drops it (it may have been redacting).
      if (hk && hk.call && !(e = sf(hk)(e))) return;
      qu.push(e);
      qu.length > 99 ? fs() // the collector's max_batch_events (100)
        : (tm = tm || setTimeout(sf(fs), 1000)); // batch what happens within a second
    },

    // Engagement of the page view (Plausible's engagement events): `engaged_ms` = time the page was
    // visible and focused since the last report, `scroll_depth` = the deepest % of the page height
    // seen so far. Reported on page hide and before an SPA page view, only when there was
    // engagement: a second more engaged, or a deeper scroll than last reported.
    dp = () => {
      const h = d.documentElement.scrollHeight;
      return Math.min(100, h ? Math.round(((scrollY + innerHeight) / h) * 100) : 100);
    },
    tk = () => { // on visibility and focus changes
      si && (en += nw() - si);
      si = d.visibilityState == "visible" && d.hasFocus() ? nw() : 0;
    },
    eg = () => {
      tk();
      de = Math.max(de, dp());
      cu && (en > 999 || de > to) && tr("engagement", { engaged_ms: en, scroll_depth: de }, cu);
      en = 0; to = de;
    },
    pv = () => {
      eg();
      key = pg(); cu = ur(); de = to = dp();
      tr("page_view");
    },

    // Delivery: a batch {i: id, e: events, n: attempts, t: due ms, o: owner page, m: in memory only}
    // stays in localStorage "cs_q" until the collector answers (in memory while consent is pending
    // or localStorage is blocked). 202/4xx end it (4xx: retrying cannot help), 429/5xx (503: spool
    // full) and network failures retry it with exponential backoff capped at 60 s. Each event has
    // its own event_id, so a resend cannot double count.
    me = uu(), fl = new Set(),
    st = () => [].concat(pa(ls("q")) || []).filter(b => b && Array.isArray(b.e)),
    so = f => ok && lo && ls("q", js(f(st()).slice(-50))),
    put = b => (b.m = !so(q => q.filter(x => x.i != b.i).concat(b))),
    drop = b => { fl.delete(b.i); so(q => q.filter(x => x.i != b.i)) },
    bs = () => { // split the memory queue under the collector's limits: 100 events, 64 KiB
      const ou = [];
      let b = [], sz = 2;
      for (const e of qu.splice(0)) {
        const len = new Blob([js(e)]).size + 1;
        b.length && (b.length > 99 || sz + len > 6e4) && (ou.push(b), (b = []), (sz = 2));
        b.push(e);
        sz += len;
      }
      b.length && ou.push(b);
      return ou.map(e => ({ i: uu(), e, n: 0, o: me, t: 0 }));
    },
    sd = b => {
      b.e = b.e.filter(e => e.ts > nw() - 71 * 60 * MIN); // the collector refuses ts older than 72 h
      if (!b.e.length) return drop(b);
      b.o = me; b.t = nw() + MIN; // in flight: other pages keep off
      put(b);
      fl.add(b.i);
      fetch(ap, { method: "POST", keepalive: !0, body: js(b.e) }) // a string: text/plain, no CORS preflight
        .then(sf(r => (r.status == 429 || r.status >= 500 ? rt(b) : drop(b))), sf(() => rt(b)));
    },
    rt = b => {
      fl.delete(b.i);
      const dl = Math.min(MIN, 1000 * 2 ** b.n++) * (0.5 + Math.random() / 2);
      b.t = nw() + dl;
      put(b);
      setTimeout(sf(() => {
        const x = b.m ? b : st().find(x => x.i == b.i);
        x && x.o == me && sd(x); // unless another page took it over
      }), dl);
    },
    fs = () => {
      clearTimeout(tm); tm = 0;
      bs().forEach(sd);
      // Batches left by closed pages: resent once due; a live owner's only a minute late
      // (background tabs' timers are throttled).
      for (const b of st()) b.o != me && b.t < nw() - (b.t && MIN) && sd(b);
    },
    // Hidden or leaving: engagement and vitals are reported and the queue goes by
    // navigator.sendBeacon (text/plain string, no preflight). On pagehide, in-flight keepalive
    // fetches are left to the browser; waiting retries are marked due (t = 0) for the next page.
    lv = ev => {
      tk();
      if (ev.type[0] == "v" && d.visibilityState != "hidden") return;
      eg();
      vt && vt();
      clearTimeout(tm); tm = 0;
      for (const b of bs()) n.sendBeacon(ap, js(b.e)) || rt(b);
      ev.type[0] == "p" && so(q => q.filter(b => b.o != me || !fl.has(b.i)).map(b => ((b.t = b.o == me ? 0 : b.t), b)));
    },

    str = x => typeof x == "string" || typeof x == "number", // no "undefined" experiment or event
    cs = (w.clickstream = {
      track: sf((type, p) => { typeof type == "string" && tr(type, p) }),
      expose: sf((e, v) => { off || (str(e) && str(v) && xp(String(e), String(v))) }),
      // Given: the engagement so far goes out with the pending visit, then the persistent ids take
      // over (PostHog's cookieless_mode "on_reject"). Withdrawn: every cs_* cookie and localStorage
      // the beacon wrote is deleted, and events go without ids again.
      consent: sf(g => {
        if (off || !g == !ok) return;
        if (g) return eg(), fs(), (ok = 1), sv("c", 1), ps(), sv("v", va);
        ok = 0; ai = ""; mm = {};
        for (const k of ["id", "s", "v", "q", "t", "c"]) ck(k, ""), sf(() => localStorage.removeItem("cs_" + k))();
      }),
      anonymousId: () => ai,
      sessionId: sf(() => (off || !ok ? "" : ss(nw()).i)),
      flush: sf(() => { off || fs() }),
      push: sf(a => { cs[a[0]] && a[0] != "push" && cs[a[0]](...[].slice.call(a, 1)) }),
    }),

    // Page views on load and on SPA navigations (pushState, replaceState, popstate; hashchange with
    // data-hash) that change the page, a tick later so the app has set the title; the SPA referrer
    // is the previous page.
    nv = () => { pg() != key && ((rf = cu), pv()) },
    // Clicks (capture phase, so stopPropagation cannot hide them): [data-cs-event] elements give
    // that custom event with their data-cs-prop-* values; links to a file (by extension, Plausible's
    // list) give `file_download` {url} (without its query), other links to another host `click` {href}.
    ex = (at("downloads") || "pdf,xlsx,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpeg,wmv,midi,mp3,wav,wma,dmg").split(/\s*,\s*/),
    cc = e => {
      const t = e.target, p = {}, c = t.closest && t.closest("[data-cs-event]"), a = t.closest && t.closest("a[href]");
      if (e.type[0] == "a" && e.button != 1) return; // auxclick: the middle button only
      if (c) {
        for (const x of c.attributes) x.name.startsWith("data-cs-prop-") && (p[x.name.slice(13)] = x.value);
        tr(c.getAttribute("data-cs-event"), p);
      }
      if (!a || !/^https?:$/.test(a.protocol)) return;
      ex.includes(a.pathname.split(".").pop().toLowerCase()) ? tr("file_download", { url: cl(a.href.split(/[?#]/)[0], 512) })
        : at("outbound") != "false" && a.host != loc.host && tr("click", { href: cl(a.href, 512) });
    };
  if (off) return;

  // Web vitals (data-vitals) from PerformanceObserver, as web.dev defines them, in ms (CLS
  // unitless): TTFB, FCP, LCP (last candidate), CLS (largest session window: shifts < 1 s apart
  // within 5 s), INP (the slowest interaction, which is INP on pages with fewer than 50). Sent once
  // per page load, on its first hide, for the URL it loaded with.
  if (ha("vitals")) {
    const v = { cls: 0 }, lu = ur(),
      wa = (type, f, o) => { try { new PerformanceObserver(l => l.getEntries().forEach(f)).observe({ type, buffered: !0, ...o }) } catch (e) {} },
      inp = x => (x.interactionId || x.entryType[0] == "f") && (v.inp = Math.max(v.inp || 0, x.duration));
    let wn = 0, fi = 0, la = 0;
    wa("navigation", x => (v.ttfb = x.responseStart));
    wa("paint", x => x.name == "first-contentful-paint" && (v.fcp = x.startTime));
    wa("largest-contentful-paint", x => (v.lcp = x.startTime));
    wa("layout-shift", x => {
      if (x.hadRecentInput) return;
      wn = x.startTime - la < 1000 && x.startTime - fi < 5000 ? wn + x.value : ((fi = x.startTime), x.value);
      la = x.startTime;
      v.cls = Math.max(v.cls, wn);
    });
    wa("event", inp, { durationThreshold: 16 });
    wa("first-input", inp);
    vt = () => {
      for (const k in v) v[k] = k == "cls" ? Math.round(v[k] * 1e4) / 1e4 : Math.round(v[k]);
      tr("web_vitals", v, lu);
      vt = 0;
    };
  }
  for (const m of ["pushState", "replaceState"]) {
    const og = history[m];
    history[m] = function (...a) { const r = og.apply(this, a); setTimeout(sf(nv)); return r };
  }
  on(w, "popstate", nv);
  ha("hash") && on(w, "hashchange", nv);
  on(d, "click", cc, !0);
  on(d, "auxclick", cc, !0);
  // Form submissions: `form_submit` {form: its id or name, action: path}, unless the form or its
  // submit button is a [data-cs-event] already. Field values are never read.
  at("forms") != "false" && on(d, "submit", e => {
    const f = e.target, g = k => f.getAttribute(k) || "";
    (e.submitter || f).closest("[data-cs-event]") || tr("form_submit", { form: cl(g("id") || g("name"), 128), action: new URL(g("action"), loc.href).pathname });
  }, !0);
  on(w, "pagehide", lv);
  on(d, "visibilitychange", lv);
  on(w, "focus", tk);
  on(w, "blur", tk);
  on(d, "scroll", () => { de = Math.max(de, dp()) }, { passive: !0 });

  // Replay stub calls first, so an exposure (or a consent) made before load rides on the first page view.
  for (const a of Array.isArray(pre) ? pre : (pre && pre.q) || []) cs.push(a);
  tk();
  pv();
  ha("404") && tr("not_found", { path: cl(loc.pathname, 512) });
  fs(); // and resend what earlier pages left behind
} catch (e) {} })();
