// Latent actions: a clip -> POST /v1/latent-actions -> the norm of each step's latent and a 2-D PCA
// of them, linked to the video: hovering a step shows the two states its latent action lies between.

import { call, fmt, fmtSeconds, guarded } from "../api.js";
import { addUpload, fillSelect, getClip, onClipsChanged } from "../clips.js";
import { pca } from "../pca.js";
import { scatterPath, stepChart } from "../plot.js";

const $ = (id) => document.getElementById(id);

/** Seeks a hidden <video> and draws frames into canvases; only the latest request is honoured. */
class FrameGrabber {
  constructor() {
    this.video = document.createElement("video");
    this.video.muted = true;
    this.video.preload = "auto";
    this.pending = null;
    this.busy = false;
  }

  load(url) {
    this.video.src = url;
  }

  draw(jobs) { // [[seconds, canvas], ...]
    this.pending = jobs;
    if (!this.busy) this.run();
  }

  async run() {
    this.busy = true;
    while (this.pending) {
      const jobs = this.pending;
      this.pending = null;
      for (const [t, canvas] of jobs) {
        if (this.pending) break;
        await this.seek(t);
        paintCentreCrop(this.video, canvas);
      }
    }
    this.busy = false;
  }

  seek(t) {
    const v = this.video;
    return new Promise((resolve) => {
      const done = () => resolve();
      if (v.readyState < 1) {
        v.addEventListener("loadedmetadata", () => this.seek(t).then(done), { once: true });
        return;
      }
      v.addEventListener("seeked", done, { once: true });
      v.currentTime = Math.min(Math.max(0, t + 1e-3), Math.max(0, (v.duration || t) - 1e-3));
    });
  }
}

/** Draw a video's current frame centre-cropped to a square, as the model sees it. */
function paintCentreCrop(video, canvas) {
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!vw || !vh) return;
  const s = Math.min(vw, vh);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(video, (vw - s) / 2, (vh - s) / 2, s, s, 0, 0, canvas.width, canvas.height);
}

export function initLatents() {
  const select = $("latents-sample");
  const video = $("latents-video");
  const errorBox = $("latents-error");
  const grabber = new FrameGrabber();
  let result = null;
  let charts = [];
  let runId = 0;

  onClipsChanged(() => fillSelect(select, { placeholder: "choose…" }));

  function clear() {
    result = null;
    charts = [];
    for (const id of ["latents-norm", "latents-pca"]) $(id).replaceChildren();
    $("latents-timing").replaceChildren();
    $("latents-pca-var").textContent = "";
    $("latents-summary").textContent = "Pick or upload a clip.";
    for (const id of ["latents-from", "latents-to"]) {
      const c = $(id);
      c.getContext("2d").clearRect(0, 0, c.width, c.height);
    }
    $("latents-from-cap").textContent = "state t";
    $("latents-to-cap").textContent = "state t+1";
    $("latents-arrow").innerHTML = "z<sub>t</sub> →";
    video.removeAttribute("src");
    video.load();
  }

  function highlight(i) {
    for (const c of charts) c.highlight(i);
  }

  function showStep(i) {
    if (!result) return;
    highlight(i);
    const norm = Math.hypot(...result.latents[i]);
    $("latents-from-cap").textContent = `state ${i} · ${result.start_s[i].toFixed(2)} s`;
    $("latents-to-cap").textContent = `state ${i + 1} · ${result.end_s[i].toFixed(2)} s`;
    $("latents-arrow").innerHTML = `z<sub>${i}</sub> →<br><span class="muted">‖z‖ ${norm.toFixed(3)}</span>`;
    grabber.draw([[result.start_s[i], $("latents-from")], [result.end_s[i], $("latents-to")]]);
  }

  function seekTo(i) {
    if (!result) return;
    video.pause();
    video.currentTime = result.start_s[i] + 1e-3;
  }

  function render(r, clip) {
    result = r;
    const norms = r.latents.map((z) => Math.hypot(...z));
    const { projection, explained } = pca(r.latents, 2);
    charts = [
      stepChart($("latents-norm"), norms, { yLabel: "‖z‖", onHover: showStep, onClick: seekTo }),
      scatterPath($("latents-pca"), projection, { onHover: showStep, onClick: seekTo }),
    ];
    $("latents-pca-var").textContent = `(explains ${(100 * (explained[0] + explained[1])).toFixed(0)}% of the variance: `
      + `PC1 ${(100 * explained[0]).toFixed(0)}%, PC2 ${(100 * explained[1]).toFixed(0)}%)`;
    const src = r.source;
    const from = src ? ` · source ${src.container} ${src.codec} ${src.width}×${src.height} @ ${fmt(src.fps, 2)} fps` : "";
    $("latents-summary").textContent = `${r.steps} steps of ${r.latent_dim}-d latent actions from ${r.frames_used} `
      + `frames at ${fmt(r.fps, 2)} fps${from} · model ${r.model.name} v${r.model.version} (${r.model.runtime})`;
    $("latents-summary").dataset.steps = r.steps;
    $("latents-title").textContent = `Clip: ${clip.file}`;
    const timing = $("latents-timing");
    timing.replaceChildren();
    for (const [k, v] of Object.entries(r.timing)) {
      timing.append(Object.assign(document.createElement("dt"), { textContent: k.replace(/_s$/, "") }));
      timing.append(Object.assign(document.createElement("dd"), { textContent: fmtSeconds(v) }));
    }
    grabber.load(clip.url);
    video.src = clip.url;
    showStep(0);
  }

  async function run(id) {
    const mine = ++runId;
    $("latents-busy").hidden = false;
    clear();
    await guarded(errorBox, async () => {
      const clip = await getClip(id);
      const form = new FormData();
      form.append("file", clip.blob, clip.file);
      const r = await (await call("/v1/latent-actions", { method: "POST", body: form })).json();
      if (mine === runId) render(r, clip);
    });
    if (mine === runId) $("latents-busy").hidden = true;
  }

  select.addEventListener("change", () => {
    if (select.value) run(select.value);
  });
  $("latents-upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const id = addUpload(file);
    select.value = id;
    e.target.value = "";
    run(id);
  });
  video.addEventListener("timeupdate", () => {
    if (!result) return;
    const t = video.currentTime;
    let step = -1;
    for (let i = 0; i < result.start_s.length; i++) if (result.start_s[i] <= t + 1e-6 && t < result.end_s[i]) step = i;
    if (step >= 0) highlight(step);
  });
}
