/*! clickstream beacon.js */
// Browser tracker. Event fields: schemas/event.schema.json (values clipped to its bounds);
// <script defer src="https://collector.example/beacon.js" data-site="example.com">
// data-site: site_id (default: host); data-api: collect URL (default: "collect" beside this src);
// data-respect-dnt: with Global Privacy Control or Do Not Track on, send and store nothing.
// API: clickstream.track(type, props) .expose(experiment, variant) .anonymousId() .sessionId()
// .flush() .push([method, ...args]); calls queued before load in window.clickstream (an array,
// or an object with a `q` array) are replayed first.
(() => { try { // never throw into the host page: here and in guard() below
  const w = window, d = document, n = navigator, loc = location, pre = w.clickstream;
  if (pre && pre.anonymousId) return; // loaded twice
  const MIN = 60000;
  const MAX_EVENTS = 100, MAX_BYTES = 60000; // collector: max_batch_events, max_body_bytes (64 KiB)
  const ID = /^[A-Za-z0-9._:-]{1,128}$/, VAR = /^[A-Za-z0-9_.:-]{1,64}$/, TYPE = /^[a-z][a-z0-9_]{0,63}$/;
  const guard = f => (...a) => { try { return f(...a) } catch (e) {} };
  const clip = (s, max) => String(s == null ? "" : s).slice(0, max);
  const parse = s => { try { return JSON.parse(s) } catch (e) {} };
  const obj = x => (x && typeof x == "object" && !Array.isArray(x) ? x : {});
  const uuid = () => { // crypto.randomUUID needs a secure context; else RFC 4122 v4 by hand
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    return [...b].map((x, i) => ([4, 6, 8, 10].includes(i) ? "-" : "") + (x + 256).toString(16).slice(1)).join("");
  };

  // Storage (keys "cs_*"): localStorage (throws when blocked), else a first-party cookie:
  // 1 year, SameSite=Lax, Secure on https.
  const cookie = (k, v) => {
    if (v === undefined) return decodeURIComponent((d.cookie.match("(?:^|; )cs_" + k + "=([^;]*)") || [])[1] || "");
    d.cookie = `cs_${k}=${encodeURIComponent(v)}; max-age=31536000; path=/; SameSite=Lax${loc.protocol == "https:" ? "; Secure" : ""}`;
  };
  const local = (k, v) => {
    try { return v === undefined ? localStorage.getItem("cs_" + k) : (localStorage.setItem("cs_" + k, v), 1) } catch (e) {}
  };
  const load = k => parse(local(k) || cookie(k));
  const save = (k, v) => { v = JSON.stringify(v); local(k, v) || cookie(k, v) };

  const el = d.currentScript || d.querySelector("script[src*=beacon]");
  const api = el.getAttribute("data-api") || new URL("collect", el.src).href;
  const site = el.getAttribute("data-site") || loc.hostname;
  const off = el.hasAttribute("data-respect-dnt") && !!(n.globalPrivacyControl || n.doNotTrack == "1" || w.doNotTrack == "1");
  const lsOk = !off && local("t", 1);

  // Anonymous id: the cookie rules, its localStorage copy restores it when cleared; rewritten on
  // each load so the year runs from the last visit.
  let aid = "";
  if (!off) {
    aid = cookie("id") || local("id") || "";
    if (!ID.test(aid)) aid = uuid();
    cookie("id", aid); local("id", aid);
  }

  // Session {i: id, t: last activity, u: its campaign}: new after 30 minutes without events, or
  // when the URL carries a campaign (utm_*) other than the session's (docs/architecture.md
  // "Definitions"; GA's rules). The session's UTM rides on all its events.
  const session = now => {
    let s = obj(load("s"));
    const q = new URLSearchParams(loc.search), u = {};
    for (const k of ["source", "medium", "campaign", "term", "content"]) if (q.get("utm_" + k)) u[k] = clip(q.get("utm_" + k), 256);
    const c = JSON.stringify(u);
    if (!ID.test(s.i || "") || !(now - s.t < 30 * MIN) || (c != "{}" && c != JSON.stringify(s.u))) s = { i: uuid(), u };
    s.t = now;
    save("s", s);
    return s;
  };

  // Experiments: assignments persist for the visitor and ride on every later event as `variants`.
  let vars = obj(load("v"));
  const expose = (exp, v) => {
    if (!VAR.test(exp) || !VAR.test(v)) return;
    vars = obj(load("v") || vars); // another tab may have added one
    vars[exp] = String(v);
    save("v", vars);
    track("exposure", { experiment: exp, variant: v }); // recorded even if nothing follows
    flush();
  };
  // Maps of at most 32 entries (schema); props values: string <= 512, finite number or boolean.
  const map = (m, f) => {
    const o = {};
    let k = 0;
    for (const [key, v] of Object.entries(obj(m))) if (k < 32 && key && f(key, v, o)) k++;
    return k && o;
  };

  let ref = d.referrer, last = "", mem = [], timer = 0;
  const track = (type, p) => {
    if (off || !TYPE.test(type)) return;
    const now = Date.now(), s = session(now);
    const e = {
      type, site_id: site, anonymous_id: aid, session_id: s.i, ts: now, url: clip(loc.href, 2048), event_id: uuid(),
      screen: { w: Math.min(screen.width | 0, 1e5), h: Math.min(screen.height | 0, 1e5) },
    };
    const add = (k, v) => v && (e[k] = v);
    add("referrer", clip(ref, 2048));
    add("title", clip(d.title, 512));
    add("lang", clip(n.language, 35));
    add("utm", Object.keys(obj(s.u)).length && s.u);
    add("variants", map(vars, (k, v, o) => VAR.test(k) && VAR.test(v) && (o[k] = v)));
    add("props", map(p, (k, v, o) => (o[clip(k, 64)] = typeof v == "boolean" || (typeof v == "number" && isFinite(v)) ? v : clip(v, 512), 1)));
    mem.push(e);
    if (mem.length >= MAX_EVENTS) flush();
    else timer = timer || setTimeout(guard(flush), 1000); // batch what happens within a second
  };
  const pageView = () => { last = loc.href.split("#")[0]; track("page_view") };

  // Delivery: a batch {i: id, e: events, n: attempts, t: due ms, o: owner page} stays in
  // localStorage "cs_q" until the collector answers. 202/4xx end it (4xx: retrying cannot help),
  // 429/5xx (503: spool full) and network failures retry it with exponential backoff capped at
  // 60 s. Each event has its own event_id, so a resend cannot double count.
  const me = uuid(), flying = new Set();
  const stored = () => [].concat(parse(local("q")) || []).filter(b => b && Array.isArray(b.e));
  const store = f => lsOk && local("q", JSON.stringify(f(stored()).slice(-50)));
  const put = b => store(q => q.filter(x => x.i != b.i).concat(b));
  const drop = b => { flying.delete(b.i); store(q => q.filter(x => x.i != b.i)) };
  const batches = () => { // split the memory queue under both collector limits
    const out = [];
    let b = [], size = 2;
    for (const e of mem.splice(0)) {
      const len = new Blob([JSON.stringify(e)]).size + 1;
      if (b.length && (b.length >= MAX_EVENTS || size + len > MAX_BYTES)) out.push(b), (b = []), (size = 2);
      b.push(e);
      size += len;
    }
    b.length && out.push(b);
    return out.map(e => ({ i: uuid(), e, n: 0, o: me, t: 0 }));
  };
  const send = b => {
    b.e = b.e.filter(e => e.ts > Date.now() - 71 * 60 * MIN); // the collector refuses ts older than 72 h
    if (!b.e.length) return drop(b);
    b.o = me; b.t = Date.now() + MIN; // in flight: other pages keep off
    put(b);
    flying.add(b.i);
    fetch(api, { method: "POST", keepalive: true, body: JSON.stringify(b.e), headers: { "Content-Type": "text/plain" } })
      .then(guard(r => (r.status == 429 || r.status >= 500 ? retry(b) : drop(b))), guard(() => retry(b)));
  };
  const retry = b => {
    flying.delete(b.i);
    const delay = Math.min(60000, 1000 * 2 ** b.n++) * (0.5 + Math.random() / 2);
    b.t = Date.now() + delay;
    put(b);
    setTimeout(guard(() => {
      const cur = lsOk ? stored().find(x => x.i == b.i) : b;
      cur && cur.o == me && send(cur); // unless another page took it over
    }), delay);
  };
  const flush = () => {
    clearTimeout(timer); timer = 0;
    batches().forEach(send);
    // Batches left by closed pages: resent once due; a live owner's only a minute late
    // (background tabs' timers are throttled).
    for (const b of stored()) if (b.o != me && b.t < Date.now() - (b.t && MIN)) send(b);
  };
  // Hidden or leaving: the queue goes by navigator.sendBeacon (text/plain string, no preflight).
  // On pagehide, in-flight keepalive fetches are left to the browser; waiting retries are marked
  // due (t = 0) for the next page.
  const leave = guard(ev => {
    if (ev.type[0] == "v" && d.visibilityState != "hidden") return;
    clearTimeout(timer); timer = 0;
    for (const b of batches()) if (!n.sendBeacon(api, JSON.stringify(b.e))) retry(b);
    if (ev.type == "pagehide") store(q => q.filter(b => b.o != me || !flying.has(b.i)).map(b => ((b.t = b.o == me ? 0 : b.t), b)));
  });

  const str = x => typeof x == "string" || typeof x == "number"; // no "undefined" experiment or event
  const cs = (w.clickstream = {
    track: guard((type, p) => { typeof type == "string" && track(type, p) }),
    expose: guard((e, v) => { off || (str(e) && str(v) && expose(String(e), String(v))) }),
    anonymousId: () => aid,
    sessionId: guard(() => (off ? "" : session(Date.now()).i)),
    flush: guard(() => { off || flush() }),
    push: guard(a => { cs[a[0]] && a[0] != "push" && cs[a[0]](...[].slice.call(a, 1)) }),
  });
  if (off) return;

  // Page views on load and on SPA navigations (pushState, replaceState, popstate) that change the
  // URL outside its #hash, a tick later so the app has set the title; the SPA referrer is the
  // previous page.
  const nav = guard(() => { if (loc.href.split("#")[0] != last) (ref = last), pageView() });
  for (const m of ["pushState", "replaceState"]) {
    const orig = history[m];
    history[m] = function (...a) { const r = orig.apply(this, a); setTimeout(nav); return r };
  }
  w.addEventListener("popstate", nav);

  // Clicks (capture phase, so stopPropagation cannot hide them): [data-cs-event] elements give
  // that custom event with their data-cs-prop-* values; links to another host give `click` {href}.
  const click = guard(e => {
    const t = e.target, p = {};
    if ((e.type == "auxclick" && e.button != 1) || !t.closest) return;
    const c = t.closest("[data-cs-event]"), a = t.closest("a[href]");
    if (c) {
      for (const x of c.attributes) if (x.name.startsWith("data-cs-prop-")) p[x.name.slice(13)] = x.value;
      track(c.getAttribute("data-cs-event"), p);
    }
    if (a && /^https?:$/.test(a.protocol) && a.host != loc.host) track("click", { href: clip(a.href, 512) });
  });
  d.addEventListener("click", click, true);
  d.addEventListener("auxclick", click, true);
  w.addEventListener("pagehide", leave);
  d.addEventListener("visibilitychange", leave);

  // Replay stub calls first, so an exposure made before load rides on the first page view.
  for (const a of Array.isArray(pre) ? pre : (pre && pre.q) || []) cs.push(a);
  pageView();
  flush(); // and resend what earlier pages left behind
} catch (e) {} })();
