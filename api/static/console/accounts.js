// A provider's accounts (the API's filters, keyset-paged) and one account: its state now,
// its history as a timeline, the account as of any moment, its sanctions and flagged
// posts, and the in-browser verification of its events.
import { allPages, query } from "./api.js";
import { exportButton, h, hours, pagedList, pct, say, table, when } from "./dom.js";
import { checkEvent } from "./verify.js";

const ACCOUNT_FIELDS = "id handle kind category status verified marked legacy registeredAt";
const ACCOUNTS = `query($filter: AccountFilter, $first: Int, $after: String) {
  accounts(filter: $filter, first: $first, after: $after) {
    edges { cursor node { ${ACCOUNT_FIELDS} } } pageInfo { hasNextPage endCursor } } }`;
const STATUS = { ACTIVE: "Active", PUBLISHING_RESTRICTED: "Publishing restricted", UPDATES_SUSPENDED: "Updates suspended", CLOSED: "Closed" };
const yes = (b) => (b ? "yes" : "no");

export const accountColumns = [
  { key: "handle", label: "Handle", rowHeader: true, render: (a) => h("a", { href: `#/account/${a.id}` }, a.handle), csv: (a) => a.handle },
  { key: "id", label: "Account id", render: (a) => h("span", { class: "mono" }, a.id) },
  { key: "kind", label: "Kind" },
  { key: "category", label: "Category" },
  { key: "status", label: "Status", format: (s) => STATUS[s] || s },
  { key: "verified", label: "Verified", format: yes },
  { key: "marked", label: "Marked", format: yes },
  { key: "registeredAt", label: "Registered", format: when },
];

function select(id, label, options) {
  return h("label", { for: id }, label, h("select", { id, name: id },
    h("option", { value: "" }, "any"), options.map(([v, text]) => h("option", { value: v }, text))));
}

export async function providerPage(viewer, id) {
  const { provider } = await query(`query($id: ID!) { provider(id: $id) { id code name licenceRef accounts shareVerified openReports resolutionSecondsP95 } }`, { id });
  if (!provider) return [h("h1", {}, "Provider not found"), h("p", {}, "No such provider is visible to you.")];
  const form = h("form", { class: "filters", "aria-label": "Filter the accounts" },
    select("f-status", "Status", Object.entries(STATUS)),
    select("f-kind", "Kind", [["personal", "personal"], ["public", "public"]]),
    select("f-category", "Category", ["news_agency", "news_website", "licensed_news_service", "government", "organisation", "enterprise", "individual"].map((c) => [c, c])),
    select("f-marked", "Marked", [["true", "marked"], ["false", "not marked"]]),
    h("label", { class: "inline", for: "f-unverified" }, h("input", { type: "checkbox", id: "f-unverified" }), "Unverified only"),
    h("button", { type: "submit" }, "Apply"));
  const filter = () => {
    const v = (x) => form.querySelector(`#${x}`).value || null;
    const f = { providerId: id, status: v("f-status"), kind: v("f-kind"), category: v("f-category") };
    if (v("f-marked")) f.marked = v("f-marked") === "true";
    if (form.querySelector("#f-unverified").checked) f.verified = false;
    return f;
  };
  const list = pagedList({
    caption: `Accounts of ${provider.code}, in registration order`,
    columns: accountColumns,
    fetchPage: async (after) => {
      const c = (await query(ACCOUNTS, { filter: filter(), first: 50, after })).accounts;
      return { rows: c.edges.map((e) => e.node), pageInfo: c.pageInfo };
    },
    exportAll: () => allPages(ACCOUNTS, { filter: filter() }, (d) => d.accounts),
    exportName: `accounts-${provider.code}.csv`,
  });
  form.addEventListener("submit", (e) => { e.preventDefault(); list.reload(); });
  return [
    h("h1", {}, `Provider ${provider.code}`),
    h("dl", { class: "facts" },
      h("dt", {}, "Name"), h("dd", {}, provider.name),
      h("dt", {}, "Licence"), h("dd", {}, provider.licenceRef),
      h("dt", {}, "Accounts"), h("dd", {}, provider.accounts),
      h("dt", {}, "Verified"), h("dd", {}, pct(provider.shareVerified)),
      h("dt", {}, "Open reports"), h("dd", {}, provider.openReports),
      h("dt", {}, "p95 to resolve"), h("dd", {}, hours(provider.resolutionSecondsP95))),
    h("h2", {}, "Accounts"), form, list.element,
  ];
}

const HISTORY = `query($id: ID!, $first: Int, $after: String) { history(accountId: $id, first: $first, after: $after) {
  edges { cursor node { position type at actorRole ruleIds summary postId } } pageInfo { hasNextPage endCursor } } }`;
const PROOF = "position index leafHash treeSize proof leafData storedLeafHash head { treeSize rootHash timestamp signature publicKey }";

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

function stateFacts(state) {
  const shown = Object.entries(state).filter(([k]) => k !== "sanctions").map(([k, v]) =>
    [k.replaceAll("_", " "), v !== null && typeof v === "object" ? JSON.stringify(v) : String(v ?? "—")]);
  return facts(shown);
}

