// Sync Center's page script: follows the event stream and sends the
// buttons' requests. Every text from the server is set with textContent
// (never parsed as HTML); state goes in data-* attributes.
"use strict";

const csrf = document.querySelector('meta[name="csrf"]').content;
const eventsAfter = document.querySelector('meta[name="events-after"]').content;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function notice(text, level) {
  const p = el("p", { class: "notice " + (level || "error") }, text);
  document.getElementById("notices").append(p);
  setTimeout(() => p.remove(), 15000);
}

async function api(method, path, body) {
  const init = { method, headers: { "X-Syncmgr-CSRF": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch("/api/v1" + path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((data && data.error) || response.statusText);
    error.status = response.status;
    error.data = data;
    throw error;
  }
  return data;
}

function attempt(promise) {
  return promise.catch((e) => notice(e.message));
}

// -- items: live status, coalesced to one DOM update per frame -----------

const pending = new Map();
let frame = 0;

function itemRow(handler, item) {
  return document.querySelector(
    'tr.item[data-handler="' + CSS.escape(handler) + '"][data-item="' + CSS.escape(item) + '"]');
}

function applyItem(e) {
  const row = itemRow(e.handler, e.item);
  if (!row) return;
  row.dataset.state = e.status;
  row.querySelector(".state").textContent = e.status;
  row.querySelector(".text").textContent = e.text || "";
  let pct = 0;
  if (e.max && e.value !== undefined) pct = Math.floor(Math.min(e.value, e.max) * 100 / e.max);
  if (e.status === "succeeded") pct = 100;
  row.dataset.pct = String(pct);
  row.querySelector("progress").value = pct;
}

function queueItem(e) {
  pending.set(e.handler + "\u0000" + e.item, e);
  if (!frame) {
    frame = requestAnimationFrame(() => {
      frame = 0;
      const updates = Array.from(pending.values());
      pending.clear();
      updates.forEach(applyItem);
    });
  }
}

// -- the results log, history and schedules ------------------------------

function logEntry(e) {
  const summary = el("summary", {},
    el("time", { datetime: e.time }, e.time), " ",
    el("span", { class: "level" }, e.level), " ",
    el("span", { class: "who" }, e.handler + (e.item ? "/" + e.item : "")), " ",
    el("span", { class: "text" }, e.text));
  const details = el("details", {}, summary);
  if (e.session) details.append(el("p", {}, "session ", el("code", {}, e.session)));
  if (e.actionable) details.append(el("button", { type: "button", "data-action": "show" }, "Act on it"));
  details.append(el("button", { type: "button", "data-action": "delete" }, "Delete"));
  return el("li", { class: "entry", "data-id": e.id, "data-level": e.level }, details);
}

async function reloadLog() {
  const level = document.getElementById("log-level").value;
  const entries = await api("GET", "/log" + (level ? "?level=" + encodeURIComponent(level) : ""));
  entries.reverse();
  document.getElementById("log-entries").replaceChildren(...entries.slice(0, 200).map(logEntry));
}

function conflictRow(c) {
  const versions = c.versions.map((v, n) => {
    const li = el("li", {}, el("span", { class: "label" }, v.label));
    if (v.detail) li.append(" (" + v.detail + ")");
    if (v.size !== undefined) li.append(", " + v.size + " bytes");
    if (v.modified) li.append(", modified ", el("time", { datetime: v.modified }, v.modified));
    li.append(" ", el("button", { type: "button", "data-action": "keep", "data-version": String(n) }, "Keep this"));
    return li;
  });
  const row = el("li", { class: "conflict", "data-id": c.id },
    el("p", {}, el("span", { class: "who" }, c.handler + "/" + c.item), " ", el("span", { class: "text" }, c.text)));
  if (c.reason) row.append(el("p", { class: "reason" }, "Not applied: " + c.reason));
  row.append(el("ol", { class: "versions", start: "0" }, ...versions),
    el("button", { type: "button", "data-action": "keep-all" }, "Keep all"));
  return row;
}

async function reloadConflicts() {
  const conflicts = await api("GET", "/conflicts");
  document.getElementById("conflict-list").replaceChildren(...conflicts.map(conflictRow));
  document.getElementById("conflicts-none").hidden = conflicts.length > 0;
  // The notice says how many wait, as the page rendered it.
  let waiting = document.querySelector('#notices [data-notice="conflicts"]');
  if (conflicts.length === 0) {
    if (waiting) waiting.remove();
    return;
  }
  if (!waiting) {
    waiting = el("p", { class: "notice warning", "data-notice": "conflicts" });
    document.getElementById("notices").append(waiting);
  }
  const n = conflicts.length;
  waiting.replaceChildren(n + (n === 1 ? " conflict waits" : " conflicts wait") +
    " for your decision: see ", el("a", { href: "#conflicts" }, "Conflicts"), ".");
}

async function reloadHistory() {
  const sessions = await api("GET", "/history?limit=20");
  const rows = sessions.map((s) => {
    const outcome = s.outcome || "running";
    const c = s.counts;
    return el("tr", { "data-session": s.id, "data-outcome": outcome },
      el("td", {}, el("time", { datetime: s.started }, s.started)),
      el("td", {}, s.trigger),
      el("td", {}, s.reason || ""),
      el("td", { class: "outcome" }, outcome),
      el("td", {}, c.succeeded + " ok, " + c.failed + " failed, " + c.stopped + " stopped"));
  });
  document.getElementById("history-rows").replaceChildren(...rows);
}

async function reloadSchedules() {
  const schedules = await api("GET", "/schedules");
  const rows = schedules.map((s) => {
    const when = s.every ? "every " + s.every : "cron " + s.cron + (s.timezone ? " (" + s.timezone + ")" : "");
    const targets = s.targets.length ? s.targets.join(" ") : "every handler";
    return el("li", { "data-schedule": s.name }, el("strong", {}, s.name), " " + when + " — " + targets +
      "; next " + (s.nextRun || "never") + " ",
      el("button", { type: "button", "data-action": "remove-schedule" }, "Remove"));
  });
  document.getElementById("schedule-list").replaceChildren(...rows);
}

function handlerState(name, state) {
  const article = document.querySelector('article.handler[data-handler="' + CSS.escape(name) + '"]');
  if (!article) return;
  article.dataset.state = state;
  article.querySelector(".reg-state").textContent = state;
}

// -- the event stream ----------------------------------------------------

function onEvent(e) {
  switch (e.event) {
    case "item":
      queueItem(e);
      if (!["succeeded", "failed", "skipped", "stopped", "deleted"].includes(e.status)) {
        handlerState(e.handler, "running");
      }
      break;
    case "sessionStarted":
      break;
    case "log": {
      const level = document.getElementById("log-level").value;
      const rank = { information: 0, warning: 1, error: 2 };
      if (!level || rank[e.level] >= rank[level]) {
        document.getElementById("log-entries").prepend(logEntry(e));
      }
      break;
    }
    case "sessionFinished":
      for (const item of e.items) queueItem({ handler: item.handler, item: item.item, status: item.status });
      attempt(reloadHistory());
      for (const name of new Set(e.items.map((i) => i.handler))) handlerState(name, "idle");
      break;
    case "conflict":
    case "conflictResolved":
    case "conflictRefused":
      attempt(reloadConflicts());
      break;
    case "queued":
      for (const target of e.targets) handlerState(target.split("/")[0], "queued");
      break;
    default:
      break;
  }
}

function connect() {
  const status = document.getElementById("connection");
  const source = new EventSource("/api/v1/events?after=" + encodeURIComponent(eventsAfter));
  source.onopen = () => { status.dataset.state = "live"; status.textContent = "live"; };
  source.onerror = () => { status.dataset.state = "reconnecting"; status.textContent = "reconnecting…"; };
  source.onmessage = (m) => onEvent(JSON.parse(m.data));
  // The server could not replay what we missed: start from a fresh page.
  source.addEventListener("resync", () => { source.close(); location.reload(); });
}

// -- buttons -------------------------------------------------------------

function confirmDialog(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

async function actOn(id) {
  try {
    await api("POST", "/log/" + id + "/show", {});
  } catch (e) {
    if (e.status === 409 && e.data && e.data.confirm) {
      if (await confirmDialog(e.data.confirm.text)) {
        await api("POST", "/log/" + id + "/show", { confirm: true });
      }
      return;
    }
    throw e;
  }
}

function target(button) {
  const row = button.closest("tr.item");
  if (row) return [row.dataset.handler + "/" + row.dataset.item];
  const handler = button.closest("article.handler");
  return handler ? [handler.dataset.handler] : [];
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  const entry = button.closest("li.entry");
  switch (action) {
    case "sync":
      attempt(api("POST", "/sync", { targets: target(button) }));
      break;
    case "stop":
      attempt(api("POST", "/cancel", { targets: target(button) }));
      break;
    case "sync-all":
      attempt(api("POST", "/sync", { targets: [] }));
      break;
    case "stop-all":
      attempt(api("POST", "/cancel", { targets: [] }));
      break;
    case "show":
      attempt(actOn(entry.dataset.id));
      break;
    case "delete":
      attempt(api("DELETE", "/log/" + entry.dataset.id).then(() => entry.remove()));
      break;
    case "keep":
    case "keep-all": {
      const conflict = button.closest("li.conflict");
      const keep = action === "keep" ? Number(button.dataset.version) : null;
      conflict.dataset.state = "resolving";
      attempt(api("POST", "/conflicts/" + conflict.dataset.id + "/resolve", { keep }));
      break;
    }
    case "remove-schedule": {
      const name = button.closest("li").dataset.schedule;
      attempt(api("DELETE", "/schedules/" + encodeURIComponent(name)).then(reloadSchedules));
      break;
    }
    default:
      break;
  }
});

document.addEventListener("change", (event) => {
  const box = event.target;
  if (box.matches('input[type="checkbox"][data-event]')) {
    const row = box.closest("tr.item");
    const choice = { handler: row.dataset.handler, item: row.dataset.item, event: box.dataset.event, checked: box.checked };
    box.dataset.saved = "saving";
    api("PUT", "/choices", choice)
      .then(() => { box.dataset.saved = "yes"; })
      .catch((e) => { box.checked = !box.checked; box.dataset.saved = "no"; notice(e.message); });
  } else if (box.id === "log-level") {
    attempt(reloadLog());
  }
});

document.getElementById("schedule-add").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const text = (k) => (form.get(k) || "").trim();
  const body = { name: text("name"), targets: text("targets").split(/\s+/).filter(Boolean) };
  if (text("every")) body.every = text("every");
  if (text("cron")) body.cron = text("cron");
  attempt(api("POST", "/schedules", body).then(() => { event.target.reset(); return reloadSchedules(); }));
});

// Opened from a notification: show that session's entries.
if (location.hash.startsWith("#session=")) {
  document.getElementById("log").scrollIntoView();
}

connect();
