// Drives the dashboard in the system's headless Chromium against a running `loadlab serve`
// and checks that what it shows is what the REST API answers. Environment:
//   LOADLAB_URL         the server, e.g. http://127.0.0.1:PORT
//   LOADLAB_EXPERIMENT  an experiment with succeeded runs of two or more cohorts
//   LOADLAB_FAILED      an experiment whose runs all failed
//   LOADLAB_ARTIFACTS   where screenshots go
//   LOADLAB_EMPTY_URL   (optional) a server over an empty database
//   LOADLAB_BISECTION   a finished bisection whose steps are stored experiments
// Exits non-zero, naming each failed check, when anything is wrong.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { once } from "node:events";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const base = process.env.LOADLAB_URL;
const experimentId = process.env.LOADLAB_EXPERIMENT;
const failedId = process.env.LOADLAB_FAILED;
const liveId = process.env.LOADLAB_LIVE;
const bisectionId = process.env.LOADLAB_BISECTION;
const emptyBase = process.env.LOADLAB_EMPTY_URL;
const artifacts = process.env.LOADLAB_ARTIFACTS || "dashboard-artifacts";
mkdirSync(artifacts, { recursive: true });

const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}
async function apiJson(path, root = base) {
  const response = await fetch(root + path);
  return response.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true, bypassCSP: true });
const page = await context.newPage();
const consoleErrors = [];
// A full-page screenshot resizes the page for a moment, and inferno's flamegraph script, laying
// itself out again in a frame that is momentarily zero wide, sets a negative width: an artefact
// of taking the screenshot (it comes asynchronously, from the frame), let pass.
page.on("console", (m) => {
  if (m.type() !== "error") return;
  if (m.location().url.includes("/flamegraph?") && /attribute width: A negative value/.test(m.text())) return;
  consoleErrors.push(`${page.url()}: ${m.text()}`);
});
page.on("pageerror", (e) => consoleErrors.push(`${page.url()}: ${e.message}`));

