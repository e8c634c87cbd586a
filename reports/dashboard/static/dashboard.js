/* clickstream dashboard: runs the queries of reports/dashboard/queries.py through the query port
 * (POST /, FORMAT JSON, values as param_*), and the experiments report of reports/experiments.py
 * (GET /dashboard/api/experiments). No number is computed here: this file only formats and draws.
 * State lives in the URL (site, range, from, to, filters, tab, funnel, window, per, prop) so a view
 * can be shared. docs/dashboards.md "The built-in dashboard". */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const NF = new Intl.NumberFormat("en-US");
  const DAY = 86400000;
  let CATALOG = {};
  let CONFIG = { filters: [], source_dimensions: [], max_funnel_steps: 8, script_url: "" };
  let generation = 0;
  let chart = null;
  let liveTimer = null;
  let queryCounter = 0;

  // -- URL state ---------------------------------------------------------------------------------
  const params = () => new URLSearchParams(location.search);
  function setParams(changes, push) {
    const p = params();
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === undefined || v === "") p.delete(k); else p.set(k, v);
    }
    const url = location.pathname + (p.toString() ? "?" + p.toString() : "");
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
  }

  // The range [from, to) and the start of the period it is compared with, [prev, from). Presets are
  // whole UTC days, as Umami's and GA's are: "7 days" is today and the 6 days before, compared with the
  // 7 days before those; "today" so far is compared with yesterday up to the same time. Whole days are
  // what the day roll-ups answer (reports/dashboard/queries.py: covered days).
  function range() {
    const p = params();
    const kind = p.get("range") || "7d";
    const now = Date.now();
    const to = Math.ceil(now / 60000) * 60000; // the next minute: every query of a render agrees
    const today = Math.floor(now / DAY) * DAY;
    if (kind === "today") return { kind, from: today, to, prev: today - (to - today) };
    if (kind === "custom" && p.get("from") && p.get("to")) {
      const from = Date.parse(p.get("from") + "T00:00:00Z");
      const end = Date.parse(p.get("to") + "T00:00:00Z") + DAY;
      if (!isNaN(from) && !isNaN(end) && end > from) return { kind, from, to: end, prev: from - (end - from) };
    }
    const days = kind === "30d" ? 30 : 7;
    const from = today - (days - 1) * DAY;
    return { kind: kind === "30d" ? "30d" : kind === "custom" ? "custom" : "7d", from, to, prev: from - days * DAY };
  }

  function filterValues() {
    const p = params();
    const out = {};
    for (const name of CONFIG.filters) out[name] = p.get(name) || "";
    if (!out.experiment) out.variant = "";
    return out;
  }

  function baseValues() {
    const r = range();
    return Object.assign({ site: params().get("site") || "", from_ms: r.from, to_ms: r.to,
      prev_from_ms: r.prev }, filterValues());
  }

  // -- query port --------------------------------------------------------------------------------
  // Query parameters travel TSV-escaped (ClickHouse's HTTP interface); arrays as quoted literals.
  const tsv = (s) => String(s).replace(/\\/g, "\\\\").replace(/\t/g, "\\t").replace(/\n/g, "\\n");
  const quoted = (s) => "'" + String(s).replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'";
  function wire(value) {
    if (Array.isArray(value)) return tsv("[" + value.map(quoted).join(",") + "]");
    return tsv(value);
  }

  // At most MAX_IN_FLIGHT requests at once (the query port's default slots), so a page does not
  // fill the port's queue by itself; a 503 (every slot busy) is retried after its Retry-After.
  // A `late` request (the funnel: the one query that reads every event of the range) waits until no
  // other request waits, so the other panels are drawn first.
  const MAX_IN_FLIGHT = 2;
  const RETRIES = 6;
  let inFlight = 0;
  const waiting = [];
  const waitingLate = [];
  function acquire(late) {
    if (inFlight < MAX_IN_FLIGHT) { inFlight++; return Promise.resolve(); }
    return new Promise((resolve) => (late ? waitingLate : waiting).push(resolve));
  }
  function release() {
    const next = waiting.shift() || waitingLate.shift();
    if (next) next(); else inFlight--;
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function send(url, init, late) {
    await acquire(late);
    try {
      for (let attempt = 0; ; attempt++) {
        const response = await fetch(url, init);
        if (response.status !== 503 || attempt >= RETRIES) return response;
        await sleep(1000 * Math.max(1, Number(response.headers.get("Retry-After")) || 1));
      }
    } finally { release(); }
  }

  async function query(name, values, late) {
    const def = CATALOG[name];
    if (!def) throw new Error("unknown query " + name);
    const url = new URL("/", location.origin);
    url.searchParams.set("default_format", "JSON");
    url.searchParams.set("query_id", "dashboard-" + name + "-" + (++queryCounter)); // names the panel in logs
    url.searchParams.set("output_format_json_quote_64bit_integers", "0");
    for (const p of def.params) {
      if (!(p in values)) throw new Error("query " + name + " needs " + p);
      url.searchParams.set("param_" + p, wire(values[p]));
    }
    const response = await send(url, { method: "POST", body: def.sql, credentials: "same-origin",
      headers: { "Content-Type": "text/plain; charset=utf-8" } }, late);
    const text = await response.text();
    if (response.status === 401 || response.status === 403) { location.href = "/dashboard/login"; }
    if (!response.ok) throw new Error(name + ": " + text.slice(0, 300));
    return JSON.parse(text).data;
  }

  async function getJSON(path) {
    const response = await send(path, { credentials: "same-origin" });
    if (response.status === 401) { location.href = "/dashboard/login"; }
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  // -- formatting --------------------------------------------------------------------------------
  const fmt = {
    int: (v) => (v === null || v === undefined ? "–" : NF.format(Math.round(Number(v)))),
    pct: (v) => (v === null || v === undefined ? "–" : (Number(v) * 100).toFixed(1) + "%"),
    pct2: (v) => (v === null || v === undefined ? "–" : (Number(v) * 100).toFixed(2) + "%"),
    signedPct: (v) => (v === null || v === undefined ? "–" : (v > 0 ? "+" : v < 0 ? "−" : "±") +
      Math.abs(Number(v) * 100).toFixed(1) + "%"),
    points: (v) => (v === null || v === undefined ? "–" : (v > 0 ? "+" : v < 0 ? "−" : "±") +
      Math.abs(Number(v) * 100).toFixed(1) + " pp"),
    duration: (v) => {
      if (v === null || v === undefined) return "–";
      const s = Math.round(Number(v));
      const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
      return (h ? h + "h " : "") + (h || m ? m + "m " : "") + String(sec).padStart(h || m ? 2 : 1, "0") + "s";
    },
    p: (v) => (v === null || v === undefined ? "–" : Number(v) < 0.0001 ? "< 0.0001" : Number(v).toFixed(4)),
    money: (v) => {
      const entries = Object.entries(v || {}).filter(([, a]) => Number(a) !== 0);
      if (!entries.length) return "–";
      return entries.sort().map(([c, a]) => (c || "?") + " " + Number(a).toLocaleString("en-US",
        { minimumFractionDigits: 2, maximumFractionDigits: 2 })).join(" · ");
    },
    text: (v) => (v === "" || v === null || v === undefined ? "(none)" : String(v)),
    time: (ms) => new Date(Number(ms)).toISOString().replace("T", " ").slice(0, 16) + " UTC",
    variants: (v) => (v || []).map((pair) => pair[0] + ": " + pair[1]).join(", ") || "–",
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v; else if (k.startsWith("data")) node.setAttribute(k.replace(/[A-Z]/g,
        (c) => "-" + c.toLowerCase()), v); else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /* columns: [{key, label, format, filter (URL name the cell's value filters by), num}] */
  function table(node, caption, columns, rows, emptyText) {
    node.replaceChildren();
    node.append(el("caption", { class: "sr-only" }, caption));
    const head = el("tr");
    for (const c of columns) head.append(el("th", { scope: "col", class: c.num ? "num" : null }, c.label));
    node.append(el("thead", {}, head));
    const body = el("tbody");
    if (!rows.length) {
      body.append(el("tr", {}, el("td", { colspan: String(columns.length), class: "none" }, emptyText || "No data in this range.")));
    }
    for (const row of rows) {
      const tr = el("tr", { dataKey: row[columns[0].key] === undefined ? null : JSON.stringify(row[columns[0].key]) });
      columns.forEach((c, i) => {
        const raw = row[c.key];
        const shown = (c.format || fmt.text)(raw, row);
        const value = raw !== null && typeof raw === "object" ? JSON.stringify(raw) : raw;
        let content = shown;
        if (c.filter) {
          content = el("button", { type: "button", class: "link", dataFilter: c.filter, dataFilterValue: String(raw ?? ""),
            "aria-label": "Filter by " + c.label.toLowerCase() + " " + shown }, shown);
        }
        const cell = el(i === 0 ? "th" : "td", { scope: i === 0 ? "row" : null, class: c.num ? "num" : null,
          dataCol: c.key, dataValue: value === null || value === undefined ? "" : String(value) }, content);
        tr.append(cell);
      });
      body.append(tr);
    }
    node.append(body);
  }

  // -- panels ------------------------------------------------------------------------------------
  const TOTALS = [
    ["visitors", "Visitors", fmt.int, fmt.signedPct],
    ["sessions", "Sessions", fmt.int, fmt.signedPct],
    ["pageviews", "Page views", fmt.int, fmt.signedPct],
    ["bounce_rate", "Bounce rate", fmt.pct, fmt.points],
    ["avg_duration_s", "Visit duration", fmt.duration, fmt.signedPct],
    ["leads", "Leads", fmt.int, fmt.signedPct],
    ["conversion_rate", "Conversion rate", fmt.pct2, fmt.points],
  ];

  function renderTotals(row) {
    const node = $("totals");
    node.replaceChildren();
    for (const [key, label, format, changeFormat] of TOTALS) {
      const change = row[key + "_change"];
      const card = el("div", { class: "card", dataTotal: key });
      card.append(el("dt", {}, label));
      card.append(el("dd", { class: "value", dataValue: row[key] === null ? "" : String(row[key]) }, format(row[key])));
      card.append(el("dd", { class: "change " + (change > 0 ? "up" : change < 0 ? "down" : ""),
        dataValue: change === null ? "" : String(change) },
        change === null ? "no previous data" : changeFormat(change) + " vs previous"));
      node.append(card);
    }
  }

  function renderTraffic(rows, bucketS) {
    const hourly = bucketS === 3600;
    $("traffic-bucket").textContent = hourly ? "per hour (UTC)" : "per day (UTC)";
    const label = (t) => (hourly ? fmt.time(t * 1000) : new Date(t * 1000).toISOString().slice(0, 10));
    table($("traffic-table"), "Traffic over time", [
      { key: "t", label: hourly ? "Hour" : "Day", format: label },
      { key: "visitors", label: "Visitors", format: fmt.int, num: true },
      { key: "sessions", label: "Sessions", format: fmt.int, num: true },
      { key: "pageviews", label: "Page views", format: fmt.int, num: true },
    ], rows);
    $("traffic-summary").textContent = rows.length
      ? `Line chart of visitors, sessions and page views ${hourly ? "per hour" : "per day"} from ${label(rows[0].t)} to ${label(rows[rows.length - 1].t)}; the table below lists every value.`
      : "No traffic in this range.";
    const box = $("traffic-chart");
    if (chart) { chart.destroy(); chart = null; }
    box.replaceChildren();
    if (!rows.length || typeof uPlot === "undefined") return;
    const data = [rows.map((r) => Number(r.t)), rows.map((r) => Number(r.visitors)), rows.map((r) => Number(r.sessions)),
      rows.map((r) => Number(r.pageviews))];
    const width = Math.max(280, box.clientWidth || 600);
    chart = new uPlot({
      width, height: 240, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      series: [{}, { label: "Visitors", stroke: "#0b5cad", width: 2 }, { label: "Sessions", stroke: "#c2410c", width: 2 },
        { label: "Page views", stroke: "#15803d", width: 2, dash: [6, 4] }],
      axes: [{}, { values: (u, ticks) => ticks.map((v) => NF.format(v)) }],
    }, data, box);
  }

  function sourceColumns(dimension) {
    return [
      { key: "key", label: dimension.replace("utm_", "utm ").replace("_", " "), filter: dimension },
      { key: "sessions", label: "Sessions", format: fmt.int, num: true },
      { key: "visitors", label: "Visitors", format: fmt.int, num: true },
      { key: "leads", label: "Leads", format: fmt.int, num: true },
      { key: "conversion_rate", label: "Conversion", format: fmt.pct2, num: true },
      { key: "revenue", label: "Revenue", format: fmt.money, num: true },
    ];
  }

  const PAGES = {
    top: ["pages_top", [{ key: "path", label: "Page", format: fmt.text },
      { key: "pageviews", label: "Page views", format: fmt.int, num: true },
      { key: "visitors", label: "Visitors", format: fmt.int, num: true }]],
    landing: ["pages_landing", [{ key: "path", label: "Landing page", filter: "page" },
      { key: "sessions", label: "Sessions", format: fmt.int, num: true },
      { key: "visitors", label: "Visitors", format: fmt.int, num: true },
      { key: "leads", label: "Leads", format: fmt.int, num: true },
      { key: "conversion_rate", label: "Conversion", format: fmt.pct2, num: true },
      { key: "revenue", label: "Revenue", format: fmt.money, num: true }]],
    exit: ["pages_exit", [{ key: "path", label: "Exit page", format: fmt.text },
      { key: "sessions", label: "Exits", format: fmt.int, num: true },
      { key: "visitors", label: "Visitors", format: fmt.int, num: true }]],
  };

  function funnelSteps() {
    return (params().get("funnel") || "").split(",").map((s) => s.trim()).filter(Boolean).slice(0, CONFIG.max_funnel_steps);
  }

  function renderFunnel(rows, per) {
    const unit = per === "session" ? "Sessions" : "Visitors";
    table($("funnel-table"), "Funnel steps", [
      { key: "step", label: "Step", format: fmt.int },
      { key: "name", label: "Page or event", format: fmt.text },
      { key: "reached", label: unit, format: fmt.int, num: true },
      { key: "conversion_rate", label: "Conversion", format: fmt.pct, num: true },
      { key: "drop_off", label: "Drop-off", format: fmt.pct, num: true },
    ], rows, "Define the steps above.");
    const bars = $("funnel-bars");
    bars.replaceChildren();
    for (const r of rows) {
      const bar = el("div", { class: "bar" });
      bar.style.width = Math.max(1, Number(r.conversion_rate) * 100) + "%";
      bars.append(el("div", { class: "bar-row" }, el("span", { class: "bar-label" }, r.step + ". " + r.name), bar));
    }
    $("funnel-summary").textContent = rows.map((r) => `Step ${r.step}, ${r.name}: ${fmt.int(r.reached)} ${unit.toLowerCase()}, ${fmt.pct(r.conversion_rate)} of step 1.`).join(" ");
  }

  function renderExperiments(report) {
    const box = $("experiments");
    box.replaceChildren();
    if (!report.length) {
      box.append(el("p", {}, "No experiment exposures yet: clickstream.expose(experiment, variant) in the page sends them."));
      return;
    }
    for (const exp of report) {
      const block = el("div", { class: "experiment", dataExperiment: exp.experiment_id });
      block.append(el("h3", {}, exp.experiment_id + " · control " + exp.control + " · " + fmt.int(exp.visitors) + " visitors"));
      const srm = exp.srm;
      if (srm.mismatch) {
        block.append(el("p", { class: "warning", role: "alert", dataSrm: "mismatch" },
          `Sample ratio mismatch: p = ${Number(srm.p_value).toPrecision(3)} < ${srm.alpha} against an equal split. Assignment or tracking is broken; do not trust these results.`));
      } else {
        block.append(el("p", { class: "ok", dataSrm: "ok" }, srm.p_value === null ? "SRM check: n/a"
          : `SRM check: ok (p = ${Number(srm.p_value).toPrecision(3)})`));
      }
      const rows = exp.variants.map((v) => Object.assign({}, v, { experiment: exp.experiment_id }));
      const tableNode = el("table", { dataTestid: "experiment-" + exp.experiment_id });
      table(tableNode, "Experiment " + exp.experiment_id, [
        { key: "variant_id", label: "Variant", format: (v, r) => v + (r.is_control ? " (control)" : ""), filter: "variant" },
        { key: "visitors", label: "Visitors", format: fmt.int, num: true },
        { key: "converters", label: "Converters", format: fmt.int, num: true },
        { key: "conversion_rate", label: "Rate", format: fmt.pct2, num: true },
        { key: "lift", label: "Lift", format: fmt.signedPct, num: true },
        { key: "lift_ci95_low", label: "Lift 95% interval", num: true,
          format: (v, r) => (v === null ? "–" : "[" + fmt.signedPct(v) + ", " + fmt.signedPct(r.lift_ci95_high) + "]") },
        { key: "p_value", label: "p-value", format: fmt.p, num: true },
        { key: "chance_to_beat_control", label: "Chance to beat control", format: fmt.pct, num: true },
      ], rows);
      for (const button of tableNode.querySelectorAll("button[data-filter=variant]")) {
        button.dataset.experiment = exp.experiment_id;
      }
      block.append(el("div", { class: "scroll" }, tableNode));
      box.append(block);
    }
  }

  function renderFilters() {
    const nav = $("filters");
    nav.replaceChildren();
    const values = filterValues();
    for (const name of CONFIG.filters) {
      if (!values[name] || name === "variant") continue;
      const text = name === "experiment" ? `variant ${values.experiment}: ${values.variant}` : `${name.replace("_", " ")}: ${values[name]}`;
      nav.append(el("button", { type: "button", class: "chip", dataClear: name, "aria-label": "Remove filter " + text },
        text + " ×"));
    }
    nav.hidden = !nav.children.length;
  }

  // -- render ------------------------------------------------------------------------------------
  // data-ready=1: every panel drawn, the funnel too; data-drawn=1: every panel but the funnel (the first
  // render: the funnel, the one query over every event of the range, comes after). Each mark also
  // records when it was reached (performance.now(), ms), read by load/bench_dashboard.py.
  function setBusy(on) {
    document.body.dataset.ready = on ? "0" : "1";
    if (on) document.body.dataset.drawn = "0"; else setDrawn();
    if (!on) document.body.dataset.readyMs = String(performance.now());
  }
  function setDrawn() {
    if (document.body.dataset.drawn === "1") return;
    document.body.dataset.drawn = "1";
    document.body.dataset.drawnMs = String(performance.now());
  }

  async function panel(name, work) {
    const section = $("panel-" + name);
    section?.setAttribute("aria-busy", "true");
    try { await work(); section?.removeAttribute("data-error"); }
    catch (err) { section?.setAttribute("data-error", String(err.message || err)); $("status").textContent = "A panel failed to load: " + (err.message || err); }
    finally { section?.setAttribute("aria-busy", "false"); }
  }

  function showEmpty(site) {
    $("empty").hidden = false;
    $("panels").hidden = true;
    const siteId = site || "your-site.example";
    $("script-tag").textContent = `<script defer src="${CONFIG.script_url}" data-site="${siteId}"></script>`;
  }

  async function render() {
    const mine = ++generation;
    setBusy(true);
    $("status").textContent = "Loading…";
    const r = range();
    for (const b of document.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(b.dataset.range === r.kind));
    $("custom-range").hidden = r.kind !== "custom";
    if (r.kind === "custom") {
      $("from").value = new Date(r.from).toISOString().slice(0, 10);
      $("to").value = new Date(r.to - DAY).toISOString().slice(0, 10);
    }
    $("range-label").textContent = fmt.time(r.from) + " – " + fmt.time(r.to);
    renderFilters();

    // With a site in the URL the panels start at once and the site list is checked alongside (a site
    // without events then shows the empty state and the panels' answers are dropped).
    const sitesQuery = query("sites", {});
    let site = params().get("site") || "";
    let sites = null;
    if (!site) {
      sites = (await sitesQuery).map((row) => row.site_id);
      if (mine !== generation) return;
      if (sites.length) { site = sites[0]; setParams({ site }, false); }
    }
    if (!site) {
      fillSites([], site);
      showEmpty(site);
      $("status").textContent = "No events yet.";
      setBusy(false);
      return;
    }
    $("empty").hidden = true;
    $("panels").hidden = false;
    const panels = drawPanels(mine, r);
    sites = sites || (await sitesQuery).map((row) => row.site_id);
    if (mine !== generation) return;
    fillSites(sites, site);
    if (!sites.includes(site)) {
      generation++; // the panels' answers are for a site without events: drop them
      showEmpty(site);
      $("status").textContent = "No events yet.";
      setBusy(false);
      return;
    }
    await panels;
  }

  function fillSites(sites, site) {
    const select = $("site");
    select.replaceChildren(...sites.map((s) => el("option", { value: s }, s)));
    if (site && !sites.includes(site)) select.append(el("option", { value: site }, site));
    select.value = site;
  }

  async function drawPanels(mine, r) {
    const v = baseValues();
    const p = params();
    const dimension = CONFIG.source_dimensions.includes(p.get("tab")) ? p.get("tab") : "channel";
    const pages = PAGES[p.get("pages")] ? p.get("pages") : "top";
    const steps = funnelSteps();
    const windowS = Math.max(1, Math.min(2592000, Number(p.get("window")) || 1800));
    const per = p.get("per") === "session" ? "session" : "visitor";
    $("funnel-steps").value = steps.join(", ");
    $("funnel-window").value = String(windowS);
    $("funnel-per").value = per;
    for (const b of $("source-tabs").children) b.setAttribute("aria-pressed", String(b.dataset.tab === dimension));
    for (const b of $("page-tabs").children) b.setAttribute("aria-pressed", String(b.dataset.pages === pages));
    const bucketS = r.to - r.from <= 2 * DAY ? 3600 : 86400;

    const stale = () => mine !== generation;
    const others = [
      panel("totals", async () => { const rows = await query("totals", v); if (!stale()) renderTotals(rows[0]); }),
      panel("traffic", async () => { const rows = await query("traffic", Object.assign({ bucket_s: bucketS }, v)); if (!stale()) renderTraffic(rows, bucketS); }),
      panel("sources", async () => {
        const rows = await query("sources_" + dimension, v);
        if (!stale()) table($("sources-table"), "Sources by " + dimension, sourceColumns(dimension), rows);
      }),
      panel("pages", async () => {
        const [name, columns] = PAGES[pages];
        const rows = await query(name, v);
        if (!stale()) table($("pages-table"), columns[0].label, columns, rows);
      }),
      panel("events", async () => {
        const [types, keys] = await Promise.all([query("events_types", v), query("events_prop_keys", v)]);
        if (stale()) return;
        table($("events-table"), "Custom events", [
          { key: "type", label: "Event", format: fmt.text },
          { key: "events", label: "Events", format: fmt.int, num: true },
          { key: "visitors", label: "Unique visitors", format: fmt.int, num: true }], types, "No custom events in this range.");
        const wanted = p.get("prop") || (keys[0] ? keys[0].key : "");
        $("prop-key").replaceChildren(...keys.map((k) => el("option", { value: k.key }, k.key)));
        $("prop-key").value = wanted;
        const props = wanted ? await query("events_props", Object.assign({ prop_key: wanted }, v)) : [];
        if (!stale()) table($("props-table"), "Property " + wanted, [
          { key: "type", label: "Event", format: fmt.text },
          { key: "value", label: wanted || "value", format: fmt.text },
          { key: "events", label: "Events", format: fmt.int, num: true },
          { key: "visitors", label: "Unique visitors", format: fmt.int, num: true }], props, "No properties.");
      }),
      panel("experiments", async () => {
        const report = await getJSON("/dashboard/api/experiments?site=" + encodeURIComponent(v.site));
        if (!stale()) renderExperiments(report.experiments);
      }),
      panel("leads", async () => {
        const rows = await query("leads", v);
        if (!stale()) table($("leads-table"), "Latest leads", [
          { key: "lead_id", label: "Lead", format: fmt.text },
          { key: "occurred_at_ms", label: "When", format: fmt.time },
          { key: "landing_path", label: "Landing page", format: fmt.text },
          { key: "first_channel", label: "First touch", format: (c, row) => [c, row.first_utm_source, row.first_utm_campaign].filter(Boolean).join(" / ") },
          { key: "channel", label: "Last touch", format: (c, row) => [c, row.utm_source, row.utm_campaign].filter(Boolean).join(" / ") },
          { key: "variants", label: "Variants", format: fmt.variants }], rows, "No leads in this range.");
      }),
      live(),
    ];
    // Asked for after every other panel's request is queued (a late request: see acquire).
    const funnel = panel("funnel", async () => {
      if (steps.length) $("funnel-summary").textContent = "Computing the funnel…";
      const rows = steps.length ? await query("funnel", Object.assign({ steps, window_s: windowS,
        per_session: per === "session" ? 1 : 0 }, v), true) : [];
      if (!stale()) renderFunnel(rows, per);
    });
    await Promise.all(others);
    if (stale()) return;
    setDrawn();
    $("status").textContent = steps.length ? "Computing the funnel…" : "";
    await funnel;
    if (stale()) return;
    $("status").textContent = "";
    setBusy(false);
  }

  async function live() {
    const site = params().get("site") || "";
    if (!site) return;
    await panel("live", async () => {
      const [visitors, pages] = await Promise.all([query("live_visitors", { site }), query("live_pages", { site })]);
      $("live-visitors").textContent = fmt.int(visitors[0].visitors);
      $("live-visitors").dataset.value = String(visitors[0].visitors);
      table($("live-table"), "Pages now", [
        { key: "path", label: "Page", format: fmt.text },
        { key: "visitors", label: "Visitors", format: fmt.int, num: true }], pages, "Nobody right now.");
    });
  }

  // -- events --------------------------------------------------------------------------------------
  function navigate(changes) { setParams(changes, true); render().catch(fail); }
  function fail(err) { $("status").textContent = "Could not load the dashboard: " + (err.message || err); setBusy(false); }

  function wire_up() {
    for (const dimension of CONFIG.source_dimensions) {
      $("source-tabs").append(el("button", { type: "button", dataTab: dimension }, dimension === "channel" ? "Channel" : dimension.replace("utm_", "utm ")));
    }
    document.addEventListener("click", (event) => {
      const target = event.target.closest("button");
      if (!target) return;
      if (target.dataset.range) {
        const changes = { range: target.dataset.range };
        if (target.dataset.range === "custom") {
          const r = range();
          changes.from = new Date(r.from).toISOString().slice(0, 10);
          changes.to = new Date(r.to - 1).toISOString().slice(0, 10);
        } else { changes.from = null; changes.to = null; }
        navigate(changes);
      } else if (target.dataset.tab) {
        navigate({ tab: target.dataset.tab });
      } else if (target.dataset.pages) {
        navigate({ pages: target.dataset.pages });
      } else if (target.dataset.filter === "variant") {
        navigate({ experiment: target.dataset.experiment, variant: target.dataset.filterValue });
      } else if (target.dataset.filter) {
        navigate({ [target.dataset.filter]: target.dataset.filterValue === "" ? null : target.dataset.filterValue });
      } else if (target.dataset.clear) {
        navigate(target.dataset.clear === "experiment" ? { experiment: null, variant: null } : { [target.dataset.clear]: null });
      }
    });
    $("site").addEventListener("change", () => navigate({ site: $("site").value }));
    $("prop-key").addEventListener("change", () => navigate({ prop: $("prop-key").value }));
    $("custom-range").addEventListener("submit", (event) => {
      event.preventDefault();
      navigate({ range: "custom", from: $("from").value, to: $("to").value });
    });
    $("funnel-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const steps = $("funnel-steps").value.split(",").map((s) => s.trim()).filter(Boolean).slice(0, CONFIG.max_funnel_steps);
      navigate({ funnel: steps.join(","), window: $("funnel-window").value, per: $("funnel-per").value });
    });
    window.addEventListener("popstate", () => render().catch(fail));
    window.addEventListener("resize", () => { if (chart) chart.setSize({ width: Math.max(280, $("traffic-chart").clientWidth), height: 240 }); });
  }

  async function start() {
    setBusy(true);
    [CATALOG, CONFIG] = await Promise.all([getJSON("/dashboard/api/queries"), getJSON("/dashboard/api/config")]);
    wire_up();
    await render();
    liveTimer = setInterval(() => { live().catch(() => {}); }, 10000);
  }

  document.addEventListener("DOMContentLoaded", () => { start().catch(fail); });
  window.addEventListener("beforeunload", () => { if (liveTimer) clearInterval(liveTimer); });
})();
