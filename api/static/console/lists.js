// The sanctions list (with statements of reasons), the regulator's work queue of pending
// appeals, and the recorded disclosures (never an identity).
import { allPages, mutate, query } from "./api.js";
import { download, h, pagedList, when } from "./dom.js";
import { sanctionColumns } from "./accounts.js";

const SANCTIONS = `query($filter: SanctionFilter, $first: Int, $after: String) {
  sanctions(filter: $filter, first: $first, after: $after) {
    edges { node { id accountId providerId level ruleIds reason issuerRole imposedAt expiresAt liftedAt appealState
      appealGrounds appealDecidedAt appealReason position } } pageInfo { hasNextPage endCursor } } }`;
const STATEMENTS = `query($filter: SanctionFilter, $first: Int, $after: String) {
  sanctions(filter: $filter, first: $first, after: $after) {
    edges { node { statementOfReasons } } pageInfo { hasNextPage endCursor } } }`;

const page = (filter) => async (after) => {
  const c = (await query(SANCTIONS, { filter: filter(), first: 50, after })).sanctions;
  return { rows: c.edges.map((e) => e.node), pageInfo: c.pageInfo };
};
const accountLink = { key: "accountId", label: "Account", render: (s) => h("a", { href: `#/account/${s.accountId}`, class: "mono" }, s.accountId), csv: (s) => s.accountId };

function choice(id, label, options) {
  return h("label", { for: id }, label, h("select", { id }, h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o }, o))));
}

export function sanctionsPage() {
  const form = h("form", { class: "filters", "aria-label": "Filter the sanctions" },
    choice("s-level", "Level", ["warning", "publishing_restricted", "updates_suspended", "closed"]),
    choice("s-appeal", "Appeal", ["none", "pending", "upheld", "overturned"]),
    h("label", { for: "s-since" }, "Imposed since (UTC)", h("input", { type: "date", id: "s-since" })),
    h("button", { type: "submit" }, "Apply"));
  const filter = () => {
    const v = (x) => form.querySelector(`#${x}`).value || null;
    const since = v("s-since");
    return { level: v("s-level"), appealState: v("s-appeal"), imposedSince: since ? `${since}T00:00:00+00:00` : null };
  };
  const sor = h("button", { type: "button", class: "secondary", id: "export-sor", onclick: async () => {
    sor.disabled = true;
    const lines = [];
    for await (const s of allPages(STATEMENTS, { filter: filter() }, (d) => d.sanctions)) lines.push(JSON.stringify(s.statementOfReasons));
    download("statements-of-reasons.jsonl", lines.join("\n") + (lines.length ? "\n" : ""), "application/jsonl");
    sor.disabled = false;
  } }, "Export statements of reasons (DSA, JSON lines)");
  const columns = [...sanctionColumns, accountLink];
  const list = pagedList({ caption: "Sanctions, in the order imposed", columns, fetchPage: page(filter),
    exportAll: () => allPages(SANCTIONS, { filter: filter() }, (d) => d.sanctions), exportName: "sanctions.csv", extra: [sor] });
  form.addEventListener("submit", (e) => { e.preventDefault(); list.reload(); });
  return [h("h1", {}, "Sanctions"), form, list.element];
}

const DECIDE = `mutation($input: DecideAppealInput!, $key: String!) { decideAppeal(input: $input, idempotencyKey: $key) {
  __typename ... on CommandSuccess { position replayed } ... on MutationError { code message } } }`;
const keys = new Map(); // one idempotency key per decision, so a retry records nothing twice

function decideForm(s) {
  const id = s.id;
  const outcome = h("select", { id: `o-${id}`, name: "outcome" }, h("option", { value: "upheld" }, "upheld"), h("option", { value: "overturned" }, "overturned"));
  const reason = h("input", { id: `r-${id}`, name: "reason", required: true });
  const result = h("output", { id: `res-${id}`, role: "status" });
  const form = h("form", { class: "decide", "data-sanction": id, onsubmit: async (e) => {
    e.preventDefault();
    const input = { accountId: s.accountId, sanctionId: id, outcome: outcome.value, reason: reason.value };
    const decision = JSON.stringify(input);
    if (!keys.has(decision)) keys.set(decision, `console-${crypto.randomUUID()}`);
    result.textContent = "Sending…";
    try {
      const r = (await mutate(DECIDE, { input, key: keys.get(decision) })).decideAppeal;
      result.className = r.__typename === "CommandSuccess" ? "ok" : "error";
      result.textContent = r.__typename === "CommandSuccess"
        ? `Recorded at position ${r.position}${r.replayed ? " (already recorded under this key)" : ""}`
        : `Refused: ${r.code}: ${r.message}`;
    } catch (err) {
      result.className = "error";
      result.textContent = `Refused: ${err.code}: ${err.message}`;
    }
  } },
  h("label", { for: `o-${id}` }, "Outcome", outcome), h("label", { for: `r-${id}` }, "Reason", reason),
  h("button", { type: "submit" }, "Decide"), result);
  return form;
}

export function queuePage(viewer) {
  const columns = [
    { key: "imposedAt", label: "Imposed", rowHeader: true, format: when },
    { key: "level", label: "Level" }, { key: "ruleIds", label: "Rules", format: (r) => r.join(", ") },
    { key: "appealGrounds", label: "Grounds" }, accountLink,
    { key: "decide", label: "Decision", render: decideForm, csv: () => "" },
  ];
  const filter = () => ({ appealState: "pending" });
  const list = pagedList({ caption: "Pending appeals, oldest sanction first", columns, fetchPage: page(filter),
    exportAll: () => allPages(SANCTIONS, { filter: filter() }, (d) => d.sanctions), exportName: "pending-appeals.csv" });
  return [h("h1", {}, "Work queue: pending appeals"),
    viewer.role === "regulator" ? null : h("p", { class: "muted" }, "Only a regulator may decide; the ledger refuses anyone else, and the refusal shows here."),
    list.element];
}

const DISCLOSURES = `query($first: Int, $after: String) { identityDisclosures(first: $first, after: $after) {
  edges { node { position accountId providerId at actorId actorRole basis caseReference } } pageInfo { hasNextPage endCursor } } }`;

export function disclosuresPage() {
  const columns = [
    { key: "at", label: "When", rowHeader: true, format: when },
    { key: "actorId", label: "Who" }, { key: "actorRole", label: "Role" },
    { key: "accountId", label: "Account", render: (d) => h("a", { href: `#/account/${d.accountId}` }, d.accountId), csv: (d) => d.accountId },
    { key: "basis", label: "Legal basis" }, { key: "caseReference", label: "Case" }, { key: "position", label: "Position", num: true },
  ];
  const list = pagedList({ caption: "Recorded disclosures of real identities (the identities are never listed)", columns,
    fetchPage: async (after) => {
      const c = (await query(DISCLOSURES, { first: 50, after })).identityDisclosures;
      return { rows: c.edges.map((e) => e.node), pageInfo: c.pageInfo };
    },
    exportAll: () => allPages(DISCLOSURES, {}, (d) => d.identityDisclosures), exportName: "disclosures.csv" });
  return [h("h1", {}, "Disclosures"), list.element];
}
