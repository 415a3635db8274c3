// Planner playground: an environment episode (GET /console/episodes/{env}/{seed}); the frame before
// action i is the observation, the frame H actions later the goal; POST /v1/plan; the planned actions
// drawn over the episode's true actions[i : i + H], with the search's timing breakdown.

import { fmt, fmtSeconds, getJson, guarded, postJson } from "../api.js";
import { actionPanels, pathsPlot } from "../plot.js";

const $ = (id) => document.getElementById(id);

/** Camera-relative (forward, lateral, yaw) actions integrated from (x, y, heading), each applied in
 *  `substeps` parts as the episodes render them (training/envs/metrics.py: poses_from_actions). */
export function navigationPath(start, actions, substeps = 1) {
  let [x, y, h] = start;
  const out = [[x, y]];
  for (const a of actions) {
    const [f, l, yaw] = a.map((v) => v / substeps);
    for (let k = 0; k < substeps; k++) {
      const c = Math.cos(h), s = Math.sin(h);
      [x, y, h] = [x + f * c - l * s, y + f * s + l * c, h + yaw];
    }
    out.push([x, y]);
  }
  return out;
}

/** Cumulative (dx, dy) of end-effector actions from the origin (the DROID protocol's displacement). */
export function cumulativeXY(actions) {
  const out = [[0, 0]];
  for (const a of actions) {
    const [px, py] = out[out.length - 1];
    out.push([px + a[0], py + a[1]]);
  }
  return out;
}

function kv(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    dl.append(Object.assign(document.createElement("dt"), { textContent: k }));
    dl.append(Object.assign(document.createElement("dd"), { textContent: v }));
  }
}

function timingBars(box, t) {
  box.replaceChildren();
  const total = t.total_s || 1e-9;
  const rows = [
    ["decode", t.decode_s], ["encode", t.encode_s], ["plan (search)", t.plan_s],
    ["world-model steps", t.step_s, true], ["· controller", t.controller_s, true],
    ["· world model", t.world_model_s, true], ["cost", t.cost_s, true], ["total", t.total_s],
  ];
  for (const [name, secs, part] of rows) {
    if (secs == null) continue;
    const bar = document.createElement("div");
    bar.className = `bar${part ? " part" : ""}`;
    bar.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="secs"></span>';
    bar.querySelector(".name").textContent = name;
    bar.querySelector(".fill").style.width = `${Math.min(100, (100 * secs) / total).toFixed(1)}%`;
    bar.querySelector(".secs").textContent = fmtSeconds(secs);
    box.append(bar);
  }
}

