// Every read and write goes through /graphql with the signed-in user's token: the console
// has no query path of its own. Queries go by GET, so the browser may keep an answer and
// revalidate it (the API answers 304 when nothing changed); mutations by POST.
const KEY = "ledger-console-token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem("ledger-console-key"); },
};

export class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function headers() {
  return {
    Accept: "application/graphql-response+json, application/json",
    Authorization: `Bearer ${session.token}`,
  };
}

async function answer(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError("BAD_RESPONSE", `the API answered ${response.status} without JSON`);
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    throw new ApiError(first.extensions?.code || "ERROR", first.message);
  }
  return body.data;
}

export async function query(text, variables = {}) {
  const params = new URLSearchParams({ query: text, variables: JSON.stringify(variables) });
  return answer(await fetch(`/graphql?${params}`, { headers: headers() }));
}

export async function mutate(text, variables = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { ...headers(), "Content-Type": "application/json" },
    body: JSON.stringify({ query: text, variables }),
  });
  return answer(response);
}

// Every page of a connection, for exports (keyset paging: `after` is the last cursor).
export async function* allPages(text, variables, pick, size = 500) {
  let after = null;
  for (;;) {
    const connection = pick(await query(text, { ...variables, first: size, after }));
    for (const edge of connection.edges) yield edge.node;
    if (!connection.pageInfo.hasNextPage) return;
    after = connection.pageInfo.endCursor;
  }
}
