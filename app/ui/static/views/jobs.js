// Consolidation jobs, newest first: status, timings, tokens, errors; a failed one retried;
// the first page polled every few seconds so running jobs move on their own.

import { get, post } from "../api.js";
import { facts, field, h, seconds, shortId, when } from "../dom.js";

export const title = "Jobs";
const PAGE = 25;
const POLL_MS = 2000;

/** @param {HTMLElement} main @param {import("../app.js").Context} context */
export function mount(main, { say, fail, route }) {
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    ["PENDING", "RUNNING", "SUCCEEDED", "FAILED"].map((s) => h("option", { value: s }, s)));
  const live = h("input", { type: "checkbox", name: "live", checked: true });
  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const summary = h("p", { class: "muted" });
  const pane = h("aside", { class: "pane detail", tabindex: "-1", "aria-label": "Job detail" },
    h("p", { class: "muted" }, "Pick a job to see what it wrote."));
  main.append(
    h("form", { class: "actions", "aria-label": "Which jobs" }, field("Status", status),
      h("label", { class: "check" }, live, "Live updates")),
    h("div", { class: "split" }, h("section", { "aria-label": "Recent jobs" }, summary,
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Job", "Status", "Created", "Waited", "Ran", "Attempts",
          "LLM calls", "Tokens", "Error", ""].map((name) => h("th", { scope: "col" }, name)))),
        tbody)), more), pane));

  /** @type {Map<string, HTMLElement>} */
  const rows = new Map();
  let cursor = null;
  let shown = null;

  function row(job) {
    const tokens = job.usage.prompt_tokens + job.usage.completion_tokens;
    const tr = h("tr", { "data-id": job.id, "data-status": job.status },
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => open(job.id) },
        shortId(job.id))),
      h("td", {}, h("span", { class: `badge ${job.status}` }, job.status)),
      h("td", {}, when(job.created_at)),
      h("td", {}, seconds(job.created_at, job.started_at)),
      h("td", {}, seconds(job.started_at, job.completed_at)),
      h("td", {}, String(job.attempts)),
      h("td", {}, String(job.usage.llm_calls)),
      h("td", { title: `${job.usage.prompt_tokens} prompt + ${job.usage.completion_tokens} completion` },
        String(tokens)),
      h("td", { class: "error" }, job.error ? `${job.error.code}: ${job.error.detail}` : ""),
      h("td", {}, job.status === "FAILED"
        ? h("button", { type: "button", onclick: () => retry(job.id),
          "aria-label": `Retry job ${job.id.slice(0, 8)}` }, "Retry") : null));
    const old = rows.get(job.id);
    rows.set(job.id, tr);
    if (old) old.replaceWith(tr);
    return tr;
  }

  async function loadPage() {
    more.disabled = true;
    try {
      const page = await get("/v1/jobs", { status: status.value, limit: PAGE, cursor });
      tbody.append(...page.results.filter((job) => !rows.has(job.id)).map(row));
      cursor = page.next_cursor;
      more.hidden = cursor === null;
      summary.textContent = `${rows.size} jobs shown${cursor ? "; more to load" : ""}.`;
    } finally {
      more.disabled = false;
    }
  }

  async function reload() {
    rows.clear();
    tbody.replaceChildren();
    cursor = null;
    await loadPage();
  }

  /** The newest page again: changed jobs replaced in place, new ones added on top. */
  async function refresh() {
    const page = await get("/v1/jobs", { status: status.value, limit: PAGE });
    const fresh = [];
    for (const job of page.results) {
      if (rows.has(job.id)) row(job);
      else fresh.push(row(job));
    }
    tbody.prepend(...fresh);
    if (shown && rows.has(shown)) await open(shown, false);
  }

  async function open(id, focus = true) {
    shown = id;
    const job = await get(`/v1/jobs/${encodeURIComponent(id)}`).catch(fail);
    if (!job) return;
    const heading = h("h2", { tabindex: "-1" }, "Job");
    pane.replaceChildren(heading, facts([
      ["Id", h("code", {}, job.id)],
      ["Status", h("span", { class: `badge ${job.status}` }, job.status)],
      ["Conversation", h("code", {}, job.episode_id)],
      ["Created", when(job.created_at)], ["Started", when(job.started_at)],
      ["Completed", when(job.completed_at)], ["Attempts", String(job.attempts)],
      ["Model", job.usage.model],
      ["Tokens", `${job.usage.prompt_tokens} prompt, ${job.usage.completion_tokens} completion`],
      ["Error", job.error ? `${job.error.code}: ${job.error.detail}` : null],
    ]),
    h("h3", {}, `Results (${job.results.length})`),
    h("ul", { class: "plain" }, job.results.map((result) => h("li", {},
      h("span", { class: "badge" }, result.event), " ",
      h("a", { href: `#/memories/${result.id}` }, result.memory),
      result.previous_memory ? h("div", { class: "muted" }, "was: ", result.previous_memory) : null))));
    if (focus) heading.focus();
  }

  async function retry(id) {
    try {
      await post(`/v1/jobs/${encodeURIComponent(id)}/retry`);
      say(`Job ${id.slice(0, 8)} queued again.`);
      await refresh();
    } catch (error) {
      fail(error);
    }
  }

  status.addEventListener("change", () => reload().catch(fail));
  more.addEventListener("click", () => loadPage().catch(fail));
  const timer = setInterval(() => {
    if (!live.checked || document.hidden) return;
    refresh().catch((error) => {
      live.checked = false;  // one message, not one every two seconds; tick to resume
      fail(error);
    });
  }, POLL_MS);
  reload().catch(fail);
  if (route[0]) open(route[0]);
  return () => clearInterval(timer);
}
