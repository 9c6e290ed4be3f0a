// loadlab's dashboard: reads the REST API and draws the experiments list, one experiment and
// the fleet matrix. No framework and no chart library: charts are plain SVG drawn here, so what
// is downloaded as SVG is exactly what is shown. Every number shown comes from the API's answer.
"use strict";

const main = () => document.getElementById("main");
const POLL_MS = 2000;
let pollTimer = null;

// ---- API ----------------------------------------------------------------------------------

class ApiProblem extends Error {
  constructor(status, error, detail) {
    super(detail || error);
    this.status = status;
    this.error = error;
  }
}

async function api(path) {
  let response;
  try {
    response = await fetch(path, { headers: { accept: "application/json" } });
  } catch (e) {
    throw new ApiProblem(0, "unreachable", `The server did not answer (${e.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    throw new ApiProblem(response.status, "bad answer", `${path} did not answer JSON.`);
  }
  if (!response.ok) {
    throw new ApiProblem(response.status, body.error, body.detail);
  }
  return body;
}

// ---- DOM helpers --------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function link(href, ...children) {
  return h("a", { href, "data-nav": true }, ...children);
}

function setPage(title, ...content) {
  document.title = title ? `${title} · loadlab` : "loadlab";
  const m = main();
  m.replaceChildren();
  append(m, content);
}

function problemPage(title, message, ...more) {
  setPage(title, h("h1", {}, title), h("div", { class: "problem", role: "alert" }, h("p", {}, message), ...more));
}

// ---- formatting (fixed locale, so the page reads the same everywhere) ---------------------

const fmtInt = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));
const fmtRate = (v) => (v === null || v === undefined ? "–" : v.toLocaleString("en-US", { maximumFractionDigits: 0 }));
const fmtRatio = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(3)}×`);
const fmtPct = (v, digits = 1) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits)}%`);
const fmtP = (v) => (v === null || v === undefined ? "–" : v < 0.001 ? v.toExponential(1) : v.toFixed(3));
const fmtUs = (v) => (v === null || v === undefined ? "–" : `${fmtInt(v)} µs`);
const fmtNs = (v) => (v >= 1e9 ? `${(v / 1e9).toFixed(2)} s` : v >= 1e6 ? `${(v / 1e6).toFixed(1)} ms` : `${(v / 1e3).toFixed(1)} µs`);
const fmtTime = (t) => (t ? new Date(t).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–");
const fmtCi = (ci, f) => (ci ? `${f(ci[0])} – ${f(ci[1])}` : "–");

const VERDICT_TEXT = {
  improved: "faster",
  regressed: "slower",
  no_detectable_change: "no detectable change",
  insufficient_data: "too few runs to tell",
};
const FLAG_TEXT = {
  high_variation: "high variation: a side's runs vary by more than 5% (coefficient of variation)",
  too_few_runs: "too few runs: a side has fewer than three",
};

function verdictBadge(verdict, baseline) {
  if (baseline) return h("span", { class: "verdict baseline" }, "baseline");
  if (!verdict) return h("span", { class: "verdict insufficient_data" }, "no runs");
  return h("span", { class: `verdict ${verdict}`, "data-verdict": verdict }, VERDICT_TEXT[verdict] || verdict);
}

// ---- theme and palette for charts (explicit colours, so exported charts stand alone) ------

function theme() {
  const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  return dark
    ? { bg: "#0d1117", fg: "#e6edf3", muted: "#9ba6b1", grid: "#30363d",
        palette: ["#58a6ff", "#ff7b72", "#3fb950", "#d2a8ff", "#e3b341", "#56d4dd"] }
    : { bg: "#ffffff", fg: "#1b1f24", muted: "#57606a", grid: "#d0d7de",
        palette: ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#1b7c83"] };
}

function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

// ---- downloads ----------------------------------------------------------------------------

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function svgText(svg) {
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(svg);
}

function chartDownloads(svg, name) {
  const png = () => {
    const img = new Image();
    const w = Number(svg.getAttribute("width"));
    const hgt = Number(svg.getAttribute("height"));
    img.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = w * 2;
      canvas.height = hgt * 2;
      const ctx = canvas.getContext("2d");
      ctx.scale(2, 2);
      ctx.drawImage(img, 0, 0, w, hgt);
      canvas.toBlob((blob) => saveBlob(blob, `${name}.png`), "image/png");
    };
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svgText(svg));
  };
  return h("div", { class: "downloads" },
    h("button", { type: "button", onclick: () => saveBlob(new Blob([svgText(svg)], { type: "image/svg+xml" }), `${name}.svg`) },
      "Download SVG"),
    h("button", { type: "button", onclick: png }, "Download PNG"));
}

function csvOf(table) {
  const quote = (t) => (/[",\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t);
  return [...table.rows]
    .map((row) => [...row.cells].map((c) => quote((c.dataset.value ?? c.textContent).trim())).join(","))
    .join("\n") + "\n";
}

function tableWithCsv(table, name) {
  return h("div", { class: "wide" }, table,
    h("div", { class: "downloads" },
      h("button", { type: "button", onclick: () => saveBlob(new Blob([csvOf(table)], { type: "text/csv" }), `${name}.csv`) },
        "Download CSV")));
}

/// A table from a header and rows; a cell is text, a node, or {text, value, cls}.
function table(caption, header, rows, attrs = {}) {
  const cell = (tag, c) => {
    if (c && typeof c === "object" && !(c instanceof Node) && !Array.isArray(c)) {
      return h(tag, { class: c.cls, "data-value": c.value, title: c.title }, c.text);
    }
    return h(tag, {}, c);
  };
  return h("table", attrs,
    caption ? h("caption", { class: "note" }, caption) : null,
    h("thead", {}, h("tr", {}, header.map((c) => {
      const th = cell("th", c);
      th.setAttribute("scope", "col");
      return th;
    }))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => cell("td", c))))));
}

const num = (text, value, extra = {}) => ({ text, value, cls: "num", ...extra });

// ---- router -------------------------------------------------------------------------------

function navigate(url, replace = false) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

async function route() {
  clearTimeout(pollTimer);
  pollTimer = null;
  const url = new URL(location.href);
  const path = url.pathname.replace(/\/+$/, "") || "/";
  try {
    if (path === "/") await listPage(url.searchParams);
    else if (path === "/fleet") await fleetPage(url.searchParams);
    else if (path === "/bisections") await bisectionsPage();
    else if (path.startsWith("/bisections/")) await bisectionPage(decodeURIComponent(path.slice(12)));
    else if (path.startsWith("/experiments/")) await experimentPage(decodeURIComponent(path.slice(13)), url.searchParams);
    else problemPage("No such page", `Nothing lives at ${path}.`, h("p", {}, link("/", "All experiments")));
  } catch (e) {
    showProblem(e);
  }
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

function showProblem(e) {
  if (e instanceof ApiProblem && e.status === 401) {
    signInPage(e.message);
    return;
  }
  if (e instanceof ApiProblem) {
    const title = e.status === 404 ? "Not found" : e.status === 400 ? "Bad request" : "The server could not answer";
    problemPage(title, e.message, h("p", {}, link("/", "All experiments")));
  } else {
    problemPage("Something went wrong", String(e && e.message ? e.message : e), h("p", {}, link("/", "All experiments")));
    console.warn(e);
  }
}

// Results are behind a read token on this server: it goes into a cookie for this site only,
// which fetches, the flamegraph frames and the download links all carry.
function signInPage(detail) {
  const input = h("input", { type: "password", id: "read-token", autocomplete: "current-password", size: 40 });
  const form = h("form", {
    id: "sign-in",
    onsubmit: (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      const secure = location.protocol === "https:" ? "; Secure" : "";
      document.cookie = `loadlab_token=${encodeURIComponent(token)}; path=/; SameSite=Strict${secure}`;
      route();
    },
  }, h("label", {}, "Read token ", input), " ", h("button", { type: "submit" }, "Show the results"));
  setPage("Sign in", h("h1", {}, "This server's results need its read token"),
    h("p", { class: "note" }, detail), form);
  input.focus();
}

document.addEventListener("click", (event) => {
  const a = event.target.closest && event.target.closest("a[data-nav]");
  if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});
window.addEventListener("popstate", route);
document.addEventListener("DOMContentLoaded", route);

// ---- the experiments list -----------------------------------------------------------------

const PAGE_SIZE = 20;

function positiveInt(params, name, fallback) {
  const raw = params.get(name);
  if (raw === null || raw === "") return fallback;
  if (!/^[0-9]+$/.test(raw) || Number(raw) < 1 || Number(raw) > 1000000) {
    throw new ApiProblem(400, "bad request", `${name} must be a whole number from 1, not "${raw}".`);
  }
  return Number(raw);
}

async function listPage(params) {
  const search = params.get("q") || "";
  const page = positiveInt(params, "page", 1);
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE });
  if (search) query.set("search", search);
  const answer = await api(`/api/v1/experiments?${query}`);
  const form = h("form", { class: "controls", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const q = e.target.elements.q.value.trim();
    navigate(q ? `/?q=${encodeURIComponent(q)}` : "/");
  } },
    h("label", {}, "Name contains", h("input", { type: "search", name: "q", value: search, id: "search" })),
    h("button", { type: "submit" }, "Search"));
  const rows = answer.items.map((e) => h("tr", { "data-experiment": e.id },
    h("td", {}, link(`/experiments/${e.id}`, e.name)),
    h("td", { "data-field": "status" }, e.status),
    h("td", { "data-field": "progress", class: "num" }, progressText(e, null)),
    h("td", {}, e.cohorts.join(", ")),
    h("td", { "data-field": "verdict" }, "…"),
    h("td", { "data-field": "kernels" }, "…"),
    h("td", {}, fmtTime(e.created_at))));
  const tbl = h("table", { id: "experiments" },
    h("thead", {}, h("tr", {}, ["Name", "Phase", "Runs", "Cohorts", "Verdict", "Kernels", "Created"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows));
  const pager = h("nav", { class: "pager", "aria-label": "Pages" },
    page > 1 ? link(pageUrl(search, page - 1), "← Newer") : null,
    h("span", { class: "note" }, `page ${page}`),
    answer.items.length === PAGE_SIZE ? link(pageUrl(search, page + 1), "Older →") : null);
  let body;
  if (answer.items.length === 0) {
    body = h("p", { class: "note", id: "empty" },
      search ? `No experiment's name contains "${search}".`
        : page > 1 ? "No experiments on this page." :
        "No experiments are stored yet. `loadlab run examples/local.yaml` runs one on this machine; on a cluster, `kubectl apply` an Experiment.");
  } else {
    body = tableWithCsv(tbl, "experiments");
  }
  setPage(search ? `Experiments: ${search}` : "Experiments", h("h1", {}, "Experiments"), form, body, answer.items.length ? pager : null);
  await Promise.all(answer.items.map((e) => fillRow(e)));
  if (answer.items.some((e) => e.status === "running")) schedulePoll(() => refreshRunning(answer.items));
}

