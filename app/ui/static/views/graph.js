// The entity graph of a scope: entities a page at a time, one entity's neighbourhood (depth
// 1–3) drawn as rings with its relations and their validity, and an alias taken apart.

import { get, post } from "../api.js";
import { confirmDialog, facts, field, h, shortId, when } from "../dom.js";

export const title = "Graph";
const PAGE = 50;
const SVG = "http://www.w3.org/2000/svg";

/** @param {HTMLElement} main @param {import("../app.js").Context} context */
export function mount(main, { say, fail, route }) {
  const scope = Object.fromEntries(["user_id", "agent_id", "run_id"].map((name) => [name,
    h("input", { name, autocomplete: "off" })]));
  const name = h("input", { name: "name", type: "search" });
  const depth = h("select", { name: "depth" }, [1, 2, 3].map((d) => h("option", { value: String(d) }, String(d))));
  const tbody = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const summary = h("p", { class: "muted" });
  const pane = h("section", { class: "pane detail", tabindex: "-1", "aria-label": "Neighbourhood" },
    h("p", { class: "muted" }, "Pick an entity to see its neighbourhood."));
  const find = h("form", { "aria-label": "Find entities" },
    h("fieldset", {}, h("legend", {}, "Entities of a scope"),
      field("User id", scope.user_id), field("Agent id", scope.agent_id),
      field("Run id", scope.run_id), field("Name contains", name), field("Depth", depth)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Find entities")));
  main.append(find, h("div", { class: "split" },
    h("section", { "aria-label": "Entities" }, summary, h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Entity", "Type", "Summary"].map((t) => h("th", { scope: "col" }, t)))),
      tbody)), more),
    pane));

  let cursor = null;
  let count = 0;
  let centre = null;
  const open = (id) => show(id).catch(fail);

  function query() {
    return Object.fromEntries(Object.entries(scope).map(([key, input]) => [key, input.value.trim()]));
  }

  async function loadPage() {
    more.disabled = true;
    try {
      const page = await get("/v1/entities", { ...query(), name: name.value.trim(), limit: PAGE, cursor });
      tbody.append(...page.results.map((entity) => h("tr", {},
        h("td", {}, h("button", { type: "button", class: "link", onclick: () => open(entity.id) },
          entity.name)),
        h("td", {}, entity.type), h("td", {}, entity.summary))));
      count += page.results.length;
      cursor = page.next_cursor;
      more.hidden = cursor === null;
      summary.textContent = `${count} entities shown${cursor ? "; more to load" : ""}.`;
    } finally {
      more.disabled = false;
    }
  }

  async function show(id) {
    centre = id;
    pane.setAttribute("aria-busy", "true");
    let entity, around, relations;
    try {
      [entity, around] = await Promise.all([
        get(`/v1/entities/${id}`),
        get(`/v1/entities/${id}/neighbors`, { depth: depth.value }),
      ]);
      relations = await get("/v1/relations", {
        user_id: entity.user_id, agent_id: entity.agent_id, run_id: entity.run_id,
        include_invalid: true, limit: 1000,
      });
    } finally {
      pane.removeAttribute("aria-busy");
    }
    const nodes = [{ entity, distance: 0 }, ...around.results];
    const ids = new Set(nodes.map((n) => n.entity.id));
    // Listed: every relation among the shown entities, and the entity's own ended ones
    // (whose other end may no longer be a neighbour); drawn: those with both ends shown.
    const listed = relations.results.filter((r) => (ids.has(r.source_id) && ids.has(r.target_id))
      || r.source_id === id || r.target_id === id);
    const edges = listed.filter((r) => ids.has(r.source_id) && ids.has(r.target_id));
    const heading = h("h2", { tabindex: "-1" }, entity.name);
    pane.replaceChildren(heading,
      facts([["Type", entity.type], ["Summary", entity.summary], ["Id", shortId(entity.id)],
        ["Scope", [entity.user_id, entity.agent_id, entity.run_id].filter(Boolean).join(" · ")]]),
      drawing(nodes, edges, open),
      h("h3", {}, `Within ${depth.value} relation${depth.value === "1" ? "" : "s"} (${around.results.length})`),
      h("ul", { class: "plain neighbours" }, around.results.map((n) => h("li", {},
        h("button", { type: "button", class: "link", onclick: () => open(n.entity.id) }, n.entity.name),
        ` — ${n.entity.type}, distance ${n.distance}`))),
      h("h3", {}, `Relations (${listed.length})`),
      h("ul", { class: "plain relations" }, listed.map((r) => h("li", {},
        `${r.source_name} ${r.type} ${r.target_name}`, " ",
        h("span", { class: `badge ${r.invalid_at ? "superseded" : "current"}` },
          r.invalid_at ? "ended" : "current"),
        h("div", { class: "muted" }, "valid from ", when(r.valid_at),
          r.invalid_at ? [" until ", when(r.invalid_at)] : null)))),
      aliases(entity),
      h("h3", {}, `Memories that mention it (${entity.memories.length})`),
      h("ul", { class: "plain" }, entity.memories.map((m) => h("li", {},
        h("a", { href: `#/memories/${m.id}` }, m.memory)))));
    heading.focus();
  }

  function aliases(entity) {
    return h("section", {}, h("h3", {}, `Aliases (${entity.aliases.length})`),
      entity.aliases.length === 0 ? h("p", { class: "muted" }, "No other names were merged into it.")
        : h("ul", { class: "plain aliases" }, entity.aliases.map((alias) => h("li", {},
          h("strong", {}, alias.alias), ` — merged: ${alias.reason} (score ${alias.score.toFixed(2)}) `,
          h("button", { type: "button", class: "secondary", onclick: () => unmerge(entity, alias.alias) },
            `Unmerge “${alias.alias}”`)))));
  }

  async function unmerge(entity, alias) {
    const sure = await confirmDialog(`Take “${alias}” apart from “${entity.name}”? It becomes an `
      + "entity of its own, with the relations and memories that named it.", "Unmerge");
    if (!sure) return;
    try {
      const result = await post(`/v1/entities/${entity.id}/unmerge`, { alias });
      say(`“${alias}” is an entity of its own again.`);
      await show(result.entity?.id ?? result.split.id);
    } catch (error) {
      fail(error);
    }
  }

  async function list() {
    tbody.replaceChildren();
    cursor = null;
    count = 0;
    await loadPage();
  }

  find.addEventListener("submit", (event) => {
    event.preventDefault();
    list().catch(fail);
  });
  depth.addEventListener("change", () => { if (centre) open(centre); });
  more.addEventListener("click", () => loadPage().catch(fail));
  list().catch(fail);
  if (route[0]) open(route[0]);
}

