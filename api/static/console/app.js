// The console's shell: sign-in (the token stays in this tab's sessionStorage), the
// navigation for the viewer's role, and a hash router over the pages.
import { ApiError, query, session } from "./api.js";
import { h, say } from "./dom.js";
import { accountPage, providerPage } from "./accounts.js";
import { overviewPage } from "./overview.js";
import { disclosuresPage, queuePage, sanctionsPage } from "./lists.js";
import { integrityPage } from "./integrity.js";

const main = document.getElementById("main");
let viewer = null;

const ROUTES = [
  [/^#\/overview$/, () => overviewPage(viewer)],
  [/^#\/provider\/([\w-]+)$/, (id) => providerPage(viewer, id)],
  [/^#\/account\/([\w-]+)$/, (id) => accountPage(viewer, id)],
  [/^#\/sanctions$/, () => sanctionsPage(viewer)],
  [/^#\/queue$/, () => queuePage(viewer)],
  [/^#\/disclosures$/, () => disclosuresPage(viewer)],
  [/^#\/integrity$/, () => integrityPage(viewer)],
];

function signInPage(problem) {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help" });
  const form = h("form", { class: "signin", onsubmit: async (e) => {
    e.preventDefault();
    session.set(input.value.trim());
    await start();
  } },
  h("label", { for: "token" }, "API token"), input,
  h("p", { id: "token-help", class: "muted" },
    "A regulator's, an auditor's or a provider's token (ledger token create). It is kept in this tab only, until you sign out or close it."),
  h("button", { type: "submit" }, "Sign in"));
  return [h("h1", {}, "Sign in"), problem ? h("p", { class: "error", role: "alert" }, problem) : null, form];
}

function showNav() {
  document.getElementById("nav").hidden = !viewer;
  document.getElementById("who").hidden = !viewer;
  if (!viewer) return;
  document.getElementById("who-name").textContent = `${viewer.name} (${viewer.role})`;
  for (const li of document.querySelectorAll("#nav li[data-for]")) {
    li.hidden = !li.dataset.for.split(" ").includes(viewer.role);
  }
  for (const a of document.querySelectorAll("#nav a")) {
    if (location.hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function render() {
  showNav();
  if (!viewer) return;
  const hash = location.hash || "#/overview";
  const match = ROUTES.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    const content = match ? await match[1](...match[0].slice(1)) : [h("h1", {}, "Not found"), h("p", {}, "No such page.")];
    main.replaceChildren(...[content].flat().filter((x) => x !== null && x !== undefined));
    main.dataset.page = hash.split("/")[1];
    // Data on screen: the console's own timing mark (bench/console.py reads it).
    requestAnimationFrame(() => performance.mark("console:data-shown"));
  } catch (e) {
    main.replaceChildren(h("h1", {}, "Could not load this page"),
      h("p", { class: "error", role: "alert" }, `${e.code || "ERROR"}: ${e.message}`));
  }
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : "Console"} · Compliance ledger console`;
  main.focus({ preventScroll: true });
}

async function start() {
  viewer = null;
  if (!session.token) {
    showNav();
    main.replaceChildren(...signInPage());
    return;
  }
  try {
    viewer = (await query("{ viewer { name role providerId } }")).viewer;
  } catch (e) {
    session.clear();
    showNav();
    main.replaceChildren(...signInPage(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e)));
    return;
  }
  if (!location.hash) history.replaceState(null, "", "#/overview");
  await render();
  say(`Signed in as ${viewer.name} (${viewer.role})`);
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  viewer = null;
  location.hash = "";
  start();
});
window.addEventListener("hashchange", () => render());
start();