function pageUrl(search, page) {
  const q = new URLSearchParams();
  if (search) q.set("q", search);
  if (page > 1) q.set("page", page);
  const text = q.toString();
  return text ? `/?${text}` : "/";
}

/// Runs stored against runs planned, from the stored runs or from the comparison's counts.
function progressText(experiment, counts) {
  const planned = experiment.planned_runs;
  if (!counts) return planned ? `of ${planned}` : "";
  let text = planned ? `${counts.succeeded} / ${planned}` : `${counts.succeeded}`;
  if (counts.failed) text += ` (+${counts.failed} failed)`;
  return text;
}

const runCounts = (runs) => {
  const succeeded = runs.filter((r) => r.status === "succeeded").length;
  return { succeeded, failed: runs.length - succeeded };
};

async function fillRow(experiment) {
  const row = document.querySelector(`tr[data-experiment="${experiment.id}"]`);
  if (!row) return;
  const field = (name) => row.querySelector(`[data-field="${name}"]`);
  try {
    const comparison = await api(`/api/v1/experiments/${experiment.id}/comparison`);
    field("status").replaceChildren(comparison.experiment.status);
    const progress = [progressText(comparison.experiment, {
      succeeded: comparison.cohorts.reduce((n, c) => n + c.runs_succeeded, 0),
      failed: comparison.cohorts.reduce((n, c) => n + c.runs_failed, 0),
    })];
    // Only a running experiment needs its runs: the last one's rate is its live figure. The
    // cell changes once, with both, so it never shows a count without its rate.
    if (comparison.experiment.status === "running") {
      const runs = await api(`/api/v1/experiments/${experiment.id}/runs`);
      if (runs.length) {
        const last = runs.reduce((a, b) => (a.finished_at > b.finished_at ? a : b));
        progress.push(h("br"), h("span", { class: "live" }, `last run ${fmtRate(last.connections_per_second)} conn/s`));
      }
    }
    field("progress").replaceChildren(...progress);
    const verdicts = comparison.cohorts
      .filter((c) => c.name !== comparison.experiment.baseline && c.comparison)
      .map((c) => h("div", {}, `${c.name}: `, verdictBadge(c.comparison.verdict), ` ${fmtRatio(c.comparison.ratio)}`));
    field("verdict").replaceChildren(...(verdicts.length ? verdicts : ["–"]));
    const kernels = [...new Set(comparison.nodes.map((n) => n.kernel_release))].sort();
    field("kernels").replaceChildren(kernels.join(", ") || "–");
  } catch (e) {
    field("verdict").replaceChildren(e.message);
  }
}