/**
 * The neighbourhood as rings: the entity in the middle, each distance on its own ring; lines
 * for relations (dashed once ended). Each node is a button that recentres the view.
 */
function drawing(nodes, edges, recentre) {
  const size = 560;
  const middle = size / 2;
  const svg = svgNode("svg", { viewBox: `0 0 ${size} ${size}`, class: "neighbourhood",
    role: "group", "aria-label": "Neighbourhood diagram" });
  const place = new Map();
  const rings = [0, 1, 2, 3].map((d) => nodes.filter((n) => n.distance === d));
  const deepest = Math.max(1, ...nodes.map((n) => n.distance));
  const step = (middle - 60) / deepest;  // the outer ring just inside the frame, labels too
  rings.forEach((ring, d) => {
    if (d > 0 && ring.length) svg.append(svgNode("circle", { class: "ring", cx: middle, cy: middle, r: d * step }));
    ring.forEach((n, i) => {
      const angle = (2 * Math.PI * i) / ring.length + d * 0.4;
      place.set(n.entity.id, [middle + d * step * Math.cos(angle), middle + d * step * Math.sin(angle)]);
    });
  });
  for (const r of edges) {
    const [x1, y1] = place.get(r.source_id);
    const [x2, y2] = place.get(r.target_id);
    const line = svgNode("line", { x1, y1, x2, y2, class: r.invalid_at ? "invalid" : "" });
    line.append(svgNode("title", {}, `${r.source_name} ${r.type} ${r.target_name}`));
    const label = svgNode("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, class: "edge",
      "text-anchor": "middle", "aria-hidden": "true" }, r.type);
    svg.append(line, label);
  }
  for (const n of nodes) {
    const [x, y] = place.get(n.entity.id);
    const group = svgNode("g", n.distance === 0 ? { class: "centre" }
      : { role: "button", tabindex: "0", "aria-label": `${n.entity.name}, distance ${n.distance}` });
    group.append(svgNode("circle", { cx: x, cy: y, r: 9 }),
      svgNode("text", { x, y: y + 24, "text-anchor": "middle" }, n.entity.name));
    if (n.distance > 0) {
      group.addEventListener("click", () => recentre(n.entity.id));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          recentre(n.entity.id);
        }
      });
    }
    svg.append(group);
  }
  return svg;
}

function svgNode(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}
