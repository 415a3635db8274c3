// Model panel: GET /v1/models (model, runtime, geometry, components and their warm batch sizes) and
// live figures scraped from /metrics every few seconds while the panel is open.

import { call, fmt, fmtSeconds, getJson, guarded, showError } from "../api.js";
import { sparkline } from "../plot.js";
import { liveFigures, parseMetrics } from "../prom.js";

const $ = (id) => document.getElementById(id);
export const REFRESH_MS = 3000;
const WINDOW_S = 30; // p95 and rates over the last half minute
const SPARK_POINTS = 40;

function kv(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    dl.append(Object.assign(document.createElement("dt"), { textContent: k }));
    const dd = document.createElement("dd");
    if (v instanceof Node) dd.append(v);
    else dd.textContent = v;
    dl.append(dd);
  }
}

function cell(tr, content, cls) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  if (cls) td.className = cls;
  tr.append(td);
}

function chips(values) {
  const span = document.createElement("span");
  for (const v of values) span.append(Object.assign(document.createElement("span"), { className: "chip", textContent: String(v) }));
  return span;
}

const shape = (io) => io.map((t) => `${t.name} ${t.dtype} [${t.shape.join(", ")}]`).join("\n");

function showModel(m) {
  $("model-title").textContent = `${m.name} v${m.version}`;
  kv($("model-info"), [
    ["runtime", m.runtime],
    ["ready", m.ready ? "yes" : "no (warming)"],
    ["image size", `${m.image_size}×${m.image_size} px`],
    ["frames", `${m.fps} fps, tubelets of ${m.tubelet}`],
    ["latent actions", `${m.latent_dim}-d`],
    ["state", `[${m.state_shape.join(", ")}] (tokens × dim)`],
    ["context", `up to ${m.max_steps} states`],
    ["controller", m.action_dim == null ? "none (no planning)" : `${m.action_dim}-d real actions`],
    ["planner presets", Object.keys(m.planner_presets || {}).join(", ")],
    ["limits", Object.entries(m.limits || {}).map(([k, v]) => `${k.replace(/^max_/, "")} ${v}`).join(" · ")],
  ]);
  const table = $("model-components");
  table.replaceChildren();
  const head = document.createElement("tr");
  for (const h of ["component", "inputs", "outputs", "max batch", "warm batch sizes"]) head.append(Object.assign(document.createElement("th"), { textContent: h }));
  table.append(head);
  for (const [name, c] of Object.entries(m.components)) {
    const tr = document.createElement("tr");
    tr.dataset.component = name;
    cell(tr, name);
    cell(tr, Object.assign(document.createElement("span"), { className: "mono", textContent: shape(c.inputs || []) }));
    cell(tr, Object.assign(document.createElement("span"), { className: "mono", textContent: shape(c.outputs || []) }));
    cell(tr, String(c.max_batch_size ?? "–"), "num");
    cell(tr, chips(c.warm_batch_sizes || []));
    table.append(tr);
  }
}

export function initModel() {
  const errorBox = $("model-error");
  const snapshots = []; // {t, samples}, oldest first
  const rates = [];
  let timer = null;
  let modelFailed = false; // an error of GET /v1/models stays shown until the panel is opened again

  async function scrape() {
    const text = await (await call("/metrics", { accept: "text/plain" })).text();
    const now = { t: performance.now() / 1000, samples: parseMetrics(text) };
    const prev = snapshots[snapshots.length - 1] || null;
    snapshots.push(now);
    while (snapshots.length > 2 && now.t - snapshots[0].t > WINDOW_S) snapshots.shift();
    const win = liveFigures(now, snapshots.length > 1 ? snapshots[0] : null);
    if (prev) {
      rates.push(liveFigures(now, prev).requestsPerS);
      if (rates.length > SPARK_POINTS) rates.shift();
    }
    $("live-rps").textContent = win.requestsPerS == null ? "…" : fmt(win.requestsPerS, 2);
    $("live-p95").textContent = win.p95S == null ? "–" : fmtSeconds(win.p95S);
    $("live-p95-label").textContent = win.p95Since === "window" ? "p95 latency" : "p95 latency (since start)";
    $("live-queue").textContent = String(win.queued);
    $("live-inflight").textContent = String(win.inflight);
    $("live-when").textContent = `updated ${new Date().toLocaleTimeString()} · over the last ${Math.round(now.t - (snapshots[0]?.t ?? now.t))} s`;
    sparkline($("live-spark"), rates);
    const table = $("live-components");
    table.replaceChildren();
    const head = document.createElement("tr");
    for (const h of ["component", "queued rows", "batches/s", "mean batch", "p95 compute"]) head.append(Object.assign(document.createElement("th"), { textContent: h }));
    table.append(head);
    for (const [name, c] of Object.entries(win.components)) {
      const tr = document.createElement("tr");
      cell(tr, name);
      cell(tr, String(c.queued), "num");
      cell(tr, c.batchesPerS == null ? "…" : fmt(c.batchesPerS, 2), "num");
      cell(tr, c.meanBatch == null ? "–" : fmt(c.meanBatch, 1), "num");
      cell(tr, c.p95ComputeS == null ? "–" : fmtSeconds(c.p95ComputeS), "num");
      table.append(tr);
    }
    $("live-rps").dataset.scrapes = String(snapshots.length);
  }

  async function tick() {
    try {
      await scrape();
      if (!modelFailed) showError(errorBox, null);
    } catch (err) {
      showError(errorBox, err);
    }
    if (timer !== null) timer = setTimeout(tick, REFRESH_MS);
  }

  return {
    async open() {
      const shown = await guarded(errorBox, async () => {
        showModel((await getJson("/v1/models")).models[0]);
        return true;
      });
      modelFailed = !shown;
      if (timer === null) {
        timer = 0;
        tick();
      }
    },
    close() {
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}
