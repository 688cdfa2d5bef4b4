// Building the page: elements from plain values, text always as text (never parsed as HTML,
// so a memory that contains markup shows its markup).

/**
 * An element with attributes, properties, listeners and children.
 * `props`: `class`, `for` and `aria-*`/`data-*` become attributes; `onclick` etc. listeners;
 * `hidden`, `disabled`, `value`, `checked` properties. Children: nodes, strings (as text),
 * arrays of them; null, undefined and false are skipped.
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (["hidden", "disabled", "value", "checked", "open"].includes(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name === "className" ? "class" : name, value === true ? "" : value);
    }
  }
  append(element, children);
  return element;
}

/** @param {Node} parent @param {any[]} children */
function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else parent.append(child instanceof Node ? child : String(child));
  }
}

/** A local, readable time for an ISO timestamp; an em dash for none. @param {string|null|undefined} iso */
export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return h("time", { datetime: iso, title: iso }, date.toLocaleString());
}

/** Seconds between two ISO timestamps, to one decimal; "" when either is missing. */
export function seconds(from, to) {
  if (!from || !to) return "";
  return `${((new Date(to) - new Date(from)) / 1000).toFixed(1)} s`;
}

/** A definition list of label → value pairs, skipping empty values. @param {[string, any][]} pairs */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

/** JSON shown as preformatted text. */
export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** An id shortened for display, whole in its title and to assistive technology. */
export function shortId(id) {
  if (!id) return "—";
  return h("code", { title: id, "aria-label": id }, id.slice(0, 8));
}

let hints = 0;

/**
 * A labelled form control: a `label` around the text and the control, so every input is
 * named; a hint, if any, outside the label describes the control (`aria-describedby`)
 * without becoming part of its name.
 * @param {string} text @param {HTMLElement} control
 * @param {{hint?: string, wide?: boolean}} [options]
 */
export function field(text, control, { hint, wide = false } = {}) {
  const wrapper = h("div", { class: wide ? "field wide" : "field" },
    h("label", {}, h("span", {}, text), control));
  if (hint) {
    const id = `hint-${++hints}`;
    control.setAttribute("aria-describedby", id);
    wrapper.append(h("small", { id }, hint));
  }
  return wrapper;
}

/**
 * Asks before something irreversible, in a modal `<dialog>` (focus trapped, Escape cancels).
 * @param {string} question @param {string} confirmLabel
 * @returns {Promise<boolean>}
 */
export function confirmDialog(question, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "confirm-question" },
      h("form", { method: "dialog" },
        h("p", { id: "confirm-question" }, question),
        h("div", { class: "actions" },
          h("button", { value: "cancel", type: "submit", autofocus: true }, "Cancel"),
          h("button", { value: "confirm", type: "submit", class: "danger" }, confirmLabel))));
    const opener = document.activeElement;
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener instanceof HTMLElement) opener.focus();
      resolve(dialog.returnValue === "confirm");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
