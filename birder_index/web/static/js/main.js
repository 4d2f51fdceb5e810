// The page: a view per capability, chosen by the address (#/search?id=42 shows the neighbours of photo 42, and
// reloading or sharing that address shows them again).
import { api } from "./api.js";
import { append, clear, h, plural } from "./dom.js";
import * as browse from "./browse.js";
import * as duplicates from "./duplicates.js";
import * as labels from "./labels.js";
import * as probe from "./probe.js";
import * as search from "./search.js";

const VIEWS = { search, browse, duplicates, labels, probe };
const view = document.getElementById("view");
let current = null; // { name, cleanup }

export const app = {
  info: null,
  ready: null, // the first /api/info, which most views wait for

  go(name, params = {}) {
    const text = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();
    const hash = `#/${name}${text ? `?${text}` : ""}`;
    if (location.hash === hash) route();
    else location.hash = hash;
  },

  // Replace the address without drawing the view again (a view that already shows what it says).
  mark(name, params = {}) {
    const text = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();
    history.replaceState(null, "", `#/${name}${text ? `?${text}` : ""}`);
  },

  say(text, { error = false, timeout = 6000 } = {}) {
    const box = document.getElementById("messages");
    const close = h("button", { type: "button", "aria-label": "dismiss" }, "×");
    const item = h("div", { class: `message ${error ? "error" : ""}` }, h("div", { class: "text" }, text), close);
    close.addEventListener("click", () => item.remove());
    append(box, item);
    if (timeout) setTimeout(() => item.remove(), error ? timeout * 2 : timeout);
  },

  fail(e) {
    app.say(e && e.message ? e.message : String(e), { error: true });
  },

  async refreshInfo() {
    app.info = await api("/api/info");
    drawStatus();
    return app.info;
  },
};

function drawStatus() {
  const info = app.info;
  const status = clear(document.getElementById("status"));
  if (!info) return;
  append(status, [
    h("span", { title: info.root || info.index_dir }, `${plural(info.indexed, "photo")}`),
    info.failed ? h("a", { href: "#/browse?status=failed" }, `${info.failed} failed`) : null,
    h("span", { title: `${info.embedding_dim}-d embeddings, FAISS ${info.faiss || "none"}` }, info.model || "no model"),
    info.read_only ? h("span", { class: "badge ro", title: "started with --read-only: nothing can be changed" }, "read-only") : null,
  ]);
}

function parse() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, text] = hash.split("?", 2);
  return { name: VIEWS[name] ? name : "search", params: new URLSearchParams(text || "") };
}

async function route() {
  const { name, params } = parse();
  for (const a of document.querySelectorAll(".top nav a")) a.classList.toggle("active", a.dataset.view === name);
  if (current && current.cleanup) current.cleanup();
  for (const m of document.querySelectorAll("#messages .message:not(.error)")) m.remove(); // news of the last view
  const mine = (current = { name, cleanup: null });
  clear(view);
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · birder-index`;
  try {
    if (VIEWS[name].needsInfo !== false) await app.ready; // Browse draws while /api/info is on its way
    const cleanup = await VIEWS[name].render(view, params, app);
    if (current === mine) mine.cleanup = cleanup || null;
    else if (cleanup) cleanup();
  } catch (e) {
    if (current === mine) append(view, h("div", { class: "notice error" }, e.message || String(e)));
  }
}

async function start() {
  if (new URLSearchParams(location.search).has("token")) {
    // the address carried the server's token: the cookie holds it now, so it leaves the address bar and history
    history.replaceState(null, "", `${location.pathname}${location.hash}`);
  }
  app.ready = app.refreshInfo();
  app.ready.catch((e) => append(clear(view), h("div", { class: "notice error" }, e.message)));
  window.addEventListener("hashchange", route);
  await route();
}

start();
