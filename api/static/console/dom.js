// Building the page from data without ever parsing it as HTML: text goes in as text.
const SVG = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
export const s = (tag, attrs, ...children) =>
  build(document.createElementNS(SVG, tag), attrs, children);

export function say(text) {
  const status = document.getElementById("status");
  status.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { status.textContent = ""; }, 6000);
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

export const day = (iso) => (iso ? new Date(iso).toISOString().slice(0, 10) : "");
export const pct = (x) => (x === null || x === undefined ? "—" : `${(100 * x).toFixed(1)}%`);
export const hours = (sec) => (sec === null || sec === undefined ? "—" : `${(sec / 3600).toFixed(1)} h`);

// A table whose columns may be sorted by a button in their header (aria-sort says how).
export function table({ caption, columns, rows, sortable = false, id }) {
  const body = h("tbody");
  let order = { key: null, dir: 1 };
  const fill = () => {
    const sorted = [...rows];
    if (order.key) {
      const col = columns.find((c) => c.key === order.key);
      const value = col.sortValue || ((r) => r[col.key]);
      sorted.sort((a, b) => {
        const x = value(a), y = value(b);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * order.dir;
      });
    }
    body.replaceChildren(...sorted.map((r) => h("tr", {}, columns.map((c) =>
      h(c.key === columns[0].key && c.rowHeader ? "th" : "td",
        { class: c.num ? "num" : null, scope: c.rowHeader ? "row" : null },
        c.render ? c.render(r) : (c.format ? c.format(r[c.key], r) : r[c.key] ?? ""))))));
  };
  const heads = columns.map((c) => {
    const th = h("th", { scope: "col", class: c.num ? "num" : null });
    if (sortable) {
      th.setAttribute("aria-sort", "none");
      th.append(h("button", { type: "button", onclick: () => {
        order = { key: c.key, dir: order.key === c.key ? -order.dir : (c.num ? -1 : 1) };
        for (const other of thead.querySelectorAll("th")) other.setAttribute("aria-sort", "none");
        th.setAttribute("aria-sort", order.dir > 0 ? "ascending" : "descending");
        fill();
      } }, c.label));
    } else th.append(c.label);
    return th;
  });
  const thead = h("thead", {}, h("tr", {}, heads));
  fill();
  return h("div", { class: "scroll" },
    h("table", { id }, caption ? h("caption", { class: "muted" }, caption) : null, thead, body));
}

// CSV (RFC 4180); a cell that a spreadsheet would run as a formula is quoted with a '.
export function csv(columns, rows) {
  const cell = (v) => {
    let text = v === null || v === undefined ? "" : Array.isArray(v) ? v.join(" ") : String(v);
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const lines = [columns.map((c) => cell(c.label)).join(",")];
  for (const r of rows) lines.push(columns.map((c) => cell(c.csv ? c.csv(r) : r[c.key])).join(","));
  return lines.join("\r\n") + "\r\n";
}

export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  say(`Saved ${name}`);
}

// A keyset-paged list: Next follows the last cursor, Previous goes back along the cursors
// seen; Export fetches every page (never the whole table at once).
export function pagedList({ fetchPage, columns, caption, exportAll, exportName, extra = [] }) {
  const holder = h("div", { "aria-live": "polite" });
  const stack = [null];
  const prev = h("button", { type: "button", class: "secondary", onclick: () => { stack.pop(); show(); } }, "Previous page");
  const next = h("button", { type: "button", class: "secondary" }, "Next page");
  const exporter = h("button", { type: "button", class: "secondary", onclick: async () => {
    exporter.disabled = true;
    try {
      const rows = [];
      for await (const row of exportAll()) rows.push(row);
      download(exportName, csv(columns, rows));
    } catch (e) { say(`Export failed: ${e.code || ""} ${e.message}`); }
    exporter.disabled = false;
  } }, "Export CSV");
  let endCursor = null;
  next.addEventListener("click", () => { stack.push(endCursor); show(); });
  const info = h("span", { class: "muted" });
  async function show() {
    holder.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    try {
      const page = await fetchPage(stack[stack.length - 1]);
      endCursor = page.pageInfo.endCursor;
      next.disabled = !page.pageInfo.hasNextPage;
      prev.disabled = stack.length <= 1;
      info.textContent = `page ${stack.length}, ${page.rows.length} shown`;
      holder.replaceChildren(page.rows.length
        ? table({ caption, columns, rows: page.rows })
        : h("p", { class: "muted" }, "Nothing to list."));
    } catch (e) {
      holder.replaceChildren(h("p", { class: "error" }, `${e.code || "ERROR"}: ${e.message}`));
    }
  }
  show();
  return { element: h("div", {}, h("div", { class: "toolbar" }, prev, next, info, exporter, ...extra), holder), reload: () => { stack.splice(1); show(); } };
}

// A list already in the page, as CSV.
export function exportButton(name, columns, rows, label = "Export CSV") {
  return h("button", { type: "button", class: "secondary", onclick: () => download(name, csv(columns, rows)) }, label);
}
