// The explorer page: plain DOM, talking to the JSON API of laborllm.serve.app.
"use strict";
const $ = (id) => document.getElementById(id);
const COVARIATES = ["gender", "race", "birth_year", "education", "region"];
let served = { models: [], runs: [] };
let asked = false;   // after the first answer, edits re-ask (what-if)
let timer = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function showError(message) { $("error").textContent = message; $("error").hidden = false; }
function clearError() { $("error").hidden = true; $("error").textContent = ""; }

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  let data;
  try { data = await r.json(); } catch (e) { data = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

// -- the career being asked about -------------------------------------------------------
function addYear(year = "", occupation = "") {
  const tr = el("tr", {},
    el("td", {}, el("input", { class: "year", type: "number", value: year, "aria-label": "year" })),
    el("td", {}, el("input", { class: "occ", list: "dl-states", value: occupation, "aria-label": "occupation" })),
    el("td", {}, el("button", { class: "remove", title: "remove this year", text: "x" })));
  tr.querySelector(".remove").onclick = () => { tr.remove(); changed(); };
  tr.querySelectorAll("input").forEach((i) => i.addEventListener("change", changed));
  $("history").tBodies[0].append(tr);
}

function history() {
  const person = {};
  for (const c of COVARIATES) {
    const v = $("cov-" + c).value.trim();
    if (v !== "") person[c] = c === "birth_year" ? Number(v) : v;
  }
  const rows = [...$("history").tBodies[0].rows].map((tr) => {
    const y = tr.querySelector(".year").value.trim();
    return { year: y === "" ? null : Number(y), occupation: tr.querySelector(".occ").value.trim() };
  });
  return { person, history: rows };
}

function setHistory(h) {
  $("history").tBodies[0].replaceChildren();
  const last = h.history[h.history.length - 1] || {};
  for (const c of COVARIATES) $("cov-" + c).value = last[c] ?? (h.person || {})[c] ?? "";
  for (const r of h.history) addYear(r.year, r.occupation);
}

function changed() {
  if (!asked) return;
  clearTimeout(timer);
  timer = setTimeout(() => (currentView() === "simulate" ? simulate() : ask()), 400);
}

async function loadPeople() {
  const model = $("person-model").value;
  const sel = $("person");
  sel.replaceChildren(el("option", { value: "", text: "(type your own)" }));
  if (!model) return;
  try {
    const r = await api(`/api/people?model=${encodeURIComponent(model)}`);
    for (const p of r.people) sel.append(el("option", { value: p, text: `person ${p}` }));
  } catch (e) { showError(e.message); }
}

async function pickPerson() {
  const id = $("person").value;
  if (!id) return;
  try {
    setHistory(await api(`/api/person?model=${encodeURIComponent($("person-model").value)}&id=${encodeURIComponent(id)}`));
    clearError();
    changed();
  } catch (e) { showError(e.message); }
}

// -- Ask: each chosen model's next-year distribution --------------------------------------
function chosenModels() { return [...document.querySelectorAll("#model-choice input:checked")].map((i) => i.value); }

function card(a) {
  const c = el("div", { class: "card", "data-model": a.model },
    el("h3", { text: a.model }),
    el("div", { class: "note", text: `year ${a.year}; probabilities: ${a.normalization}` }));
  if (a.stay_probability !== null) {
    c.append(el("div", { class: "stay", text: `stays ${a.last_state}: ${(100 * a.stay_probability).toFixed(1)}%` }));
  }
  const top = Math.max(...a.top.map((t) => t.probability), 1e-9);
  for (const t of a.top) {
    c.append(el("div", { class: "bar", title: t.state },
      el("span", { class: "name", text: t.state }),
      el("span", {}, el("div", { class: "fill", style: `width:${(100 * t.probability / top).toFixed(1)}%` })),
      el("span", { class: "p", text: t.probability.toFixed(3) })));
  }
  return c;
}

async function ask() {
  const models = chosenModels();
  if (!models.length) { showError("choose at least one model"); return; }
  const h = history();
  $("ask-status").textContent = "asking…";
  const started = performance.now();
  try {
    const all = await Promise.all(models.map((m) => api("/api/predict", { model: m, history: h, top: 10 })));
    $("answers").replaceChildren(...all.map(card));
    clearError();
    asked = true;
    $("ask-status").textContent = `answered in ${((performance.now() - started) / 1000).toFixed(2)} s`;
  } catch (e) {
    $("answers").replaceChildren();
    $("ask-status").textContent = "";
    showError(e.message);
  }
}

// -- Simulate: sampled futures as a picture and a few paths ------------------------------
async function simulate() {
  const body = { model: $("sim-model").value, history: history(), years: Number($("sim-years").value),
    samples: Number($("sim-samples").value), seed: Number($("sim-seed").value), chart: true };
  $("sim-status").textContent = "simulating…";
  try {
    const r = await api("/api/simulate", body);
    $("sim-chart").innerHTML = r.chart;   // SVG drawn by matplotlib on the server
    $("sim-paths").replaceChildren(...r.paths.map((p) =>
      el("li", { text: p.path.map((s) => `${s.year} ${s.occupation}`).join(" → ") })));
    $("sim-status").textContent = `${r.samples} paths, ${r.years} years, seed ${r.seed}; ${r.normalization}`;
    clearError();
    asked = true;
  } catch (e) {
    $("sim-chart").replaceChildren(); $("sim-paths").replaceChildren(); $("sim-status").textContent = "";
    showError(e.message);
  }
}

// -- Compare: a run's table, forest plot and subgroups -------------------------------------
function table(columns, rows) {
  return el("table", { class: "t" },
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { text: c })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: v ?? "n/a" }))))));
}
const f3 = (v) => (v === null || v === undefined ? "n/a" : Number(v).toFixed(3));

