// Transfer: clip A's latent actions applied to clip B's first state, an async job:
// POST /v1/transfers (202 + Location) -> poll GET /v1/jobs/{id} -> the MP4 and metrics of the result.

import { call, fmt, fmtSeconds, getBlob, getJson, guarded } from "../api.js";
import { addUpload, allClips, fillSelect, getClip, onClipsChanged } from "../clips.js";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function row(table, cells, head = false) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement(head ? "th" : "td");
    td.textContent = c;
    if (!head && tr.children.length === 1) td.className = "num"; // the value column
    tr.append(td);
  }
  table.append(tr);
}

function showMetrics(job, m) {
  const table = $("transfer-metrics");
  table.replaceChildren();
  const c = m.cycle, px = m.pixels;
  row(table, ["what", "value", "meaning"], true);
  row(table, ["steps", String(m.steps), `latent actions of the source applied (${m.latent_dim}-d)`]);
  row(table, ["render", `${m.render.frames} frames`, `${m.render.width}×${m.render.height} at ${fmt(m.render.fps, 2)} fps, ${(m.render.bytes / 1024).toFixed(1)} KiB`]);
  row(table, ["latent cosine", fmt(c.latent_cosine), "source's latents vs those re-inferred from the render (1 = same actions)"]);
  row(table, ["latent L1 (relative)", `${fmt(c.latent_l1)} (${fmt(c.latent_l1_relative)})`, "the same, as mean |difference|"]);
  row(table, ["cycle L1: own / transfer", `${fmt(c.orig_l1)} / ${fmt(c.transfer_l1)}`, "rollouts from the source's first state vs its true states"]);
  row(table, ["transfer / own ratio", fmt(c.ratio_l1), "1 = the render's actions reproduce the source as well as its own"]);
  row(table, ["PSNR own / transfer", `${fmt(px.orig.psnr, 2)} / ${fmt(px.transfer.psnr, 2)} dB`, `decoded vs real frames of ${px.ground_truth}`]);
  row(table, ["SSIM own / transfer", `${fmt(px.orig.ssim)} / ${fmt(px.transfer.ssim)}`, `decoded vs real frames of ${px.ground_truth}`]);
  const t = job.timings || {};
  const stages = Object.entries(t).filter(([k]) => !["queued_s", "run_s", "total_s"].includes(k))
    .map(([k, v]) => `${k.replace(/_s$/, "")} ${fmtSeconds(v)}`).join(", ");
  row(table, ["time", fmtSeconds(t.total_s), `queued ${fmtSeconds(t.queued_s)}, ran ${fmtSeconds(t.run_s)}${stages ? ` (${stages})` : ""}`]);
  $("transfer-protocol").textContent = m.protocol || "";
  $("transfer-metrics-card").hidden = false;
}

export function initTransfer() {
  const source = $("transfer-source"), target = $("transfer-target");
  const errorBox = $("transfer-error");
  const render = $("transfer-render");
  const videos = [$("transfer-a"), $("transfer-b"), render];
  let current = null; // {id, abort}

  onClipsChanged(() => {
    const ids = allClips().map((c) => c.id);
    fillSelect(source, { preferred: ids.find((i) => i.includes("bikes")) || ids[0] });
    fillSelect(target, { preferred: ids.find((i) => i.includes("carphone")) || ids[1] || ids[0] });
  });

  $("transfer-upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    target.value = addUpload(file);
    e.target.value = "";
  });

  function setState(text, done = false) {
    const s = $("transfer-state");
    s.textContent = text;
    s.classList.toggle("done", done);
  }

  async function poll(location, signal) {
    for (;;) {
      const response = await call(location, { signal });
      const job = await response.json();
      $("transfer-progress").value = job.progress;
      setState(`${job.state}${job.stage ? ` · ${job.stage}` : ""} · ${(100 * job.progress).toFixed(0)}%`);
      if (["succeeded", "failed", "cancelled"].includes(job.state)) return job;
      const wait = Number(response.headers.get("Retry-After")) || 1;
      await sleep(Math.min(wait * 1000, 400)); // the server's pacing, capped: renders of short clips are quick
    }
  }

  $("transfer-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (current) return;
    const abort = new AbortController();
    current = { id: null, abort };
    $("transfer-submit").disabled = true;
    $("transfer-cancel").hidden = false;
    $("transfer-play").disabled = true;
    $("transfer-metrics-card").hidden = true;
    render.removeAttribute("src");
    render.load();
    await guarded(errorBox, async () => {
      const [a, b] = await Promise.all([getClip(source.value), getClip(target.value)]);
      $("transfer-a").src = a.url;
      $("transfer-b").src = b.url;
      const form = new FormData();
      form.append("clip_a", a.blob, a.file);
      form.append("clip_b", b.blob, b.file);
      const steps = $("transfer-steps").value;
      if (steps) form.append("request", JSON.stringify({ steps: Number(steps) }));
      $("transfer-job").hidden = false;
      $("transfer-progress").value = 0;
      setState("uploading…");
      const response = await call("/v1/transfers", { method: "POST", body: form, signal: abort.signal });
      const location = response.headers.get("Location");
      current.id = (await response.json()).id;
      const job = await poll(location, abort.signal);
      if (job.state !== "succeeded") {
        const why = job.error ? `: ${job.error.message}` : "";
        setState(`${job.state}${why}`);
        if (job.state === "failed") throw Object.assign(new Error(`the transfer job failed${why}`), { hint: "submit it again" });
        return;
      }
      const [metrics, video] = await Promise.all([
        getJson(`${location}/result?format=json`),
        getBlob(`${location}/result?format=mp4`, "video/mp4"),
      ]);
      render.src = URL.createObjectURL(video);
      render.dataset.job = job.id;
      showMetrics(metrics.job, metrics.metrics);
      setState(`done · job ${job.id}`, true);
      $("transfer-play").disabled = false;
    });
    current = null;
    $("transfer-submit").disabled = false;
    $("transfer-cancel").hidden = true;
  });

  $("transfer-cancel").addEventListener("click", async () => {
    if (!current) return;
    const { id, abort } = current;
    if (id) await guarded(errorBox, () => call(`/v1/jobs/${id}`, { method: "DELETE" }));
    else abort.abort();
  });

  $("transfer-play").addEventListener("click", () => {
    for (const v of videos) {
      v.currentTime = 0;
      v.play().catch(() => {}); // autoplay of muted video is allowed; a refusal just leaves it paused
    }
  });
}
