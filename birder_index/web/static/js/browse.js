// Browse: the collection a page at a time (never all of it), by path or file date, one folder at a time; failed
// files with the reason they could not be indexed.
import { api, query } from "./api.js";
import { append, bytes, card, clear, date, h, plural, select } from "./dom.js";

const PAGE = 100;
export const needsInfo = false;

export async function render(root, params, app) {
  const state = {
    offset: Math.max(0, Number(params.get("offset")) || 0),
    sort: params.get("sort") || "path",
    folder: params.get("folder") || "",
    status: params.get("status") || "all",
  };
  const go = (change) => app.go("browse", { ...state, ...change });
  const sortSelect = select([["path", "by path"], ["date", "oldest first"], ["-date", "newest first"]], state.sort, { "aria-label": "order" });
  const folderSelect = select([["", "every folder"]], state.folder, { "aria-label": "folder" });
  const statusSelect = select([["all", "every file"], ["indexed", "indexed only"], ["failed", "failed only"], ["pending", "pending only"]], state.status, { "aria-label": "status" });
  const pager = h("div", { class: "pager" });
  const body = h("section", { "aria-label": "photos" }, h("p", { class: "muted" }, "Loading…"));
  append(root, h("div", { class: "toolbar" }, sortSelect, folderSelect, statusSelect, h("span", { class: "grow" }), pager), body);
  sortSelect.addEventListener("change", () => go({ sort: sortSelect.value, offset: 0 }));
  folderSelect.addEventListener("change", () => go({ folder: folderSelect.value, offset: 0 }));
  statusSelect.addEventListener("change", () => go({ status: statusSelect.value, offset: 0 }));

  api("/api/folders").then((folders) => {
    for (const f of folders) if (f.folder) append(folderSelect, h("option", { value: f.folder, selected: f.folder === state.folder }, `${f.folder} (${f.images})`));
  }).catch((e) => app.fail(e));

  const page = await api(`/api/images${query({ offset: state.offset, limit: PAGE, sort: state.sort, folder: state.folder, status: state.status === "all" ? "" : state.status })}`);
  const last = Math.min(page.total, state.offset + page.items.length);
  append(pager, 
    h("span", { class: "muted" }, page.total ? `${(state.offset + 1).toLocaleString()}–${last.toLocaleString()} of ${page.total.toLocaleString()}` : "none"),
    h("button", { type: "button", disabled: state.offset === 0, onclick: () => go({ offset: Math.max(0, state.offset - PAGE) }) }, "‹ previous"),
    h("button", { type: "button", disabled: last >= page.total, onclick: () => go({ offset: state.offset + PAGE }) }, "next ›"));
  clear(body);
  if (!page.items.length) {
    append(body, h("div", { class: "notice" }, state.status === "failed" ? "No file failed: every photo was indexed." : "No photos here."));
    return;
  }
  if (state.status === "indexed" || state.status === "all") {
    append(body, h("div", { class: "grid" }, page.items.map((img) => img.status === "indexed" ? card(img, {
      onOpen: (i) => app.go("search", { id: i.id }),
      extra: h("div", { class: "meta" }, date(img.mtime)),
    }) : card(img, { // not searchable: its reason instead of a search
      extra: h("div", { class: "line" }, h("span", { class: "badge unknown" }, img.status), h("span", { class: "meta", title: img.error || "" }, img.error || "waiting for the next build")),
    }))));
    return;
  }
  append(body, h("table", { class: "failed" },
    h("thead", null, h("tr", null, h("th", null, "file"), h("th", null, "status"), h("th", null, "reason"), h("th", null, "size"))),
    h("tbody", null, page.items.map((img) => h("tr", null,
      h("td", null, img.path), h("td", null, img.status), h("td", null, img.error || ""), h("td", null, bytes(img.size)))))));
  append(body, h("p", { class: "muted" }, plural(page.total, "file"), " listed; `birder-index build --retry-failed` tries failed files again."));
}
