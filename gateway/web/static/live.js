// pulse-gateway: live values on the status page, without a reload.
// One GET /api/v1/status every few seconds for every channel at once (never one request per
// row); cells change only when their text does. The display rules mirror gateway/web/pages.py.
"use strict";

const POLL_MS = 2000;
const DASH = "\u2014";

function showNumber(v) {
  if (v === null || v === undefined) return DASH;
  if (v === 0) v = 0;
  return v.toFixed(3);
}
function showTime(t) { return t === null || t === undefined ? DASH : t.replace("T", " "); }
function showWhen(t) { return t === null || t === undefined ? "none" : showTime(t); }
function showAge(seconds) {
  if (seconds === null) return "never";
  const s = Math.floor(Math.max(seconds, 0));
  if (s < 120) return s + " s";
  if (s < 7200) return Math.floor(s / 60) + " min";
  if (s < 172800) return Math.floor(s / 3600) + " h";
  return Math.floor(s / 86400) + " d";
}
function showDuration(seconds) {
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  return (days ? days + " d " : "") + hours + " h " + minutes + " min";
}
function secondsBetween(later, earlier) {
  if (later === null || earlier === null || earlier === undefined) return null;
  return (Date.parse(later) - Date.parse(earlier)) / 1000;
}
function show(kind, value, now) {
  switch (kind) {
    case "number": return showNumber(value);
    case "time": return showTime(value);
    case "age": return showAge(secondsBetween(now, value));
    case "online": return value ? "online" : "offline";
    case "checksum": return value === null ? DASH : value ? "ok" : "BROKEN";
    default: return value === null || value === undefined ? DASH : String(value);
  }
}

// data-k -> how it is shown: the columns of pages.COLUMNS
const KINDS = {
  unit: "text", online: "online", consumption: "number", demand: "number",
  projected_demand: "number", peak_demand: "number", peak_time: "time",
  previous_peak_demand: "number", cumulative_demand: "number", reset_count: "text",
  period_consumption: "number", next_scheduled_reset: "time", last_pulse: "age",
  checksum_ok: "checksum",
};

function setText(el, text) { if (el && el.textContent !== text) el.textContent = text; }

function gatewayValues(g) {
  const b = g.bacnet;
  return {
    version: g.version,
    uptime: showDuration(g.uptime_s),
    time: showTime(g.time),
    local_time: showTime(g.local_time),
    bacnet: b.device_instance + " at " + b.address + ":" + b.port,
    last_checkpoint: showTime(g.last_checkpoint),
    next_scheduled_reset: showWhen(g.next_scheduled_reset),
    last_file_drop: g.last_file_drop || "none",
    next_file_drop: showWhen(g.next_file_drop),
  };
}

function sourceRow(s) {
  const tr = document.createElement("tr");
  tr.className = s.up ? "up" : "down";
  for (const text of [s.id, s.type, s.device, s.up ? "up" : "down",
    showTime(s.last_good_reading), s.error || DASH, String(s.glitches), String(s.channels)]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  return tr;
}

function statusPage() {
  const live = document.getElementById("live");
  const rows = new Map();  // channel id -> {row, cells by key}
  for (const tr of document.querySelectorAll("#channel-table tbody tr")) {
    const cells = {};
    for (const td of tr.querySelectorAll("td[data-k]")) cells[td.dataset.k] = td;
    rows.set(tr.dataset.id, { tr, cells });
  }
  const filter = document.getElementById("filter");
  const form = document.getElementById("filter-form");
  const count = document.getElementById("count");
  let total = null;
  function applyFilter() {
    const wanted = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const [id, r] of rows) {
      const hide = wanted !== "" && !id.toLowerCase().includes(wanted);
      r.tr.classList.toggle("hidden", hide);
      if (!hide) shown += 1;
    }
    const all = total === null ? rows.size : total;
    setText(count, wanted ? shown + " of " + all : String(all));
  }
  // With ?q= the server sent only the matching rows: the form goes to the server again.
  // Otherwise every row is here and the script filters as one types.
  const serverFiltered = Boolean(new URLSearchParams(location.search).get("q"));
  if (!serverFiltered) {
    form.addEventListener("submit", (e) => { e.preventDefault(); applyFilter(); });
    filter.addEventListener("input", applyFilter);
  }

  let failures = 0;
  async function poll() {
    try {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 10000);
      const answer = await fetch("/api/v1/status", { cache: "no-store", signal: controller.signal });
      clearTimeout(timer);
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const doc = await answer.json();
      const g = doc.gateway;
      const values = gatewayValues(g);
      for (const dd of document.querySelectorAll("dd[data-g]")) {
        if (dd.dataset.g in values) setText(dd, values[dd.dataset.g]);
      }
      const tbody = document.getElementById("source-rows");
      tbody.replaceChildren(...doc.sources.map(sourceRow));
      let missing = 0;
      for (const c of doc.channels) {
        const r = rows.get(c.id);
        if (!r) { if (!serverFiltered) missing += 1; continue; }
        for (const key in r.cells) setText(r.cells[key], show(KINDS[key], c[key], g.time));
        r.tr.classList.toggle("off", !c.online);
        r.tr.classList.toggle("bad", c.checksum_ok === false);
      }
      if (!serverFiltered) total = doc.channels.length;
      failures = 0;
      live.className = "live on";
      const note = missing ? "; channels changed: reload the page to see them" : "";
      setText(live, "live, as of " + showTime(g.time) + note);
    } catch (err) {
      failures += 1;
      live.className = "live stale";
      setText(live, "not updating (" + err.message + "); retrying");
    }
    setTimeout(poll, failures ? Math.min(POLL_MS * 2 ** failures, 30000) : POLL_MS);
  }
  poll();
}

function channelPage() {
  const button = document.getElementById("reset");
  if (!button) return;
  const out = document.getElementById("reset-outcome");
  button.addEventListener("click", async () => {
    if (!confirm("Reset the peak demand of " + button.dataset.channel + "?")) return;
    button.disabled = true;
    try {
      const answer = await fetch("/api/v1/channels/" + encodeURIComponent(button.dataset.channel)
        + "/reset", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      const doc = await answer.json();
      out.textContent = answer.ok ? "accepted; reloading"
        : "refused: " + (doc.reason || doc.error);
      if (answer.ok) setTimeout(() => location.reload(), 800);
    } catch (err) {
      out.textContent = "no answer: " + err.message;
    } finally {
      button.disabled = false;
    }
  });
}

if (document.body.dataset.page === "status") statusPage();
if (document.body.dataset.page === "channel") channelPage();
