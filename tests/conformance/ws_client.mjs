// The reference WebSocket client (graphql-ws) signing in one way and reading events.
// Usage: node ws_client.mjs URL FORM TOKEN COUNT
//   FORM: authorization | Authorization | bare | token | headers | upgrade
// Prints one JSON line per event received, then {"done": true} or {"closed": code, reason}.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, form, token, count] = process.argv.slice(2);
const params = {
  authorization: { authorization: `Bearer ${token}` },
  Authorization: { Authorization: `Bearer ${token}` },
  bare: { authorization: token },
  token: { token },
  headers: { headers: { Authorization: `Bearer ${token}` } },
  upgrade: undefined,
}[form];
class UpgradeHeader extends WebSocket {
  constructor(address, protocols) {
    super(address, protocols, { headers: { Authorization: `Bearer ${token}` } });
  }
}
const client = createClient({
  url,
  webSocketImpl: form === 'upgrade' ? UpgradeHeader : WebSocket,
  connectionParams: params,
  retryAttempts: 0,
  lazy: true,
});
const query = 'subscription { sanctionEvents { position cursor type } }';
let seen = 0;
await new Promise((resolve) => {
  const stop = client.subscribe({ query }, {
    next: (value) => {
      if (seen >= Number(count)) return;
      console.log(JSON.stringify(value));
      if (++seen >= Number(count)) { stop(); resolve(); }
    },
    error: (err) => {
      console.log(JSON.stringify(
        err && err.code ? { closed: err.code, reason: err.reason } : { error: String(err) }));
      resolve();
    },
    complete: resolve,
  });
});
await client.dispose();
console.log(JSON.stringify({ done: true }));
