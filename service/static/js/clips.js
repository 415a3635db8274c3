// The clips the console knows: the server's sample clips and the files the user uploaded in this tab.
// Media is fetched with the API key and played from blob: URLs, so keyed servers work too.

import { getBlob, getJson } from "./api.js";

const clips = new Map(); // id -> {id, label, file, blob?, url?}
const listeners = new Set();

export function onClipsChanged(fn) {
  listeners.add(fn);
}

function changed() {
  for (const fn of listeners) fn();
}

export function allClips() {
  return [...clips.values()];
}

/** Load the sample list once (GET /console/samples); errors propagate to the caller's error box. */
export async function loadSamples() {
  const { samples } = await getJson("/console/samples");
  for (const s of samples) {
    if (clips.has(`sample:${s.name}`)) continue;
    const size = s.width && s.height ? `${s.width}×${s.height}` : "";
    const secs = s.duration_s ? `${s.duration_s.toFixed(1)} s` : "";
    clips.set(`sample:${s.name}`, {
      id: `sample:${s.name}`, label: `${s.name} (${[size, secs].filter(Boolean).join(", ")})`, file: s.file, src: s.url,
    });
  }
  changed();
  return samples;
}

/** Add a user's File; returns its id. */
export function addUpload(file) {
  const id = `upload:${file.name}:${file.size}:${file.lastModified}`;
  if (!clips.has(id)) {
    clips.set(id, { id, label: `${file.name} (uploaded)`, file: file.name, blob: file, url: URL.createObjectURL(file) });
    changed();
  }
  return id;
}

/** The clip with its bytes (fetched on first use) and a blob: URL for <video>. */
export async function getClip(id) {
  const clip = clips.get(id);
  if (!clip) throw new Error(`unknown clip ${id}`);
  if (!clip.blob) {
    clip.blob = await getBlob(clip.src, "video/*");
    clip.url = URL.createObjectURL(clip.blob);
  }
  return clip;
}

/** Fill a <select> with the clips, keeping its selection when it still exists. */
export function fillSelect(select, { placeholder = null, preferred = null } = {}) {
  const keep = select.value;
  select.replaceChildren();
  if (placeholder) select.append(new Option(placeholder, ""));
  for (const c of allClips()) select.append(new Option(c.label, c.id));
  if (keep && clips.has(keep)) select.value = keep;
  else if (preferred && clips.has(preferred)) select.value = preferred;
}