function asOfSection(id, events) {
  const out = h("div", { "aria-live": "polite" });
  const slider = h("input", { type: "range", id: "asof-slider", min: 0, max: Math.max(0, events.length - 1), value: Math.max(0, events.length - 1), step: 1 });
  const sliderText = h("output", { for: "asof-slider", id: "asof-slider-text" });
  const at = h("input", { type: "datetime-local", id: "asof-at", step: 1 });
  const show = async (variables, label) => {
    out.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    try {
      const { accountAsOf } = await query(`query($id: ID!, $position: Position, $at: DateTime) {
        accountAsOf(id: $id, position: $position, at: $at) { asOfPosition asOfTime version status state } }`, { id, ...variables });
      out.replaceChildren(accountAsOf
        ? h("div", {}, h("p", {}, `As of ${label}: status ${STATUS[accountAsOf.status] || accountAsOf.status}, version ${accountAsOf.version}`), stateFacts(accountAsOf.state))
        : h("p", {}, `The account did not exist at ${label}.`));
    } catch (e) { out.replaceChildren(h("p", { class: "error" }, `${e.code}: ${e.message}`)); }
  };
  const onSlide = () => {
    const e = events[Number(slider.value)];
    if (!e) return;
    sliderText.textContent = `${when(e.at)}: ${e.type} (position ${e.position})`;
    show({ position: e.position }, `position ${e.position}`);
  };
  slider.addEventListener("change", onSlide);
  slider.addEventListener("input", () => { const e = events[Number(slider.value)]; if (e) sliderText.textContent = `${when(e.at)}: ${e.type}`; });
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    if (!at.value) return;
    const iso = new Date(`${at.value}Z`).toISOString();
    show({ at: iso }, when(iso));
  } }, h("label", { for: "asof-at" }, "Moment (UTC)", at), h("button", { type: "submit" }, "Show as of this moment"));
  return h("section", { "aria-labelledby": "asof-h" }, h("h2", { id: "asof-h" }, "Time travel"),
    h("p", { class: "muted" }, "Move through the account's events, or give a moment, to see the account as it stood then."),
    events.length ? h("label", { for: "asof-slider" }, "Event", slider) : null, sliderText, form, out);
}

function verifySection(viewer, id, events) {
  if (viewer.role === "provider") return null;
  const results = h("ol", { class: "timeline", id: "verify-results", "aria-live": "polite" });
  const summary = h("p", { id: "verify-summary", role: "status" });
  const button = h("button", { type: "button", id: "verify" }, "Verify this account's events");
  button.addEventListener("click", async () => {
    button.disabled = true;
    results.replaceChildren();
    summary.textContent = "Fetching proofs…";
    const pinned = sessionStorage.getItem("ledger-console-key");
    let ok = 0, bad = 0, waiting = 0;
    for (let i = 0; i < events.length; i += 20) {
      const batch = events.slice(i, i + 20);
      const defs = batch.map((_, j) => `$p${j}: Position!`).join(", ");
      const body = batch.map((_, j) => `p${j}: inclusionProof(position: $p${j}) { ${PROOF} }`).join(" ");
      const variables = Object.fromEntries(batch.map((e, j) => [`p${j}`, e.position]));
      const raw = await fetch(`/graphql?${new URLSearchParams({ query: `query(${defs}) { ${body} }`, variables: JSON.stringify(variables) })}`,
        { headers: { Accept: "application/json", Authorization: `Bearer ${sessionStorage.getItem("ledger-console-token")}` } }).then((r) => r.json());
      for (const [j, e] of batch.entries()) {
        const proof = raw.data?.[`p${j}`];
        let verdict, reason;
        if (!proof) {
          const error = (raw.errors || []).find((x) => x.path?.[0] === `p${j}`);
          verdict = "unsealed";
          reason = error ? `${error.extensions?.code}: ${error.message}` : "no proof";
        } else {
          const key = pinned || proof.head.publicKey;
          const r = await checkEvent(e.position, proof, key);
          verdict = r.ok ? "ok" : "flagged";
          reason = r.reason + (pinned ? "" : " (key as served; pin it on the Integrity page)");
        }
        if (verdict === "ok") ok++; else if (verdict === "flagged") bad++; else waiting++;
        results.append(h("li", { "data-position": e.position, "data-verdict": verdict,
          class: verdict === "ok" ? "mark-ok" : verdict === "flagged" ? "mark-bad error" : "mark-wait" },
          `${verdict === "ok" ? "Verified" : verdict === "flagged" ? "FLAGGED" : "Not sealed yet"}: position ${e.position}, ${e.type}: ${reason}`));
      }
    }
    summary.textContent = `${ok} verified, ${bad} flagged, ${waiting} not sealed yet.`;
    summary.className = bad ? "error" : "ok";
    say(summary.textContent);
    button.disabled = false;
  });
  return h("section", { "aria-labelledby": "verify-h" }, h("h2", { id: "verify-h" }, "Verify in this browser"),
    h("p", { class: "muted" }, "Fetches an inclusion proof and the signed tree head for each event, hashes the stored event here (SHA-256), walks the proof to the root and checks the head's Ed25519 signature with WebCrypto."),
    button, summary, results);
}

