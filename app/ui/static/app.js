// The console's shell: sign-in, a hash router over the four views, and the one place errors
// become words on the page (so no failure leaves a blank screen).

import { ApiError, get, key } from "./api.js";
import { field, h } from "./dom.js";
import * as graph from "./views/graph.js";
import * as jobs from "./views/jobs.js";
import * as memories from "./views/memories.js";
import * as project from "./views/project.js";

/** @typedef {{say: (text: string) => void, fail: (error: unknown) => void, route: string[]}} Context */
/** @typedef {{title: string, mount: (main: HTMLElement, context: Context) => (void | (() => void) | Promise<void | (() => void)>)}} View */

/** @type {Record<string, View>} */
const VIEWS = { memories, jobs, graph, project };

const main = /** @type {HTMLElement} */ (document.getElementById("main"));
const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
const status = /** @type {HTMLElement} */ (document.getElementById("status"));
const alert = /** @type {HTMLElement} */ (document.getElementById("alert"));
const signOut = /** @type {HTMLButtonElement} */ (document.getElementById("sign-out"));
const projectName = /** @type {HTMLElement} */ (document.getElementById("project-name"));

/** The running view's clean-up (stops its polling), called before the next view mounts. */
let leave = () => {};

/** A passing note for screen readers and sighted users alike (polite live region). */
function say(text) {
  status.textContent = text;
}

/** Shows what went wrong; a refused key goes back to sign-in with the reason. */
function fail(error) {
  const message = error instanceof ApiError ? error.message
    : `Something went wrong in the console: ${error instanceof Error ? error.message : error}`;
  if (error instanceof ApiError && error.signedOut) {
    key.clear();
    showSignIn(message);
    return;
  }
  alert.replaceChildren(h("p", {}, message),
    h("button", { type: "button", onclick: () => { alert.hidden = true; } }, "Dismiss"));
  alert.hidden = false;
  say("");
}

function clearAlert() {
  alert.hidden = true;
  alert.replaceChildren();
}

/** @param {string} [reason] why the key is asked for again */
function showSignIn(reason) {
  leave();
  leave = () => {};
  nav.hidden = true;
  signOut.hidden = true;
  projectName.textContent = "";
  clearAlert();
  const input = h("input", {
    type: "password", name: "api-key", required: true, autocomplete: "off",
    spellcheck: "false", placeholder: "anm_…",
  });
  const problem = h("p", { class: "problem", id: "sign-in-problem", role: "alert" }, reason ?? "");
  input.setAttribute("aria-describedby", "sign-in-problem");
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in to the Anamnesis console"),
    h("p", {}, "Paste an API key of your project. It stays in this browser tab only ",
      "(session storage) and is sent to this server as a header."),
    field("API key", input), button, problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    problem.textContent = "";
    key.set(input.value.trim());
    try {
      await get("/v1/project");
    } catch (error) {
      key.clear();
      button.disabled = false;
      problem.textContent = error instanceof ApiError && error.signedOut
        ? "That key was not accepted: it is wrong, or it was revoked. Check it and try again."
        : (error instanceof ApiError ? error.message : String(error));
      input.focus();
      return;
    }
    if (!location.hash || location.hash === "#/") location.hash = "#/memories";
    else render();
  });
  main.replaceChildren(form);
  input.focus();
  document.title = "Sign in · Anamnesis";
}

async function render() {
  if (!key.get()) {
    showSignIn();
    return;
  }
  const [name = "", ...route] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const view = VIEWS[name];
  if (!view) {
    location.replace("#/memories");
    return;
  }
  leave();
  leave = () => {};
  clearAlert();
  say("");
  nav.hidden = false;
  signOut.hidden = false;
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${view.title} · Anamnesis`;
  const heading = h("h1", { tabindex: "-1" }, view.title);
  main.replaceChildren(heading);
  heading.focus();  // a view change moves focus to its heading, so it is announced
  get("/v1/project").then((found) => { projectName.textContent = found.name; }, fail);
  try {
    const cleanup = await view.mount(main, { say, fail, route });
    if (typeof cleanup === "function") leave = cleanup;
  } catch (error) {
    fail(error);
  }
}

signOut.addEventListener("click", () => {
  key.clear();
  showSignIn("Signed out.");
});
// The skip link would change the hash (the router's); it moves focus instead.
document.querySelector(".skip")?.addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", render);
window.addEventListener("unhandledrejection", (event) => fail(event.reason));
window.addEventListener("error", (event) => fail(event.error ?? event.message));
render();
