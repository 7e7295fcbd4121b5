// The page's frame: which view the address shows (#/, #/gateways/NAME, #/canaries/NAME, #/events), the token
// form, and the banner that says when the API cannot be reached.
import {checkAccess, mode, on, setToken, token} from "./api.js";
import {renderOverview} from "./overview.js";
import {renderGateway} from "./gateway.js";
import {renderCanary} from "./canary.js";
import {renderEvents} from "./events.js";

const main = document.getElementById("main");
const problem = document.getElementById("problem");
const tokenSection = document.getElementById("token");
const tokenMessage = document.getElementById("token-message");
let stopView = null;

const VIEWS = [
  [/^#\/gateways\/(.+)$/, renderGateway, "overview"],
  [/^#\/canaries\/(.+)$/, renderCanary, "overview"],
  [/^#\/events(?:\?.*)?$/, renderEvents, "events"],
  [/^/, renderOverview, "overview"],
];

function show() {
  if (stopView) stopView();
  stopView = null;
  const address = location.hash || "#/";
  const [pattern, view, page] = VIEWS.find(([expression]) => expression.test(address));
  const argument = (address.match(pattern)[1] || "");
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  stopView = view(main, decodeURIComponent(argument)) || null;
}

function askForToken(message) {
  tokenSection.hidden = false;
  main.hidden = true;
  tokenMessage.textContent = message;
  if (stopView) stopView();
  stopView = null;
  document.getElementById("token-input").focus();
}

on("unauthorized", () => {
  if (!tokenSection.hidden) return;
  askForToken(token() ? "The API refused this token (401): enter the right one." : "");
});

on("reachable", (reachable) => {
  problem.hidden = reachable;
  problem.textContent = reachable ? "" : `The API at ${location.host} cannot be reached: retrying.`;
});

document.getElementById("token-form").addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const input = document.getElementById("token-input");
  setToken(input.value.trim());
  tokenMessage.textContent = "Checking…";
  try {
    await checkAccess();
  } catch (error) {
    tokenMessage.textContent = error.status === 401
      ? "The API refused this token (401): check it and try again."
      : `The token could not be checked: ${error.message}`;
    input.select();
    return;
  }
  input.value = "";
  tokenMessage.textContent = "";
  tokenSection.hidden = true;
  main.hidden = false;
  show();
  main.focus();
});

if (mode === "gateway") {
  for (const item of document.querySelectorAll("[data-platform]")) item.hidden = true;
}
window.addEventListener("hashchange", () => {
  show();
  main.focus();
});
show();
