// graphql-sse's client (distinct connections mode) reading a subscription over HTTP.
// Usage: node sse_client.mjs URL TOKEN AFTER COUNT  -> one JSON line per result.
import { createClient } from 'graphql-sse';

const [url, token, after, count] = process.argv.slice(2);
const client = createClient({
  url,
  singleConnection: false,
  retryAttempts: 0,
  headers: { Authorization: `Bearer ${token}` },
});
const query = 'subscription($after: Position) { sanctionEvents(after: $after) { position cursor } }';
let seen = 0;
await new Promise((resolve) => {
  const stop = client.subscribe({ query, variables: { after: after || null } }, {
    next: (value) => {
      if (seen >= Number(count)) return;
      console.log(JSON.stringify(value));
      if (++seen >= Number(count)) { stop(); resolve(); }
    },
    error: (err) => { console.log(JSON.stringify({ error: String(err) })); resolve(); },
    complete: resolve,
  });
});
client.dispose();
