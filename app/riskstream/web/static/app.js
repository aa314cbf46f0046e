/* riskstream dashboard: a live watchlist and an entity's risk history. Plain JS, no build step. */
"use strict";

(() => {
  const API = new URL("../", document.baseURI); // the page lives at /ui/; the API at /v1/
  const LIMIT = 50;
  const POLL_MS_FALLBACK = 3000; // when the event stream is down
  const POLL_MS_SAFETY = 15000; // even with the stream up (a 304 costs nothing)
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = {
    model: null,
    outputs: [],
    output: null,
    minRisk: 0,
    thresholds: {},
    rows: [],
    etag: null,
    sort: { key: "risk", dir: -1 },
    streamOpen: false,
    pollTimer: null,
    refreshTimer: null,
    lastFetch: 0,
    entity: null, // {id, scores: [], sel: index, following: bool}
    historyTimer: null,
    explainTimer: null,
    features: {},
    flash: new Set(),
    newestEvent: 0,
    signedIn: false,
    streamAbort: null, // aborts the stream's fetch (sign-out, a refused key)
  };

  // ---------- helpers ----------
  function url(path, params) {
    const u = new URL(path, API);
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined) u.searchParams.set(k, v);
    return u;
  }

  // ---------- the API key (docs/auth.md) ----------
  // Kept in sessionStorage (this tab only, gone when it closes), sent as a Bearer header on every
  // call. `riskstream serve` prints a URL with the key in the fragment (#key=...), which never
  // reaches a server: it is taken in here and removed from the address bar at once.
  const KEY_ITEM = "riskstream.key";
  const getKey = () => sessionStorage.getItem(KEY_ITEM);

  function takeKeyFromURL() {
    const h = new URLSearchParams(location.hash.slice(1));
    const key = h.get("key");
    if (key === null) return;
    h.delete("key");
    if (key.trim()) sessionStorage.setItem(KEY_ITEM, key.trim());
    const rest = h.toString();
    history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  }

  function authHeaders(extra) {
    const key = getKey();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
  }

  class AuthError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function errorMessage(res) {
    try { return (await res.json()).error.message || `${res.status} ${res.statusText}`; } catch (_) { return `${res.status} ${res.statusText}`; }
  }

  async function getJSON(path, params, etag) {
    const headers = authHeaders({ Accept: "application/json" });
    if (etag) headers["If-None-Match"] = etag;
    const res = await fetch(url(path, params), { headers, cache: "no-store" });
    if (res.status === 304) return { notModified: true, etag };
    if (res.status === 401 || res.status === 403) {
      const err = new AuthError(res.status, await errorMessage(res));
      authFailed(err);
      throw err;
    }
    if (!res.ok) throw new Error(await errorMessage(res));
    return { body: await res.json(), etag: res.headers.get("ETag") };
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const pct = (p) => (p === null || p === undefined || Number.isNaN(p) ? "—" : p < 0.01 && p > 0 ? "<1%" : `${Math.round(p * 100)}%`);
  const thr = (o) => state.thresholds[o] || { raise: 0.5, clear: 0.4 };

  function band(p, output) {
    if (p === null || p === undefined) return "none";
    const t = thr(output);
    if (p >= t.raise) return "high";
    if (p >= t.clear) return "watch";
    if (p >= t.clear / 2) return "raised";
    return "low";
  }
  const BAND_LABEL = { high: "high", watch: "near threshold", raised: "moderate", low: "low", none: "no score" };

  // The reference clock: replays run ahead of the wall clock, so "now" is the later of the two.
  const now = () => Math.max(Date.now(), state.newestEvent);

  function ago(iso) {
    if (!iso) return "—";
    const s = Math.max(0, (now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    if (s < 86400 * 2) return `${(s / 3600).toFixed(s < 36000 ? 1 : 0)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  const fmtTime = (ms, withDate) =>
    new Date(ms).toLocaleString(undefined, withDate
      ? { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }
      : { hour: "2-digit", minute: "2-digit" });

  function fmtValue(v) {
    if (v === null || v === undefined) return "—";
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(4)));
  }

  // A feature as a clinician reads it: the manifest's description (its code as a hint), its unit,
  // and a coded value in words where the description spells the code out ("Female (0) or male (1)").
  function featureLabel(name) {
    const f = state.features[name] || {};
    return f.description || name;
  }

  function featureValue(name, v) {
    if (v === null || v === undefined) return "—";
    const f = state.features[name] || {};
    const coded = /^(.+?) \(0\) or (.+?) \(1\)$/.exec(f.description || "");
    if (coded && (v === 0 || v === 1)) {
      const word = coded[v === 0 ? 1 : 2].trim();
      return word[0].toUpperCase() + word.slice(1);
    }
    return fmtValue(v);
  }

  const featureUnit = (name) => (state.features[name]?.unit || "").replace(/^deg C$/, "°C");

  function announce(text) { $("announce").textContent = text; }

  function setConn(kind, text) {
    const c = $("conn");
    c.dataset.state = kind;
    $("conn-text").textContent = text;
  }

  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    return { output: h.get("output"), entity: h.get("entity") };
  }
  function writeHash() {
    const h = new URLSearchParams();
    if (state.output) h.set("output", state.output);
    if (state.entity) h.set("entity", state.entity.id);
    history.replaceState(null, "", `#${h}`);
  }

  // ---------- watchlist ----------
  async function refreshWatchlist() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = null;
    state.lastFetch = Date.now();
    try {
      const r = await getJSON("v1/watchlist", { output: state.output, limit: LIMIT, min_risk: state.minRisk }, state.etag);
      if (!r.notModified) {
        if (r.body.output !== state.output) return; // a stale answer after the output changed
        state.etag = r.etag;
        state.thresholds = r.body.thresholds || {};
        const previous = new Map(state.rows.map((e) => [e.entity_id, e.step]));
        state.rows = r.body.entities || [];
        for (const e of state.rows) {
          if (previous.has(e.entity_id) && previous.get(e.entity_id) !== e.step) state.flash.add(e.entity_id);
          const t = Date.parse(e.time);
          if (t > state.newestEvent) state.newestEvent = t;
        }
        // the open entity's chart follows its new events, whether they came by stream or poll
        const open = state.entity && state.rows.find((e) => e.entity_id === state.entity.id);
        const loaded = state.entity?.scores.at(-1)?.step ?? 0;
        if (open && open.step > loaded && state.entity.scores.length) scheduleHistory();
        $("wl-updated").textContent = new Date().toLocaleTimeString();
        $("wl-updated").dateTime = new Date().toISOString();
      }
      renderWatchlist();
      if (!state.streamOpen) setConn("polling", "polling");
    } catch (err) {
      if (!(err instanceof AuthError)) setConn("down", `offline (${err.message})`);
    }
  }

  // Many scores arrive together: refresh at most about twice a second.
  function scheduleRefresh() {
    if (state.refreshTimer) return;
    const wait = Math.max(150, 500 - (Date.now() - state.lastFetch));
    state.refreshTimer = setTimeout(refreshWatchlist, wait);
  }

  function otherOutput() { return state.outputs.find((o) => o !== state.output) || null; }

  function sortValue(e, key) {
    const o = state.output;
    switch (key) {
      case "entity_id": return e.entity_id;
      case "risk": return e.risk?.[o] ?? -1;
      case "change": return e.change?.[o] ?? -Infinity;
      case "alert": return e.alerts?.[o] ? -Date.parse(e.alerts[o].since) : -Infinity;
      case "other": return e.risk?.[otherOutput()] ?? -1;
      case "step": return e.step;
      case "time": return Date.parse(e.time);
      default: return 0;
    }
  }

  function sortedRows() {
    const { key, dir } = state.sort;
    const rows = state.rows.slice();
    rows.sort((a, b) => {
      const x = sortValue(a, key), y = sortValue(b, key);
      const c = typeof x === "string" ? x.localeCompare(y, undefined, { numeric: true }) : x - y;
      return c * dir || (sortValue(b, "risk") - sortValue(a, "risk")) || a.entity_id.localeCompare(b.entity_id);
    });
    return rows;
  }

  function trendCell(delta) {
    if (delta === null || delta === undefined) return el("td", { class: "num trend flat", title: "first score" }, "new");
    const pp = delta * 100;
    const dir = pp >= 0.5 ? "up" : pp <= -0.5 ? "down" : "flat";
    const arrow = dir === "up" ? "▲" : dir === "down" ? "▼" : "▶";
    const words = dir === "flat" ? "unchanged" : `${dir} ${Math.abs(pp).toFixed(1)} points`;
    return el("td", { class: `num trend ${dir}`, title: `${words} since the previous score` },
      el("span", { "aria-hidden": "true", class: "arrow" }, arrow), " ",
      el("span", { class: "visually-hidden" }, `${words}: `),
      Math.abs(pp) < 0.05 ? "0.0" : `${pp > 0 ? "+" : "−"}${Math.abs(pp).toFixed(1)}`,
      el("span", { class: "unit" }, " pts"));
  }

  function riskCell(p, output) {
    const b = band(p, output);
    return el("td", { class: `num risk band-${b}`, "data-risk": p ?? "" },
      el("span", { class: "risk-num" }, pct(p)),
      el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${Math.min(100, (p || 0) * 100)}%` })),
      el("span", { class: "visually-hidden" }, ` ${BAND_LABEL[b]}`));
  }

  function alertBadge(alert, output) {
    if (!alert) return el("span", { class: "no-alert" }, "—");
    return el("span", { class: "badge alert", title: `${output} alert since ${new Date(alert.since).toLocaleString()}` },
      "ALERT", el("span", { class: "since" }, ` ${ago(alert.since)}`));
  }

  function renderWatchlist() {
    const o = state.output, other = otherOutput();
    const body = $("watchlist-body");
    const focused = document.activeElement?.dataset?.entity;
    const frag = document.createDocumentFragment();
    let alerts = 0;
    for (const e of sortedRows()) {
      const p = e.risk?.[o];
      const alert = e.alerts?.[o];
      if (alert) alerts += 1;
      const selected = state.entity?.id === e.entity_id;
      const tr = el("tr", {
        "data-entity": e.entity_id,
        class: [selected ? "selected" : "", alert ? "in-alert" : "", state.flash.has(e.entity_id) ? "flash" : ""].join(" ").trim(),
        "aria-selected": selected ? "true" : "false",
      },
        el("th", { scope: "row" }, el("button", {
          type: "button", class: "entity-link", "data-entity": e.entity_id,
          "aria-current": selected ? "true" : null, onclick: () => openEntity(e.entity_id),
        }, e.entity_id)),
        riskCell(p, o),
        trendCell(e.change?.[o]),
        el("td", { class: "alert-cell" }, alertBadge(alert, o)),
        other ? riskCell(e.risk?.[other], other) : el("td", {}),
        el("td", { class: "num step" }, String(e.step)),
        el("td", { class: "num ago", title: e.time }, el("time", { datetime: e.time }, ago(e.time))),
      );
      tr.addEventListener("click", (ev) => { if (!ev.target.closest("button")) openEntity(e.entity_id); });
      frag.append(tr);
    }
    body.replaceChildren(frag);
    state.flash.clear();
    $("wl-count").textContent = state.rows.length >= LIMIT
      ? `the ${LIMIT} highest shown (the list's limit; there may be more)`
      : `${state.rows.length} ${state.rows.length === 1 ? "entity" : "entities"}`;
    $("wl-alerts").textContent = String(alerts);
    $("wl-empty").hidden = state.rows.length > 0;
    $("wl-output").textContent = describeOutput(o);
    $("other-head").querySelector("button").textContent = other ? describeOutput(other, true) : "";
    for (const th of document.querySelectorAll("#watchlist thead th")) {
      th.setAttribute("aria-sort", th.dataset.key === state.sort.key ? (state.sort.dir < 0 ? "descending" : "ascending") : "none");
    }
    if (focused) body.querySelector(`button[data-entity="${CSS.escape(focused)}"]`)?.focus();
  }

  function describeOutput(name, short) {
    const out = state.model?.outputs?.find((x) => x.name === name);
    if (!out) return name || "";
    const pretty = name.replace(/_(\d+)h$/, "").replace(/_/g, " ");
    const label = pretty.length <= 4 ? pretty.toUpperCase() : pretty[0].toUpperCase() + pretty.slice(1);
    return short ? label : `${label}${out.horizon_hours ? ` (${out.horizon_hours} h)` : ""} risk`;
  }

  // The model(s) serving, each with its role: today the active one only. A candidate in shadow
  // (scored alongside, answering nothing) would be another entry here, e.g. from a `candidate`
  // field of GET /v1/model.
  function renderModel() {
    const m = state.model || {};
    const models = [];
    if (m.name) models.push({ role: "active", label: "active", name: m.name, version: m.version });
    if (m.candidate?.name) {
      models.push({ role: "candidate", label: "candidate in shadow", name: m.candidate.name, version: m.candidate.version });
    }
    $("model").replaceChildren(...models.map((x) => el("span", {
      class: `model-entry model-${x.role}`, "data-role": x.role,
      title: `${x.label}: ${x.name} version ${x.version}`,
    }, "model ", el("strong", {}, `${x.name} ${x.version}`), " ", el("span", { class: "model-state" }, x.label))));
  }

  // ---------- live updates ----------
  // EventSource cannot send a header, so the stream is read with fetch(): the key stays in the
  // Authorization header, never in a URL. Reconnects resume with Last-Event-ID, as EventSource would.
  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });

  async function connectStream() {
    state.streamAbort?.abort();
    const ctrl = new AbortController();
    state.streamAbort = ctrl;
    const stream = { lastId: null, retryMs: 1000 };
    let failures = 0;
    while (!ctrl.signal.aborted) {
      try {
        const headers = authHeaders({ Accept: "text/event-stream" });
        if (stream.lastId) headers["Last-Event-ID"] = stream.lastId;
        const res = await fetch(url("v1/stream"), { headers, cache: "no-store", signal: ctrl.signal });
        if (res.status === 401 || res.status === 403) { authFailed(new AuthError(res.status, await errorMessage(res))); return; }
        if (!res.ok || !res.body) throw new Error(`${res.status}`);
        failures = 0;
        state.streamOpen = true;
        setConn("live", "live");
        startPolling(POLL_MS_SAFETY);
        scheduleRefresh(); // catch up on anything missed while down
        await readEvents(res.body, stream);
      } catch (_) { /* the network, or an abort: decided below */ }
      if (ctrl.signal.aborted) return;
      state.streamOpen = false;
      startPolling(POLL_MS_FALLBACK);
      failures += 1;
      setConn("polling", failures > 5 ? "polling" : "reconnecting…");
      // the stream may come back (e.g. after a restart): back off up to 30 s
      await sleep(Math.min(30000, stream.retryMs * 2 ** Math.min(failures - 1, 5)), ctrl.signal);
    }
  }

  // Server-Sent Events, parsed by hand: `id:`, `event:`, `data:`, `retry:`; `:` lines are comments.
  async function readEvents(body, stream) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const msg = { event: "message", data: [] };
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "id") stream.lastId = val;
          else if (field === "event") msg.event = val;
          else if (field === "data") msg.data.push(val);
          else if (field === "retry" && /^\d+$/.test(val)) stream.retryMs = Number(val);
        }
        if (!msg.data.length) continue;
        if (msg.event === "score") {
          let s;
          try { s = JSON.parse(msg.data.join("\n")); } catch (_) { continue; }
          onScore(s);
        } else if (msg.event === "error") {
          // the service's own `event: error` (e.g. the resume cursor expired): start afresh
          stream.lastId = null;
          await reader.cancel();
          return;
        }
      }
    }
  }

  function onScore(s) {
    const t = Date.parse(s.time);
    if (t > state.newestEvent) state.newestEvent = t;
    scheduleRefresh();
    if (state.entity && s.entity_id === state.entity.id) scheduleHistory();
  }

  function startPolling(ms) {
    clearInterval(state.pollTimer);
    state.pollTimer = setInterval(() => { if (!state.refreshTimer) refreshWatchlist(); }, ms);
  }

  // ---------- entity detail ----------
  async function openEntity(id) {
    if (state.entity?.id === id) return;
    state.entity = { id, scores: [], sel: -1, following: true };
    writeHash();
    renderWatchlist();
    $("detail-title").textContent = id;
    $("detail-meta").textContent = "loading…";
    $("charts").replaceChildren();
    $("event").hidden = true;
    $("explain").hidden = true;
    await loadHistory();
    announce(`${id} opened: ${state.entity?.scores.length ?? 0} scores`);
  }

  function scheduleHistory() {
    clearTimeout(state.historyTimer);
    state.historyTimer = setTimeout(() => loadHistory(), 250);
  }

  async function loadHistory() {
    const ent = state.entity;
    if (!ent) return;
    if (ent.loading) { ent.again = true; return; } // one request at a time: no duplicate points
    ent.loading = true;
    try {
      for (let page = 0; page < 20; page += 1) {
        const after = ent.scores.length ? ent.scores[ent.scores.length - 1].step : null;
        const r = await getJSON(`v1/entities/${encodeURIComponent(ent.id)}/scores`,
          { limit: 1000, include_values: "true", after_step: after });
        if (state.entity !== ent) return; // another entity was opened meanwhile
        const got = r.body.scores || [];
        ent.scores.push(...got.filter((s) => after === null || s.step > after));
        // in time order for the chart (a forgotten and re-admitted entity starts its steps anew)
        ent.scores.sort((a, b) => Date.parse(a.time) - Date.parse(b.time) || a.step - b.step);
        if (!r.body.next_after_step || !got.length) break;
      }
      if (ent.following || ent.sel < 0) ent.sel = ent.scores.length - 1;
      renderDetail();
    } catch (err) {
      if (state.entity === ent && !(err instanceof AuthError)) $("detail-meta").textContent = `Could not load the history: ${err.message}`;
    } finally {
      ent.loading = false;
      if (ent.again && state.entity === ent) { ent.again = false; scheduleHistory(); }
    }
  }

  function selectEvent(i) {
    const ent = state.entity;
    if (!ent || !ent.scores.length) return;
    ent.sel = Math.max(0, Math.min(ent.scores.length - 1, i));
    ent.following = ent.sel === ent.scores.length - 1;
    renderDetail();
  }

  function alertSpans(scores, output) {
    // Hysteresis as the service applies it: raise at `raise`, clear below `clear`.
    const t = thr(output), spans = [];
    let start = null;
    scores.forEach((s, i) => {
      const p = s.risk?.[output];
      if (p === undefined || p === null) return;
      if (start === null && p >= t.raise) start = i;
      else if (start !== null && p < t.clear) { spans.push([start, i]); start = null; }
    });
    if (start !== null) spans.push([start, scores.length - 1]);
    return spans;
  }

  function renderDetail() {
    const ent = state.entity;
    if (!ent) return;
    const n = ent.scores.length;
    const last = ent.scores[n - 1];
    $("detail-title").textContent = ent.id;
    if (!n) { $("detail-meta").textContent = "No scores logged for this entity yet."; return; }
    const meta = $("detail-meta");
    meta.replaceChildren(
      `${n} event${n === 1 ? "" : "s"} · last ${fmtTime(Date.parse(last.time), true)} (${ago(last.time)} ago) · model ${last.model?.name ?? ""} ${last.model?.version ?? ""}`,
    );
    const charts = $("charts");
    const cs = getComputedStyle(charts);
    const inner = charts.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const width = Math.max(320, Math.floor(inner) || 560);
    const frag = document.createDocumentFragment();
    for (const o of state.outputs) frag.append(chart(ent, o, width));
    const focused = document.activeElement?.closest?.("figure.chart")?.dataset.output;
    charts.replaceChildren(frag);
    if (focused) charts.querySelector(`figure[data-output="${CSS.escape(focused)}"] svg`)?.focus();
    renderValues();
  }

  function niceTimeTicks(t0, t1, count) {
    const span = t1 - t0, H = 3600e3;
    const steps = [15 * 60e3, 30 * 60e3, H, 2 * H, 3 * H, 6 * H, 12 * H, 24 * H, 48 * H, 7 * 24 * H];
    const step = steps.find((s) => span / s <= count) || steps[steps.length - 1];
    const ticks = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
    return { ticks, withDate: span > 20 * H || new Date(t0).getDate() !== new Date(t1).getDate() };
  }

  function chart(ent, output, width) {
    const scores = ent.scores, n = scores.length;
    const t = thr(output);
    const H = 150, m = { l: 40, r: 64, t: 10, b: 22 };
    const times = scores.map((s) => Date.parse(s.time));
    let t0 = times[0], t1 = times[n - 1];
    if (t1 - t0 < 3600e3) { t0 -= 1800e3; t1 += 1800e3; }
    const risks = scores.map((s) => s.risk?.[output]);
    const maxRisk = Math.max(0, ...risks.filter((p) => typeof p === "number"));
    const yMax = Math.min(1, Math.ceil(Math.max(t.raise + 0.1, maxRisk * 1.1) * 10) / 10);
    const x = (ms) => m.l + ((ms - t0) / (t1 - t0)) * (width - m.l - m.r);
    const y = (p) => m.t + (1 - p / yMax) * (H - m.t - m.b);

    const current = risks[n - 1];
    const selP = risks[ent.sel];
    const fig = el("figure", { class: "chart", "data-output": output });
    fig.append(el("figcaption", {},
      el("strong", {}, describeOutput(output)),
      el("span", { class: `chip band-${band(current, output)}` }, `now ${pct(current)}`),
      el("span", { class: "hint" }, `alert at ≥ ${pct(t.raise)}, clears below ${pct(t.clear)}`)));

    const s = svg("svg", {
      class: "risk-chart", width, height: H, viewBox: `0 0 ${width} ${H}`, role: "img", tabindex: "0",
      "aria-label": `${describeOutput(output)} of ${ent.id} over ${n} events, now ${pct(current)}; ` +
        `selected event ${ent.sel + 1} of ${n} at ${pct(selP)}. Left and right arrow keys move the selection.`,
    });
    // grid and y axis
    for (let v = 0; v <= yMax + 1e-9; v += yMax <= 0.5 ? 0.1 : 0.25) {
      s.append(svg("line", { class: "grid", x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }));
      s.append(svg("text", { class: "tick", x: m.l - 6, y: y(v) + 3, "text-anchor": "end" }, pct(v)));
    }
    const { ticks, withDate } = niceTimeTicks(t0, t1, Math.max(3, Math.floor(width / 110)));
    for (const tk of ticks) {
      s.append(svg("line", { class: "xtick", x1: x(tk), x2: x(tk), y1: H - m.b, y2: H - m.b + 4 }));
      s.append(svg("text", { class: "tick", x: x(tk), y: H - 6, "text-anchor": "middle" }, fmtTime(tk, withDate)));
    }
    // alert periods
    for (const [a, b] of alertSpans(scores, output)) {
      const xa = x(times[a]), xb = b > a ? x(times[b]) : xa + 3;
      s.append(svg("rect", { class: "alert-span", x: xa, y: m.t, width: Math.max(3, xb - xa), height: H - m.t - m.b },
      ));
    }
    // thresholds
    for (const [cls, v, label] of [["thr-raise", t.raise, "alert"], ["thr-clear", t.clear, "clear"]]) {
      if (v > yMax) continue;
      s.append(svg("line", { class: `thr ${cls}`, x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }));
      s.append(svg("text", { class: `thr-label ${cls}`, x: width - m.r + 4, y: y(v) + 3 }, `${label} ${pct(v)}`));
    }
    // the line
    let d = "";
    risks.forEach((p, i) => { if (typeof p === "number") d += `${d ? "L" : "M"}${x(times[i]).toFixed(1)},${y(p).toFixed(1)}`; });
    s.append(svg("path", { class: "risk-line", d }));
    // selected event
    if (ent.sel >= 0) {
      const xs = x(times[ent.sel]);
      s.append(svg("line", { class: "sel-line", x1: xs, x2: xs, y1: m.t, y2: H - m.b }));
    }
    // event markers
    const r = n > 200 ? 1.6 : 2.6;
    const g = svg("g", { class: "points" });
    risks.forEach((p, i) => {
      if (typeof p !== "number") return;
      const c = svg("circle", { class: `pt${i === ent.sel ? " sel" : ""}`, cx: x(times[i]), cy: y(p), r: i === ent.sel ? 4.5 : r, "data-index": i });
      c.append(svg("title", {}, `${fmtTime(times[i], true)} · step ${scores[i].step} · ${pct(p)}`));
      g.append(c);
    });
    s.append(g);
    // pointer: the nearest event in time; keyboard: arrows
    s.addEventListener("click", (ev) => {
      const box = s.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * width;
      let best = 0, bestD = Infinity;
      times.forEach((tm, i) => { const dd = Math.abs(x(tm) - px); if (dd < bestD) { bestD = dd; best = i; } });
      selectEvent(best);
      document.querySelector(`figure[data-output="${output}"] svg`)?.focus();
    });
    s.addEventListener("keydown", (ev) => {
      const moves = { ArrowLeft: -1, ArrowRight: 1, PageUp: -10, PageDown: 10 };
      if (ev.key in moves) selectEvent(ent.sel + moves[ev.key]);
      else if (ev.key === "Home") selectEvent(0);
      else if (ev.key === "End") selectEvent(n - 1);
      else return;
      ev.preventDefault();
      document.querySelector(`figure[data-output="${output}"] svg`)?.focus();
    });
    fig.append(s);
    return fig;
  }

  function renderValues() {
    const ent = state.entity;
    const box = $("event");
    if (!ent || ent.sel < 0 || !ent.scores.length) { box.hidden = true; $("explain").hidden = true; return; }
    const s = ent.scores[ent.sel];
    box.hidden = false;
    const risks = state.outputs.map((o) => `${describeOutput(o, true)} ${pct(s.risk?.[o])}`).join(" · ");
    $("event-title").replaceChildren(
      `Event ${s.event_id} · step ${s.step} · ${fmtTime(Date.parse(s.time), true)} `,
      el("span", { class: "event-risk" }, risks));
    const showMissing = $("show-missing").checked;
    const body = $("values-body");
    const frag = document.createDocumentFragment();
    if (!s.values) {
      frag.append(el("tr", {}, el("td", { colspan: "3", class: "empty" }, "The service did not return this event's values.")));
    } else {
      const names = state.model?.features?.map((f) => f.name) || Object.keys(s.values);
      let shown = 0;
      for (const name of names) {
        const v = s.values[name];
        const measured = v !== null && v !== undefined;
        if (!measured && !showMissing) continue;
        shown += 1;
        frag.append(el("tr", { class: measured ? "" : "missing", "data-feature": name },
          el("th", { scope: "row", title: `${featureLabel(name)} (${name})` }, featureLabel(name),
            featureLabel(name) === name ? null : el("span", { class: "code" }, ` ${name}`)),
          el("td", { class: "num" }, measured ? featureValue(name, v) : "not measured"),
          el("td", { class: "unit" }, featureUnit(name))));
      }
      if (!shown) frag.append(el("tr", {}, el("td", { colspan: "3", class: "empty" }, "Nothing was measured at this event.")));
    }
    body.replaceChildren(frag);
    scheduleExplanation();
  }

  // ---------- why did the risk move? (GET …/scores/{step}/explanation) ----------
  // Fetched for the selected event once the selection rests (stepping with the arrow keys asks
  // for the last one only), kept per event; an answer for an event no longer selected is dropped.
  const EXPLAIN_TOP = 6;

  function scheduleExplanation() {
    clearTimeout(state.explainTimer);
    const ent = state.entity;
    const s = ent?.scores[ent.sel];
    if (!s) return;
    const key = `${s.step}@${s.time}`;
    const known = ent.explanations?.get(key);
    if (known) { renderExplanation(s, known); return; }
    renderExplanation(s, { loading: true });
    state.explainTimer = setTimeout(() => loadExplanation(ent, s, key), 200);
  }

  async function loadExplanation(ent, s, key) {
    let result;
    try {
      const r = await getJSON(`v1/entities/${encodeURIComponent(ent.id)}/scores/${s.step}/explanation`);
      result = { body: r.body };
    } catch (err) {
      if (err instanceof AuthError) return;
      result = { error: err.message };
    }
    ent.explanations = ent.explanations || new Map();
    if (result.body && result.body.event_id === s.event_id) ent.explanations.set(key, result);
    else if (result.body) result = { error: "this event is not in the entity's current stay" };
    if (state.entity === ent && ent.scores[ent.sel] === s) renderExplanation(s, result);
  }

  function points(delta) {
    const pp = delta * 100;
    if (Math.abs(pp) < 0.05) return "±0.0 pts";
    return `${pp > 0 ? "+" : "−"}${Math.abs(pp).toFixed(1)} pts`;
  }

  function renderExplanation(s, result) {
    const box = $("explain");
    box.hidden = false;
    $("explain-title").textContent = `Why did the risk move at step ${s.step}?`;
    const body = $("explain-body");
    body.dataset.step = String(s.step);
    body.dataset.state = result.loading ? "loading" : result.error ? "error" : "ready";
    if (result.loading) { body.replaceChildren(el("p", { class: "empty" }, "working it out…")); return; }
    if (result.error) {
      body.replaceChildren(el("p", { class: "empty" }, `No explanation for this event: ${result.error}`));
      return;
    }
    const e = result.body;
    const frag = document.createDocumentFragment();
    for (const o of state.outputs) {
      const out = e.outputs?.[o];
      if (!out) continue;
      const moved = out.previous === null || out.previous === undefined
        ? "first score"
        : `${pct(out.previous)} → ${pct(out.risk)} (${points(out.risk - out.previous)})`;
      const list = el("ol", { class: "effects" });
      const top = out.inputs.slice(0, EXPLAIN_TOP);
      const scale = Math.max(1e-9, ...top.map((i) => Math.abs(i.effect)));
      for (const i of top) {
        const dir = i.effect >= 0.0005 ? "up" : i.effect <= -0.0005 ? "down" : "flat";
        const unit = featureUnit(i.feature);
        list.append(el("li", { class: `effect ${dir}`, "data-feature": i.feature },
          el("span", { class: "effect-name", title: i.feature }, featureLabel(i.feature)),
          el("span", { class: "effect-value" }, `${featureValue(i.feature, i.value)}${unit ? ` ${unit}` : ""}`),
          el("span", { class: "effect-bar", "aria-hidden": "true" },
            el("span", { style: `width:${Math.round((Math.abs(i.effect) / scale) * 100)}%` })),
          el("span", { class: "effect-points", title: "the risk with this value minus the risk had it not been measured" },
            points(i.effect))));
      }
      if (!top.length) list.append(el("li", { class: "empty" }, "Nothing was measured at this event."));
      const more = out.inputs.length - top.length;
      frag.append(el("section", { class: "why", "data-output": o },
        el("h4", {}, `${describeOutput(o)}: `, el("span", { class: "moved" }, moved)),
        list,
        more > 0 ? el("p", { class: "hint" }, `and ${more} more with smaller effects`) : null));
    }
    if (!e.reproduced) {
      frag.append(el("p", { class: "hint warn" }, "Replaying the stay did not give the logged risk exactly (earlier events scored by another model version?): the effects are approximate."));
    }
    frag.append(el("p", { class: "hint" }, "Effect: how much the risk moved because of this value, against the same event with it not measured."));
    body.replaceChildren(frag);
  }

  // ---------- wiring ----------
  function wire() {
    for (const th of document.querySelectorAll("#watchlist thead th")) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.key;
        if (state.sort.key === key) state.sort.dir *= -1;
        else state.sort = { key, dir: key === "entity_id" ? 1 : -1 };
        renderWatchlist();
      });
    }
    $("output").addEventListener("change", (ev) => {
      state.output = ev.target.value;
      state.etag = null;
      writeHash();
      refreshWatchlist();
    });
    $("min-risk").addEventListener("change", (ev) => {
      state.minRisk = Number(ev.target.value);
      state.etag = null;
      refreshWatchlist();
    });
    $("show-missing").addEventListener("change", renderValues);
    let resizeTimer = null;
    window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(renderDetail, 150); });
    // ages move on even when nothing is scored
    setInterval(() => { if (state.rows.length) renderWatchlist(); }, 10000);
  }

  // ---------- signing in and out ----------
  function stopAll() {
    state.streamAbort?.abort();
    state.streamAbort = null;
    state.streamOpen = false;
    clearInterval(state.pollTimer);
    clearTimeout(state.refreshTimer);
    clearTimeout(state.historyTimer);
    clearTimeout(state.explainTimer);
    state.pollTimer = state.refreshTimer = null;
  }

  function showSignIn(message) {
    stopAll();
    state.signedIn = false;
    state.rows = [];
    state.etag = null;
    state.entity = null;
    $("watchlist-body").replaceChildren();
    $("charts").replaceChildren();
    $("event").hidden = true;
    $("explain").hidden = true;
    $("detail-title").textContent = "Select an entity";
    document.body.classList.add("signed-out");
    $("signin").hidden = false;
    $("signout").hidden = true;
    $("signin-error").textContent = message || "";
    $("signin-error").hidden = !message;
    setConn("down", "signed out");
    $("signin-key").value = "";
    $("signin-key").focus();
  }

  // A 401 (no key, an unknown or revoked one) or a 403 (a key without the `read` scope): the
  // dashboard cannot show anything, so it asks for a key and says why, instead of failing quietly.
  function authFailed(err) {
    if (!state.signedIn && !$("signin").hidden) return; // already asking
    sessionStorage.removeItem(KEY_ITEM); // refused, or of no use here: not kept for a reload
    if (err.status === 401) {
      showSignIn(`This key was not accepted (${err.message}). Paste another one.`);
    } else {
      showSignIn(`This key lacks a scope the dashboard needs (read): ${err.message}`);
    }
  }

  function signOut() {
    sessionStorage.removeItem(KEY_ITEM);
    showSignIn("");
    announce("Signed out");
  }

  function wireSignIn() {
    $("signin").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("signin-key").value.trim();
      if (!key) { $("signin-error").textContent = "Paste an API key."; $("signin-error").hidden = false; return; }
      sessionStorage.setItem(KEY_ITEM, key);
      $("signin-key").value = "";
      boot();
    });
    $("signout").addEventListener("click", signOut);
  }

  async function boot() {
    stopAll();
    if (!getKey()) { showSignIn(""); return; }
    state.signedIn = true;
    $("signin").hidden = true;
    $("signout").hidden = false;
    document.body.classList.remove("signed-out");
    setConn("connecting", "connecting…");
    const wanted = readHash();
    try {
      const r = await getJSON("v1/model");
      state.model = r.body;
    } catch (err) {
      if (err instanceof AuthError) return; // the sign-in form says why
      state.model = { outputs: [], features: [] };
      setConn("down", `offline (${err.message})`);
    }
    state.outputs = (state.model.outputs || []).map((o) => o.name);
    for (const f of state.model.features || []) state.features[f.name] = f;
    if (!state.outputs.length) state.outputs = ["risk"];
    state.output = state.outputs.includes(wanted.output) ? wanted.output : state.outputs[0];
    const sel = $("output");
    sel.replaceChildren(...state.outputs.map((o) => el("option", { value: o, selected: o === state.output }, describeOutput(o))));
    renderModel();
    await refreshWatchlist();
    if (!state.signedIn) return;
    connectStream();
    if (wanted.entity && state.entity?.id !== wanted.entity) openEntity(wanted.entity);
  }

  takeKeyFromURL();
  wire();
  wireSignIn();
  boot();
})();