function schedulePoll(fn) {
  clearTimeout(pollTimer);
  const path = location.pathname + location.search;
  pollTimer = setTimeout(async () => {
    if (location.pathname + location.search !== path) return;
    await fn();
  }, POLL_MS);
}

async function refreshRunning(items) {
  const running = items.filter((e) => e.status === "running");
  await Promise.all(running.map((e) => fillRow(e)));
  const still = [];
  for (const e of running) {
    const row = document.querySelector(`tr[data-experiment="${e.id}"]`);
    const status = row && row.querySelector('[data-field="status"]').textContent;
    if (status === "running") still.push(e);
  }
  if (still.length) schedulePoll(() => refreshRunning(still));
}

// ---- one experiment -----------------------------------------------------------------------

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function experimentPage(id, params) {
  if (!UUID.test(id)) {
    problemPage("Bad request", `"${id}" is not an experiment id (a UUID, as the experiments list links to).`,
      h("p", {}, link("/", "All experiments")));
    return;
  }
  let experiment;
  try {
    experiment = await api(`/api/v1/experiments/${id}`);
  } catch (e) {
    if (e instanceof ApiProblem && e.status === 404) {
      problemPage("Experiment not found", `No experiment with id ${id} is stored here. It may be in another loadlab's database, or the link is mistyped.`,
        h("p", {}, link("/", "All experiments")));
      return;
    }
    throw e;
  }
  const baseline = params.get("baseline") || experiment.baseline;
  if (!experiment.cohorts.includes(baseline)) {
    problemPage("Bad request", `"${baseline}" is not a cohort of ${experiment.name}; its cohorts are ${experiment.cohorts.join(", ")}.`,
      h("p", {}, link(`/experiments/${id}`, `${experiment.name} against its own baseline`)));
    return;
  }
  const symbol = (params.get("symbol") || "osq_lock").trim();
  const query = baseline === experiment.baseline ? "" : `?baseline=${encodeURIComponent(baseline)}`;
  const [comparison, runs] = await Promise.all([
    api(`/api/v1/experiments/${id}/comparison${query}`),
    api(`/api/v1/experiments/${id}/runs`),
  ]);
  const cohorts = comparison.cohorts;
  const colours = theme().palette;
  const colourOf = Object.fromEntries(experiment.cohorts.map((c, i) => [c, colours[i % colours.length]]));
  const succeeded = runs.filter((r) => r.status === "succeeded");

  const header = [
    h("h1", {}, experiment.name),
    h("p", { class: "meta" },
      `${experiment.status} · created ${fmtTime(experiment.created_at)}`,
      experiment.finished_at ? ` · finished ${fmtTime(experiment.finished_at)}` : "",
      ` · ${progressText(experiment, runCounts(runs))} runs · id `, h("code", {}, experiment.id)),
    experiment.status === "running" ? h("p", { class: "live", id: "live" }, "Running: this page follows new runs.") : null,
    h("p", { class: "note" }, "Raw data: ",
      h("a", { href: `/api/v1/experiments/${id}/comparison${query}` }, "comparison"), ", ",
      h("a", { href: `/api/v1/experiments/${id}/runs` }, "runs"), "."),
  ];

  if (!succeeded.length) {
    const reasons = [...new Set(runs.filter((r) => r.failure_reason).map((r) => `${r.cohort}: ${r.failure_reason}`))];
    setPage(experiment.name, header,
      h("div", { class: "problem", role: "alert", id: "no-results" },
        h("p", {}, runs.length
          ? `None of this experiment's ${runs.length} runs succeeded, so there is nothing to compare. Why they failed:`
          : experiment.status === "running" ? "No run is stored yet; this page follows the experiment." : "This experiment has no stored runs."),
        reasons.length ? h("ul", {}, reasons.map((r) => h("li", {}, r))) : null),
      runsSection(runs));
    if (experiment.status === "running") schedulePoll(() => route());
    return;
  }

  const baselineSelect = h("label", {}, "Baseline",
    h("select", { id: "baseline", onchange: (e) => navigate(experimentUrl(id, experiment, e.target.value, symbol)) },
      experiment.cohorts.map((c) => h("option", { value: c, selected: c === baseline }, c))));

  setPage(experiment.name, header,
    h("h2", { id: "comparison" }, "Connections per second"),
    h("div", { class: "controls" }, baselineSelect),
    comparisonTable(comparison, baseline),
    stoppingSection(comparison.stopping),
    ciChart(cohorts, runs, colourOf),
    h("h2", { id: "timeline" }, "Per-second timeline"),
    timelineChart(succeeded, experiment.cohorts, colourOf),
    h("h2", { id: "latency" }, "Latency"),
    latencyTable(cohorts),
    h("h2", { id: "counters" }, "Counter cross-check"),
    countersSection(cohorts, runs),
    noiseSection(cohorts),
    h("h2", { id: "locks" }, "Contended kernel locks"),
    locksSection(cohorts),
    h("h2", { id: "cpu" }, "CPU: hottest symbols"),
    symbolsSection(cohorts),
    h("h2", { id: "callchains" }, "Call chains into a symbol"),
    h("div", { id: "callchains-body" }, h("p", { class: "note" }, "Loading…")),
    h("h2", { id: "flamegraph" }, "Flamegraphs"),
    flamegraphSection(experiment, baseline, params),
    h("h2", { id: "nodes" }, "Nodes"),
    nodesSection(comparison.nodes, runs),
    h("h2", { id: "runs" }, "Runs"),
    runsSection(runs),
    h("p", { class: "note" }, comparison.method));
  await callChainsSection(experiment, baseline, symbol);
  if (experiment.status === "running") schedulePoll(() => route());
}

