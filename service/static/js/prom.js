// Prometheus text format (the /metrics body) -> samples, and the figures the model panel shows:
// requests/s, p95 latency and queue depth between two scrapes.

/** Parse the text exposition format into [{name, labels, value}] (comments and blank lines skipped). */
export function parseMetrics(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
    }
    const value = m[4] === "+Inf" ? Infinity : m[4] === "-Inf" ? -Infinity : Number(m[4]);
    samples.push({ name: m[1], labels, value });
  }
  return samples;
}

export function sum(samples, name, keep = () => true) {
  return samples.filter((s) => s.name === name && keep(s.labels)).reduce((a, s) => a + s.value, 0);
}

/** Cumulative bucket counts of a histogram summed over the kept series: [[le, count]] sorted by le. */
export function buckets(samples, name, keep = () => true) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !keep(s.labels)) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

/** histogram_quantile as Prometheus computes it: linear within the bucket holding the q-th
 *  observation; null with no observations. `bucketsNow`/`bucketsThen` are cumulative counts. */
export function quantile(q, bucketsNow, bucketsThen = []) {
  const then = new Map(bucketsThen);
  const counts = bucketsNow.map(([le, c]) => [le, c - (then.get(le) || 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, c] of counts) {
    if (c >= rank) {
      if (le === Infinity) return prevLe; // beyond the last finite bucket: its upper bound
      return prevLe + (le - prevLe) * ((rank - prevCount) / Math.max(c - prevCount, 1e-12));
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

// The console's own scrapes of /metrics are not traffic worth showing.
const SERVED = (labels) => labels.endpoint !== "/metrics";

function p95(now, then) {
  const latest = buckets(now.samples, "lawm_request_duration_seconds", SERVED);
  const windowed = then ? quantile(0.95, latest, buckets(then.samples, "lawm_request_duration_seconds", SERVED)) : null;
  if (windowed != null) return { p95S: windowed, p95Since: "window" };
  return { p95S: quantile(0.95, latest), p95Since: "start" };
}

/** Figures between two scrapes `then` and `now` ({t: seconds, samples}); `then` may be null. */
export function liveFigures(now, then) {
  const requests = sum(now.samples, "lawm_requests_total", SERVED);
  const dt = then ? now.t - then.t : 0;
  const depth = {};
  for (const s of now.samples) if (s.name === "lawm_queue_depth") depth[s.labels.component] = s.value;
  const perComponent = {};
  for (const component of Object.keys(depth)) {
    const keep = (l) => l.component === component;
    const batches = sum(now.samples, "lawm_batch_size_count", keep) - (then ? sum(then.samples, "lawm_batch_size_count", keep) : 0);
    const rows = sum(now.samples, "lawm_batch_size_sum", keep) - (then ? sum(then.samples, "lawm_batch_size_sum", keep) : 0);
    perComponent[component] = {
      queued: depth[component],
      batchesPerS: dt > 0 ? batches / dt : null,
      meanBatch: batches > 0 ? rows / batches : null,
      p95ComputeS: quantile(0.95, buckets(now.samples, "lawm_compute_duration_seconds", keep),
        then ? buckets(then.samples, "lawm_compute_duration_seconds", keep) : []),
    };
  }
  return {
    requestsTotal: requests,
    requestsPerS: dt > 0 ? Math.max(0, requests - sum(then.samples, "lawm_requests_total", SERVED)) / dt : null,
    // p95 over the window when it saw requests (p95Since "window"), else since the server started
    ...p95(now, then),
    queued: Object.values(depth).reduce((a, b) => a + b, 0),
    inflight: Math.max(0, sum(now.samples, "lawm_inflight_requests") - 1), // less this scrape itself
    components: perComponent,
  };
}