async function compare() {
  const run = $("run").value;
  if (!run) return;
  try {
    const r = await api(`/api/compare?run=${encodeURIComponent(run)}`);
    const parts = [];
    for (const [panel, p] of Object.entries(r.panels)) {
      const ref = p.rows.some((x) => x.model === "logit") ? "logit" : p.rows[0].model;
      const rows = p.rows.map((x) => {
        const pr = (x.paired || {})[ref];
        return [x.model, f3(x.perplexity), x.perplexity_ci95 ? `[${f3(x.perplexity_ci95[0])}, ${f3(x.perplexity_ci95[1])}]` : "n/a",
          pr ? `${f3(pr.ratio)} [${f3(pr.ci95[0])}, ${f3(pr.ci95[1])}]` : "", String(x.n_events)];
      });
      const chart = el("div", { class: "forest" }); chart.innerHTML = p.chart;
      const pick = el("select", { class: "group", "data-panel": panel },
        el("option", { value: "", text: "(choose a subgroup)" }), ...p.groups.map((g) => el("option", { value: g, text: g })));
      const sub = el("div", { class: "subgroup" });
      pick.onchange = async () => {
        if (!pick.value) { sub.replaceChildren(); return; }
        try {
          const s = await api(`/api/subgroups?run=${encodeURIComponent(run)}&panel=${encodeURIComponent(panel)}&group=${encodeURIComponent(pick.value)}`);
          const c = el("div"); c.innerHTML = s.chart;
          // the paired ratio within each level, where the run has it (runs written since 2026-12-03)
          const paired = s.table.some((t) => t.paired);
          const ratio = (t) => (t.paired ? `${f3(t.paired.ratio)} [${f3(t.paired.ci95[0])}, ${f3(t.paired.ci95[1])}]` : "");
          sub.replaceChildren(table(["model", "level", "events", "perplexity", ...(paired ? [`paired ratio vs ${s.reference}`] : []), "top-1", "ECE"],
            s.table.map((t) => [t.model, t.level, String(t.n_events), f3(t.perplexity), ...(paired ? [ratio(t)] : []), f3(t.top1), f3(t.ece)])), c);
        } catch (e) { showError(e.message); }
      };
      parts.push(el("h3", { text: panel }),
        table(["model", "perplexity", "95% interval", `paired ratio vs ${ref}`, "events"], rows), chart,
        el("label", { text: "results by subgroup: " }, pick), sub);
    }
    $("compare").replaceChildren(...parts);
    clearError();
  } catch (e) { showError(e.message); }
}

// -- wiring --------------------------------------------------------------------------------
function currentView() { return document.querySelector(".tab.active").dataset.view; }
function show(view) {
  clearTimeout(timer);   // an answer pending for the view being left is not wanted any more
  clearError();
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  for (const v of ["ask", "simulate", "compare"]) $("view-" + v).hidden = v !== view;
  $("history-panel").hidden = view === "compare";
  if (view === "compare") compare();
}

async function init() {
  document.querySelectorAll(".tab").forEach((t) => (t.onclick = () => show(t.dataset.view)));
  $("add-year").onclick = () => addYear();
  $("ask").onclick = ask;
  $("simulate").onclick = simulate;
  $("person-model").onchange = loadPeople;
  $("person").onchange = pickPerson;
  $("run").onchange = compare;
  COVARIATES.forEach((c) => $("cov-" + c).addEventListener("change", changed));
  try { served = await api("/api/models"); } catch (e) { showError(e.message); return; }
  const states = new Set();
  for (const m of served.models) {
    m.states.forEach((s) => states.add(s));
    $("model-choice").append(el("label", {}, el("input", { type: "checkbox", value: m.key, checked: "" }), ` ${m.key}`));
    $("person-model").append(el("option", { value: m.key, text: m.key }));
    $("sim-model").append(el("option", { value: m.key, text: m.key }));
  }
  $("dl-states").replaceChildren(...[...states].sort().map((s) => el("option", { value: s })));
  for (const r of served.runs) $("run").append(el("option", { value: r, text: r }));
  $("tab-compare").hidden = served.runs.length === 0;
  addYear();
  await loadPeople();
  document.body.dataset.ready = "yes";   // for scripts and tests: the page is wired
}
init();
