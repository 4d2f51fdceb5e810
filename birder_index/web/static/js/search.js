// Search: drop or choose a photo (or paste one, or give a path of the index, or click any photo anywhere) and see
// its nearest neighbours. The address says what is shown: #/search?id=42&k=24&folder=birds.
import { api, query } from "./api.js";
import { append, card, clear, h, plural, scoreLine, select } from "./dom.js";

const KS = [12, 24, 48, 96, 200];

export async function render(root, params, app) {
  const state = {
    id: params.get("id"),
    upload: params.get("upload"),
    path: params.get("path"),
    k: Number(params.get("k")) || 24,
    folder: params.get("folder") || "",
    set: params.get("set") || "",
    label: params.get("label") || "",
  };
  const fileInput = h("input", { type: "file", accept: "image/*", class: "hidden", "aria-label": "choose a photo" });
  const drop = h("div", { class: "drop", tabindex: "0", role: "button", "aria-label": "drop a photo here, or choose one" },
    h("strong", null, "Drop a photo here"), "or click to choose one (or paste it)");
  const queryBox = h("div", { class: "query" });
  const pathInput = h("input", { type: "text", placeholder: "a path in the index", "aria-label": "path in the index",
    value: state.path || "" });
  const pathForm = h("form", { class: "row" }, pathInput, h("button", { type: "submit" }, "Search"));
  const kSelect = select(KS.map((k) => [k, `${k} neighbours`]), state.k, { "aria-label": "neighbours" });
  const folderSelect = select([["", "every folder"]], state.folder, { "aria-label": "folder" });
  const setSelect = select([["", "any label"]], state.set, { "aria-label": "label set" });
  const labelSelect = select([["", "—"]], state.label, { "aria-label": "label", disabled: !state.set });
  const results = h("section", { "aria-label": "results" });

  append(root, h("div", { class: "split" },
    h("aside", { class: "panel stack" }, queryBox, drop, fileInput, pathForm,
      h("h3", null, "Show"), kSelect,
      h("h3", null, "Only in"), folderSelect,
      h("div", { class: "row" }, setSelect, labelSelect)),
    results));

  const params_ = () => ({ id: state.id, upload: state.upload, path: state.path, k: state.k, folder: state.folder,
    set: state.set, label: state.set ? state.label : "" });
  const rerun = () => app.go("search", params_());

  drop.addEventListener("click", () => fileInput.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); } });
  fileInput.addEventListener("change", () => fileInput.files[0] && uploadFile(fileInput.files[0]));
  const over = (e) => { e.preventDefault(); drop.classList.add("over"); };
  const leave = () => drop.classList.remove("over");
  const dropped = (e) => {
    e.preventDefault();
    leave();
    const file = [...(e.dataTransfer?.files || [])][0];
    if (file) uploadFile(file);
  };
  root.addEventListener("dragover", over);
  root.addEventListener("dragleave", leave);
  root.addEventListener("drop", dropped);
  const pasted = (e) => {
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) uploadFile(file);
  };
  document.addEventListener("paste", pasted);
  pathForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const path = pathInput.value.trim();
    if (path) app.go("search", { ...params_(), id: null, upload: null, path });
  });
  kSelect.addEventListener("change", () => { state.k = Number(kSelect.value); rerun(); });
  folderSelect.addEventListener("change", () => { state.folder = folderSelect.value; rerun(); });
  setSelect.addEventListener("change", () => { state.set = setSelect.value; state.label = ""; fillLabels(); if (!state.set) rerun(); });
  labelSelect.addEventListener("change", () => { state.label = labelSelect.value; rerun(); });

  let sets = [];
  async function fillFilters() {
    const [folders, labelSets] = await Promise.all([api("/api/folders"), api("/api/labels")]);
    sets = labelSets;
    for (const f of folders) if (f.folder) append(folderSelect, h("option", { value: f.folder, selected: f.folder === state.folder }, `${f.folder} (${f.images})`));
    for (const s of sets) append(setSelect, h("option", { value: s.name, selected: s.name === state.set }, s.name));
    fillLabels();
  }
  function fillLabels() {
    append(clear(labelSelect), h("option", { value: "" }, "—"));
    const chosen = sets.find((s) => s.name === state.set);
    labelSelect.disabled = !chosen;
    for (const c of chosen ? chosen.classes : []) append(labelSelect, h("option", { value: c.label, selected: c.label === state.label }, `${c.label} (${c.images})`));
  }

  async function uploadFile(file) {
    if (file.size > app.info.max_upload_bytes) {
      app.say(`${file.name} is larger than the server's ${Math.round(app.info.max_upload_bytes / 2 ** 20)} MB upload limit`, { error: true });
      return;
    }
    append(clear(queryBox), h("div", { class: "muted" }, `Reading ${file.name}…`,
      app.info.model_loaded ? "" : " (the model loads on the first upload: a few seconds)"));
    try {
      const made = await api("/api/uploads", { method: "POST", raw: file,
        headers: { "content-type": file.type || "application/octet-stream", "x-file-name": encodeURIComponent(file.name) } });
      app.info.model_loaded = true;
      app.go("search", { ...params_(), id: null, path: null, upload: made.upload });
    } catch (e) {
      append(clear(queryBox), h("div", { class: "notice error" }, e.message));
    }
  }

  fillFilters().catch((e) => app.fail(e));
  if (!state.id && !state.upload && !state.path) {
    append(queryBox, h("p", { class: "muted" }, "Search the collection with a photo: one of yours, or any photo of the index (Browse, or a click on any result)."));
    append(results, h("div", { class: "notice" }, app.info.can_embed
      ? "Drop a photo on this page to see the photos of the index nearest to it, or start from one of these."
      : "This index holds imported embeddings without their model: search with a photo of the index, such as these."));
    api(`/api/images${query({ limit: 24, status: "indexed" })}`).then((page) => append(results,
      h("div", { class: "grid" }, page.items.map((img) => card(img, { onOpen: (i) => app.go("search", { ...params_(), id: i.id }) })))))
      .catch((e) => app.fail(e));
    return () => document.removeEventListener("paste", pasted);
  }

  append(results, h("p", { class: "muted" }, "Searching…"));
  try {
    const found = await api(`/api/search${query({ id: state.id, upload: state.upload, path: state.path, k: state.k,
      folder: state.folder, label_set: state.set && state.label ? state.set : "", label: state.set ? state.label : "" })}`);
    showQuery(found.query);
    append(clear(results), 
      h("p", { class: "summary" }, h("strong", null, plural(found.hits.length, "neighbour")),
        found.among !== null ? ` among ${plural(found.among, "photo")} matching the filters` : ` of ${plural(app.info.indexed, "photo")}`,
        ` · ${found.took_ms.toFixed(1)} ms on the server`),
      found.hits.length ? h("div", { class: "grid" }, found.hits.map((hit, n) => card(hit, {
        onOpen: (img) => app.go("search", { ...params_(), id: img.id, upload: null, path: null }),
        extra: scoreLine(hit.score, `#${n + 1}`),
        actions: [h("a", { href: `/api/original/${hit.id}`, target: "_blank", rel: "noopener", class: "muted" }, "open file")],
      }))) : h("div", { class: "notice" }, "No photo matches the filters."));
  } catch (e) {
    append(clear(results), h("div", { class: "notice error" }, e.message));
  }
  return () => document.removeEventListener("paste", pasted);

  function showQuery(q) {
    const thumb = q.kind === "upload" ? `/api/uploads/${q.upload}/thumb` : `/api/thumb/${q.id}`;
    const image = h("img", { alt: "", decoding: "async" });
    const box = h("div", { class: "thumb" }, image);
    image.addEventListener("load", () => box.classList.add("loaded"));
    image.addEventListener("error", () => box.classList.add("broken"));
    image.src = thumb;
    append(clear(queryBox), box,
      h("div", { class: "name", title: q.path || q.name }, q.name),
      h("div", { class: "muted" }, [q.width && q.height ? `${q.width}×${q.height}` : "",
        q.kind === "upload" ? "uploaded (kept in the server's memory only)" : q.path !== q.name ? q.path : ""].filter(Boolean).join(" · ")),
      q.kind === "image" ? h("a", { href: `/api/original/${q.id}`, target: "_blank", rel: "noopener" }, "open the file") : null);
    if (q.kind === "image") pathInput.value = q.path;
  }
}