const SANCTION_FIELDS = "id level ruleIds reason issuerRole imposedAt expiresAt liftedAt appealState appealGrounds appealDecidedAt appealReason position";
export const sanctionColumns = [
  { key: "id", label: "Sanction", rowHeader: true, render: (s) => h("span", { class: "mono" }, s.id) },
  { key: "level", label: "Level" },
  { key: "ruleIds", label: "Rules", format: (r) => r.join(", ") },
  { key: "imposedAt", label: "Imposed", format: when },
  { key: "expiresAt", label: "Expires", format: when },
  { key: "liftedAt", label: "Lifted", format: when },
  { key: "appealState", label: "Appeal" },
  { key: "appealDecidedAt", label: "Decided", format: when },
];

export async function accountPage(viewer, id) {
  const data = await query(`query($id: ID!) {
    account(id: $id) { id providerId handle kind category legacy registeredAt verified verifiedAt agreementVersion reviewOutcome
      filingReference newsScopes marked status postCount lastPosition activeSanctions { sanctionId level expiresAt } }
    sanctions(filter: { accountId: $id }, first: 100) { edges { node { ${SANCTION_FIELDS} } } pageInfo { hasNextPage endCursor } }
    flaggedPosts(filter: { accountId: $id }, first: 100) { edges { node { postId metric threshold value crossedAt removed removedAt } } pageInfo { hasNextPage } } }`, { id });
  const a = data.account;
  if (!a) return [h("h1", {}, "Account not found"), h("p", {}, "No such account is visible to you.")];
  const events = [];
  for await (const e of allPages(HISTORY, { id }, (d) => d.history, 500)) {
    events.push(e);
    if (events.length >= 2000) break;
  }
  const sanctions = data.sanctions.edges.map((e) => e.node);
  const flagged = data.flaggedPosts.edges.map((e) => e.node);
  const flaggedColumns = [
    { key: "postId", label: "Post", rowHeader: true }, { key: "metric", label: "Metric" },
    { key: "threshold", label: "Threshold", num: true }, { key: "value", label: "Value", num: true },
    { key: "crossedAt", label: "Crossed", format: when },
    { key: "removed", label: "Removed", format: (r, p) => (r ? `yes, ${when(p.removedAt)}` : "no") }];
  const historyColumns = ["position", "type", "at", "actorRole", "ruleIds", "summary", "postId"].map((key) => ({ key, label: key }));
  return [
    h("h1", {}, `Account ${a.handle}`),
    h("div", { class: "two" },
      h("section", { "aria-labelledby": "now-h" }, h("h2", { id: "now-h" }, "Now"), facts([
        ["Status", STATUS[a.status] || a.status], ["Account id", a.id],
        ["Provider", h("a", { href: `#/provider/${a.providerId}` }, a.providerId)],
        ["Kind", a.kind], ["Category", a.category], ["Legacy", yes(a.legacy)], ["Registered", when(a.registeredAt)],
        ["Verified", a.verified ? `yes, ${when(a.verifiedAt)}` : "no"], ["Agreement", a.agreementVersion],
        ["Review", a.reviewOutcome], ["Filing", a.filingReference], ["News scopes", a.newsScopes.join(", ") || "none"],
        ["Marked", yes(a.marked)], ["Posts", a.postCount],
        ["Sanctions in force", a.activeSanctions.map((s) => `${s.level}${s.expiresAt ? ` until ${when(s.expiresAt)}` : ""}`).join("; ") || "none"]])),
      asOfSection(id, events)),
    h("h2", {}, "Sanctions and appeals"),
    h("div", { class: "toolbar" }, exportButton(`sanctions-${a.handle}.csv`, sanctionColumns, sanctions)),
    sanctions.length ? table({ caption: "Sanctions on this account, in the order imposed", columns: sanctionColumns, rows: sanctions }) : h("p", {}, "None."),
    h("h2", {}, "Flagged and removed posts"),
    h("div", { class: "toolbar" }, exportButton(`flagged-posts-${a.handle}.csv`, flaggedColumns, flagged)),
    flagged.length ? table({ caption: "Posts whose reach crossed a threshold", rows: flagged, columns: flaggedColumns })
      : h("p", {}, "None."),
    verifySection(viewer, id, events),
    h("h2", {}, "History"),
    h("div", { class: "toolbar" }, exportButton(`history-${a.handle}.csv`, historyColumns, events)),
    h("ol", { class: "timeline", id: "history", "aria-label": "The account's history, oldest first" }, events.map((e) =>
      h("li", { "data-position": e.position }, h("strong", {}, e.type), ` · ${when(e.at)} · position ${e.position}`,
        e.actorRole ? ` · by a ${e.actorRole}` : "", e.ruleIds.length ? ` · rules ${e.ruleIds.join(", ")}` : "",
        h("br"), h("span", { class: "muted" }, e.summary)))),
  ];
}
