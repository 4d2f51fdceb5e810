// Duplicates: the groups `birder-index dedup` finds, the keeper marked; change the keeper; mark a group or a pair
// "not duplicates" (kept in the index: the command line's dedup honours it too); move or delete duplicates with
// the command line's safety: a plan shown first, nothing done without a confirmation, an undo.
import { api, query, runJob } from "./api.js";
import { append, card, clear, h, plural, progress, scoreLine, select } from "./dom.js";

const PER_PAGE = 20;

export async function render(root, params, app) {
  const ro = app.info.read_only;
  let page = Math.max(0, Number(params.get("page")) || 0);
  let data = null; // the groups page shown
  let stopped = false;

  const mode = { value: "calibrated" };
  const precision = h("input", { type: "number", min: "0.5", max: "0.999", step: "0.001", value: "0.99", "aria-label": "precision", style: { width: "80px" } });
  const threshold = h("input", { type: "number", min: "0.5", max: "1", step: "0.005", value: "0.90", "aria-label": "threshold", style: { width: "80px" } });
  const radio = (value, text, input) => {
    const r = h("input", { type: "radio", name: "mode", value, checked: mode.value === value });
    r.addEventListener("change", () => { mode.value = value; });
    return h("label", null, r, text, input);
  };
  const keep = select(app.info.keep_policies.map((p) => [p, `keep the ${p}`]), "largest", { "aria-label": "keeper" });
  const ignoreColour = h("input", { type: "checkbox" });
  const recalibrate = h("input", { type: "checkbox" });
  const runButton = h("button", { type: "submit", class: "primary" }, "Find duplicates");
  const calibration = h("div", { class: "muted" });
  const form = h("form", { class: "panel stack" },
    h("div", { class: "toolbar" },
      radio("calibrated", "calibrated threshold, precision ", precision),
      radio("fixed", "fixed threshold ", threshold),
      keep,
      h("label", { title: "near duplicates may differ in colour (greyscale or recoloured copies)" }, ignoreColour, "ignore colour"),
      h("label", { title: "calibrate again instead of using the stored calibration" }, recalibrate, "recalibrate"),
      runButton),
    calibration);
  const jobBox = h("div");
  const results = h("section", { "aria-label": "groups" });
  const actions = h("section", { "aria-label": "actions" });
  const history = h("section", { "aria-label": "plans" });
  const marks = h("section", { "aria-label": "not duplicates" });
  append(root, h("h2", null, "Duplicates"), form, jobBox, results, actions, marks, history);

  const showCalibration = () => api("/api/dedup/calibration").then((cal) => {
    clear(calibration);
    if (!cal) {
      append(calibration, "No stored calibration: the first run calibrates the threshold on a sample of the collection (it embeds variants of sampled photos: a minute or more on a CPU).");
      return;
    }
    precision.value = cal.precision;
    append(calibration, `Stored calibration: threshold ${cal.threshold.toFixed(4)}${cal.thumbnail_min ? ` and thumbnail bar ${cal.thumbnail_min.toFixed(3)}` : ""} for precision ${cal.precision} (estimated ${cal.estimated_precision.toFixed(3)} on ${cal.sample} photos).`);
  }).catch((e) => app.fail(e));
  showCalibration();

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { keep: keep.value, ignore_colour: ignoreColour.checked, recalibrate: recalibrate.checked };
    if (mode.value === "fixed") body.threshold = Number(threshold.value);
    else body.precision = Number(precision.value);
    runButton.disabled = true;
    try {
      const done = await runJob(api("/api/dedup/run", { method: "POST", body }), (job) => append(clear(jobBox), progress(job)));
      clear(jobBox);
      if (done.calibration && done.calibration.fresh) {
        app.say(`calibrated: threshold ${done.calibration.threshold.toFixed(4)} for precision ${done.calibration.precision}`);
        showCalibration();
      }
      page = 0;
      app.mark("duplicates", {});
      await load();
    } catch (err) {
      append(clear(jobBox), h("div", { class: "notice error" }, err.message));
    } finally {
      runButton.disabled = false;
    }
  });

  async function load() {
    try {
      data = await api(`/api/dedup/groups${query({ offset: page * PER_PAGE, limit: PER_PAGE })}`);
    } catch (e) {
      data = null;
      append(clear(results), h("div", { class: "notice" }, e.status === 404 ? "Find duplicates to review them here: groups of near or exact copies, each with the photo to keep." : e.message));
      clear(actions);
      return;
    }
    drawGroups();
    drawActions();
  }

  function drawGroups() {
    const pages = Math.max(1, Math.ceil(data.groups_total / PER_PAGE));
    const pager = h("div", { class: "pager" },
      h("button", { type: "button", disabled: page === 0, onclick: () => { page -= 1; app.mark("duplicates", { page }); load(); } }, "‹ previous"),
      h("span", { class: "muted" }, `page ${page + 1} of ${pages}`),
      h("button", { type: "button", disabled: page + 1 >= pages, onclick: () => { page += 1; app.mark("duplicates", { page }); load(); } }, "next ›"));
    append(clear(results), 
      h("div", { class: "toolbar" },
        h("p", { class: "summary" }, h("strong", null, `${plural(data.groups_total, "group")}, ${plural(data.duplicates_total, "duplicate")}`),
          ` at threshold ${data.threshold.toFixed(4)}${data.thumbnail_min ? ` or thumbnail ${data.thumbnail_min.toFixed(3)}` : ""}, keeping the ${data.keep}`),
        h("span", { class: "grow" }), data.groups_total > PER_PAGE ? pager : null),
      data.notes.map((n) => h("div", { class: "notice" }, n)),
      data.groups.length ? data.groups.map(group) : h("div", { class: "notice" }, "No duplicates at this threshold."));
  }

  function group(g) {
    const ids = [g.keeper.id, ...g.duplicates.map((d) => d.id)];
    const markAll = h("button", { type: "button", class: "small", disabled: ro, title: "these photos are not copies of each other: dedup (here and on the command line) will not group them again",
      onclick: () => mark(ids, `group ${g.number + 1}`) }, "Not duplicates");
    const keeperCard = card(g.keeper, {
      classes: "keeper",
      onOpen: (img) => app.go("search", { id: img.id }),
      extra: h("div", { class: "line" }, h("span", { class: "badge keeper" }, "keep"), h("span", { class: "muted" }, data.keep)),
    });
    const dupCards = g.duplicates.map((d) => card(d, {
      onOpen: (img) => app.go("search", { id: img.id }),
      extra: [
        h("div", { class: "line" }, h("span", { class: `badge ${d.kind}` }, d.kind),
          d.thumbnail !== null && d.thumbnail !== undefined ? h("span", { class: "muted", title: "correlation of 16×16 thumbnails" }, `thumb ${d.thumbnail.toFixed(3)}${d.mirrored ? " mirrored" : ""}`) : null),
        scoreLine(d.score, "similarity"),
      ],
      actions: [
        h("button", { type: "button", class: "small", title: "keep this photo instead", onclick: () => setKeeper(g, d) }, "Keep this"),
        h("button", { type: "button", class: "small", disabled: ro, title: "not a copy of the kept photo", onclick: () => mark([g.keeper.id, d.id], d.name) }, "Not a duplicate"),
      ],
    }));
    return h("article", { class: "group panel", dataset: { group: g.number } },
      h("header", null, h("h3", null, `Group ${g.number + 1}`), h("span", { class: "muted" }, plural(g.duplicates.length, "duplicate")),
        h("span", { class: "grow" }), markAll),
      h("div", { class: "grid" }, keeperCard, dupCards));
  }

  async function setKeeper(g, d) {
    try {
      await api("/api/dedup/keeper", { method: "POST", body: { version: data.version, group: g.number, id: d.id } });
      await load();
    } catch (e) {
      app.fail(e);
      if (e.status === 409) load();
    }
  }

  async function mark(ids, what) {
    try {
      const r = await api("/api/dedup/not-duplicates", { method: "POST", body: { ids } });
      app.say(`${what}: marked not duplicates (${plural(r.marked, "new pair")}); dedup will not group them again`);
      await load();
      await loadMarks();
    } catch (e) {
      app.fail(e);
    }
  }

  function drawActions() {
    clear(actions);
    if (!data || !data.groups_total) return;
    if (ro) {
      append(actions, h("div", { class: "notice" }, "The server runs with --read-only: duplicates can be reviewed, not moved or deleted."));
      return;
    }
    const root = app.info.root || "";
    const kind = { value: "move" };
    const folder = h("input", { type: "text", value: `${root}/.duplicates`, "aria-label": "destination folder", style: { minWidth: "320px" } });
    const option = (value, text, extra) => {
      const r = h("input", { type: "radio", name: "action", value, checked: kind.value === value });
      r.addEventListener("change", () => { kind.value = value; });
      return h("label", null, r, text, extra);
    };
    const review = h("button", { type: "button", class: "primary" }, "Review the plan");
    const planBox = h("div");
    append(actions, h("div", { class: "panel stack sticky-actions" },
      h("div", { class: "toolbar" }, h("strong", null, "With the duplicates:"), option("move", "move them to ", folder), option("delete", "delete them"), review),
      h("div", { class: "muted" }, "Keepers are never touched. Each file and its keeper are checked against the index again right before acting; a move can be undone."),
      planBox));
    review.addEventListener("click", async () => {
      review.disabled = true;
      try {
        const body = { version: data.version, action: kind.value, move_to: kind.value === "move" ? folder.value.trim() : null };
        showPlan(planBox, await api("/api/dedup/plan", { method: "POST", body }));
      } catch (e) {
        append(clear(planBox), h("div", { class: "notice error" }, e.message));
        if (e.status === 409) load();
      } finally {
        review.disabled = false;
      }
    });
  }

  function showPlan(box, plan) {
    const verb = plan.action === "move" ? "move" : "delete";
    const confirm = h("button", { type: "button", class: "danger", disabled: plan.go === 0 }, `${verb[0].toUpperCase()}${verb.slice(1)} ${plural(plan.go, "file")}`);
    const cancel = h("button", { type: "button" }, "Cancel");
    const rows = plan.actions.slice(0, 200).map((a) => h("tr", { class: a.skipped ? "skip" : "" },
      h("td", null, a.skipped ? "would skip" : `would ${verb}`), h("td", null, a.path), h("td", null, a.dst ? `→ ${a.dst}` : ""),
      h("td", null, a.skipped || `keeper: ${a.keeper}`)));
    append(clear(box), 
      h("p", null, h("strong", null, `Dry run: ${plural(plan.go, "file")} would be ${verb === "move" ? "moved" : "deleted"}`),
        plan.skipped ? `, ${plan.skipped} skipped` : "", ". Nothing has changed yet."),
      h("div", { style: { maxHeight: "260px", overflow: "auto" } }, h("table", { class: "plan" }, h("tbody", null, rows))),
      plan.actions.length > 200 ? h("p", { class: "muted" }, `… and ${plan.actions.length - 200} more`) : null,
      h("div", { class: "row" }, confirm, cancel));
    cancel.addEventListener("click", () => clear(box));
    confirm.addEventListener("click", async () => {
      confirm.disabled = cancel.disabled = true;
      const status = h("div");
      append(box, status);
      try {
        const out = await runJob(api("/api/dedup/apply", { method: "POST", body: { token: plan.token, confirm: true } }), (job) => append(clear(status), progress(job)));
        const undo = out.kind === "move" && out.done ? h("button", { type: "button", onclick: () => undoPlan(out.plan) }, `Undo plan ${out.plan}`) : null;
        append(clear(box), h("div", { class: "notice" },
          `${plural(out.done, "file")} ${out.kind === "move" ? "moved" : "deleted"}, ${out.skipped} skipped (plan ${out.plan}). `,
          out.refreshed ? `Index: ${out.refreshed}. ` : "", undo));
        await app.refreshInfo();
        await load();
        await loadHistory();
      } catch (e) {
        append(clear(status), h("div", { class: "notice error" }, e.message));
      }
    });
  }

  async function undoPlan(id) {
    try {
      const out = await runJob(api("/api/dedup/undo", { method: "POST", body: { plan: id } }), (job) => append(clear(jobBox), progress(job)));
      clear(jobBox);
      app.say(`plan ${id}: ${plural(out.done, "file")} moved back${out.skipped.length ? `, ${out.skipped.length} could not be` : ""}`, { error: out.skipped.length > 0 });
      await app.refreshInfo();
      await loadHistory();
    } catch (e) {
      append(clear(jobBox), h("div", { class: "notice error" }, e.message));
    }
  }

  async function loadHistory() {
    const plans = await api("/api/dedup/plans");
    clear(history);
    if (!plans.length) return;
    append(history, h("h3", null, "Plans carried out"), h("table", { class: "plan" }, h("tbody", null, plans.map((p) => h("tr", null,
      h("td", null, `plan ${p.id}`), h("td", null, p.created.replace("T", " ").replace("Z", "")), h("td", null, p.kind, p.move_to ? ` to ${p.move_to}` : ""),
      h("td", null, Object.entries(p.states).map(([s, n]) => `${n} ${s}`).join(", ")),
      h("td", null, p.kind === "move" && p.states.done && !ro ? h("button", { type: "button", class: "small", onclick: () => undoPlan(p.id) }, "Undo") : null))))));
  }

  async function loadMarks() {
    const found = await api("/api/dedup/marks?limit=50");
    clear(marks);
    if (!found.total) return;
    append(marks, h("details", null, h("summary", null, `${plural(found.total, "pair")} marked not duplicates`),
      h("div", { class: "stack" }, found.items.map((pair) => h("div", { class: "row" },
        h("span", null, pair.a.path), h("span", { class: "muted" }, "≠"), h("span", null, pair.b.path),
        h("button", { type: "button", class: "small", disabled: ro, onclick: async () => {
          try {
            await api("/api/dedup/unmark", { method: "POST", body: { ids: [pair.a.id, pair.b.id] } });
            await loadMarks();
            await load();
          } catch (e) { app.fail(e); }
        } }, "Unmark"))))));
  }

  // a run started before this view was opened (another tab, a reload): follow it
  const running = (await api("/api/jobs")).find((j) => j.kind === "dedup");
  if (running) {
    runButton.disabled = true;
    runJob(Promise.resolve(running), (job) => !stopped && append(clear(jobBox), progress(job)))
      .then(() => { clear(jobBox); return load(); })
      .catch((e) => append(clear(jobBox), h("div", { class: "notice error" }, e.message)))
      .finally(() => { runButton.disabled = false; });
  }
  await Promise.all([load(), loadHistory(), loadMarks()]);
  return () => { stopped = true; };
}