function experimentUrl(id, experiment, baseline, symbol) {
  const q = new URLSearchParams();
  if (baseline && baseline !== experiment.baseline) q.set("baseline", baseline);
  if (symbol && symbol !== "osq_lock") q.set("symbol", symbol);
  const text = q.toString();
  return `/experiments/${id}${text ? `?${text}` : ""}`;
}

// repetitions: auto: each cohort as the stopping rule judges it, and why the rounds stopped.
function stoppingSection(stopping) {
  if (!stopping) return null;
  return h("section", { id: "stopping" },
    h("p", {}, `Repetitions: auto · ${stopping.reason} · practical change ±${fmtPct(stopping.practical_change)}`),
    table("Judged on paired rounds, at a level that keeps 95% over every look.",
      ["Cohort", num("Rounds"), "Judgement"],
      stopping.cohorts.map((c) => [c.cohort, num(String(c.judgement.rounds), c.judgement.rounds), c.text])));
}

function comparisonTable(comparison, baseline) {
  const rows = comparison.cohorts.map((c) => {
    const cmp = c.comparison;
    const isBase = c.name === baseline;
    const flags = cmp && cmp.flags.length ? cmp.flags.map((f) => h("div", { title: FLAG_TEXT[f] }, FLAG_TEXT[f] || f)) : "–";
    return [
      h("span", { id: `cohort-${c.name}` }, c.name, c.throughput_caveat ? h("div", { class: "note" }, c.throughput_caveat) : null),
      num(`${c.runs_succeeded}${c.runs_failed ? ` (+${c.runs_failed} failed)` : ""}`, c.runs_succeeded),
      num(fmtRate(c.summary?.mean), c.summary?.mean, { title: "mean of the runs" }),
      num(fmtCi(c.summary?.ci95, fmtRate), c.summary?.ci95 ? c.summary.ci95.join(" ") : ""),
      num(fmtPct(c.summary?.cv), c.summary?.cv),
      num(isBase ? "1" : fmtRatio(cmp?.ratio), isBase ? 1 : cmp?.ratio),
      num(isBase ? "–" : fmtCi(cmp?.ci95, fmtRatio), cmp?.ci95 ? cmp.ci95.join(" ") : ""),
      num(isBase || !cmp || cmp.hedges_g == null ? "–" : cmp.hedges_g.toFixed(2), cmp?.hedges_g),
      num(isBase ? "–" : fmtP(cmp?.p_value), cmp?.p_value),
      isBase || !cmp || cmp.min_detectable_change == null ? verdictBadge(cmp?.verdict, isBase)
        : h("span", {}, verdictBadge(cmp.verdict, isBase), h("div", { class: "note", title: "the smallest change these runs find 80% of the time, at the noise they showed" },
          `detects ±${fmtPct(cmp.min_detectable_change)}`,
          cmp.runs_for_practical_change ? `; ~${cmp.runs_for_practical_change} runs per cohort would detect 5%` : "")),
      isBase ? "–" : flags,
    ];
  });
  return tableWithCsv(table(`Ratios are each cohort's geometric mean over the baseline's (${baseline}), with the 95% CI of the ratio.`,
    ["Cohort", num("Runs"), num("Mean conn/s"), num("95% CI of mean"), num("CV"), num(`Ratio to ${baseline}`), num("95% CI of ratio"),
      num("Hedges' g"), num("p"), "Verdict", "Noise flags"], rows, { id: "cohorts", "data-baseline": baseline }), "comparison");
}