export function initPlanner() {
  const envSelect = $("planner-env"), seedInput = $("planner-seed"), startInput = $("planner-start");
  const errorBox = $("planner-error");
  let meta = null; // GET /console/episodes
  let episode = null;
  let loadId = 0;

  function clearPlan() {
    for (const id of ["planner-actions", "planner-path"]) $(id).replaceChildren();
    $("planner-result").replaceChildren();
    $("planner-timing").replaceChildren();
  }

  function showWindow() {
    if (!episode) return;
    const i = Number(startInput.value), h = episode.horizon;
    $("planner-start-out").textContent = String(i);
    $("planner-current").src = episode.frames[i];
    $("planner-goal").src = episode.frames[i + h];
    $("planner-goal-note").textContent = `frame ${i + h}, ${h} actions later`;
    $("planner-strip").querySelectorAll("img").forEach((img, k) => {
      img.classList.toggle("window", k >= i && k <= i + h);
      img.classList.toggle("current", k === i);
      img.classList.toggle("goal", k === i + h);
    });
    clearPlan();
    drawPath(null);
  }

  function truth() {
    const i = Number(startInput.value);
    return episode.actions.slice(i, i + episode.horizon);
  }

  function drawPath(planned) {
    const i = Number(startInput.value);
    const t = truth();
    if (episode.name === "navigation") {
      const start = episode.poses[i];
      const truePath = episode.poses.slice(i, i + episode.horizon + 1).map((p) => [p[0], p[1]]);
      const plannedPath = planned ? navigationPath(start, planned, 2) : [];
      $("planner-path-note").textContent = "top view, x–y (m)";
      pathsPlot($("planner-path"), plannedPath, truePath, ["x", "y"]);
    } else {
      $("planner-path-note").textContent = "cumulative end-effector Δx–Δy";
      pathsPlot($("planner-path"), planned ? cumulativeXY(planned) : [], cumulativeXY(t), ["Δx", "Δy"]);
    }
  }

  async function loadEpisode() {
    const mine = ++loadId;
    $("planner-run").disabled = true;
    await guarded(errorBox, async () => {
      const ep = await getJson(`/console/episodes/${encodeURIComponent(envSelect.value)}/${Number(seedInput.value) || 0}`);
      if (mine !== loadId) return;
      episode = ep;
      startInput.max = String(ep.steps - ep.horizon);
      if (Number(startInput.value) > ep.steps - ep.horizon) startInput.value = "0";
      const strip = $("planner-strip");
      strip.replaceChildren();
      strip.dataset.episode = `${ep.name}/${ep.seed}`;
      ep.frames.forEach((src, k) => {
        const img = Object.assign(document.createElement("img"), { src, alt: `frame ${k}`, title: `frame ${k}` });
        img.addEventListener("click", () => {
          startInput.value = String(Math.min(k, ep.steps - ep.horizon));
          showWindow();
        });
        strip.append(img);
      });
      const modelDim = meta.model_action_dim;
      $("planner-info").textContent = `${ep.name}: ${ep.action_dim}-d actions (${ep.action_names.join(", ")}), `
        + `preset ${ep.preset} (horizon ${ep.horizon}); ${ep.steps} recorded actions at ${ep.image_size}×${ep.image_size} px. `
        + (modelDim == null ? "The served model has no controller."
          : `The served model's controller takes ${modelDim}-d actions.`);
      showWindow();
      $("planner-run").disabled = false;
    });
  }

  async function runPlan() {
    const ep = episode;
    const i = Number(startInput.value);
    const overrides = {};
    for (const [id, name] of [["planner-samples", "samples"], ["planner-iterations", "iterations"]]) {
      if ($(id).value) overrides[name] = Number($(id).value);
    }
    const body = {
      observation: ep.frames[i], goal: ep.frames[i + ep.horizon], preset: ep.preset,
      action_low: ep.action_low, action_high: ep.action_high, overrides,
    };
    $("planner-run").disabled = true;
    clearPlan();
    await guarded(errorBox, async () => {
      const r = await postJson("/v1/plan", body);
      actionPanels($("planner-actions"), r.actions, truth(), ep.action_names, ep.action_low, ep.action_high);
      drawPath(r.actions);
      const err = r.actions.map((a, s) => a.map((v, d) => Math.abs(v - truth()[s][d])))
        .flat().reduce((x, y) => x + y, 0) / (r.actions.length * ep.action_dim);
      kv($("planner-result"), [
        ["first action", `[${r.first_action.map((v) => fmt(v)).join(", ")}]`],
        ["predicted cost", fmt(r.cost, 4)],
        ["mean |planned − true|", fmt(err, 4)],
        ["iterations · evaluations", `${r.iterations} · ${r.evaluations}`],
        ["planner", `${r.planner.method} H=${r.planner.horizon} N=${r.planner.samples} K=${r.planner.elites}`
          + `${r.planner.straight_line ? " straight line" : ""} · cost ${r.planner.cost}`],
        ["deadline hit", r.deadline_hit ? "yes" : "no"],
        ["model", `${r.model.name} v${r.model.version} (${r.model.runtime})`],
      ]);
      timingBars($("planner-timing"), r.timing);
      $("planner-actions").dataset.horizon = r.actions.length;
    });
    $("planner-run").disabled = false;
  }

  envSelect.addEventListener("change", loadEpisode);
  seedInput.addEventListener("change", loadEpisode);
  startInput.addEventListener("input", showWindow);
  $("planner-form").addEventListener("submit", (e) => {
    e.preventDefault();
    runPlan();
  });

  return {
    /** First visit: the environments, then the first episode. */
    async open() {
      if (meta) return;
      await guarded(errorBox, async () => {
        meta = await getJson("/console/episodes");
        envSelect.replaceChildren(...meta.environments.map((e) => new Option(`${e.name} (${e.action_dim}-d actions)`, e.name)));
        const fits = meta.environments.find((e) => e.action_dim === meta.model_action_dim);
        if (fits) envSelect.value = fits.name;
        seedInput.max = String(meta.max_seed);
      });
      if (meta) await loadEpisode();
    },
  };
}
