// Behaviour of the dataset report page: rows drawn a page at a time from ROWS, filters,
// ratings, live filter agreement, export. Plain DOM code, no framework: the page must open
// anywhere, offline. Only one page of rows is in the DOM, so 10,000 samples open like 50.
"use strict";
(function () {
  const state = { composition: "", verdict: "", page: 0 };
  const ratings = Object.assign({}, REPORT.ratings);
  const STAGE_LABELS = ["mask", "composite", "final"];
  const rowsBox = document.getElementById("rows");
  let filtered = ROWS;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // Same markup as a thumbnail drawn by tasks/views/report.py: _img.
  function thumb(cell, label, cls) {
    const [src, note, skipped] = cell;
    if (skipped) return el("div", { class: `thumb skipped ${cls || ""}`, title: note }, el("span", { text: "not made" }));
    if (src === null) {
      const span = el("span", { text: label });
      span.append(el("br"), note.endsWith("not found") ? "missing" : "unreadable");
      return el("div", { class: `thumb missing ${cls || ""}`, title: note }, span);
    }
    return el("img", { class: `thumb ${cls || ""}`, src, alt: label, loading: "lazy" });
  }

  function draw(row) {
    const [id, comp, verdict, isNew, scene, caption, reasons, pics, stages, dets] = row;
    const composition = REPORT.compositions[comp];
    const art = el("article", { class: `sample ${verdict}${isNew ? " new" : ""}`, "data-id": id,
                                "data-composition": composition, "data-verdict": verdict });
    const rate = el("div", { class: "rate", title: `your rating (${REPORT.minRating} or more keeps)` });
    for (let i = 1; i <= 5; i++) {
      const input = el("input", { type: "radio", name: `r-${id}`, value: String(i) });
      input.checked = ratings[id] === i;
      input.addEventListener("change", () => { ratings[id] = i; updateAgreement(); });
      rate.append(el("label", {}, input, el("span", { text: String(i) })));
    }
    art.append(el("div", { class: "meta" }, el("span", { class: `badge ${verdict}`, text: verdict }),
      isNew ? el("span", { class: "badge new", text: "new" }) : null,
      el("div", { class: "sid", text: id }), el("div", { class: "small", text: `${composition} · ${scene}` }), rate));
    const photos = el("div", { class: "pics" });
    for (const [cid, cls, title, cell] of pics) {
      photos.append(cls ? el("div", { class: `thumb photo ${cls}`, title }) : thumb(cell, cid, "photo"));
    }
    art.append(el("figure", { class: "stage" }, photos, el("figcaption", { text: "photos" })));
    stages.forEach((cell, i) => {
      let shown = thumb(cell, STAGE_LABELS[i]);
      if (i === stages.length - 1 && dets && dets.length && cell[0] !== null) {
        // The detector's boxes over the final (0..1 of the image; finals are square).
        shown = el("div", { class: "dets" }, shown, ...dets.map(([label, score, x0, y0, x1, y1]) =>
          el("span", { class: "det", title: `${label} ${score.toFixed(2)}`,
                       style: `left:${100 * x0}%;top:${100 * y0}%;width:${100 * (x1 - x0)}%;height:${100 * (y1 - y0)}%` },
            el("i", { text: `${label} ${score.toFixed(2)}` }))));
      }
      art.append(el("span", { class: "arrow", text: "→" }),
        el("figure", { class: "stage" }, shown, el("figcaption", { text: STAGE_LABELS[i] })));
    });
    const text = el("div", { class: "text" }, el("p", { class: "caption", text: caption || "(no caption)" }));
    if (reasons.length) {
      const ul = el("ul", { class: "why" });
      for (const [code, stage, detail] of reasons) {
        ul.append(el("li", {}, el("b", { text: code }), " ", el("span", { class: "small", text: `(${stage})` }), ` ${detail}`));
      }
      text.append(ul);
    }
    if (dets && dets.length) {
      text.append(el("p", { class: "small", text: "detector: " + dets.map(([l, sc]) => `${l} ${sc.toFixed(2)}`).join(", ") }));
    }
    art.append(text);
    return art;
  }

  function matches(row) {
    if (state.composition && REPORT.compositions[row[1]] !== state.composition) return false;
    if (state.verdict === "new") return row[3] === 1;
    return !state.verdict || row[2] === state.verdict;
  }

  function pages() { return Math.max(1, Math.ceil(filtered.length / REPORT.pageSize)); }

  function render() {
    state.page = Math.min(state.page, pages() - 1);
    const start = state.page * REPORT.pageSize;
    rowsBox.replaceChildren(...filtered.slice(start, start + REPORT.pageSize).map(draw));
    document.getElementById("shown").textContent = `showing ${filtered.length} of ${ROWS.length}`;
    document.getElementById("page").textContent = `page ${state.page + 1} of ${pages()}`;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages() - 1;
  }

  function applyFilters() {
    filtered = ROWS.filter(matches);
    state.page = 0;
    render();
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
  document.getElementById("prev").addEventListener("click", () => { state.page -= 1; render(); });
  document.getElementById("next").addEventListener("click", () => { state.page += 1; render(); });

  // Same rule as tasks/views/report.py: filter_agreement (kept vs. rating >= minRating), over every
  // row of every page.
  const verdictOf = new Map(ROWS.map((row) => [row[0], row[2]]));
  function updateAgreement() {
    let tp = 0, fp = 0, fn = 0, tn = 0;
    for (const [id, rating] of Object.entries(ratings)) {
      const verdict = verdictOf.get(id);
      if (verdict === undefined) continue;
      const auto = verdict === "kept", human = rating >= REPORT.minRating;
      if (auto && human) tp += 1; else if (auto) fp += 1; else if (human) fn += 1; else tn += 1;
    }
    const fmt = (n, d) => (d ? (n / d).toFixed(2) : "-");
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    set("ag-precision", fmt(tp, tp + fp));
    set("ag-recall", fmt(tp, tp + fn));
    set("ag-rated", String(tp + fp + fn + tn));
    set("ag-tp", String(tp)); set("ag-fp", String(fp)); set("ag-fn", String(fn)); set("ag-tn", String(tn));
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
