// The GraphQL-over-HTTP audit suite (graphql-http) against a live server.
// Usage: node audit.mjs URL TOKEN  ->  prints one JSON line per audit.
import { serverAudits } from 'graphql-http';

const [url, token] = process.argv.slice(2);
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};
for (const audit of serverAudits({ url, fetchFn })) {
  const result = await audit.fn();
  console.log(JSON.stringify({
    id: audit.id, name: audit.name, status: result.status, reason: result.reason ?? null,
  }));
}
