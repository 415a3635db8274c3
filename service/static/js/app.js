// The console's entry point: tabs, the API key field, the server's readiness, and the four views.

import { apiKey, guarded, setApiKey } from "./api.js";
import { loadSamples } from "./clips.js";
import { initLatents } from "./views/latents.js";
import { initModel } from "./views/model.js";
import { initPlanner } from "./views/planner.js";
import { initTransfer } from "./views/transfer.js";

const $ = (id) => document.getElementById(id);
const TABS = ["latents", "transfer", "planner", "model"];

async function readiness() {
  const status = $("server-status");
  try {
    const r = await fetch("/readyz", { headers: { Accept: "application/json" } });
    const body = await r.json();
    status.textContent = body.ready ? "● ready" : `● ${body.state}`;
    status.className = `status ${body.ready ? "ready" : "down"}`;
    if (body.error) status.title = body.error;
    return body.ready;
  } catch {
    status.textContent = "● unreachable";
    status.className = "status down";
    return false;
  }
}

function main() {
  initLatents();
  initTransfer();
  const views = { planner: initPlanner(), model: initModel() };
  let samplesLoaded = false;

  async function samples(errorBox) {
    if (samplesLoaded) return;
    samplesLoaded = (await guarded(errorBox, async () => (await loadSamples(), true))) === true;
  }

  function show(tab) {
    if (!TABS.includes(tab)) tab = "latents";
    for (const t of TABS) {
      $(`view-${t}`).hidden = t !== tab;
      $(`tab-${t}`).setAttribute("aria-selected", String(t === tab));
    }
    if (tab !== "model") views.model.close();
    if (tab === "latents" || tab === "transfer") samples($(`${tab}-error`));
    views[tab]?.open();
  }

  for (const t of TABS) $(`tab-${t}`).addEventListener("click", () => {
    history.replaceState(null, "", `#${t}`);
    show(t);
  });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));

  // The key lives in this tab's sessionStorage only: never in the URL, never in localStorage.
  const keyInput = $("apikey");
  const form = $("apikey-form");
  keyInput.value = apiKey();
  form.classList.toggle("set", !!apiKey());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey(keyInput.value.trim());
    form.classList.toggle("set", !!apiKey());
    samplesLoaded = false;
    show(location.hash.slice(1)); // retry what the current view could not load without a key
  });
  $("apikey-forget").addEventListener("click", () => {
    setApiKey("");
    keyInput.value = "";
    form.classList.remove("set");
  });

  show(location.hash.slice(1));
  readiness();
  setInterval(readiness, 10000);
}

main();
