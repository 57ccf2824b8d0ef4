#!/usr/bin/env node
// Loads UI-format workflows into ComfyUI's real web editor (headless Chromium) and fails when the
// frontend cannot build them.
//
//   node check_workflows.mjs [--out DIR] <server url> <workflow.json>...
//
// For each workflow: app.loadGraphData(json), then it is a failure when
//   - the frontend reports missing node types (the list it hands to extensions' afterConfigureGraph,
//     the same list its "missing nodes" dialog shows), or a node's type is not in
//     LiteGraph.registered_node_types, or a node is flagged has_errors;
//   - a node re-serialises with a different number of widgets_values than the file has
//     (the widgets the schema builds do not line up with the saved values);
//   - a link of the file is not in the loaded graph, or the editor's link repair (fixBadLinks)
//     complains: the file's links disagree with its nodes' slots;
//   - a page error is thrown while loading.
// A screenshot of the graph goes to DIR/<workflow name>.png (default ./screenshots).
// Needs /usr/bin/chromium and `npm install` here (playwright-core).
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

function usage(msg) {
  if (msg) console.error(msg);
  console.error("usage: node check_workflows.mjs [--out DIR] <server url> <workflow.json>...");
  process.exit(2);
}

const argv = process.argv.slice(2);
let outDir = "screenshots";
const rest = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--out") outDir = argv[++i];
  else rest.push(argv[i]);
}
const [serverUrl, ...files] = rest;
if (!serverUrl || !files.length) usage();
const url = new URL(serverUrl);
if (!["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)) usage(`refusing non-loopback server ${serverUrl}`);
fs.mkdirSync(outDir, { recursive: true });

// A first start of the editor may open the template browser over the canvas; mark it done.
await fetch(new URL("/api/settings/Comfy.TutorialCompleted", url), { method: "POST", body: "true" }).catch(() => {});

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "marionette-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1600, height: 1000 },
});
let failed = false;
try {
  const page = context.pages()[0] || (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(String(err && err.stack || err)));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(`console: ${m.text()}`);
  });
  page.on("response", (r) => { if (r.status() >= 400) pageErrors.push(`console: HTTP ${r.status()} ${r.url()}`); });
  page.on("requestfailed", (r) => pageErrors.push(`console: request failed ${r.url()} (${r.failure()?.errorText})`));

  await page.goto(url.href, { waitUntil: "domcontentloaded", timeout: 60000 });
  await page.waitForFunction(
    () => window.app && window.app.graph && window.LiteGraph
      && Object.keys(window.LiteGraph.registered_node_types || {}).length > 100,
    null, { timeout: 90000 });
  await page.evaluate(() => {
    window.__marionetteMissing = null;
    window.app.registerExtension({
      name: "marionette.test.missingNodes",
      afterConfigureGraph(missing) { window.__marionetteMissing = (missing || []).map((m) => (typeof m === "object" ? m.type : m)); },
    });
  });
  const startupErrors = pageErrors.splice(0);
  if (startupErrors.length) {  // the stock editor logs a few (absent user files); listed, never fatal
    console.log(`note: ${startupErrors.length} page message(s) while the editor started:\n  ${startupErrors.map((e) => e.split("\n")[0]).join("\n  ")}`);
  }

  for (const file of files) {
    const name = path.basename(file, ".json");
    const workflow = JSON.parse(fs.readFileSync(file, "utf8"));
    const result = await page.evaluate(async ([wf, wfName]) => {
      const { app, LiteGraph } = window;
      window.__marionetteMissing = null;
      const dialogsBefore = new Set(document.querySelectorAll(".p-dialog"));
      await app.loadGraphData(structuredClone(wf), true, true, wfName, { showMissingModelsDialog: false });
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const problems = [];
      const registered = LiteGraph.registered_node_types || {};
      const subgraphIds = new Set(((wf.definitions || {}).subgraphs || []).map((s) => s.id));
      const graphs = [["graph", app.graph]];
      for (const sg of (app.graph.subgraphs ? app.graph.subgraphs.values() : [])) graphs.push([`subgraph ${sg.name || sg.id}`, sg]);
      let count = 0;
      for (const [where, g] of graphs) {
        for (const node of g.nodes || g._nodes || []) {
          count++;
          const t = node.type;
          if (!(t in registered) && !subgraphIds.has(t)) problems.push(`${where} node ${node.id}: type ${t} is not registered`);
          if (node.has_errors) problems.push(`${where} node ${node.id} (${t}) is flagged has_errors`);
        }
      }
      const missing = window.__marionetteMissing || [];
      for (const t of missing) problems.push(`frontend reports missing node type ${t}`);
      const saved = new Map((wf.nodes || []).map((n) => [n.id, n]));
      for (const n of app.graph.serialize().nodes) {
        const orig = saved.get(n.id);
        if (!orig || !Array.isArray(orig.widgets_values)) continue;
        const got = Array.isArray(n.widgets_values) ? n.widgets_values.length : 0;
        if (got !== orig.widgets_values.length) {
          problems.push(`node ${n.id} (${n.type}): the editor builds ${got} widget values ${JSON.stringify(n.widgets_values)}, ` +
            `the file has ${orig.widgets_values.length} ${JSON.stringify(orig.widgets_values)}`);
        }
      }
      const key = (l) => `${l[1]}:${l[2]}->${l[3]}:${l[4]}`;
      const after = new Set((app.graph.serialize().links || []).map(key));
      for (const l of wf.links || []) {
        if (Array.isArray(l) && !after.has(key(l))) problems.push(`link ${JSON.stringify(l)} is not in the loaded graph (the editor rewired or dropped it)`);
      }
      const dialog = [...document.querySelectorAll(".p-dialog")].filter((d) => !dialogsBefore.has(d)).map((d) => d.innerText).find((t) => /missing/i.test(t));
      if (dialog) problems.push(`a dialog reports: ${dialog.slice(0, 300).replace(/\s+/g, " ")}`);
      try { await app.extensionManager.command.execute("Comfy.Canvas.FitView"); } catch { /* older frontends */ }
      app.graph.setDirtyCanvas(true, true);
      return { problems, count, types: [...new Set((wf.nodes || []).map((n) => n.type))] };
    }, [workflow, `${name}.json`]).catch((err) => ({ problems: [`loading threw: ${err.message.split("\n")[0]}`], count: 0, types: [] }));
    await page.waitForTimeout(800); // let the canvas draw
    const shot = path.join(outDir, `${name}.png`);
    await page.screenshot({ path: shot });
    const errors = pageErrors.splice(0);
    // Page errors, and console errors from the editor's workflow repair (bad links), fail the workflow.
    const fatal = errors.filter((e) => !e.startsWith("console:") || /patched data|fixBadLinks|validateWorkflow/.test(e));
    const problems = [...result.problems, ...fatal.map((e) => `page error: ${e}`)];
    if (problems.length) {
      failed = true;
      console.log(`FAIL ${file}\n  ${problems.join("\n  ")}`);
    } else {
      console.log(`ok   ${file}: ${result.count} nodes (${result.types.join(", ")}) -> ${shot}`);
    }
    for (const e of errors.filter((e) => !fatal.includes(e))) console.log(`  note: ${e}`);
    await page.keyboard.press("Escape").catch(() => {});
  }
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
