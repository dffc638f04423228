// Behaviour of the dataset report page: filters, ratings, live filter agreement, export.
// Plain DOM code, no framework: the page must open anywhere, offline.
"use strict";
(function () {
  const rows = Array.from(document.querySelectorAll("article.sample"));
  const state = { composition: "", verdict: "" };
  const ratings = Object.assign({}, REPORT.ratings);

  function matches(row) {
    if (state.composition && row.dataset.composition !== state.composition) return false;
    if (state.verdict === "new") return row.classList.contains("new");
    return !state.verdict || row.dataset.verdict === state.verdict;
  }

  function applyFilters() {
    let shown = 0;
    for (const row of rows) {
      row.hidden = !matches(row);
      if (!row.hidden) shown += 1;
    }
    document.getElementById("shown").textContent = `showing ${shown} of ${rows.length}`;
  }

  for (const button of document.querySelectorAll("button[data-filter]")) {
    button.addEventListener("click", () => {
      const key = button.dataset.filter;
      state[key] = button.dataset.value;
      for (const other of document.querySelectorAll(`button[data-filter="${key}"]`)) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      applyFilters();
    });
  }

  // Same rule as tasks/report.py: filter_agreement (kept vs. rating >= minRating).
  function updateAgreement() {
    let tp = 0, fp = 0, fn = 0, tn = 0;
    for (const row of rows) {
      const rating = ratings[row.dataset.id];
      if (rating === undefined) continue;
      const auto = row.dataset.verdict === "kept", human = rating >= REPORT.minRating;
      if (auto && human) tp += 1; else if (auto) fp += 1; else if (human) fn += 1; else tn += 1;
    }
    const fmt = (n, d) => (d ? (n / d).toFixed(2) : "-");
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    set("ag-precision", fmt(tp, tp + fp));
    set("ag-recall", fmt(tp, tp + fn));
    set("ag-rated", String(tp + fp + fn + tn));
    set("ag-tp", String(tp)); set("ag-fp", String(fp)); set("ag-fn", String(fn)); set("ag-tn", String(tn));
  }

  for (const input of document.querySelectorAll(".rate input")) {
    input.addEventListener("change", () => {
      const id = input.closest("article").dataset.id;
      ratings[id] = Number(input.value);
      updateAgreement();
    });
  }

  // The export is the decisions file `gen4gen report --decisions` reads back.
  document.getElementById("export").addEventListener("click", () => {
    const body = JSON.stringify({ dataset: REPORT.dataset, version: REPORT.version, ratings }, null, 2);
    const link = document.getElementById("download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([body], { type: "application/json" }));
    link.download = `${REPORT.dataset}-${REPORT.version}-decisions.json`;
    link.textContent = `${link.download} (${Object.keys(ratings).length} ratings)`;
    link.hidden = false;
    link.click();
  });

  applyFilters();
  updateAgreement();
})();