function ciChart(cohorts, runs, colourOf) {
  const t = theme();
  const shown = cohorts.filter((c) => c.summary);
  const values = shown.flatMap((c) => [...c.connections_per_second, ...(c.summary.ci95 || [])]);
  const lo0 = Math.min(...values), hi0 = Math.max(...values);
  const pad = (hi0 - lo0) * 0.08 || hi0 * 0.05 || 1;
  const lo = Math.max(0, lo0 - pad), hi = hi0 + pad;
  const left = 190, right = 30, rowH = 46, top = 20, width = 860;
  const height = top + rowH * shown.length + 40;
  const x = (v) => left + ((v - lo) / (hi - lo)) * (width - left - right);
  const ticks = niceTicks(lo, hi);
  const svg = s("svg", { xmlns: SVG_NS, width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-labelledby": "ci-title", "font-family": "system-ui, sans-serif", "font-size": 12 },
    s("title", { id: "ci-title" }, "Connections per second per cohort: each run as a dot, the mean as a bar, its 95% confidence interval as a line"),
    s("rect", { x: 0, y: 0, width, height, fill: t.bg }),
    ticks.map((v) => [
      s("line", { x1: x(v), x2: x(v), y1: top - 6, y2: height - 34, stroke: t.grid }),
      s("text", { x: x(v), y: height - 18, fill: t.muted, "text-anchor": "middle" }, fmtRate(v)),
    ]),
    s("text", { x: width - right, y: height - 4, fill: t.muted, "text-anchor": "end" }, "connections per second"),
    shown.map((c, i) => {
      const y = top + rowH * i + rowH / 2;
      const colour = colourOf[c.name];
      const [ciLo, ciHi] = c.summary.ci95 || [c.summary.mean, c.summary.mean];
      return s("g", { "data-cohort": c.name },
        s("text", { x: left - 10, y: y + 4, fill: t.fg, "text-anchor": "end" }, c.name),
        s("line", { x1: x(ciLo), x2: x(ciHi), y1: y, y2: y, stroke: colour, "stroke-width": 3 }),
        s("line", { x1: x(ciLo), x2: x(ciLo), y1: y - 8, y2: y + 8, stroke: colour, "stroke-width": 2 }),
        s("line", { x1: x(ciHi), x2: x(ciHi), y1: y - 8, y2: y + 8, stroke: colour, "stroke-width": 2 }),
        s("rect", { x: x(c.summary.mean) - 2, y: y - 13, width: 4, height: 26, fill: colour },
          s("title", {}, `${c.name}: mean ${fmtRate(c.summary.mean)} conn/s`)),
        c.connections_per_second.map((v, k) => s("circle", {
          cx: x(v), cy: y + 16 + ((k % 3) - 1) * 3, r: 4, fill: "none", stroke: colour, "stroke-width": 1.5, class: "run-dot",
        }, s("title", {}, `${c.name} run: ${fmtRate(v)} conn/s`))));
    }));
  return h("figure", {}, svg,
    h("figcaption", {}, "Each circle is one succeeded run; the bar is the mean; the line is the 95% confidence interval of the mean."),
    chartDownloads(svg, "connections-per-second"));
}

function timelineChart(runs, cohortNames, colourOf) {
  const t = theme();
  const series = runs.filter((r) => r.completed_per_second && r.completed_per_second.length);
  if (!series.length) return h("p", { class: "note" }, "No run recorded a per-second count.");
  const seconds = Math.max(...series.map((r) => r.completed_per_second.length));
  const peak = Math.max(...series.flatMap((r) => r.completed_per_second), 1);
  const left = 70, right = 20, top = 16, bottom = 40, width = 860, height = 300;
  const x = (i) => left + (seconds > 1 ? (i / (seconds - 1)) : 0.5) * (width - left - right);
  const y = (v) => top + (1 - v / (peak * 1.05)) * (height - top - bottom);
  const svg = s("svg", { xmlns: SVG_NS, width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-labelledby": "timeline-title", "font-family": "system-ui, sans-serif", "font-size": 12 },
    s("title", { id: "timeline-title" }, "Connections completed in each second of each run's measured window, one line per run, coloured by cohort"),
    s("rect", { x: 0, y: 0, width, height, fill: t.bg }),
    niceTicks(0, peak * 1.05).map((v) => [
      s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: t.grid }),
      s("text", { x: left - 6, y: y(v) + 4, fill: t.muted, "text-anchor": "end" }, fmtInt(v)),
    ]),
    niceTicks(0, seconds - 1, Math.min(10, seconds)).filter((v) => Number.isInteger(v)).map((v) =>
      s("text", { x: x(v), y: height - 22, fill: t.muted, "text-anchor": "middle" }, v + 1)),
    s("text", { x: width - right, y: height - 4, fill: t.muted, "text-anchor": "end" }, "second of the window"),
    series.map((r) => s("polyline", {
      points: r.completed_per_second.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: colourOf[r.cohort], "stroke-width": 1.5, "stroke-opacity": 0.8, "data-run": r.id,
    }, s("title", {}, `${r.cohort}, repetition ${r.repetition}, ${nodeName(r)}`))),
    cohortNames.map((c, i) => s("g", {},
      s("rect", { x: left + 10 + i * 170, y: top, width: 12, height: 12, fill: colourOf[c] }),
      s("text", { x: left + 28 + i * 170, y: top + 10, fill: t.fg }, c))));
  return h("figure", {}, svg,
    h("figcaption", {}, "A stall shows as a dip; a run that starts slow as a ramp."),
    chartDownloads(svg, "timeline"));
}

function latencyTable(cohorts) {
  const rows = cohorts.filter((c) => c.runs_succeeded).flatMap((c) => [
    ["connect", c.connect_latency], ["total", c.total_latency],
  ].map(([kind, p]) => [c.name, kind, num(fmtUs(p.p50_us), p.p50_us), num(fmtUs(p.p90_us), p.p90_us),
    num(fmtUs(p.p99_us), p.p99_us), num(fmtUs(p.max_us), p.max_us)]));
  return tableWithCsv(table("From each cohort's merged histograms over its succeeded runs: connect is the TCP handshake, total is connect to the last byte.",
    ["Cohort", "Latency", num("p50"), num("p90"), num("p99"), num("max")], rows, { id: "latency-table" }), "latency");
}

/// Counters that must agree: what the generator finished against what nginx and the kernel saw.
const AGREE_WITHIN = 0.01;
function countersSection(cohorts, runs) {
  const disagree = (a, b) => Math.abs(a - b) > AGREE_WITHIN * Math.max(a, b, 1);
  const row = (label, attempted, accepts, passive, busy) => [
    label,
    num(fmtInt(attempted), attempted),
    { text: fmtInt(accepts), value: accepts, cls: disagree(attempted, accepts) ? "num disagree" : "num" },
    { text: fmtInt(passive), value: passive, cls: disagree(attempted, passive) ? "num disagree" : "num" },
    num(fmtPct(busy, 0), busy),
  ];
  const cohortRows = cohorts.filter((c) => c.runs_succeeded).map((c) => row(c.name, c.completed_connections + c.failed_connections,
    c.nginx_accepts, c.tcp_passive_opens, c.mean_cpu_busy_share));
  const runRows = runs.filter((r) => r.status === "succeeded").map((r) => row(`${r.cohort} #${r.repetition} ${nodeName(r)}`,
    r.completed_connections + r.failed_connections, r.counters.nginx_accepts, r.counters.tcp_passive_opens, r.counters.cpu_busy_share));
  return [
    tableWithCsv(table(`Over the measured windows, per cohort. Red: differs from what the generator finished by more than ${AGREE_WITHIN * 100}%.`,
      ["Cohort", num("loadgen done"), num("nginx accepts"), num("kernel PassiveOpens"), num("CPU busy")], cohortRows, { id: "counters-table" }), "counters"),
    h("details", {}, h("summary", {}, "Per run"),
      tableWithCsv(table(null, ["Run", num("loadgen done"), num("nginx accepts"), num("kernel PassiveOpens"), num("CPU busy")], runRows), "counters-per-run")),
  ];
}

