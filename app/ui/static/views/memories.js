// Memories of a scope: listed a page at a time (cursor paging, so 10k memories cost one page),
// or searched with filters, time travel and explanations; the picked one in the detail pane.

import { get, post } from "../api.js";
import { field, h, json, when } from "../dom.js";
import { FilterError, filterEditor } from "./filters.js";
import { showMemory } from "./memory_detail.js";

export const title = "Memories";
const PAGE = 50;
const SCOPES = [["user_id", "user", "User id"], ["agent_id", "agent", "Agent id"],
  ["run_id", "run", "Run id"]];

/** @param {HTMLElement} main @param {import("../app.js").Context} context */
export function mount(main, { say, fail, route }) {
  const inputs = Object.fromEntries(SCOPES.map(([name, kind]) => [name, scopeInput(name, kind, fail)]));
  const kind = h("select", { name: "kind" }, h("option", { value: "" }, "facts and messages"),
    h("option", { value: "fact" }, "facts"), h("option", { value: "message" }, "messages"));
  const asOf = h("input", { type: "datetime-local", name: "as_of", step: "1" });
  const superseded = h("input", { type: "checkbox", name: "include_superseded" });

  const browse = h("form", { class: "browse", "aria-label": "Scope and time" },
    h("fieldset", {}, h("legend", {}, "Scope"),
      SCOPES.map(([name, , label]) => field(label, inputs[name].input)),
      SCOPES.map(([name]) => inputs[name].list)),
    h("fieldset", {}, h("legend", {}, "Time"),
      field("Kind", kind),
      field("As of", asOf, { hint: "What was true then (your local time)" }),
      h("label", { class: "check" }, superseded, "Include superseded")),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "List memories")));

  const query = h("input", { type: "search", name: "query", required: true, size: "40" });
  const topK = h("input", { type: "number", name: "top_k", min: "1", max: "1000", value: "20" });
  const explain = h("input", { type: "checkbox", name: "explain" });
  const filters = filterEditor();
  const problem = h("p", { class: "problem", role: "alert" });
  const search = h("form", { class: "search", "aria-label": "Search" },
    h("fieldset", {}, h("legend", {}, "Search"),
      field("Query", query), field("Results", topK),
      h("label", { class: "check" }, explain, "Explain scores")),
    filters.element,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Search")), problem);

  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const results = h("div", { class: "scroll" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const pane = h("aside", { class: "pane detail", tabindex: "-1", "aria-label": "Memory detail" },
    h("p", { class: "muted" }, "Pick a memory to see its sources and history."));
  main.append(h("div", { class: "controls" }, browse, search), h("div", { class: "split" },
    h("section", { "aria-label": "Results" }, summary, results, more), pane));

  /** @type {Map<string, HTMLTableRowElement>} */
  let rows = new Map();
  let cursor = null;
  // Each listing or search starts a new generation: a page that arrives after a newer one
  // started (the listing shown on opening, still in flight when a scope is submitted) is
  // dropped instead of being appended to the newer table with its stale cursor.
  let generation = 0;

  function scope() {
    return Object.fromEntries(SCOPES.map(([name]) => [name, inputs[name].input.value.trim() || null]));
  }

  function timeline() {
    return {
      as_of: asOf.value ? new Date(asOf.value).toISOString() : null,
      include_superseded: superseded.checked,
    };
  }

  const hooks = {
    say, fail,
    open: (id) => select(id),
    changed: (memory) => rows.get(memory.id)?.replaceWith(row(memory)),
    deleted: (id) => {
      rows.get(id)?.remove();
      rows.delete(id);
      summary.textContent = `${rows.size} shown.`;
    },
  };

  async function select(id) {
    for (const [rowId, tr] of rows) tr.classList.toggle("selected", rowId === id);
    try {
      await showMemory(pane, id, hooks);
    } catch (error) {
      fail(error);
    }
  }

  function row(memory, hit) {
    const tr = h("tr", { "data-id": memory.id },
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => select(memory.id) },
        memory.memory)),
      h("td", { class: "wide-only" }, memory.kind),
      h("td", { class: "wide-only" },
        [memory.user_id, memory.agent_id, memory.run_id].filter(Boolean).join(" · ") || "—"),
      h("td", { class: "wide-only" }, when(memory.created_at)),
      h("td", {}, h("span", { class: `badge ${memory.invalid_at ? "superseded" : "current"}` },
        memory.invalid_at ? "superseded" : "current")),
      hit ? h("td", {}, hit.score.toFixed(3),
        hit.explain ? h("details", {}, h("summary", {}, "why"), json(hit.explain)) : null) : null);
    rows.set(memory.id, /** @type {HTMLTableRowElement} */ (tr));
    return tr;
  }

  function table(scored) {
    return h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Memory"),
        h("th", { scope: "col", class: "wide-only" }, "Kind"),
        h("th", { scope: "col", class: "wide-only" }, "Scope"),
        h("th", { scope: "col", class: "wide-only" }, "Created"),
        h("th", { scope: "col" }, "State"), scored ? h("th", { scope: "col" }, "Score") : null)),
      h("tbody", {}));
  }

  async function loadPage() {
    const mine = generation;
    more.disabled = true;
    results.setAttribute("aria-busy", "true");
    try {
      const page = await get("/v1/memories", {
        ...scope(), ...timeline(), kind: kind.value, limit: PAGE, cursor,
      });
      if (mine !== generation) return;
      results.querySelector("tbody")?.append(...page.results.map((memory) => row(memory)));
      cursor = page.next_cursor;
      more.hidden = cursor === null;
      summary.textContent = `${rows.size} shown${cursor ? "; more to load" : ""}.`;
    } finally {
      more.disabled = false;
      results.removeAttribute("aria-busy");
    }
  }

  async function list() {
    generation += 1;
    rows = new Map();
    cursor = null;
    results.replaceChildren(table(false));
    await loadPage();
  }

  browse.addEventListener("submit", (event) => {
    event.preventDefault();
    list().catch(fail);
  });
  more.addEventListener("click", () => loadPage().catch(fail));

  search.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.textContent = "";
    let filter;
    try {
      filter = filters.read();
    } catch (error) {
      if (!(error instanceof FilterError)) throw error;
      problem.textContent = error.message;
      return;
    }
    const tree = kind.value ? (filter ? { AND: [filter, { kind: kind.value }] } : { kind: kind.value }) : filter;
    try {
      const found = await post("/v1/memories/search", {
        query: query.value, top_k: Number(topK.value) || 10, filters: tree,
        ...scope(), ...timeline(), explain: explain.checked,
      });
      generation += 1;
      rows = new Map();
      more.hidden = true;
      results.replaceChildren(table(true));
      results.querySelector("tbody")?.append(...found.results.map((hit) => row(hit, hit)));
      summary.textContent = `${found.results.length} found for “${query.value}”.`;
      say(`Search found ${found.results.length} ${found.results.length === 1 ? "memory" : "memories"}.`);
    } catch (error) {
      fail(error);
    }
  });

  list().catch(fail);
  if (route[0]) select(route[0]);
}

/** A scope id input suggesting the project's ids as one types (GET /v1/scopes). */
function scopeInput(name, kind, fail) {
  const list = h("datalist", { id: `${name}-options` });
  const input = h("input", { name, list: `${name}-options`, autocomplete: "off" });
  let timer = 0;
  const suggest = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        const page = await get("/v1/scopes", { kind, prefix: input.value.trim(), limit: 20 });
        list.replaceChildren(...page.results.map((found) => h("option", {
          value: found.id, label: `${found.memories} memories` })));
      } catch (error) {
        fail(error);
      }
    }, 200);
  };
  input.addEventListener("focus", suggest);
  input.addEventListener("input", suggest);
  return { input, list };
}
