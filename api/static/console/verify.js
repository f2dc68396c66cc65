// In-browser checks of the ledger's proofs, with WebCrypto only (SHA-256 and Ed25519):
// the same contract as ledger/proofcheck.py. A leaf is SHA-256(0x00 || leaf data), a node
// SHA-256(0x01 || left || right) (RFC 9162), a tree head is signed with Ed25519 over
// "ledger-tree-head-v1\n" + size + "\n" + root + "\n" + timestamp.
const encoder = new TextEncoder();

export const hexToBytes = (hex) => {
  if (typeof hex !== "string" || hex.length % 2 || /[^0-9a-f]/i.test(hex)) throw new Error("not hex");
  return Uint8Array.from(hex.match(/../g) || [], (b) => parseInt(b, 16));
};
export const bytesToHex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
const b64ToBytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

async function sha256(...parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
}
const leafHash = (data) => sha256(Uint8Array.of(0), data);
const nodeHash = (l, r) => sha256(Uint8Array.of(1), l, r);
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// RFC 9162 section 2.1.3.2.
export async function inclusionHolds(leaf, index, size, proof, root) {
  if (!(index >= 0 && index < size)) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else r = await nodeHash(r, p);
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(r, root);
}

const keys = new Map();
export async function headSigned(head, publicKeyHex) {
  let key = keys.get(publicKeyHex);
  if (!key) {
    key = await crypto.subtle.importKey("raw", hexToBytes(publicKeyHex), { name: "Ed25519" }, false, ["verify"]);
    keys.set(publicKeyHex, key);
  }
  const message = encoder.encode(`ledger-tree-head-v1\n${head.treeSize}\n${head.rootHash}\n${head.timestamp}`);
  return crypto.subtle.verify({ name: "Ed25519" }, key, hexToBytes(head.signature), message);
}

// One event's proof: {ok, sealedContent, reason}. `ok` false flags the event.
export async function checkEvent(position, p, publicKeyHex) {
  const sealed = hexToBytes(p.leafHash);
  let recomputed;
  if (p.leafData) {
    const data = b64ToBytes(p.leafData);
    const header = encoder.encode(`ledger-event-v1\n${position}\n`);
    if (!same(data.slice(0, header.length), header)) {
      return { ok: false, reason: "the stored event is not the one at this position" };
    }
    recomputed = await leafHash(data);
  } else if (p.storedLeafHash) {
    recomputed = hexToBytes(p.storedLeafHash); // a sealed identity: hashed by the ledger
  } else {
    return { ok: false, reason: "no event is stored at this position" };
  }
  if (!same(recomputed, sealed)) {
    return { ok: false, reason: "the stored event differs from the sealed one (altered)" };
  }
  if (!(await headSigned(p.head, publicKeyHex))) {
    return { ok: false, reason: "the tree head's signature does not verify" };
  }
  const included = await inclusionHolds(sealed, Number(p.index), Number(p.treeSize),
    p.proof.map(hexToBytes), hexToBytes(p.head.rootHash));
  if (!included) return { ok: false, reason: "the inclusion proof does not lead to the signed root" };
  return { ok: true, reason: p.leafData ? "hashed here, proven, signed" : "sealed identity: hash from the ledger, proven, signed" };
}