// What each cohort's windows could not control: the numbers, and the flags above thresholds.
function noiseText(flag) {
  switch (flag.kind) {
    case "steal": return `${fmtPct(flag.share)} of CPU time stolen`;
    case "other_work": return `other work took ${flag.cpus.toFixed(2)} CPU`;
    case "device_interrupts": return `${fmtInt(flag.per_second)} device interrupts/s on nginx's CPUs`;
    case "conntrack_drops": return `connection tracking dropped ${fmtInt(flag.packets)} packets (its table was full: raise net.netfilter.nf_conntrack_max or stop tracking the target's connections)`;
    case "frequency_scaling": return `frequency governor ${flag.governor} (not performance)`;
    case "shared_cores": return "SMT on (logical CPUs share cores)";
    case "unpinned": return `nginx shared CPUs with the generator: ${flag.reason}`;
    default: return flag.kind;
  }
}

function noiseSection(cohorts) {
  const rows = cohorts.filter((c) => c.node_noise).map((c) => {
    const n = c.node_noise;
    return [
      c.name,
      num(fmtPct(n.steal_share_max), n.steal_share_max),
      num(n.other_work_cpus.toFixed(2), n.other_work_cpus),
      num(fmtInt(n.device_interrupts_per_second), n.device_interrupts_per_second),
      n.watched_cpus.join(", "),
      n.conntrack_dropped == null ? "–" : num(fmtInt(n.conntrack_dropped), n.conntrack_dropped),
      n.flags.length ? n.flags.map((f) => h("div", {}, noiseText(f))) : "–",
    ];
  });
  if (!rows.length) return null;
  return [
    h("h2", { id: "noise" }, "What the windows could not control"),
    tableWithCsv(table("CPU time the hypervisor stole (worst run), CPUs' worth of work by neither nginx nor loadlab, device interrupts on nginx's CPUs, packets the node's connection tracking dropped (– where it tracks none); flagged above their thresholds.",
      ["Cohort", num("Steal"), num("Other work (CPU)"), num("Device interrupts/s"), "Watched CPUs", num("Conntrack drops"), "Noise"], rows, { id: "noise-table" }), "noise"),
  ];
}

function locksSection(cohorts) {
  return h("div", { class: "side" }, cohorts.filter((c) => c.runs_succeeded).map((c) => h("section", {},
    h("h3", {}, c.name),
    (c.lock_sources || []).length
      ? h("p", { class: "note" }, `Seen through ${c.lock_sources.join(" and ")}.`) : null,
    c.locks.length
      ? tableWithCsv(table(c.epoll_share_of_contention != null ? `epoll's share of all lock wait: ${fmtPct(c.epoll_share_of_contention)}` : null,
        ["Lock", "Call path with most wait", num("Wait, share of CPU"), num("per 1,000 conn"), num("max wait")],
        c.locks.map((l) => [
          { text: `${l.lock} (${l.lock_type})`, value: l.lock },
          { text: l.top_caller, value: l.top_caller },
          num(fmtPct(l.share_of_cpu_time, 2), l.share_of_cpu_time),
          num(l.per_thousand_connections.toFixed(1), l.per_thousand_connections),
          num(fmtNs(l.max_wait_ns), l.max_wait_ns),
        ])), `locks-${c.name}`)
      : h("p", { class: "note" }, c.lock_contention_unavailable.length
        ? `Not collected: ${c.lock_contention_unavailable.join("; ")}` : "No contention recorded.")
  )));
}

function symbolsSection(cohorts) {
  return h("div", { class: "side" }, cohorts.filter((c) => c.runs_succeeded).map((c) => h("section", {},
    h("h3", {}, c.name),
    c.cpu_symbols.length
      ? tableWithCsv(table(`${fmtInt(c.cpu_profile_samples)} samples`, ["Symbol", num("self"), num("children")],
        c.cpu_symbols.map((sym) => [h("code", {}, sym.symbol), num(fmtPct(sym.self_share), sym.self_share),
          num(fmtPct(sym.total_share), sym.total_share)])), `cpu-${c.name}`)
      : h("p", { class: "note" }, c.cpu_profile_unavailable.length
        ? `Not collected: ${c.cpu_profile_unavailable.join("; ")}` : "No profile recorded."))));
}

async function callChainsSection(experiment, baseline, symbol) {
  const target = document.getElementById("callchains-body");
  if (!target) return;
  const form = h("form", { class: "controls", onsubmit: (e) => {
    e.preventDefault();
    navigate(experimentUrl(experiment.id, experiment, baseline, e.target.elements.symbol.value.trim()) + "#callchains");
  } },
    h("label", {}, "Symbol", h("input", { name: "symbol", id: "symbol", value: symbol, list: "symbols" })),
    h("datalist", { id: "symbols" }, ["osq_lock", "eventpoll_release_file", "__mutex_lock", "ep_remove", "tcp_v4_connect"].map((v) => h("option", { value: v }))),
    h("button", { type: "submit" }, "Show"));
  let answer;
  try {
    answer = await api(`/api/v1/experiments/${experiment.id}/callchains?symbol=${encodeURIComponent(symbol)}`);
  } catch (e) {
    target.replaceChildren(form, h("p", { class: "problem", role: "alert" }, e.message));
    return;
  }
  const base = answer.cohorts.find((c) => c.cohort === baseline);
  const key = (frames) => frames.join(";");
  const baseShare = new Map((base ? base.chains : []).map((c) => [key(c.frames), c.share]));
  const sections = answer.cohorts.map((c) => h("section", { "data-cohort": c.cohort },
    h("h3", {}, c.cohort),
    h("p", { class: "note" }, `${symbol}: ${fmtPct(c.children_share)} of all samples with it on the stack (children), ${fmtPct(c.self_share)} in it (self); ${c.distinct_chains} distinct chains, the top ${c.chains.length} shown.`),
    c.chains.length
      ? tableWithCsv(table(null, ["Chain (callee first)", num("Share"), num(c.cohort === baseline ? "" : `vs ${baseline}`)],
        c.chains.map((ch) => [
          { text: ch.frames.join(" ← "), value: ch.frames.join(";"), cls: "frames" },
          num(fmtPct(ch.share, 2), ch.share),
          c.cohort === baseline ? "" : num(`${((ch.share - (baseShare.get(key(ch.frames)) || 0)) * 100).toFixed(2)} pt`,
            ch.share - (baseShare.get(key(ch.frames)) || 0)),
        ])), `callchains-${c.cohort}`)
      : h("p", { class: "note" }, `${symbol} is on no sampled stack of this cohort.`)));
  target.replaceChildren(form,
    h("p", { class: "note" }, "Like perf report --children -G narrowed to one symbol: each chain runs from the symbol out to the process. Shares are of all samples, idle included; the difference is in percentage points against the baseline."),
    h("div", { class: "side" }, sections));
}

