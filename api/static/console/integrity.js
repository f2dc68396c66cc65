// The log's integrity: its head, the latest signed tree head and when it was sealed, the
// projections' lag and dead letters, and the public key the browser checks heads with.
import { query } from "./api.js";
import { csv, download, h, say, table, when } from "./dom.js";
import { headSigned } from "./verify.js";

const lagColumns = [
  { key: "name", label: "Projection", rowHeader: true }, { key: "position", label: "Position", num: true },
  { key: "lagEvents", label: "Behind (events)", num: true },
  { key: "lagSeconds", label: "Behind (seconds)", num: true, format: (x) => x.toFixed(1) },
  { key: "failures", label: "Dead letters", num: true },
];

export async function integrityPage(viewer) {
  const { ledgerStatus } = await query("{ ledgerStatus { head projections { name position lagEvents lagSeconds failures } } }");
  const content = [h("h1", {}, "Integrity"), h("dl", { class: "facts" }, h("dt", {}, "Log head"), h("dd", { id: "log-head" }, ledgerStatus.head))];
  if (viewer.role !== "provider") {
    const { treeHead } = await query("{ treeHead { treeSize rootHash timestamp signature publicKey } }");
    if (treeHead) {
      const pinned = sessionStorage.getItem("ledger-console-key");
      const signed = await headSigned(treeHead, pinned || treeHead.publicKey);
      const keyInput = h("input", { id: "pin-key", class: "mono", value: pinned || "", size: 66, "aria-describedby": "pin-help" });
      content.push(h("h2", {}, "Latest signed tree head"), h("dl", { class: "facts" },
        h("dt", {}, "Tree size"), h("dd", { id: "tree-size" }, treeHead.treeSize),
        h("dt", {}, "Root hash"), h("dd", { class: "mono" }, treeHead.rootHash),
        h("dt", {}, "Sealed"), h("dd", {}, `${when(treeHead.timestamp)} (${treeHead.timestamp})`),
        h("dt", {}, "Signature"), h("dd", { id: "head-signature", class: signed ? "ok" : "error" },
          signed ? "valid (Ed25519, checked in this browser)" : "INVALID"),
        h("dt", {}, "Public key served"), h("dd", { class: "mono" }, treeHead.publicKey)),
      h("form", { class: "filters", onsubmit: (e) => {
        e.preventDefault();
        if (keyInput.value.trim()) sessionStorage.setItem("ledger-console-key", keyInput.value.trim().toLowerCase());
        else sessionStorage.removeItem("ledger-console-key");
        say("Public key saved for this tab");
      } }, h("label", { for: "pin-key" }, "Pin the ledger's public key (hex) to check against", keyInput),
      h("button", { type: "submit" }, "Pin key")),
      h("p", { id: "pin-help", class: "muted" }, "Verification checks heads against the pinned key when one is set, else against the key the ledger serves."));
    } else content.push(h("p", {}, "Nothing is sealed yet."));
  } else content.push(h("p", { class: "muted" }, "Signed tree heads and proofs are for auditors and regulators."));
  content.push(h("h2", {}, "Projections"),
    h("div", { class: "toolbar" }, h("button", { type: "button", class: "secondary",
      onclick: () => download("projections.csv", csv(lagColumns, ledgerStatus.projections)) }, "Export CSV")),
    table({ caption: "Each read model's position, lag and dead letters", columns: lagColumns, rows: ledgerStatus.projections, id: "lag" }));
  return content;
}
