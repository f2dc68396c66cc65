// Hand-written SVG bar charts. Each series has an Okabe-Ito colour AND a pattern, the
// legend names both, and a table view under the chart holds the same numbers.
import { h, s } from "./dom.js";

export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"];
let charts = 0;

function pattern(id, i, colour) {
  const p = s("pattern", { id, width: 8, height: 8, patternUnits: "userSpaceOnUse" },
    s("rect", { width: 8, height: 8, fill: colour }));
  const ink = { stroke: "#fff", "stroke-width": 1.6 };
  const marks = [
    [],
    [s("path", { d: "M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4", ...ink })],
    [s("circle", { cx: 4, cy: 4, r: 1.6, fill: "#fff" })],
    [s("path", { d: "M0,4 h8", ...ink })],
    [s("path", { d: "M4,0 v8", ...ink })],
    [s("path", { d: "M0,0 l8,8 M8,0 l-8,8", ...ink })],
    [s("path", { d: "M0,2 h8 M0,6 h8", stroke: "#fff", "stroke-width": 1 })],
  ][i % 7];
  p.append(...marks);
  return p;
}

const label = (iso) => iso.slice(5, 10);

// weeks: ISO strings; series: [{key, label}]; value(week, key) -> number.
export function barChart({ title, weeks, series, value, mode = "stack" }) {
  const id = `chart${++charts}`;
  const W = 640, H = 260, left = 44, bottom = 34, top = 10, right = 8;
  const plotW = W - left - right, plotH = H - top - bottom;
  const totals = weeks.map((w) => (mode === "stack"
    ? series.reduce((t, x) => t + value(w, x.key), 0)
    : Math.max(0, ...series.map((x) => value(w, x.key)))));
  const max = Math.max(1, ...totals);
  const y = (n) => top + plotH - (n / max) * plotH;
  const slot = plotW / Math.max(1, weeks.length);
  const defs = s("defs", {}, series.map((x, i) => pattern(`${id}-p${i}`, i, PALETTE[i % PALETTE.length])));
  const bars = [];
  weeks.forEach((w, wi) => {
    let base = 0;
    series.forEach((x, i) => {
      const n = value(w, x.key);
      if (!n) return;
      const width = mode === "stack" ? slot * 0.7 : (slot * 0.8) / series.length;
      const xPos = left + wi * slot + (mode === "stack" ? slot * 0.15 : slot * 0.1 + i * width);
      const from = mode === "stack" ? base : 0;
      bars.push(s("rect", { x: xPos.toFixed(1), y: y(from + n).toFixed(1), width: Math.max(1, width - 1).toFixed(1),
        height: Math.max(0.5, y(from) - y(from + n)).toFixed(1), fill: `url(#${id}-p${i})`, stroke: "#222", "stroke-width": 0.4 },
        s("title", {}, `${label(w)}: ${x.label} ${n}`)));
      base += n;
    });
  });
  const ticks = [...new Set([0, Math.round(max / 2), max])].map((n) => s("g", {},
    s("line", { x1: left, x2: W - right, y1: y(n), y2: y(n), stroke: "#ddd" }),
    s("text", { x: left - 6, y: y(n) + 4, "text-anchor": "end", "font-size": 11, fill: "#333" }, n)));
  const every = Math.max(1, Math.ceil(weeks.length / 8));
  const xs = weeks.map((w, i) => (i % every ? null
    : s("text", { x: left + i * slot + slot / 2, y: H - bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#333" }, label(w))));
  const describe = `${title}: ${weeks.length} weeks from ${weeks[0] ? label(weeks[0]) : "-"}; `
    + series.map((x) => `${x.label} ${weeks.reduce((t, w) => t + value(w, x.key), 0)}`).join(", ");
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t ${id}-d` },
    s("title", { id: `${id}-t` }, title), s("desc", { id: `${id}-d` }, describe), defs, ticks,
    s("line", { x1: left, x2: W - right, y1: top + plotH, y2: top + plotH, stroke: "#333" }), bars, xs);
  const legend = h("ul", { class: "legend", "aria-label": `${title}: legend` }, series.map((x, i) => h("li", {},
    s("svg", { viewBox: "0 0 16 10", "aria-hidden": "true" }, s("defs", {}, pattern(`${id}-l${i}`, i, PALETTE[i % PALETTE.length])),
      s("rect", { width: 16, height: 10, fill: `url(#${id}-l${i})` })), ` ${x.label}`)));
  const rows = weeks.map((w) => h("tr", {}, h("th", { scope: "row" }, w.slice(0, 10)),
    series.map((x) => h("td", { class: "num" }, value(w, x.key)))));
  const tableView = h("details", {}, h("summary", {}, `Table view: ${title}`),
    h("div", { class: "scroll" }, h("table", { "data-chart": title },
      h("caption", { class: "muted" }, `${title}, per week (week starting, UTC)`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Week"), series.map((x) => h("th", { scope: "col", class: "num" }, x.label)))),
      h("tbody", {}, rows))));
  return h("div", { class: "chart" }, svg, legend, tableView);
}
