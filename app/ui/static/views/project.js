// The project: its extraction instructions, and its keys (an admin key's: list, create,
// revoke).

import { ApiError, del, get, patch, post } from "../api.js";
import { confirmDialog, facts, field, h, when } from "../dom.js";

export const title = "Project";
const SCOPES = ["read", "write", "admin"];

/** @param {HTMLElement} main @param {import("../app.js").Context} context */
export async function mount(main, { say, fail }) {
  const project = await get("/v1/project");
  const instructions = /** @type {HTMLTextAreaElement} */ (h("textarea", {
    name: "instructions", rows: "6", maxlength: "4000",
  }));
  instructions.value = project.instructions ?? "";
  const editor = h("form", { "aria-labelledby": "instructions-title" },
    h("h2", { id: "instructions-title" }, "Extraction instructions"),
    field("Instructions applied to every conversation of the project", instructions,
      { hint: "e.g. “Only keep food preferences.” Empty clears them.", wide: true }),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save instructions")));
  editor.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const saved = await patch("/v1/project", { instructions: instructions.value.trim() || null });
      instructions.value = saved.instructions ?? "";
      say("Instructions saved.");
    } catch (error) {
      fail(error);
    }
  });
  const keys = h("section", { "aria-labelledby": "keys-title" }, h("h2", { id: "keys-title" }, "API keys"));
  main.append(facts([["Name", project.name], ["Id", h("code", {}, project.id)],
    ["Created", when(project.created_at)]]), editor, keys);
  await showKeys(keys, say, fail);
}

async function showKeys(section, say, fail) {
  const heading = section.firstElementChild;
  let page;
  try {
    page = await get("/v1/keys");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 403) throw error;
    section.replaceChildren(heading, h("p", { class: "muted" },
      "Only an admin key sees and manages the project's keys. ", error.message));
    return;
  }
  const name = h("input", { name: "key-name", maxlength: "255" });
  const boxes = SCOPES.map((scope) => h("input", { type: "checkbox", name: "key-scope", value: scope,
    checked: scope !== "admin" }));
  const created = h("div", { role: "status" });
  const form = h("form", { "aria-label": "New key" },
    h("fieldset", {}, h("legend", {}, "New key"), field("Name", name),
      boxes.map((box) => h("label", { class: "check" }, box, box.value))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create key")), created);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await post("/v1/keys", { name: name.value.trim() || null,
        scopes: boxes.filter((box) => box.checked).map((box) => box.value) });
      await showKeys(section, say, fail);
      section.append(h("div", { class: "alert", role: "status" },
        h("p", {}, "Copy the new key now; it is not shown again: ", h("code", {}, made.key))));
      say(`Key ${made.prefix} created.`);
    } catch (error) {
      fail(error);
    }
  });
  const rows = page.results.map((k) => h("tr", {},
    h("td", {}, h("code", {}, k.prefix)), h("td", {}, k.name ?? ""), h("td", {}, k.scopes.join(", ")),
    h("td", {}, when(k.created_at)), h("td", {}, when(k.last_used_at)),
    h("td", {}, k.revoked_at ? ["revoked ", when(k.revoked_at)]
      : h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.prefix}`,
        onclick: () => revoke(k.prefix) }, "Revoke"))));
  section.replaceChildren(heading, h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Prefix", "Name", "Scopes", "Created", "Last used", ""]
      .map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))), form);

  async function revoke(prefix) {
    const sure = await confirmDialog(`Revoke key ${prefix}? Anything using it stops working at once.`,
      "Revoke");
    if (!sure) return;
    try {
      await del(`/v1/keys/${encodeURIComponent(prefix)}`);
      say(`Key ${prefix} revoked.`);
      await showKeys(section, say, fail);
    } catch (error) {
      fail(error);
    }
  }
}