function flamegraphSection(experiment, baseline, params) {
  const cohort = params.get("cohort") && experiment.cohorts.includes(params.get("cohort"))
    ? params.get("cohort") : experiment.cohorts.find((c) => c !== baseline) || baseline;
  const frame = h("iframe", { class: "flame", id: "flame", title: "Flamegraph", src: "about:blank" });
  const cohortSelect = h("select", { id: "flame-cohort" }, experiment.cohorts.map((c) => h("option", { value: c, selected: c === cohort }, c)));
  const kindSelect = h("select", { id: "flame-kind" },
    h("option", { value: "" }, "flamegraph"),
    experiment.cohorts.map((c) => h("option", { value: c, selected: c === baseline && c !== cohort }, `differential against ${c}`)));
  const show = () => {
    const q = new URLSearchParams({ cohort: cohortSelect.value });
    if (kindSelect.value && kindSelect.value !== cohortSelect.value) q.set("against", kindSelect.value);
    const src = `/api/v1/experiments/${experiment.id}/flamegraph?${q}`;
    frame.src = src;
    open.href = src;
  };
  const open = h("a", { href: "#" }, "Open the SVG on its own");
  cohortSelect.addEventListener("change", show);
  kindSelect.addEventListener("change", show);
  // Loaded once the frame is laid out: inferno sizes the flamegraph to the frame's width.
  requestAnimationFrame(() => requestAnimationFrame(show));
  return [
    h("div", { class: "controls" }, h("label", {}, "Cohort", cohortSelect), h("label", {}, "Show", kindSelect), open),
    h("p", { class: "note" }, "Click a frame to zoom, Ctrl+F inside it to search. Differential: red where the cohort spends more time than the other, blue where less."),
    frame,
  ];
}

function nodesSection(nodes, runs) {
  return nodes.map((n) => {
    const id = `${n.hostname}/${n.kernel_release}`;
    const facts = n.facts || {};
    const symbols = facts.kernel_symbols || {};
    return h("section", { class: "node" },
      h("h3", {}, `${n.hostname}: ${n.kernel_release}`),
      table(null, ["Fact", "Value"], [
        ["kernel", `${n.kernel_release} (${n.kernel_version})`],
        ["epoll refcount patch", h("strong", { "data-field": "patch" }, facts.epoll_refcount_patch || "unknown")],
        ["kernel symbols", Object.entries(symbols).map(([k, v]) => `${k}: ${v}`).join(", ") || "–"],
        ["CPU", `${n.cpu_model}, ${n.logical_cpus} logical CPUs`],
        ["memory", `${(n.memory_bytes / 2 ** 30).toFixed(1)} GiB`],
        ...Object.entries(facts).filter(([k]) => !["kernel_symbols", "epoll_refcount_patch"].includes(k))
          .map(([k, v]) => [k.replace(/_/g, " "), v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v)]),
        ["runs here", String(runs.filter((r) => r.node_id.startsWith(`${id}/`)).length)],
      ]));
  });
}

/// The node a run ran on: its id starts with the node's name (hostname or --node-name).
function nodeName(run) {
  return run.node_id.split("/")[0];
}

function runsSection(runs) {
  const rows = [...runs].sort((a, b) => a.sequence - b.sequence || a.attempt - b.attempt).map((r) => [
    r.cohort,
    nodeName(r),
    num(r.repetition, r.repetition),
    num(r.attempt, r.attempt),
    r.status === "succeeded" ? "succeeded" : { text: `failed: ${r.failure_reason}`, value: `failed: ${r.failure_reason}`, cls: "disagree" },
    num(fmtRate(r.connections_per_second), r.connections_per_second),
    num(fmtInt(r.completed_connections), r.completed_connections),
    num(fmtInt(r.failed_connections), r.failed_connections),
    num(r.total_latency ? fmtUs(r.total_latency.p99_us) : "–", r.total_latency?.p99_us),
    fmtTime(r.started_at),
  ]);
  return tableWithCsv(table(null, ["Cohort", "Node", num("Rep."), num("Attempt"), "Outcome", num("conn/s"), num("Completed"), num("Failed"),
    num("p99 total"), "Started"], rows, { id: "runs-table" }), "runs");
}

// ---- the fleet ----------------------------------------------------------------------------

