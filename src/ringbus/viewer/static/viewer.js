// ringbus viewer: plain DOM, no framework. Event data is only ever written
// with textContent, never parsed as markup, so payloads holding HTML stay text.
// Charts are drawn here as SVG; nothing is fetched from anywhere but this server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const FIELDS = ["seq", "tick", "day", "kind", "polity_id", "ward_id", "actor_id", "subject_id"];
  const NUMERIC = new Set(["seq", "tick", "day"]);
  const FILTERS = ["kinds", "polity", "ward", "actor", "subject", "key", "value",
    "from_seq", "to_seq", "from_tick", "to_tick", "from_day", "to_day"];
  const MAX_ROWS = 1000;          // rows kept in the table, whatever the limit asks
  const MAX_DAYS = 120;           // days of KPI history kept for the charts
  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
    "#db2777", "#65a30d", "#475569", "#ea580c", "#0d9488", "#9333ea"];
  // Text direction controls can make "invoice<U+202E>txt.exe" read as another name:
  // they are shown as visible marks instead of being obeyed.
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

  const state = {
    source: null,       // EventSource while following
    cursor: 0,          // last seq looked at
    limit: 200,
    following: true,
    generation: 0,      // bumps on every (re)load so stale responses are ignored
    runId: null,        // the bus run the page shows
    finished: false,
    gaps: 0,
    missing: 0,
    lastGap: "",
    skips: 0,
    skipped: 0,
    lastSkip: "",
    events: new Map(),  // seq -> event, for the rows in the table
    pending: [],        // events received, not drawn yet (oldest first)
    drawing: 0,         // requestAnimationFrame handle, 0 when none is due
    fresh: [],          // rows of the newest drawn batch
    days: new Map(),    // KPI day -> closed-day record, for the charts
    colours: new Map(), // kind -> colour, stable while the page lives
    loadingOlder: false,
  };

  function visible(text) {
    return String(text).replace(BIDI, (ch) => "\u27e6U+" + ch.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + "\u27e7");
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = visible(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const name of Object.keys(attrs || {})) node.setAttribute(name, String(attrs[name]));
    return node;
  }

  function setStatus(name, text) {
    const node = $("status");
    node.dataset.state = name;
    node.textContent = text || name;
  }

  function showError(message) {
    const node = $("error");
    node.textContent = message || "";
    node.hidden = !message;
    if (message) setStatus("error");
  }

  function showNotice(message) {
    const node = $("notice");
    node.textContent = message || "";
    node.hidden = !message;
  }

  function filterParams() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = $("f-" + name).value.trim();
      if (value) params.set(name, value);
    }
    return params;
  }

  function bounded() {
    // a seq range with an end is history: nothing new can join it
    return $("f-to_seq").value.trim() !== "";
  }

  // -- the URL keeps the filters: deep links and reloads show the same view --
  function readURL() {
    const params = new URLSearchParams(location.search);
    for (const name of FILTERS) {
      if (params.has(name)) $("f-" + name).value = params.get(name);
    }
    if (params.has("limit")) $("f-limit").value = params.get("limit");
    if (params.get("follow") === "0") setFollowing(false);
  }

  function writeURL() {
    const params = filterParams();
    const limit = $("f-limit").value.trim();
    if (limit && limit !== "200") params.set("limit", limit);
    if (!state.following) params.set("follow", "0");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
    $("export").href = "/api/export" + (filterParams().toString() ? "?" + filterParams().toString() : "");
  }

  // -- rows ----------------------------------------------------------------
  function eventRow(event) {
    const row = el("tr");
    row.dataset.seq = String(event.seq);
    for (const field of FIELDS) {
      const value = event[field];
      const cell = el("td", value === null ? "" : value, NUMERIC.has(field) ? "num" : field === "kind" ? "kind" : "");
      row.appendChild(cell);
    }
    const cell = el("td");
    const keys = Object.keys(event.payload || {});
    const button = el("button", keys.length ? "show (" + keys.length + ")" : "show", "payload-toggle");
    button.type = "button";
    button.setAttribute("aria-expanded", "false");
    cell.appendChild(button);
    if (event.source === "journal") {
      // older than the ring: read back from the journal file
      row.classList.add("from-journal");
      cell.appendChild(el("span", "journal", "source"));
    }
    row.appendChild(cell);
    return row;
  }

  const TRANSPORT_FIELDS = ["state", "sent", "failed", "dropped", "buffered"];

  function formatValue(key, value) {
    if (key.startsWith("transport:") && Array.isArray(value) && value.length === TRANSPORT_FIELDS.length) {
      return TRANSPORT_FIELDS.map((name, i) => name + " " + formatValue("", value[i])).join(", ");
    }
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function togglePayload(row, button) {
    const next = row.nextElementSibling;
    if (next && next.classList.contains("detail")) {
      next.remove();
      button.setAttribute("aria-expanded", "false");
      button.textContent = button.textContent.replace(/^hide/, "show");
      return;
    }
    const event = state.events.get(Number(row.dataset.seq));
    const detail = el("tr", null, "detail");
    const cell = el("td");
    cell.colSpan = FIELDS.length + 1;
    const list = el("dl", null, "payload");
    const payload = (event && event.payload) || {};
    for (const key of Object.keys(payload)) {
      list.appendChild(el("dt", key));
      list.appendChild(el("dd", formatValue(key, payload[key])));
    }
    if (event && event.tags && event.tags.length) {
      list.appendChild(el("dt", "tags"));
      list.appendChild(el("dd", event.tags.join(", ")));
    }
    if (!list.childNodes.length) list.appendChild(el("dt", "(empty payload)"));
    cell.appendChild(list);
    const copy = el("button", "copy as JSON", "copy");
    copy.type = "button";
    copy.addEventListener("click", () => copyEvent(event, copy));
    cell.appendChild(copy);
    detail.appendChild(cell);
    row.after(detail);
    button.setAttribute("aria-expanded", "true");
    button.textContent = button.textContent.replace(/^show/, "hide");
  }

  async function copyEvent(event, button) {
    const text = JSON.stringify(event);
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.textContent = "copied";
  }

  function noticeRow(text, cls, range) {
    const row = el("tr", null, cls);
    const cell = el("td", text);
    cell.colSpan = FIELDS.length + 1;
    if (range) {
      const button = el("button", "view these", "view-range");
      button.type = "button";
      button.addEventListener("click", () => viewRange(range.first, range.last));
      cell.appendChild(button);
    }
    row.appendChild(cell);
    return row;
  }

  function updateBar() {
    const parts = [];
    if (state.gaps) {
      parts.push(state.missing + " events in " + state.gaps + (state.gaps === 1 ? " gap" : " gaps") +
        " were overwritten in the ring before the viewer read them (last: seq " + state.lastGap + ").");
    }
    if (state.skips) {
      parts.push(state.skipped + " events were skipped to keep up with the sim (last: seq " +
        state.lastSkip + "; still in the ring until overwritten: use \u201cview these\u201d or load older).");
    }
    const bar = $("gaps");
    bar.textContent = "Not shown: " + parts.join(" ");
    bar.hidden = parts.length === 0;
  }

  function noteGap(gap) {
    flush();
    state.gaps += 1;
    state.missing += gap.missing;
    state.lastGap = gap.first + "\u2013" + gap.last;
    updateBar();
    $("rows").prepend(noticeRow("gap: seq " + gap.first + "\u2013" + gap.last + " (" + gap.missing +
      " events) overwritten in the ring before they could be read", "gap"));
  }

  function noteSkip(skip) {
    flush();
    const count = skip.last - skip.first + 1;
    state.skips += 1;
    state.skipped += count;
    state.lastSkip = skip.first + "\u2013" + skip.last;
    updateBar();
    $("rows").prepend(noticeRow("skipped: seq " + skip.first + "\u2013" + skip.last +
      " arrived faster than the table can show; matching events among them are not listed", "gap skip", skip));
  }

  function dropRow(row) {
    if (row.dataset.seq) state.events.delete(Number(row.dataset.seq));
    row.remove();
  }

  function trim(fromTop) {
    // keep at most ``cap`` events (and a few notices) in the DOM
    const body = $("rows");
    const cap = Math.min(state.limit, MAX_ROWS);
    while (state.events.size > cap || body.rows.length > cap + 50) {
      const row = fromTop ? body.firstElementChild : body.lastElementChild;
      if (!row) break;
      dropRow(row);
    }
    $("shown").textContent = String(state.events.size);
  }

  // Live events are queued and drawn once per animation frame, however many arrive.
  function queue(events) {
    for (const event of events) state.pending.push(event);
    const cap = Math.min(state.limit, MAX_ROWS);
    if (state.pending.length > cap) state.pending.splice(0, state.pending.length - cap);
    if (!state.drawing) state.drawing = requestAnimationFrame(flush);
  }

  function flush() {
    if (state.drawing) cancelAnimationFrame(state.drawing);
    state.drawing = 0;
    const events = state.pending;
    if (!events.length) return;
    state.pending = [];
    for (const row of state.fresh) row.classList.remove("fresh");
    state.fresh = [];
    const fragment = document.createDocumentFragment();
    for (let i = events.length - 1; i >= 0; i -= 1) { // newest on top
      const event = events[i];
      state.events.set(event.seq, event);
      const row = eventRow(event);
      row.classList.add("fresh");
      state.fresh.push(row);
      fragment.appendChild(row);
    }
    $("rows").prepend(fragment);
    trim(false);
  }

  function showEvents(events) {
    // a first look or a page of history: replaces nothing, appends nothing live
    const fragment = document.createDocumentFragment();
    for (let i = events.length - 1; i >= 0; i -= 1) {
      state.events.set(events[i].seq, events[i]);
      fragment.appendChild(eventRow(events[i]));
    }
    return fragment;
  }

  function updateSeqs(data) {
    if (typeof data.latest_seq === "number") $("latest").textContent = String(data.latest_seq);
    if (typeof data.oldest_seq === "number") $("oldest").textContent = String(data.oldest_seq);
  }

  // -- runs: a restarted sim starts the page over; a finished one says so --
  function checkRun(data) {
    if (!data || typeof data.run_id !== "string") return true;
    if (state.runId === null) {
      state.runId = data.run_id;
      $("run").textContent = data.run_id;
      return true;
    }
    if (data.run_id === state.runId) return true;
    restarted(data.run_id);
    return false;
  }

  function restarted(runId) {
    showNotice("The sim started over (run " + runId + " replaces run " + state.runId +
      "): the table now shows the new run from its start.");
    state.runId = runId;
    $("run").textContent = runId;
    state.finished = false;
    state.days.clear();
    load();
  }

  function noteFinished() {
    state.finished = true;
    if (state.following) setStatus("finished", "run finished");
    showNotice("The run finished: the table holds its last events; nothing more will arrive.");
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      throw new Error((data && data.error) || ("HTTP " + response.status + " for " + url));
    }
    return data;
  }

  function stopStream() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  function startStream() {
    stopStream();
    const params = filterParams();
    params.set("since", String(state.cursor));
    params.set("limit", String(Math.min(state.limit, MAX_ROWS)));
    params.set("tail", "1");
    const source = new EventSource("/api/stream?" + params.toString());
    const generation = state.generation;
    const mine = () => generation === state.generation && state.source === source;
    state.source = source;
    source.addEventListener("hello", (message) => {
      if (!mine()) return;
      if (!checkRun(JSON.parse(message.data))) return;
      if (!state.finished) setStatus("live");
    });
    source.addEventListener("events", (message) => {
      if (!mine()) return;
      const data = JSON.parse(message.data);
      if (!checkRun(data)) return;
      state.cursor = Math.max(state.cursor, data.next_since);
      updateSeqs(data);
      queue(data.events);
    });
    source.addEventListener("gap", (message) => { if (mine()) noteGap(JSON.parse(message.data)); });
    source.addEventListener("skipped", (message) => { if (mine()) noteSkip(JSON.parse(message.data)); });
    source.addEventListener("finished", () => { if (mine()) noteFinished(); });
    source.addEventListener("restarted", (message) => {
      if (!mine()) return;
      stopStream();
      restarted(JSON.parse(message.data).run_id);
    });
    source.addEventListener("error", () => {
      if (!mine()) return;
      if (state.finished) {
        // the run is over and the server has gone: nothing to reconnect for
        stopStream();
        setStatus("finished", "run finished");
        return;
      }
      // EventSource reconnects by itself and sends Last-Event-ID to resume.
      setStatus(source.readyState === EventSource.CLOSED ? "error" : "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        stopStream();
        showError("The live feed was refused (too many open viewers, or bad filters); reload to retry.");
      }
    });
  }

  function resetTable() {
    $("rows").replaceChildren();
    state.events.clear();
    state.pending = [];
    state.fresh = [];
    state.gaps = 0;
    state.missing = 0;
    state.skips = 0;
    state.skipped = 0;
    updateBar();
    $("older-note").textContent = "";
  }

  function readLimit() {
    const limit = parseInt($("f-limit").value, 10);
    state.limit = Number.isFinite(limit) && limit > 0 ? Math.min(limit, MAX_ROWS) : 200;
  }

  async function load(extra) {
    state.generation += 1;
    const generation = state.generation;
    stopStream();
    showError("");
    readLimit();
    if (bounded()) setFollowing(false);
    writeURL();
    const params = filterParams();
    params.set("limit", String(state.limit));
    if (extra) for (const name of Object.keys(extra)) params.set(name, extra[name]);
    try {
      const data = await getJSON("/api/events?" + params.toString());
      if (generation !== state.generation) return;
      if (!checkRun(data)) return;
      resetTable();
      state.cursor = data.next_since;
      updateSeqs(data);
      $("rows").appendChild(showEvents(data.events));
      trim(false);
      markActiveKinds();
      if (data.finished && !state.finished) noteFinished();
      if (state.following) startStream();
      else setStatus(bounded() ? "history" : "paused");
    } catch (error) {
      if (generation === state.generation) showError(error.message);
    }
  }

  async function loadOlder() {
    const shown = Array.from(state.events.keys());
    if (!shown.length || state.loadingOlder) return;  // one page at a time
    state.loadingOlder = true;
    try {
      await fetchOlder(shown);
    } finally {
      state.loadingOlder = false;
    }
  }

  async function fetchOlder(shown) {
    const oldest = Math.min.apply(null, shown);
    setFollowing(false);
    const generation = state.generation;
    const params = filterParams();
    params.set("limit", String(Math.min(state.limit, MAX_ROWS)));
    params.set("before", String(oldest));
    try {
      const data = await getJSON("/api/events?" + params.toString());
      if (generation !== state.generation || !checkRun(data)) return;
      $("rows").appendChild(showEvents(data.events.filter((event) => !state.events.has(event.seq))));
      trim(true);
      $("older-note").textContent = data.events.length ? "" :
        "no older matching events in the ring (oldest retained seq " + data.oldest_seq + ")" +
        (data.journal ? " or the journal" : "");
    } catch (error) {
      showError(error.message);
    }
  }

  function viewRange(first, last) {
    $("f-from_seq").value = String(first);
    $("f-to_seq").value = String(last);
    setFollowing(false);
    load();
  }

  async function jump() {
    const seq = parseInt($("f-jump").value, 10);
    if (!Number.isFinite(seq) || seq < 1) { showError("jump to seq: give a seq (a whole number from 1)"); return; }
    setFollowing(false);
    await load({ before: String(seq + 1) });
    const row = document.querySelector("#rows tr[data-seq='" + seq + "']");
    if (row) {
      row.classList.add("target");
      row.scrollIntoView({ block: "center" });
    } else {
      $("older-note").textContent = "seq " + seq + " does not match the filters or is no longer in the ring";
    }
  }

  function setFollowing(on) {
    state.following = on;
    const button = $("follow");
    button.setAttribute("aria-pressed", String(on));
    button.textContent = on ? "following" : "paused";
  }

  function markActiveKinds() {
    const wanted = new Set($("f-kinds").value.split(",").map((s) => s.trim()).filter(Boolean));
    for (const row of $("count-rows").rows) {
      row.classList.toggle("active", wanted.has(row.dataset.kind));
    }
  }

  function toggleKind(kind) {
    const input = $("f-kinds");
    const kinds = input.value.split(",").map((s) => s.trim()).filter(Boolean);
    const at = kinds.indexOf(kind);
    if (at >= 0) kinds.splice(at, 1); else kinds.push(kind);
    input.value = kinds.join(", ");
    load();
  }

  // -- charts ----------------------------------------------------------------
  function colour(name) {
    if (!state.colours.has(name)) state.colours.set(name, COLOURS[state.colours.size % COLOURS.length]);
    return state.colours.get(name);
  }

  function swatch(fill) {
    const box = svg("svg", { width: 10, height: 10, viewBox: "0 0 10 10", class: "swatch" });
    box.appendChild(svg("rect", { width: 10, height: 10, fill: fill }));
    return box;
  }

  // A line chart: one polyline per series over shared x values. Each series is
  // a <g data-series> holding its values in data-values, so they can be read back.
  function lineChart(id, title, xs, series, options) {
    const opts = options || {};
    const width = 360, height = 120, left = 34, bottom = 16, top = 6;
    const names = Object.keys(series);
    let max = opts.max || 0;
    for (const name of names) for (const v of series[name]) if (typeof v === "number" && v > max) max = v;
    if (!max) max = 1;
    const figure = el("figure", null, "chart");
    figure.id = id;
    figure.appendChild(el("figcaption", title));
    const chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": title });
    const x = (i) => left + (xs.length > 1 ? (i * (width - left - 4)) / (xs.length - 1) : (width - left) / 2);
    const y = (v) => top + (height - top - bottom) * (1 - v / max);
    chart.appendChild(svg("line", { x1: left, y1: y(0), x2: width - 4, y2: y(0), stroke: "#d1d5db" }));
    chart.appendChild(svg("line", { x1: left, y1: top, x2: left, y2: y(0), stroke: "#d1d5db" }));
    const label = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; chart.appendChild(t); };
    label(opts.format ? opts.format(max) : String(max), { x: left - 3, y: top + 8, "text-anchor": "end", "font-size": 9, fill: "#6b7280" });
    label("0", { x: left - 3, y: y(0), "text-anchor": "end", "font-size": 9, fill: "#6b7280" });
    if (xs.length) {
      label(String(xs[0]), { x: left, y: height - 3, "font-size": 9, fill: "#6b7280" });
      label(String(xs[xs.length - 1]), { x: width - 4, y: height - 3, "text-anchor": "end", "font-size": 9, fill: "#6b7280" });
    }
    const legend = el("div", null, "legend");
    for (const name of names) {
      const values = series[name];
      const group = svg("g", { "data-series": name, "data-values": values.map((v) => (v === null ? "" : v)).join(",") });
      const points = [];
      values.forEach((v, i) => { if (typeof v === "number") points.push(x(i).toFixed(1) + "," + y(v).toFixed(1)); });
      const stroke = opts.colour ? opts.colour(name) : colour(name);
      group.appendChild(svg("polyline", { points: points.join(" "), fill: "none", stroke: stroke, "stroke-width": 1.5 }));
      if (values.length <= 40) {
        values.forEach((v, i) => {
          if (typeof v !== "number") return;
          const dot = svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2, fill: stroke });
          const tip = svg("title");
          tip.textContent = name + " " + xs[i] + ": " + (opts.format ? opts.format(v) : v);
          dot.appendChild(tip);
          group.appendChild(dot);
        });
      }
      chart.appendChild(group);
      const item = el("span");
      item.appendChild(swatch(stroke));
      item.appendChild(document.createTextNode(visible(name)));
      legend.appendChild(item);
    }
    chart.dataset.x = xs.join(",");
    figure.appendChild(chart);
    figure.appendChild(legend);
    return figure;
  }

  const KPI_ROWS = [
    ["deliveries completed", "deliveries_completed"],
    ["deliveries failed", "deliveries_failed"],
    ["success rate", "delivery_success_rate"],
    ["incidents", "incidents"],
    ["depots built", "depots_built"],
    ["corridors", "corridors_established"],
    ["construction done", "construction_completed"],
    ["protocol violations", "protocol_violations"],
    ["enforcement actions", "enforcement_actions"],
    ["scout missions", "scout_missions_completed"],
  ];

  function kpiValue(key, value) {
    if (value === null || value === undefined) return "–";
    if (key === "delivery_success_rate") return (value * 100).toFixed(1) + "%";
    return String(value);
  }

  function isKpiSummary(kpis) {
    return kpis && typeof kpis === "object" && kpis.totals && kpis.current_day && Array.isArray(kpis.days);
  }

  function renderKpis(kpis) {
    const raw = $("kpis");
    if (!isKpiSummary(kpis)) {
      $("kpi-table").hidden = true;
      $("kpi-charts").replaceChildren();
      raw.hidden = false;
      raw.textContent = kpis === null ? "none" : visible(JSON.stringify(kpis, null, 1));
      return;
    }
    raw.hidden = true;
    for (const day of kpis.days) {
      if (day && typeof day.day === "number") state.days.set(day.day, day);
    }
    const known = Array.from(state.days.keys()).sort((a, b) => a - b);
    while (known.length > MAX_DAYS) state.days.delete(known.shift());
    const today = known.length ? known[known.length - 1] + 1 : 0;
    $("kpi-day").textContent = "(day " + today + " so far; totals since the start)";
    const body = $("kpi-rows");
    body.replaceChildren();
    for (const [title, key] of KPI_ROWS) {
      if (!(key in kpis.totals)) continue;
      const row = el("tr");
      row.dataset.kpi = key;
      row.appendChild(el("td", title));
      row.appendChild(el("td", kpiValue(key, kpis.current_day[key]), "num"));
      row.appendChild(el("td", kpiValue(key, kpis.totals[key]), "num"));
      body.appendChild(row);
    }
    $("kpi-table").hidden = false;
    const days = known.map((d) => state.days.get(d));
    const charts = [
      lineChart("chart-deliveries", "deliveries per closed day", known, {
        completed: days.map((d) => d.deliveries_completed),
        failed: days.map((d) => d.deliveries_failed),
      }),
      lineChart("chart-success", "delivery success rate per day", known, {
        "success rate": days.map((d) => (typeof d.delivery_success_rate === "number" ? d.delivery_success_rate : null)),
      }, { max: 1, format: (v) => Math.round(v * 100) + "%" }),
    ];
    const kinds = new Set();
    for (const d of days) for (const kind of Object.keys(d.incidents_by_kind || {})) kinds.add(kind);
    const incidents = {};
    for (const kind of Array.from(kinds).sort()) incidents[kind] = days.map((d) => (d.incidents_by_kind || {})[kind] || 0);
    charts.push(lineChart("chart-incidents", "incidents per day by kind", known, incidents));
    $("kpi-charts").replaceChildren(...charts);
  }

  function renderRates(rates) {
    const series = rates.series || {};
    const totals = Object.keys(series).map((k) => [k, series[k].reduce((a, b) => a + b, 0)]);
    totals.sort((a, b) => b[1] - a[1]);
    const shown = {};
    for (const [kind] of totals.slice(0, 8)) shown[kind] = series[kind];
    $("rate-chart").replaceChildren(lineChart("chart-rates", "events per tick, top kinds", rates.ticks || [], shown));
  }

  function fields(data) {
    const list = el("dl", null, "fields");
    for (const key of Object.keys(data)) {
      list.appendChild(el("dt", key));
      const value = data[key];
      list.appendChild(el("dd", value === null ? "–" : typeof value === "object" ? JSON.stringify(value) : value));
    }
    return list;
  }

  function table(headers, rows) {
    const t = el("table");
    const head = el("tr");
    for (const h of headers) head.appendChild(el("th", h));
    t.appendChild(head);
    for (const row of rows) {
      const tr = el("tr");
      for (const cell of row) tr.appendChild(el("td", cell === null ? "–" : cell));
      t.appendChild(tr);
    }
    return t;
  }

  function renderHealth(health) {
    const panel = $("health");
    const report = health.report;
    if (!report) {
      panel.replaceChildren(el("span", "no BUS_HEALTH report yet"));
      if (health.bus) panel.appendChild(fields(health.bus));
      $("health-at").textContent = "";
    } else {
      $("health-at").textContent = "(report at seq " + report.seq + ", tick " + report.tick + ")";
      const parts = [fields(report.bus)];
      const names = Object.keys(report.transports);
      if (names.length) {
        parts.push(table(["transport", "state", "sent", "failed", "dropped", "buffered"],
          names.map((name) => {
            const t = report.transports[name];
            return [name, t.state, t.sent, t.failed, t.dropped, t.buffered];
          })));
      }
      panel.replaceChildren(...parts);
      panel.querySelector("table") && panel.querySelector("table").setAttribute("id", "transports");
    }
    const letters = $("dead-letters");
    const dead = health.dead_letters;
    if (!dead) { letters.replaceChildren(el("span", "this bus keeps no dead letters")); return; }
    const parts = [fields(dead.stats)];
    if (dead.recent.length) {
      parts.push(table(["seq", "kind", "subscriber", "attempts", "error"],
        dead.recent.slice().reverse().map((d) => [d.event.seq, d.event.kind, d.name || d.subscriber,
          d.attempts, d.error_type + ": " + d.error_message])));
    }
    letters.replaceChildren(...parts);
  }

  async function refreshSide() {
    try {
      const counts = await getJSON("/api/counts");
      if (!checkRun(counts)) return;
      const body = $("count-rows");
      body.replaceChildren();
      for (const kind of Object.keys(counts.counts)) {
        const row = el("tr");
        row.dataset.kind = kind;
        row.appendChild(el("td", kind));
        row.appendChild(el("td", counts.counts[kind], "num"));
        row.addEventListener("click", () => toggleKind(kind));
        body.appendChild(row);
      }
      const total = el("tr");
      total.appendChild(el("td", "retained"));
      total.appendChild(el("td", counts.retained, "num"));
      body.appendChild(total);
      markActiveKinds();
      updateSeqs(counts);
      if (counts.finished && !state.finished) noteFinished();
      const [kpis, rates, health] = await Promise.all(
        [getJSON("/api/kpis"), getJSON("/api/rates"), getJSON("/api/health")]);
      renderKpis(kpis.kpis);
      renderRates(rates);
      renderHealth(health);
    } catch (error) {
      // the stream's own status shows a lost server; keep the last values
    }
  }

  function setup() {
    $("filters").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    $("clear").addEventListener("click", () => {
      for (const name of FILTERS) $("f-" + name).value = "";
      if (!state.following) setFollowing(true);
      load();
    });
    $("follow").addEventListener("click", () => {
      setFollowing(!state.following);
      if (state.following && bounded()) {
        $("f-to_seq").value = "";
        load();
        return;
      }
      writeURL();
      if (state.following) startStream(); else { stopStream(); setStatus("paused"); }
    });
    $("rows").addEventListener("click", (event) => {
      const button = event.target.closest("button.payload-toggle");
      if (button) togglePayload(button.closest("tr"), button);
    });
    $("older").addEventListener("click", loadOlder);
    $("jump").addEventListener("click", jump);
    $("f-jump").addEventListener("keydown", (event) => { if (event.key === "Enter") { event.preventDefault(); jump(); } });
    readURL();
    load();
    refreshSide();
    setInterval(refreshSide, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