async function axe(name) {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(async () => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(serious.length === 0, `${name}: no serious accessibility violations${serious.length ? ": " + serious.map((v) => `${v.id} (${v.nodes.length}: ${v.nodes[0].target})`).join(", ") : ""}`);
}
async function shot(name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
  await page.screenshot({ path: join(artifacts, `${name}-top.png`) });
}
const cellText = (selector) => page.locator(selector).first().textContent();
const fmtRate = (v) => v.toLocaleString("en-US", { maximumFractionDigits: 0 });
const fmtRatio = (v) => `${v.toFixed(3)}×`;

try {
  // The list.
  const list = await apiJson("/api/v1/experiments?limit=20&offset=0");
  await page.goto(base + "/");
  await page.locator(`tr[data-experiment="${experimentId}"] [data-field="verdict"] .verdict, tr[data-experiment="${experimentId}"] [data-field="verdict"]:text("–")`).first().waitFor();
  const rows = await page.locator("#experiments tbody tr").count();
  check(rows === list.items.length, `list shows the API's ${list.items.length} experiments (shows ${rows})`);
  const comparison = await apiJson(`/api/v1/experiments/${experimentId}/comparison`);
  const kernels = [...new Set(comparison.nodes.map((n) => n.kernel_release))].sort().join(", ");
  check((await cellText(`tr[data-experiment="${experimentId}"] [data-field="kernels"]`)) === kernels, `list shows the nodes' kernels ${kernels}`);
  const stored = comparison.cohorts.reduce((n, c) => n + c.runs_succeeded, 0);
  const progress = await cellText(`tr[data-experiment="${experimentId}"] [data-field="progress"]`);
  check(progress === `${stored} / ${comparison.experiment.planned_runs}`, `list shows runs stored / planned ${progress} as the API counts them`);
  await axe("list");
  await shot("list");
  // Search, from the keyboard.
  const term = comparison.experiment.name.slice(1, 4);
  await page.locator("#search").focus();
  await page.keyboard.type(term);
  await page.keyboard.press("Enter");
  await page.waitForURL(/\?q=/);
  // The unfiltered rows stay until the search's answer is drawn, which titles the page.
  await page.waitForFunction((title) => document.title.startsWith(title), `Experiments: ${term}`);
  const searched = await apiJson(`/api/v1/experiments?search=${encodeURIComponent(term)}&limit=20`);
  check((await page.locator("#experiments tbody tr").count()) === searched.items.length, "search shows what the API finds");

  // Live progress: one of two planned runs stored, then the second, with no reload between.
  if (liveId) {
    await page.goto(`${base}/?q=live-progress`);
    const progress = page.locator(`tr[data-experiment="${liveId}"] [data-field="progress"]`);
    await page.locator(`tr[data-experiment="${liveId}"] [data-field="progress"]:has-text("1 / 2")`).waitFor();
    check((await progress.textContent()).includes("last run"), "a running experiment shows its last run's conn/s");
    await page.evaluate(() => { window.notReloaded = true; });
    const stdin = createInterface({ input: process.stdin });
    console.log("waiting for the next run");
    await once(stdin, "line");
    stdin.close();
    await page.locator(`tr[data-experiment="${liveId}"] [data-field="status"]:text-is("completed")`).waitFor();
    check((await progress.textContent()).startsWith("2 / 2"), `the list follows the run to ${await progress.textContent()} without a reload`);
    check(await page.evaluate(() => window.notReloaded === true), "the page was not reloaded");
  }

  // An experiment, first paint timed.
  const started = Date.now();
  await page.goto(`${base}/experiments/${experimentId}`);
  await page.locator("#cohorts tbody tr").first().waitFor();
  const firstPaintMs = Date.now() - started;
  await page.locator('#callchains-body section, #callchains-body .problem').first().waitFor();
  console.log(`timing: experiment page with its tables drawn in ${firstPaintMs} ms`);
  const baseline = comparison.experiment.baseline;
  for (const c of comparison.cohorts) {
    const row = page.locator("#cohorts tbody tr", { has: page.locator(`#cohort-${c.name}`) });
    const mean = await row.locator("td").nth(2).textContent();
    check(mean === fmtRate(c.summary.mean), `${c.name}: mean ${mean} is the API's ${fmtRate(c.summary.mean)}`);
    if (c.name !== baseline) {
      const ratio = await row.locator("td").nth(5).textContent();
      check(ratio === fmtRatio(c.comparison.ratio), `${c.name}: ratio ${ratio} is the API's ${fmtRatio(c.comparison.ratio)}`);
      const verdict = await row.locator(".verdict").getAttribute("data-verdict");
      check(verdict === c.comparison.verdict, `${c.name}: verdict ${verdict} is the API's ${c.comparison.verdict}`);
    }
  }
  const dots = await page.locator("circle.run-dot").count();
  const succeeded = comparison.cohorts.reduce((n, c) => n + c.runs_succeeded, 0);
  check(dots === succeeded, `one dot per succeeded run (${dots} of ${succeeded})`);
  const runs = await apiJson(`/api/v1/experiments/${experimentId}/runs`);
  const lines = await page.locator("#timeline ~ figure polyline").count();
  check(lines === runs.filter((r) => r.status === "succeeded").length, `one timeline per succeeded run (${lines})`);
  const accepts = await page.locator("#counters-table tbody tr").first().locator("td").nth(2).textContent();
  check(accepts === comparison.cohorts[0].nginx_accepts.toLocaleString("en-US"), `nginx accepts ${accepts} is the API's`);
  const noisy = comparison.cohorts.filter((c) => c.node_noise);
  check(noisy.length > 0, "the API measured what the windows could not control");
  check(await page.locator("#noise-table tbody tr").count() === noisy.length, "one noise row per measured cohort");
  const otherWork = await page.locator("#noise-table tbody tr").first().locator("td").nth(2).textContent();
  check(otherWork === noisy[0].node_noise.other_work_cpus.toFixed(2), `other work ${otherWork} is the API's`);
  const chains = await apiJson(`/api/v1/experiments/${experimentId}/callchains?symbol=osq_lock`);
  const chainSections = await page.locator("#callchains-body section").count();
  check(chainSections === chains.cohorts.length, "call chains for every cohort");
  await axe("experiment");
  await shot("experiment");
  // Downloads: a chart as SVG, a table as CSV.
  const [svgDownload] = await Promise.all([page.waitForEvent("download"), page.locator("figure .downloads button", { hasText: "SVG" }).first().click()]);
  check(svgDownload.suggestedFilename() === "connections-per-second.svg", "chart downloads as SVG");
  const [csvDownload] = await Promise.all([page.waitForEvent("download"), page.locator("#cohorts + .downloads button").click()]);
  const csv = readFileSync(await csvDownload.path(), "utf8");
  check(csv.split("\n")[0].startsWith("Cohort,Runs,Mean conn/s"), "the comparison table downloads as CSV");
  const [pngDownload] = await Promise.all([page.waitForEvent("download"), page.locator("figure .downloads button", { hasText: "PNG" }).first().click()]);
  check(pngDownload.suggestedFilename() === "connections-per-second.png", "chart downloads as PNG");

  // The baseline switched: the URL says so and the ratios are the API's for that baseline.
  const other = comparison.experiment.cohorts.find((c) => c !== baseline);
  await page.selectOption("#baseline", other);
  await page.waitForURL(new RegExp(`baseline=${other}`));
  await page.locator(`#cohorts[data-baseline="${other}"]`).waitFor();
  const switched = await apiJson(`/api/v1/experiments/${experimentId}/comparison?baseline=${other}`);
  const back = switched.cohorts.find((c) => c.name === baseline);
  const backRow = page.locator("#cohorts tbody tr", { has: page.locator(`#cohort-${baseline}`) });
  const backRatio = await backRow.locator("td").nth(5).textContent();
  check(backRatio === fmtRatio(back.comparison.ratio), `against ${other}, ${baseline}'s ratio ${backRatio} is the API's ${fmtRatio(back.comparison.ratio)}`);
  await shot("experiment-baseline-switched");

  // The flamegraph, zoomed by a click on a frame.
  await page.goto(`${base}/experiments/${experimentId}#flamegraph`);
  const flame = page.frameLocator("#flame");
  await flame.locator("#frames g").first().waitFor();
  const frame = flame.locator("#frames g").nth(1);
  await frame.click();
  const unzoom = await flame.locator("#unzoom").getAttribute("class");
  check(!/hide/.test(unzoom || ""), "a click on a flamegraph frame zooms (reset zoom shown)");
  await shot("flamegraph-zoomed");

  // The fleet matrix.
  const nodes = await apiJson("/api/v1/nodes");
  const kernelA = [...new Set(nodes.map((n) => n.kernel_release))].sort()[0];
  await page.goto(`${base}/fleet`);
  await page.locator(".fleet-matrix .cell").first().waitFor();
  const fleet = await apiJson(`/api/v1/kernels/compare?a=${encodeURIComponent(kernelA)}&b=${encodeURIComponent(kernelA)}&groupBy=cpu`);
  const shownRatio = await page.locator(".fleet-matrix .cell .ratio").first().textContent();
  const group = fleet.groups[0];
  check(shownRatio === fmtRatio(group.comparison.ratio), `fleet cell ${shownRatio} is the API's ${fmtRatio(group.comparison.ratio)}`);
  await axe("fleet");
  await shot("fleet");

  // Bisections: the list, then one, its answer and each step linked to its experiment.
  const bisection = await apiJson(`/api/v1/bisections/${bisectionId}`);
  await page.goto(`${base}/bisections`);
  await page.locator("#bisections tbody tr").first().waitFor();
  const listed = await page.locator("#bisections tbody tr").count();
  check(listed === (await apiJson("/api/v1/bisections")).length, `the bisections list shows every bisection (${listed})`);
  await page.locator("#bisections tbody a").first().click();
  await page.locator("#bisection-steps").waitFor();
  const answer = await page.locator("#answer").textContent();
  check(answer.includes(bisection.answer), `the bisection's answer is the API's: ${answer}`);
  const stepLinks = await page.locator("#bisection-steps tbody a").evaluateAll((links) => links.map((a) => a.getAttribute("href")));
  check(JSON.stringify(stepLinks) === JSON.stringify(bisection.steps.map((s) => `/experiments/${s.experiment_id}`)),
    `each step links to its experiment: ${stepLinks.join(", ")}`);
  const kernelRows = await page.locator("#bisection-steps tbody tr").count();
  check(kernelRows === bisection.kernels.length, `every kernel of the list is a row (${kernelRows})`);
  await axe("bisection");
  await shot("bisection");

  check(consoleErrors.length === 0, `no console errors on the list, experiment, fleet and bisection pages${consoleErrors.length ? ": " + consoleErrors.join(" | ") : ""}`);
  consoleErrors.length = 0;
  // Dark mode: the same pages, readable (axe checks contrast) in the other colour scheme.
  const dark = await browser.newContext({ viewport: { width: 1400, height: 1000 }, colorScheme: "dark", bypassCSP: true });
  const darkPage = await dark.newPage();
  for (const [name, path] of [["list", "/"], ["experiment", `/experiments/${experimentId}`], ["fleet", "/fleet"], ["bisection", `/bisections/${bisectionId}`]]) {
    await darkPage.goto(base + path);
    await darkPage.locator("table").first().waitFor();
    await darkPage.addScriptTag({ content: axeSource });
    const result = await darkPage.evaluate(async () => window.axe.run(document, { resultTypes: ["violations"] }));
    const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    check(serious.length === 0, `${name} in dark mode: no serious accessibility violations${serious.length ? ": " + serious.map((v) => v.id).join(", ") : ""}`);
    await darkPage.screenshot({ path: join(artifacts, `${name}-dark-top.png`) });
  }
  await dark.close();

  // Bad input: each a clear page. The browser logs the API's 4xx answers behind them, nothing else.
  const clear = async (path, says, name, root = base) => {
    await page.goto(root + path);
    const problem = page.locator(".problem, #empty, #no-results").first();
    await problem.waitFor();
    const text = await problem.textContent();
    check(text.includes(says), `${path}: a clear page saying "${says}"`);
    await shot(name);
  };
  await clear("/experiments/00000000-0000-0000-0000-000000000000", "No experiment with id", "unknown-experiment");
  await clear("/experiments/not-an-id", "is not an experiment id", "malformed-id");
  await clear(`/experiments/${experimentId}?baseline=nope`, "is not a cohort", "unknown-baseline");
  await clear("/?page=abc", "page must be a whole number", "malformed-page");
  await clear("/fleet?groupBy=rack", "groupBy must be", "malformed-group-by");
  await clear("/nowhere", "Nothing lives at", "no-such-page");
  if (failedId) await clear(`/experiments/${failedId}`, "succeeded", "failed-only");
  if (emptyBase) {
    await clear("/", "No experiments are stored yet", "empty-list", emptyBase);
    await clear("/fleet", "No node has been measured", "empty-fleet", emptyBase);
  }
  const unexpected = consoleErrors.filter((e) => !/Failed to load resource: the server responded with a status of 4\d\d/.test(e));
  check(unexpected.length === 0, `no console errors on the bad-input pages but their 4xx answers${unexpected.length ? ": " + unexpected.join(" | ") : ""}`);
} catch (e) {
  failures.push(`the drive stopped: ${e.stack || e}`);
  console.log(`FAIL the drive stopped: ${e.stack || e}`);
  await shot("stopped").catch(() => {});
} finally {
  await browser.close();
}
if (failures.length) {
  console.log(`${failures.length} checks failed`);
  process.exit(1);
}
console.log("all checks passed");
