// The GraphiQL page of the compliance ledger (ours, not a vendored file).
//
// URL parameters fill the editors: ?q=<query>&variables=<json>&headers=<json>
// (`q`, not `query`: a GET /graphql with `query` runs the query).
//
// The header editor's headers, e.g. {"Authorization": "Bearer T"}, go with every HTTP
// request, and GraphiQL.createFetcher spreads them into the WebSocket's connection_init
// payload for subscriptions; this page adds them once more under `headers`, so the
// server finds the token either way (`Authorization` or `headers: {Authorization}`).
(function () {
  "use strict";

  var parameters = new URLSearchParams(window.location.search);
  var url = window.location.href.split(/[?#]/)[0];
  var wsUrl = new URL(url);
  wsUrl.protocol = wsUrl.protocol === "https:" ? "wss:" : "ws:";

  var fetchers = {};

  function fetcherFor(headers) {
    var key = JSON.stringify(headers || {});
    if (!fetchers[key]) {
      fetchers[key] = GraphiQL.createFetcher({
        url: url,
        subscriptionUrl: wsUrl.toString(),
        wsConnectionParams: { headers: headers || {} },
      });
    }
    return fetchers[key];
  }

  function fetcher(graphQLParams, options) {
    return fetcherFor(options && options.headers)(graphQLParams, options);
  }

  var initial = {
    query: parameters.get("q") || undefined,
    variables: parameters.get("variables") || undefined,
    headers: parameters.get("headers") || undefined,
  };

  function update(name, value) {
    var next = new URLSearchParams(window.location.search);
    if (value) {
      next.set(name, value);
    } else {
      next.delete(name);
    }
    // Headers hold tokens: they stay out of the address bar (and its history).
    next.delete("headers");
    var search = next.toString();
    history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  function Page() {
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: "# Put a token in the Headers tab below:\n" +
        '# {"Authorization": "Bearer <token>"}\n\n{\n  ledgerStatus {\n    head\n  }\n}\n',
      query: initial.query,
      variables: initial.variables,
      headers: initial.headers,
      defaultEditorToolsVisibility: initial.headers ? "headers" : true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      inputValueDeprecation: true,
      onEditQuery: function (value) { update("q", value); },
      onEditVariables: function (value) { update("variables", value); },
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(Page));
})();
