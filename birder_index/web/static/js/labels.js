// Labels: a label set is the command line's (`birder-index label list` shows the same). Select photos and give
// them a label; then review lookup's suggestions for the unlabelled ones, least confident first, one key press each.
import { api, query, runJob } from "./api.js";
import { append, card, clear, h, plural, progress, select } from "./dom.js";

const PAGE = 100;

export async function render(root, params, app) {
  const ro = app.info.read_only;
  const tab = params.get("tab") === "suggestions" ? "suggestions" : "photos";
  let sets = await api("/api/labels");
  const setName = params.get("set") || (sets[0] && sets[0].name) || "labels";
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const go = (change) => app.go("labels", { set: setName, tab, offset, ...change });

  const setSelect = select([...sets.map((s) => [s.name, s.name]), ...(sets.some((s) => s.name === setName) ? [] : [[setName, `${setName} (new)`]])], setName, { "aria-label": "label set" });
  const newSet = h("input", { type: "text", placeholder: "new set name", "aria-label": "new set name", style: { width: "150px" } });
  const newForm = h("form", { class: "row" }, newSet, h("button", { type: "submit" }, "New set"));
  const chips = h("div", { class: "chips", "aria-label": "classes" });
  const tabs = h("div", { class: "row" },
    h("button", { type: "button", class: tab === "photos" ? "primary" : "", onclick: () => go({ tab: "photos", offset: 0 }) }, "Label photos"),
    h("button", { type: "button", class: tab === "suggestions" ? "primary" : "", onclick: () => go({ tab: "suggestions", offset: 0 }) }, "Suggestions"));
  const body = h("section");
  append(root, h("h2", null, "Labels"),
    h("div", { class: "toolbar" }, h("label", null, "set", setSelect), newForm, h("span", { class: "grow" }), tabs),
    chips, body);
  setSelect.addEventListener("change", () => app.go("labels", { set: setSelect.value, tab }));
  newForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const name = newSet.value.trim();
    if (name) app.go("labels", { set: name, tab: "photos" });
  });

  function drawChips() {
    const current = sets.find((s) => s.name === setName);
    clear(chips);
    if (!current || !current.classes.length) {
      append(chips, h("span", { class: "muted" }, `Set “${setName}” has no labelled photos yet: select photos below and give them a label.`));
      return;
    }
    append(chips, current.classes.map((c) => h("span", { class: "chip", title: `${plural(c.images, "photo")} labelled ${c.label}` }, `${c.label} · ${c.images}`)));
  }
  async function refreshSets() {
    sets = await api("/api/labels");
    drawChips();
    for (const option of setSelect.options) if (sets.some((s) => s.name === option.value)) option.textContent = option.value;
  }
  drawChips();
  if (tab === "photos") return photos();
  return suggestions();

  // -- label photos: a page of the collection, selected by click (shift: a range, ctrl/cmd: add one) ---------------
  async function photos() {
    const page = await api(`/api/images${query({ offset, limit: PAGE, label_set: setName })}`);
    const selected = new Set();
    let anchor = null;
    const cards = page.items.map((img) => {
      const indexed = img.status === "indexed";
      const badge = h("span", { class: `badge ${img.label ? "label" : indexed ? "" : "unknown"}` }, img.label || (indexed ? "unlabelled" : `${img.status}: cannot be labelled`));
      const c = card(img, {
        title: "select",
        onOpen: indexed ? (i, event) => toggle(i, event) : null,
        extra: h("div", { class: "line" }, badge),
      });
      c.badge = badge;
      return c;
    });
    const byId = new Map(cards.map((c) => [Number(c.dataset.id), c]));
    const order = page.items.filter((i) => i.status === "indexed").map((i) => i.id);
    const count = h("strong", null, "0 selected");
    const labelInput = h("input", { type: "text", list: "classes", placeholder: "label", "aria-label": "label", disabled: ro });
    const datalist = h("datalist", { id: "classes" });
    const assign = h("button", { type: "submit", class: "primary", disabled: true }, "Assign");
    const unassign = h("button", { type: "button", disabled: true }, "Remove label");
    const none = h("button", { type: "button", onclick: () => { selected.clear(); paint(); } }, "Clear");
    const bar = h("form", { class: "panel selectionbar" }, count, labelInput, datalist, assign, unassign, none,
      h("span", { class: "muted" }, ro ? "read-only: labels cannot be changed" : "click to select, shift-click for a range; type a label and press Enter"));
    const last = Math.min(page.total, offset + page.items.length);
    append(clear(body), 
      h("div", { class: "toolbar" }, h("span", { class: "grow" }),
        h("span", { class: "muted" }, `${(offset + 1).toLocaleString()}–${last.toLocaleString()} of ${page.total.toLocaleString()}`),
        h("button", { type: "button", disabled: offset === 0, onclick: () => go({ offset: Math.max(0, offset - PAGE) }) }, "‹ previous"),
        h("button", { type: "button", disabled: last >= page.total, onclick: () => go({ offset: offset + PAGE }) }, "next ›")),
      h("div", { class: "grid" }, cards), bar);
    const current = sets.find((s) => s.name === setName);
    for (const c of current ? current.classes : []) append(datalist, h("option", { value: c.label }));

    function toggle(img, event) {
      if (event.shiftKey && anchor !== null) {
        const [a, b] = [order.indexOf(anchor), order.indexOf(img.id)].sort((x, y) => x - y);
        for (const id of order.slice(a, b + 1)) selected.add(id);
      } else if (selected.has(img.id) && !event.shiftKey) {
        selected.delete(img.id);
      } else {
        selected.add(img.id);
      }
      anchor = img.id;
      paint();
      if (!ro) labelInput.focus();
    }
    function paint() {
      for (const [id, c] of byId) c.classList.toggle("selected", selected.has(id));
      count.textContent = `${selected.size} selected`;
      assign.disabled = unassign.disabled = ro || selected.size === 0;
    }
    bar.addEventListener("submit", async (e) => {
      e.preventDefault();
      const label = labelInput.value.trim();
      if (!label || !selected.size) return;
      try {
        const ids = [...selected];
        const r = await api("/api/labels/assign", { method: "POST", body: { set: setName, ids, label } });
        for (const id of ids) { const b = byId.get(id).badge; b.textContent = r.label; b.className = "badge label"; }
        app.say(`${plural(r.labelled, "photo")} labelled “${r.label}” in set “${r.set}”`);
        selected.clear();
        paint();
        labelInput.value = "";
        await refreshSets();
      } catch (err) {
        app.fail(err);
      }
    });
    unassign.addEventListener("click", async () => {
      try {
        const ids = [...selected];
        const r = await api("/api/labels/remove", { method: "POST", body: { set: setName, ids } });
        for (const id of ids) { const b = byId.get(id).badge; b.textContent = "unlabelled"; b.className = "badge"; }
        app.say(`${plural(r.removed, "label")} removed`);
        selected.clear();
        paint();
        await refreshSets();
      } catch (err) {
        app.fail(err);
      }
    });
  }

  // -- suggestions: the unlabelled photos least confident first; 1/Enter accepts, 2-3 pick another class, typing
  // a letter starts a correction, → skips, ← goes back ------------------------------------------------------------------
  async function suggestions() {
    const method = select([["knn", "kNN"], ["prototype", "prototypes"], ["probe", "linear probe"]], params.get("method") || "knn", { "aria-label": "method" });
    const compute = h("button", { type: "button", class: "primary" }, "Compute suggestions");
    const jobBox = h("div");
    const review = h("div");
    append(clear(body), h("div", { class: "toolbar" }, h("span", null, "Suggest labels with"), method, compute), jobBox, review);
    let items = [];
    let position = 0;
    let remaining = 0;
    let seen = 0; // suggestions skipped: the server's offset among the open ones

    compute.addEventListener("click", async () => {
      compute.disabled = true;
      try {
        await runJob(api("/api/labels/suggest", { method: "POST", body: { set: setName, method: method.value } }), (job) => append(clear(jobBox), progress(job)));
        clear(jobBox);
        seen = 0;
        await fetchMore(true);
      } catch (e) {
        append(clear(jobBox), h("div", { class: "notice error" }, e.message));
      } finally {
        compute.disabled = false;
      }
    });

    async function fetchMore(reset) {
      const got = await api(`/api/labels/suggestions${query({ set: setName, offset: seen, limit: 24 })}`);
      remaining = got.remaining;
      items = reset ? got.items : items.slice(position).concat(got.items.filter((s) => !items.some((t) => t.image.id === s.image.id)));
      position = 0;
      draw();
    }

    const keys = (e) => {
      if (!items.length || e.target.closest("input, select, textarea")) return;
      const current = items[position];
      if (e.key === "Enter" || e.key === "1") { e.preventDefault(); accept(current, current.choices[0].label); }
      else if (e.key === "2" || e.key === "3") { const c = current.choices[Number(e.key) - 1]; if (c) { e.preventDefault(); accept(current, c.label); } }
      else if (e.key === "ArrowRight" || e.key === "s") { e.preventDefault(); skip(); }
      else if (e.key === "ArrowLeft") { e.preventDefault(); if (position > 0) { position -= 1; draw(); } }
      else if (e.key.length === 1 && /\S/.test(e.key) && !e.ctrlKey && !e.metaKey && !ro) {
        const input = review.querySelector("input.correct");
        if (input) { input.focus(); }
      }
    };
    document.addEventListener("keydown", keys);

    function skip() {
      seen += 1;
      position += 1;
      if (position >= items.length - 4) fetchMore(false).catch((e) => app.fail(e));
      else draw();
    }

    async function accept(item, label) {
      if (ro) { app.say("the server runs with --read-only: labels cannot be changed", { error: true }); return; }
      try {
        await api("/api/labels/assign", { method: "POST", body: { set: setName, ids: [item.image.id], label } });
        app.say(`${item.image.name}: ${label}`, { timeout: 2500 });
        items.splice(position, 1);
        remaining -= 1;
        if (items.length - position < 4) await fetchMore(false);
        else draw();
        refreshSets();
      } catch (e) {
        app.fail(e);
      }
    }

    function draw() {
      clear(review);
      if (!items.length || position >= items.length) {
        append(review, h("div", { class: "notice" }, remaining ? "No more suggestions on this page." : "Compute suggestions to review the unlabelled photos, least confident first."));
        return;
      }
      const s = items[position];
      const correction = h("input", { type: "text", class: "correct", list: "classes-suggest", placeholder: "another label…", "aria-label": "correct label", disabled: ro });
      const form = h("form", { class: "row" }, correction, h("button", { type: "submit", disabled: ro }, "Label"));
      form.addEventListener("submit", (e) => { e.preventDefault(); const v = correction.value.trim(); if (v) accept(s, v); });
      const classes = (sets.find((x) => x.name === setName) || { classes: [] }).classes;
      const big = card(s.image, { classes: "current", onOpen: (img) => app.go("search", { id: img.id }), title: "search with this photo" });
      append(review, 
        h("p", { class: "summary" }, h("strong", null, plural(remaining, "unlabelled photo")), " to review in set “", setName, "”, least confident first"),
        h("div", { class: "review" },
          h("div", { class: "big" }, big),
          h("div", { class: "stack" },
            s.unknown ? h("span", { class: "badge unknown" }, "unknown: below the open-set threshold") : null,
            h("div", { class: "choices" }, s.choices.map((c, n) => h("button", { type: "button", class: n === 0 ? "primary" : "", disabled: ro, onclick: () => accept(s, c.label) },
              h("span", null, h("kbd", null, String(n + 1)), " ", c.label), h("span", { class: "score" }, c.score.toFixed(3))))),
            form, h("datalist", { id: "classes-suggest" }, classes.map((c) => h("option", { value: c.label }))),
            h("div", { class: "row" }, h("button", { type: "button", onclick: () => { if (position > 0) { position -= 1; draw(); } } }, "‹ back"),
              h("button", { type: "button", onclick: skip }, "skip ›")),
            h("div", { class: "keys" }, h("kbd", null, "Enter"), " or ", h("kbd", null, "1"), " accept · ", h("kbd", null, "2"), " ", h("kbd", null, "3"),
              " the other classes · type to correct · ", h("kbd", null, "→"), " skip · ", h("kbd", null, "←"), " back"))),
        h("h3", null, "Next"),
        h("div", { class: "queue" }, items.slice(position + 1, position + 13).map((t) => card(t.image, {
          extra: h("div", { class: "meta" }, `${t.choices[0].label} ${t.choices[0].score.toFixed(2)}`),
        }))));
    }

    try {
      await fetchMore(true);
    } catch (e) {
      if (e.status !== 404) app.fail(e);
      draw();
    }
    return () => document.removeEventListener("keydown", keys);
  }
}
