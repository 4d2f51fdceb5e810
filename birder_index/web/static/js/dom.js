// Building the page: every element through h(), every piece of data as text (never innerHTML), so a file named
// <img src=x onerror=...> is shown as those characters and nothing else.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value); // CSSOM: allowed by the page's CSP
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(0)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

export function resolution(img) {
  return img.width && img.height ? `${img.width}×${img.height}` : "";
}

export function date(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ");
}

export function plural(n, one, many) {
  return `${n.toLocaleString()} ${n === 1 ? one : many || one + "s"}`;
}

export function select(options, value, attrs) {
  // options: [[value, text], ...]
  return h("select", attrs, options.map(([v, text]) => h("option", { value: v, selected: String(v) === String(value) }, text)));
}

// A photo card: a thumbnail that shows a placeholder until it has decoded, the file name (the full path on hover),
// its size and resolution, and whatever the view adds below.
export function card(img, { onOpen, thumb, extra = [], classes = "", title, actions = [] } = {}) {
  const image = h("img", { alt: "", loading: "lazy", decoding: "async", draggable: "false" });
  const button = h("button", { class: "thumb", type: "button", title: title || `Search with ${img.path}`,
    "aria-label": `${img.name}: ${title || "search with this photo"}` }, image);
  image.addEventListener("load", () => button.classList.add("loaded"));
  image.addEventListener("error", () => button.classList.add("broken"));
  if (thumb) image.src = thumb;
  else if (img.status === "failed") button.classList.add("broken"); // the build could not read it either
  else preview(image, img.id);
  if (onOpen) button.addEventListener("click", (event) => onOpen(img, event));
  else button.disabled = true;
  const meta = [resolution(img), bytes(img.size)].filter(Boolean).join(" · ");
  return h("figure", { class: `card ${classes}`, dataset: { id: img.id } },
    button,
    h("figcaption", null,
      h("div", { class: "name", title: img.path }, img.name),
      h("div", { class: "meta", title: img.folder ? `in ${img.folder}` : "" }, meta || " "),
      extra,
      actions.length ? h("div", { class: "actions" }, actions) : null));
}

// Previews of the cards made in one go are asked for together: those the server has made already come in one
// answer (a grid of 100 is one request, not 100 six at a time); the others one by one, which makes them.
let waiting = [];
export function preview(image, id) {
  waiting.push([image, id]);
  if (waiting.length === 1) setTimeout(flushPreviews, 0);
}

async function flushPreviews() {
  const batch = waiting;
  waiting = [];
  for (let start = 0; start < batch.length; start += 200) {
    const part = batch.slice(start, start + 200);
    const found = new Map();
    try {
      const response = await fetch(`/api/thumbs?ids=${[...new Set(part.map(([, id]) => id))].join(",")}`, { credentials: "same-origin" });
      if (response.ok) {
        const body = await response.arrayBuffer();
        let offset = 0;
        for (const entry of (response.headers.get("x-thumbs") || "").split(",").filter(Boolean)) {
          const [id, length] = entry.split(":").map(Number);
          found.set(id, new Blob([new Uint8Array(body, offset, length)], { type: "image/webp" }));
          offset += length;
        }
      }
    } catch (e) {
      // the server cannot be reached: each image says so on its own below
    }
    for (const [image, id] of part) {
      const blob = found.get(id);
      if (!blob) {
        image.src = `/api/thumb/${id}`;
        continue;
      }
      const url = URL.createObjectURL(blob);
      const release = () => URL.revokeObjectURL(url);
      image.addEventListener("load", release, { once: true });
      image.addEventListener("error", release, { once: true });
      image.src = url;
    }
  }
}

export function scoreLine(score, label = "") {
  const pct = Math.max(0, Math.min(1, score)) * 100;
  return [
    h("div", { class: "line" }, h("span", { class: "score" }, score.toFixed(4)), label ? h("span", { class: "muted" }, label) : null),
    h("div", { class: "scorebar" }, h("span", { style: { width: `${pct}%` } })),
  ];
}

export function progress(job) {
  const known = job && job.total;
  const bar = h("div", { class: `bar ${known ? "" : "indeterminate"}` }, h("span"));
  if (known) bar.firstChild.style.width = `${Math.round((100 * job.done) / job.total)}%`;
  const text = job ? `${job.stage}${known ? `: ${job.done.toLocaleString()} of ${job.total.toLocaleString()}` : "…"}` : "starting…";
  return h("div", { class: "progress", role: "progressbar", "aria-label": text }, h("div", { class: "muted" }, text), bar);
}
