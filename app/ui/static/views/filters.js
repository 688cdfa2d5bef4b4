// The search filter: a builder of conditions (field, operator, value) plus raw JSON in the
// API's filter grammar, ANDed together.

import { field, h } from "../dom.js";

const OPERATORS = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "icontains"];
const FIELDS = ["kind", "user_id", "agent_id", "run_id", "created_at", "updated_at",
  "metadata."];

/** A filter problem the page explains before anything is sent. */
export class FilterError extends Error {}

/**
 * The filter editor and the function that reads it.
 * @returns {{element: HTMLElement, read: () => (object|null)}} `read` throws FilterError
 */
export function filterEditor() {
  const rows = h("div", { class: "conditions" });
  const raw = h("textarea", {
    name: "filter-json", rows: "3", spellcheck: "false",
    placeholder: '{"OR": [{"metadata.topic": "food"}, {"kind": "message"}]}',
  });
  const suggestions = h("datalist", { id: "filter-fields" },
    FIELDS.map((name) => h("option", { value: name })));
  const add = h("button", { type: "button", class: "secondary", onclick: () => addRow() },
    "Add condition");

  /** @type {{name: HTMLInputElement, op: HTMLSelectElement, value: HTMLInputElement}[]} */
  const conditions = [];

  function addRow() {
    const name = /** @type {HTMLInputElement} */ (h("input", {
      name: "filter-field", list: "filter-fields", placeholder: "metadata.topic", required: true,
    }));
    const op = /** @type {HTMLSelectElement} */ (h("select", { name: "filter-op" },
      OPERATORS.map((o) => h("option", { value: o }, o))));
    const value = /** @type {HTMLInputElement} */ (h("input", { name: "filter-value" }));
    const condition = { name, op, value };
    const row = h("div", { class: "condition" },
      field("Field", name), field("Operator", op),
      field("Value", value, { hint: "in / nin: comma-separated" }),
      h("button", {
        type: "button", class: "secondary", "aria-label": "Remove this condition",
        onclick: () => {
          conditions.splice(conditions.indexOf(condition), 1);
          row.remove();
          add.focus();
        },
      }, "Remove"));
    conditions.push(condition);
    rows.append(row);
    name.focus();
  }

  function read() {
    const parts = conditions
      .filter((c) => c.name.value.trim())
      .map((c) => ({ [c.name.value.trim()]: { [c.op.value]: parseValue(c) } }));
    const text = raw.value.trim();
    if (text) {
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch (error) {
        throw new FilterError(`The filter JSON is not valid JSON: ${error.message}`);
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw new FilterError("The filter JSON must be an object, e.g. {\"kind\": \"fact\"}.");
      }
      parts.push(parsed);
    }
    if (parts.length === 0) return null;
    return parts.length === 1 ? parts[0] : { AND: parts };
  }

  const element = h("fieldset", { class: "filters" }, h("legend", {}, "Filters"), suggestions,
    rows, h("div", { class: "actions" }, add),
    field("Filter JSON (ANDed with the conditions)", raw,
      { hint: "The API's grammar: fields, operators, AND / OR / NOT.", wide: true }));
  return { element, read };
}

/** A condition's value: a list for in/nin; numbers, booleans and null for metadata keys
 * (ids and kinds are strings, times ISO strings). */
function parseValue({ name, op, value }) {
  const typed = name.value.trim().startsWith("metadata");
  const one = (text) => (typed ? scalar(text.trim()) : text.trim());
  if (op.value === "in" || op.value === "nin") return value.value.split(",").map(one);
  return one(value.value);
}

function scalar(text) {
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (text === "true" || text === "false") return text === "true";
  if (text === "null") return null;
  return text;
}
