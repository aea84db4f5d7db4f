// ringbus viewer: plain DOM, no framework. Event data is only ever written
// with textContent, never parsed as markup, so payloads holding HTML stay text.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const FIELDS = ["seq", "tick", "day", "kind", "polity_id", "ward_id", "actor_id", "subject_id"];
  const NUMERIC = new Set(["seq", "tick", "day"]);
  const FILTERS = ["kinds", "polity", "ward", "actor", "subject", "key", "value"];

  const state = {
    source: null,       // EventSource while following
    cursor: 0,          // last seq looked at
    limit: 200,
    following: true,
    generation: 0,      // bumps on every (re)load so stale responses are ignored
    gaps: 0,
    missing: 0,
    lastGap: "",
    skips: 0,
    skipped: 0,
    lastSkip: "",
    events: new Map(),  // seq -> event, for the payload view
  };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function setStatus(name) {
    const node = $("status");
    node.dataset.state = name;
    node.textContent = name;
  }

  function showError(message) {
    const node = $("error");
    node.textContent = message || "";
    node.hidden = !message;
    if (message) setStatus("error");
  }

  function filterParams() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = $("f-" + name).value.trim();
      if (value) params.set(name, value);
    }
    return params;
  }

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
    button.addEventListener("click", () => togglePayload(row, button));
    cell.appendChild(button);
    row.appendChild(cell);
    return row;
  }

  function formatValue(value) {
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
      list.appendChild(el("dd", formatValue(payload[key])));
    }
    if (event && event.tags && event.tags.length) {
      list.appendChild(el("dt", "tags"));
      list.appendChild(el("dd", event.tags.join(", ")));
    }
    if (!list.childNodes.length) list.appendChild(el("dt", "(empty payload)"));
    cell.appendChild(list);
    detail.appendChild(cell);
    row.after(detail);
    button.setAttribute("aria-expanded", "true");
    button.textContent = button.textContent.replace(/^show/, "hide");
  }

  function noticeRow(text, cls) {
    const row = el("tr", null, cls);
    const cell = el("td", text);
    cell.colSpan = FIELDS.length + 1;
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
        state.lastSkip + "; still in the ring until overwritten).");
    }
    const bar = $("gaps");
    bar.textContent = "Not shown: " + parts.join(" ");
    bar.hidden = parts.length === 0;
  }

  function noteGap(gap) {
    state.gaps += 1;
    state.missing += gap.missing;
    state.lastGap = gap.first + "–" + gap.last;
    updateBar();
    $("rows").prepend(noticeRow("gap: seq " + gap.first + "–" + gap.last + " (" + gap.missing +
      " events) overwritten in the ring before they could be read", "gap"));
  }

  function noteSkip(skip) {
    const count = skip.last - skip.first + 1;
    state.skips += 1;
    state.skipped += count;
    state.lastSkip = skip.first + "–" + skip.last;
    updateBar();
    $("rows").prepend(noticeRow("skipped: seq " + skip.first + "–" + skip.last +
      " arrived faster than the table can show; matching events among them are not listed", "gap skip"));
  }

  function trim() {
    const body = $("rows");
    let count = 0;
    for (const row of Array.from(body.rows)) {
      if (row.classList.contains("detail")) continue;
      if (count >= state.limit) {
        if (row.dataset.seq) state.events.delete(Number(row.dataset.seq));
        const next = row.nextElementSibling;
        if (next && next.classList.contains("detail")) next.remove();
        row.remove();
        continue;
      }
      if (row.dataset.seq) count += 1;
    }
    $("shown").textContent = String(state.events.size);
  }

  function addEvents(events, fresh) {
    // events arrive oldest first; newest goes on top
    const body = $("rows");
    for (const event of events) {
      state.events.set(event.seq, event);
      const row = eventRow(event);
      if (fresh) row.classList.add("fresh");
      body.prepend(row);
    }
    trim();
  }

  function updateSeqs(data) {
    if (typeof data.latest_seq === "number") $("latest").textContent = String(data.latest_seq);
    if (typeof data.oldest_seq === "number") $("oldest").textContent = String(data.oldest_seq);
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
    params.set("limit", String(state.limit));
    params.set("tail", "1");
    const source = new EventSource("/api/stream?" + params.toString());
    const generation = state.generation;
    state.source = source;
    source.addEventListener("open", () => { if (generation === state.generation) setStatus("live"); });
    source.addEventListener("events", (message) => {
      if (generation !== state.generation) return;
      const data = JSON.parse(message.data);
      state.cursor = Math.max(state.cursor, data.next_since);
      updateSeqs(data);
      addEvents(data.events, true);
    });
    source.addEventListener("gap", (message) => {
      if (generation !== state.generation) return;
      noteGap(JSON.parse(message.data));
    });
    source.addEventListener("skipped", (message) => {
      if (generation !== state.generation) return;
      noteSkip(JSON.parse(message.data));
    });
    source.addEventListener("error", () => {
      if (generation !== state.generation) return;
      // EventSource reconnects by itself and sends Last-Event-ID to resume.
      setStatus(source.readyState === EventSource.CLOSED ? "error" : "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        showError("The live feed was refused; check the filters.");
      }
    });
  }

  async function load() {
    state.generation += 1;
    const generation = state.generation;
    stopStream();
    showError("");
    const limit = parseInt($("f-limit").value, 10);
    state.limit = Number.isFinite(limit) && limit > 0 ? Math.min(limit, 5000) : 200;
    const params = filterParams();
    params.set("limit", String(state.limit));
    try {
      const data = await getJSON("/api/events?" + params.toString());
      if (generation !== state.generation) return;
      $("rows").replaceChildren();
      state.events.clear();
      state.gaps = 0;
      state.missing = 0;
      state.skips = 0;
      state.skipped = 0;
      updateBar();
      state.cursor = data.next_since;
      updateSeqs(data);
      addEvents(data.events, false);
      markActiveKinds();
      if (state.following) startStream(); else setStatus("paused");
    } catch (error) {
      if (generation === state.generation) showError(error.message);
    }
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

  async function refreshSide() {
    try {
      const counts = await getJSON("/api/counts");
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
      const kpis = await getJSON("/api/kpis");
      $("kpis").textContent = kpis.kpis === null ? "none" : JSON.stringify(kpis.kpis, null, 1);
    } catch (error) {
      // the stream's own status shows a lost server; keep the last values
    }
  }

  function setup() {
    $("filters").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    $("clear").addEventListener("click", () => {
      for (const name of FILTERS) $("f-" + name).value = "";
      load();
    });
    $("follow").addEventListener("click", () => {
      state.following = !state.following;
      const button = $("follow");
      button.setAttribute("aria-pressed", String(state.following));
      button.textContent = state.following ? "following" : "paused";
      if (state.following) startStream(); else { stopStream(); setStatus("paused"); }
    });
    load();
    refreshSide();
    setInterval(refreshSide, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