async function fleetPage(params) {
  const nodes = await api("/api/v1/nodes");
  const kernels = [...new Set(nodes.map((n) => n.kernel_release))].sort();
  const groupBy = params.get("groupBy") || "cpu";
  if (!["cpu", "cpu_model", "none"].includes(groupBy)) {
    throw new ApiProblem(400, "bad request", `groupBy must be cpu, cpu_model or none, not "${groupBy}".`);
  }
  if (!kernels.length) {
    setPage("Fleet", h("h1", {}, "Fleet"), h("p", { class: "note", id: "empty" }, "No node has been measured yet, so there is no kernel to compare."));
    return;
  }
  const a = params.get("a") || kernels[0];
  if (!kernels.includes(a)) {
    throw new ApiProblem(404, "not found", `No measured node runs kernel "${a}"; the kernels measured are ${kernels.join(", ")}.`);
  }
  const go = (na, ng) => navigate(`/fleet?${new URLSearchParams({ a: na, groupBy: ng })}`);
  const aSelect = h("select", { id: "kernel-a", onchange: (e) => go(e.target.value, groupBy) }, kernels.map((k) => h("option", { value: k, selected: k === a }, k)));
  const gSelect = h("select", { id: "group-by", onchange: (e) => go(a, e.target.value) },
    [["cpu", "CPU model and count"], ["cpu_model", "CPU model"], ["none", "all hardware together"]].map(([v, t]) => h("option", { value: v, selected: v === groupBy }, t)));
  const answers = await Promise.all(kernels.map((b) =>
    api(`/api/v1/kernels/compare?${new URLSearchParams({ a, b, groupBy })}`).then((answer) => ({ b, answer }))));
  // One matrix per workload: runs of different workloads are never pooled into one cell.
  const workloads = new Map();
  for (const { b, answer } of answers) {
    for (const g of answer.groups) {
      const key = JSON.stringify(g.workload);
      if (!workloads.has(key)) workloads.set(key, { workload: g.workload, hardware: new Map(), cells: new Map() });
      const w = workloads.get(key);
      const hw = groupBy === "none" ? "all hardware" : g.logical_cpus != null ? `${g.cpu_model}, ${g.logical_cpus} CPUs` : g.cpu_model;
      w.hardware.set(hw, true);
      w.cells.set(`${b}\u0000${hw}`, g);
    }
  }
  const matrices = [...workloads.values()].map((w, i) => {
    const hardware = [...w.hardware.keys()].sort();
    const rows = kernels.filter((b) => hardware.some((hw) => w.cells.has(`${b}\u0000${hw}`))).map((b) => [
      { text: b === a ? `${b} (A against itself: the noise floor)` : b, value: b },
      ...hardware.map((hw) => fleetCell(w.cells.get(`${b}\u0000${hw}`))),
    ]);
    return h("section", { class: "workload" },
      h("h2", { id: `workload-${i + 1}` }, `Workload ${i + 1}`),
      h("p", { class: "note" }, h("code", {}, describeWorkload(w.workload))),
      tableWithCsv(table(`Each cell: kernel B's runs against kernel A's (${a}) on that hardware, ratio of geometric means with its 95% CI.`,
        ["Kernel B", ...hardware], rows, { class: "fleet-matrix" }), `fleet-${i + 1}`));
  });
  setPage("Fleet", h("h1", {}, "Fleet: kernels × hardware"),
    h("div", { class: "controls" }, h("label", {}, "Kernel A", aSelect), h("label", {}, "Group hardware by", gSelect)),
    h("p", { class: "note" }, answers[0] ? answers[0].answer.pooling : ""),
    matrices.length ? matrices : h("p", { class: "note" }, "No succeeded runs on these kernels."),
    h("p", { class: "note" }, answers[0] ? answers[0].answer.method : ""));
}

function fleetCell(group) {
  if (!group) return { text: "–", value: "" };
  const cmp = group.comparison;
  const verdict = cmp ? cmp.verdict : "insufficient_data";
  const cell = h("span", { class: `cell ${verdict}`, "data-verdict": verdict, "data-ratio": cmp ? cmp.ratio : "" },
    h("span", { class: "ratio" }, cmp ? fmtRatio(cmp.ratio) : "no runs"),
    cmp ? h("span", {}, ` ${VERDICT_TEXT[verdict]}`) : null, h("br"),
    cmp && cmp.ci95 ? h("span", {}, `95% CI ${fmtCi(cmp.ci95, fmtRatio)}`) : h("span", {}, "no CI"), h("br"),
    h("span", { class: "note" }, `A: ${group.a.runs} runs on ${group.a.nodes} nodes · B: ${group.b.runs} runs on ${group.b.nodes} nodes`),
    group.caveat ? [h("br"), h("span", { class: "caveat", title: group.caveat }, "emulated CPUs: the ratio measures the emulator")] : null);
  return cell;
}

function describeWorkload(w) {
  const parts = [];
  if (w.load) parts.push(`load ${JSON.stringify(w.load)}`);
  if (w.target) parts.push(`target ${JSON.stringify(w.target)}`);
  if (w.collect) parts.push(`collect ${JSON.stringify(w.collect)}`);
  return parts.join(" · ") || JSON.stringify(w);
}

// ---- bisections ---------------------------------------------------------------------------

const BISECTION_STATUS = {
  running: "running",
  found: "found",
  never: "never holds in the list",
  from_first: "holds from the first kernel",
  undecided: "undecided",
  failed: "failed",
  interrupted: "interrupted",
};

async function bisectionsPage() {
  const bisections = await api("/api/v1/bisections");
  if (!bisections.length) {
    setPage("Bisections", h("h1", {}, "Bisections"),
      h("p", { class: "note", id: "empty" }, "No bisection yet: `loadlab bisect FILE` finds the first kernel of an ordered list where a behaviour holds."));
    return;
  }
  const rows = bisections.map((b) => [
    { text: link(`/bisections/${b.id}`, b.name), value: b.name },
    b.condition,
    BISECTION_STATUS[b.status] || b.status,
    b.first_holding || "–",
    num(String(b.steps.length), b.steps.length),
    { text: new Date(b.created_at).toLocaleString(), value: b.created_at },
  ]);
  setPage("Bisections", h("h1", {}, "Bisections"),
    tableWithCsv(table("Newest first. Each step is an experiment on one kernel.",
      ["Bisection", "First kernel where", "Status", "Answer", "Steps", "Started"], rows, { id: "bisections" }), "bisections"));
}

async function bisectionPage(id) {
  const b = await api(`/api/v1/bisections/${encodeURIComponent(id)}`);
  const stepOf = new Map(b.steps.map((s) => [s.kernel_index, s]));
  const rows = b.kernels.map((kernel, i) => {
    const s = stepOf.get(i);
    const holds = !s ? "not measured" : s.holds === true ? "holds" : s.holds === false ? "does not hold" : "undecided";
    return [
      num(String(i + 1), i + 1),
      { text: kernel === b.first_holding ? h("strong", {}, kernel) : kernel, value: kernel },
      s ? num(String(s.step), s.step) : { text: "–", value: "" },
      holds,
      s ? { text: link(`/experiments/${s.experiment_id}`, s.decision), value: s.decision } : { text: "", value: "" },
    ];
  });
  setPage(`Bisection ${b.name}`, h("h1", {}, `Bisection ${b.name}`),
    h("p", { id: "answer" }, h("strong", {}, `${BISECTION_STATUS[b.status] || b.status}: `), b.answer || "the search is running."),
    h("p", { class: "note" }, `First kernel where ${b.condition}. Kernels oldest first; each step's decision links to its experiment.`),
    tableWithCsv(table("", ["#", "Kernel", "Step", "Result", "Decision (the step's experiment)"], rows, { id: "bisection-steps" }), "bisection"),
    h("p", { class: "note" }, "Also as JSON: ", h("a", { href: `/api/v1/bisections/${b.id}` }, `/api/v1/bisections/${b.id}`), "."));
  if (b.status === "running") schedulePoll(() => bisectionPage(id));
}
