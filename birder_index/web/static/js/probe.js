// Probe: fit a linear probe on a label set and see how well it learns it (cross-validated): accuracy, recall per
// class, the confusion matrix and k-shot curves, as `birder-index probe eval` computes them.
import { api, runJob } from "./api.js";
import { append, clear, h, progress, select } from "./dom.js";

export async function render(root, params, app) {
  const sets = await api("/api/labels");
  const usable = sets.filter((s) => s.classes.length >= 2);
  append(root, h("h2", null, "Probe"));
  if (!usable.length) {
    append(root, h("div", { class: "notice" }, "A probe needs a label set with at least two classes: label some photos first (Labels)."));
    return;
  }
  const name = params.get("set") && usable.some((s) => s.name === params.get("set")) ? params.get("set") : usable[0].name;
  const setSelect = select(usable.map((s) => [s.name, `${s.name} (${s.classes.length} classes)`]), name, { "aria-label": "label set" });
  // "up to 5": as many folds as the smallest class allows (the server decides), so a small set is evaluated
  const folds = select([["", "up to 5 folds"], [3, "3 folds"], [5, "5 folds"], [10, "10 folds"]], params.get("folds") || "", { "aria-label": "folds" });
  const balanced = h("input", { type: "checkbox", checked: params.get("balanced") === "1" });
  const run = h("button", { type: "button", class: "primary" }, "Fit and evaluate");
  const jobBox = h("div");
  const out = h("section");
  append(root, h("div", { class: "toolbar" }, h("label", null, "set", setSelect), folds,
    h("label", { title: "weight classes inversely to their size" }, balanced, "balanced"), run), jobBox, out);
  setSelect.addEventListener("change", () => app.mark("probe", { set: setSelect.value }));

  run.addEventListener("click", async () => {
    run.disabled = true;
    clear(out);
    app.mark("probe", { set: setSelect.value, folds: folds.value, balanced: balanced.checked ? "1" : "" });
    try {
      const r = await runJob(api("/api/probe", { method: "POST", body: { set: setSelect.value, folds: folds.value ? Number(folds.value) : null, balanced: balanced.checked } }),
        (job) => append(clear(jobBox), progress(job)));
      clear(jobBox);
      draw(r);
    } catch (e) {
      append(clear(jobBox), h("div", { class: "notice error" }, e.message));
    } finally {
      run.disabled = false;
    }
  });

  function draw(r) {
    const metric = (value, what) => h("div", { class: "metric" }, h("div", { class: "value" }, value), h("div", { class: "what" }, what));
    const n = r.confusion.reduce((a, row) => a + row.reduce((x, y) => x + y, 0), 0);
    append(out, h("div", { class: "metrics" },
      metric(r.top1.toFixed(3), "top-1 accuracy"), metric(r.top5.toFixed(3), "top-5 accuracy"),
      metric(String(r.classes.length), "classes"), metric(String(n), "labelled photos"), metric(String(r.lambda), "L2 strength λ")));
    append(out, h("div", { class: "split" },
      h("div", { class: "panel" }, h("h3", null, "Recall per class"), bars(r)),
      h("div", { class: "panel" }, h("h3", null, "Confusion matrix (true classes down, predicted across)"), matrix(r))));
    const shots = Object.keys(r.kshot.knn || {});
    if (shots.length) {
      append(out, h("div", { class: "panel" }, h("h3", null, "k-shot accuracy (mean ± std over 5 draws)"),
        h("table", { class: "kshot" },
          h("thead", null, h("tr", null, h("th", null, "photos per class"), shots.map((s) => h("th", null, s)))),
          h("tbody", null, Object.entries(r.kshot).map(([m, curve]) => h("tr", null, h("td", null, m),
            shots.map((s) => h("td", null, `${curve[s][0].toFixed(3)} ± ${curve[s][1].toFixed(3)}`))))))));
    }
  }

  function bars(r) {
    return h("div", { class: "bars" }, r.classes.map((c) => {
      const v = r.per_class_recall[c];
      return [h("div", { title: c }, c), h("div", { class: "track" }, h("span", { style: { width: `${(100 * v).toFixed(1)}%` } })),
        h("div", { class: "num" }, v.toFixed(2))];
    }));
  }

  function matrix(r) {
    const k = r.classes.length;
    const grid = h("div", { class: "confusion" });
    grid.style.gridTemplateColumns = `minmax(60px, max-content) repeat(${k}, minmax(34px, 56px))`;
    append(grid, h("div"), r.classes.map((c) => h("div", { class: "head colhead", title: c }, c)));
    r.confusion.forEach((row, i) => {
      const total = row.reduce((a, b) => a + b, 0) || 1;
      append(grid, h("div", { class: "head", title: r.classes[i] }, r.classes[i]));
      row.forEach((count, j) => {
        const share = count / total;
        const cell = h("div", { class: "cell", title: `${r.classes[i]} seen as ${r.classes[j]}: ${count}` }, count ? String(count) : "");
        cell.style.background = i === j ? `rgba(31, 111, 92, ${0.08 + 0.85 * share})` : `rgba(192, 57, 43, ${count ? 0.1 + 0.8 * share : 0.03})`;
        cell.style.color = share > 0.55 ? "#fff" : "inherit";
        append(grid, cell);
      });
    });
    return grid;
  }
}
