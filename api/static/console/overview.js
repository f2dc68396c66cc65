// Overview: every visible provider's figures (sortable) and the four weekly charts, each
// with its own period selector and a table view of its numbers.
import { query } from "./api.js";
import { barChart } from "./charts.js";
import { csv, download, h, hours, pct, table } from "./dom.js";

const LEVELS = ["warning", "publishing_restricted", "updates_suspended", "closed"];
const STATUSES = ["active", ...LEVELS.slice(1)];
const NAMES = { warning: "Warning", publishing_restricted: "Publishing restricted", updates_suspended: "Updates suspended",
  closed: "Closed", active: "Active", lodged: "Lodged", upheld: "Upheld", overturned: "Overturned", opened: "Opened", resolved: "Resolved" };
const series = (keys) => keys.map((key) => ({ key, label: NAMES[key] || key }));

const PROVIDERS = `providers { id code name accounts accountsByStatus { key count } shareVerified
  openReports resolutionSecondsP95 sanctionsByLevel { key count } }`;
const TRENDS = {
  sanctions: "sanctionsByLevel { week key count }",
  reports: "reports { week opened resolved }",
  appeals: "appeals { week key count }",
  status: "accountsByStatus { week key count }",
};
const trendsQuery = (parts) => `trends(weeks: $weeks) { since until ${parts.map((p) => TRENDS[p]).join(" ")} }`;

function weeksOf(trends) {
  const out = [];
  for (let t = new Date(trends.since); t <= new Date(trends.until); t = new Date(t.getTime() + 7 * 86400e3)) {
    out.push(t.toISOString());
  }
  return out;
}

function keyed(list, key = "key") {
  const map = new Map();
  for (const r of list) {
    const w = new Date(r.week).toISOString();
    if (!map.has(w)) map.set(w, {});
    map.get(w)[r[key]] = r.count;
  }
  return (w, k) => map.get(w)?.[k] || 0;
}

const CHARTS = [
  { part: "sanctions", title: "Sanctions per week, by level", keys: LEVELS, value: (t) => keyed(t.sanctionsByLevel) },
  { part: "reports", title: "Reports opened and resolved per week", keys: ["opened", "resolved"], mode: "group",
    value: (t) => { const m = new Map(t.reports.map((r) => [new Date(r.week).toISOString(), r])); return (w, k) => m.get(w)?.[k] || 0; } },
  { part: "appeals", title: "Appeals per week, by outcome", keys: ["lodged", "upheld", "overturned"], mode: "group", value: (t) => keyed(t.appeals) },
  { part: "status", title: "Accounts by status at each week's end", keys: STATUSES, value: (t) => keyed(t.accountsByStatus) },
];

function chartCard(spec, trends, weeks) {
  const body = h("div");
  const draw = (t) => body.replaceChildren(barChart({ title: spec.title, weeks: weeksOf(t), series: series(spec.keys), value: spec.value(t), mode: spec.mode }));
  const id = `period-${spec.part}`;
  const select = h("select", { id, onchange: async () => {
    body.setAttribute("aria-busy", "true");
    const data = await query(`query($weeks: Int!) { ${trendsQuery([spec.part])} }`, { weeks: Number(select.value) });
    draw(data.trends);
    body.removeAttribute("aria-busy");
  } }, [4, 12, 26, 52].map((n) => h("option", { value: n, selected: n === weeks }, `Last ${n} weeks`)));
  draw(trends);
  return h("section", { class: "card", "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, spec.title),
    h("label", { for: id }, "Period"), select, body);
}

const count = (list, key) => list.find((c) => c.key === key)?.count || 0;

export const figureColumns = [
  { key: "code", label: "Provider", rowHeader: true, render: (p) => h("a", { href: `#/provider/${p.id}` }, p.code) },
  { key: "name", label: "Name" },
  { key: "accounts", label: "Accounts", num: true },
  ...STATUSES.map((st) => ({ key: `status_${st}`, label: NAMES[st], num: true })),
  { key: "shareVerified", label: "Verified", num: true, format: pct, csv: (p) => p.shareVerified },
  { key: "openReports", label: "Open reports", num: true },
  { key: "resolutionSecondsP95", label: "p95 to resolve", num: true, format: hours, csv: (p) => p.resolutionSecondsP95 },
  ...LEVELS.map((l) => ({ key: `level_${l}`, label: `${NAMES[l]} (sanctions)`, num: true })),
];

export function flatten(p) {
  const row = { ...p };
  for (const st of STATUSES) row[`status_${st}`] = count(p.accountsByStatus, st);
  for (const l of LEVELS) row[`level_${l}`] = count(p.sanctionsByLevel, l);
  return row;
}

export async function overviewPage() {
  const weeks = 12;
  const data = await query(`query($weeks: Int!) { ${PROVIDERS} ${trendsQuery(Object.keys(TRENDS))} }`, { weeks });
  const rows = data.providers.map(flatten);
  const weekList = weeksOf(data.trends);
  const exportButton = h("button", { type: "button", class: "secondary",
    onclick: () => download("providers.csv", csv(figureColumns, rows)) }, "Export CSV");
  const content = [
    h("h1", {}, "Overview"),
    h("section", { "aria-labelledby": "figures-h" },
      h("h2", { id: "figures-h" }, "Providers' figures"),
      h("div", { class: "toolbar" }, exportButton, h("span", { class: "muted" }, "Select a column's heading to sort by it.")),
      table({ caption: `${rows.length} provider(s); statuses as of now`, columns: figureColumns, rows, sortable: true, id: "figures" })),
    h("h2", {}, "Trends"),
    h("div", { class: "cards" }, CHARTS.map((spec) => chartCard(spec, data.trends, weekList.length))),
  ];
  return content;
}
