// Small SVG plots drawn by hand (no chart library): line charts over steps, a 2-D scatter path,
// a sparkline. Every function clears the <svg> it is given and draws into its viewBox.

const NS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs = {}, text = null) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function box(svg) {
  const [, , w, h] = svg.getAttribute("viewBox").split(/\s+/).map(Number);
  return { w, h };
}

/** A linear scale [d0, d1] -> [r0, r1], padded when the domain is a single value. */
export function scale(d0, d1, r0, r1) {
  if (!(d1 > d0)) {
    const pad = Math.abs(d0) > 0 ? Math.abs(d0) * 0.1 : 1;
    d0 -= pad;
    d1 += pad;
  }
  const f = (x) => r0 + ((x - d0) / (d1 - d0)) * (r1 - r0);
  f.domain = [d0, d1];
  return f;
}

export function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function tickLabel(t) {
  const a = Math.abs(t);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return t.toExponential(1);
  return String(+t.toPrecision(3));
}

/** Axes with y ticks and x labels; returns {x, y, plot} where plot is the group to draw in. */
function frame(svg, { x0, x1, y0, y1, top, height, xLabel, yLabel, title, xTicks }) {
  const { w } = box(svg);
  const left = 46, right = 12;
  const x = scale(x0, x1, left, w - right);
  const y = scale(y0, y1, top + height, top);
  const g = svgEl("g");
  for (const t of niceTicks(...y.domain)) {
    g.append(svgEl("line", { class: "grid-line", x1: left, x2: w - right, y1: y(t), y2: y(t) }));
    g.append(svgEl("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, tickLabel(t)));
  }
  g.append(svgEl("line", { class: "axis", x1: left, x2: w - right, y1: top + height, y2: top + height }));
  g.append(svgEl("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + height }));
  for (const t of xTicks || niceTicks(x0, x1, 8)) {
    g.append(svgEl("text", { x: x(t), y: top + height + 14, "text-anchor": "middle" }, String(t)));
  }
  if (title) g.append(svgEl("text", { class: "title", x: left + 4, y: top - 4 }, title));
  if (yLabel) g.append(svgEl("text", { x: 4, y: top - 4 }, yLabel));
  if (xLabel) g.append(svgEl("text", { x: w - right, y: top + height + 28, "text-anchor": "end" }, xLabel));
  svg.append(g);
  return { x, y };
}

function pathOf(points) {
  return points.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(2)},${py.toFixed(2)}`).join("");
}

/** One value per step as a line with a point per step (class "pt", data-step = i).
 *  `onHover(i)` / `onClick(i)` get the step under the cursor. */
export function stepChart(svg, values, { xLabel = "step", yLabel = "", onHover, onClick } = {}) {
  svg.replaceChildren();
  const { h } = box(svg);
  const n = values.length;
  const lo = Math.min(0, ...values), hi = Math.max(...values, 0);
  const xTicks = n <= 16 ? [...Array(n).keys()] : niceTicks(0, n - 1, 8).filter(Number.isInteger);
  const { x, y } = frame(svg, { x0: 0, x1: Math.max(1, n - 1), y0: lo, y1: hi, top: 14, height: h - 46, xLabel, yLabel, xTicks });
  const cursor = svgEl("line", { class: "cursor", y1: 14, y2: h - 32, visibility: "hidden" });
  svg.append(cursor);
  svg.append(svgEl("path", { class: "series", d: pathOf(values.map((v, i) => [x(i), y(v)])) }));
  values.forEach((v, i) => {
    const c = svgEl("circle", { class: "pt", cx: x(i), cy: y(v), r: 4.5, "data-step": i });
    c.append(svgEl("title", {}, `step ${i}: ${v.toPrecision(4)}`));
    if (onHover) c.addEventListener("mouseenter", () => onHover(i));
    if (onClick) c.addEventListener("click", () => onClick(i));
    svg.append(c);
  });
  return {
    highlight(i) {
      svg.querySelectorAll("circle.pt").forEach((c) => c.classList.toggle("on", Number(c.dataset.step) === i));
      if (i == null || i < 0 || i >= n) cursor.setAttribute("visibility", "hidden");
      else {
        cursor.setAttribute("x1", x(i));
        cursor.setAttribute("x2", x(i));
        cursor.setAttribute("visibility", "visible");
      }
    },
  };
}

/** Colour of step i of n: from blue (first) to orange (last). */
export function timeColour(i, n) {
  const t = n > 1 ? i / (n - 1) : 0;
  const hue = 220 - t * 190;
  return `hsl(${hue.toFixed(0)} 75% 48%)`;
}

/** 2-D points joined in time order (class "pca-pt", data-step = i), equal scales on both axes. */
export function scatterPath(svg, points, { xLabel = "PC1", yLabel = "PC2", onHover, onClick } = {}) {
  svg.replaceChildren();
  const { w, h } = box(svg);
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const span = Math.max(x1 - x0, y1 - y0, 1e-9) * 1.15; // the same units per pixel on both axes
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const side = Math.min(w - 58, h - 46);
  const left = 46 + (w - 58 - side) / 2;
  const x = scale(cx - span / 2, cx + span / 2, left, left + side);
  const y = scale(cy - span / 2, cy + span / 2, 14 + side, 14);
  svg.append(svgEl("rect", { x: left, y: 14, width: side, height: side, fill: "none", class: "axis" }));
  for (const t of niceTicks(...x.domain)) svg.append(svgEl("text", { x: x(t), y: 28 + side, "text-anchor": "middle" }, tickLabel(t)));
  for (const t of niceTicks(...y.domain)) svg.append(svgEl("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, tickLabel(t)));
  svg.append(svgEl("text", { x: left + side, y: 42 + side, "text-anchor": "end" }, xLabel));
  svg.append(svgEl("text", { x: left + 4, y: 26 }, yLabel));
  svg.append(svgEl("path", { class: "pca-line", d: pathOf(points.map(([a, b]) => [x(a), y(b)])) }));
  points.forEach(([a, b], i) => {
    const c = svgEl("circle", { class: "pca-pt", cx: x(a), cy: y(b), r: 5, fill: timeColour(i, points.length), "data-step": i });
    c.append(svgEl("title", {}, `step ${i}`));
    if (onHover) c.addEventListener("mouseenter", () => onHover(i));
    if (onClick) c.addEventListener("click", () => onClick(i));
    svg.append(c);
  });
  if (points.length) {
    svg.append(svgEl("text", { x: x(points[0][0]) + 7, y: y(points[0][1]) - 7 }, "start"));
    const last = points[points.length - 1];
    if (points.length > 1) svg.append(svgEl("text", { x: x(last[0]) + 7, y: y(last[1]) - 7 }, "end"));
  }
  return {
    highlight(i) {
      svg.querySelectorAll("circle.pca-pt").forEach((c) => c.classList.toggle("on", Number(c.dataset.step) === i));
    },
  };
}

/** Planned vs true actions: one panel per action dimension, stacked; points per step
 *  (circle.planned / circle.truth), lines joining them. */
export function actionPanels(svg, planned, truth, names, low, high) {
  svg.replaceChildren();
  const { h } = box(svg);
  const dims = names.length;
  const gap = 34;
  const height = (h - 10 - gap * dims) / dims;
  const n = Math.max(planned.length, truth.length);
  const xTicks = [...Array(n).keys()];
  for (let d = 0; d < dims; d++) {
    const top = gap + d * (height + gap) - 6;
    const col = (rows) => rows.map((r) => r[d]);
    const values = [...col(planned), ...col(truth)];
    const lo = Math.min(low[d], ...values), hi = Math.max(high[d], ...values);
    const { x, y } = frame(svg, {
      x0: 0, x1: Math.max(1, n - 1), y0: lo, y1: hi, top, height, title: names[d],
      xLabel: d === dims - 1 ? "step" : null, xTicks,
    });
    for (const [rows, cls] of [[truth, "truth"], [planned, "planned"]]) {
      const pts = col(rows).map((v, i) => [x(i), y(v)]);
      svg.append(svgEl("path", { class: cls, d: pathOf(pts), "data-dim": d }));
      pts.forEach(([px, py], i) => {
        const c = svgEl("circle", { class: cls, cx: px, cy: py, r: 3.5, "data-dim": d, "data-step": i });
        c.append(svgEl("title", {}, `${cls} ${names[d]} step ${i}: ${col(rows)[i].toPrecision(3)}`));
        svg.append(c);
      });
    }
  }
}

/** Two 2-D paths (planned and true) from the same start, equal scales; `labels` name the axes. */
export function pathsPlot(svg, planned, truth, labels = ["x", "y"]) {
  svg.replaceChildren();
  const { w, h } = box(svg);
  const all = [...planned, ...truth];
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 1e-6) * 1.2;
  const cx = (Math.max(...xs) + Math.min(...xs)) / 2, cy = (Math.max(...ys) + Math.min(...ys)) / 2;
  const side = Math.min(w - 58, h - 46);
  const left = 46;
  const x = scale(cx - span / 2, cx + span / 2, left, left + side);
  const y = scale(cy - span / 2, cy + span / 2, 14 + side, 14);
  svg.append(svgEl("rect", { x: left, y: 14, width: side, height: side, fill: "none", class: "axis" }));
  for (const t of niceTicks(...x.domain)) svg.append(svgEl("text", { x: x(t), y: 28 + side, "text-anchor": "middle" }, tickLabel(t)));
  for (const t of niceTicks(...y.domain)) svg.append(svgEl("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, tickLabel(t)));
  svg.append(svgEl("text", { x: left + side, y: 42 + side, "text-anchor": "end" }, labels[0]));
  svg.append(svgEl("text", { x: left + 4, y: 26 }, labels[1]));
  for (const [pts, cls] of [[truth, "truth"], [planned, "planned"]]) {
    if (!pts.length) continue;
    svg.append(svgEl("path", { class: `${cls} path`, d: pathOf(pts.map(([a, b]) => [x(a), y(b)])) }));
    pts.forEach(([a, b]) => svg.append(svgEl("circle", { class: cls, cx: x(a), cy: y(b), r: 3 })));
  }
  if (all.length) svg.append(svgEl("circle", { cx: x(truth[0][0]), cy: y(truth[0][1]), r: 5, fill: "none", stroke: "#111" }));
}

/** A sparkline of recent values (oldest first). */
export function sparkline(svg, values) {
  svg.replaceChildren();
  const { w, h } = box(svg);
  if (values.length < 2) return;
  const hi = Math.max(...values, 1e-9);
  const x = scale(0, values.length - 1, 4, w - 4);
  const y = scale(0, hi, h - 4, 8);
  const pts = values.map((v, i) => [x(i), y(v)]);
  svg.append(svgEl("path", { class: "spark-area", d: `${pathOf(pts)}L${x(values.length - 1)},${h - 4}L${x(0)},${h - 4}Z` }));
  svg.append(svgEl("path", { class: "spark-line", d: pathOf(pts) }));
  svg.append(svgEl("text", { x: w - 6, y: 14, "text-anchor": "end" }, `max ${tickLabel(hi)}/s`));
}
