// One memory in full: what it says, where it came from (the cited messages), its history
// with the cause of each change, and the two corrections a person makes: edit and delete.

import { del, get, patch } from "../api.js";
import { confirmDialog, facts, field, h, json, shortId, when } from "../dom.js";

/**
 * @typedef {{say: (t: string) => void, fail: (e: unknown) => void,
 *   open: (id: string) => void, changed: (memory: any) => void,
 *   deleted: (id: string) => void}} DetailHooks
 */

/**
 * Loads and shows memory `id` in `pane`.
 * @param {HTMLElement} pane @param {string} id @param {DetailHooks} hooks
 */
export async function showMemory(pane, id, hooks) {
  // The last memory picked wins, and no control of the one shown before stays clickable.
  pane.dataset.showing = id;
  pane.setAttribute("aria-busy", "true");
  pane.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const [memory, history] = await Promise.all([
    get(`/v1/memories/${encodeURIComponent(id)}`),
    get(`/v1/memories/${encodeURIComponent(id)}/history`),
  ]).finally(() => pane.removeAttribute("aria-busy"));
  if (pane.dataset.showing !== id) return;
  const heading = h("h2", { tabindex: "-1" }, "Memory");
  pane.replaceChildren(heading,
    h("p", { class: "memory-text" }, memory.memory),
    facts([
      ["Id", h("code", {}, memory.id)],
      ["Kind", memory.kind],
      ["State", memory.invalid_at
        ? h("span", { class: "badge superseded" }, "superseded")
        : h("span", { class: "badge current" }, "current")],
      ["User", memory.user_id], ["Agent", memory.agent_id], ["Run", memory.run_id],
      ["Created", when(memory.created_at)], ["Updated", when(memory.updated_at)],
      ["Valid from", memory.valid_at ? when(memory.valid_at) : null],
      ["Invalid from", memory.invalid_at ? when(memory.invalid_at) : null],
      ["Superseded by", memory.superseded_by ? openLink(memory.superseded_by, hooks) : null],
      ["Supersedes", memory.supersedes.length
        ? memory.supersedes.map((other) => openLink(other, hooks)) : null],
    ]),
    h("h3", {}, "Metadata"), json(memory.metadata),
    sources(memory.sources),
    events(history.results, hooks),
    editor(pane, memory, hooks));
  heading.focus();
}

function openLink(id, hooks) {
  return h("button", { type: "button", class: "link", onclick: () => hooks.open(id) },
    shortId(id), " ");
}

function sources(found) {
  return h("section", { "aria-labelledby": "sources-title" },
    h("h3", { id: "sources-title" }, `Sources (${found.length})`),
    found.length === 0 ? h("p", { class: "muted" }, "No cited messages.") : h("ul", { class: "plain sources" },
      found.map((source) => h("li", {},
        h("div", { class: "muted" }, "Conversation ", shortId(source.episode_id), ", observed ",
          when(source.observed_at)),
        source.messages.map((message) => h("p", { class: "message cited" },
          h("span", { class: "role" }, `[${message.index}] ${message.role}:`),
          message.content))))));
}

function events(history, hooks) {
  return h("section", { "aria-labelledby": "history-title" },
    h("h3", { id: "history-title" }, `History (${history.length})`),
    h("ol", { class: "events history" }, history.map((event) => h("li", {},
      h("div", {}, h("span", { class: `badge ${event.event}` }, event.event), " ",
        when(event.created_at)),
      event.old_memory !== null && event.old_memory !== event.new_memory
        ? h("p", {}, h("del", {}, event.old_memory), " → ", h("ins", {}, event.new_memory))
        : h("p", {}, event.new_memory ?? event.old_memory),
      facts([
        ["Cause", cause(event)],
        ["Decision", event.decision],
        ["Request", event.request_id ? h("code", {}, event.request_id) : null],
        ["Conversation", event.episode_id ? shortId(event.episode_id) : null],
        ["Messages", event.message_indices?.length ? event.message_indices.join(", ") : null],
        ["Job", event.job_id ? h("a", { href: `#/jobs/${event.job_id}` }, shortId(event.job_id)) : null],
        ["Model", event.model], ["Prompt", event.prompt_version],
        ["Key", event.actor_key_id ? shortId(event.actor_key_id) : null],
        ["Related", event.related_memory_id ? openLink(event.related_memory_id, hooks) : null],
        ["Metadata", event.old_metadata !== null
          && JSON.stringify(event.old_metadata) !== JSON.stringify(event.new_metadata)
          ? json({ before: event.old_metadata, after: event.new_metadata }) : null],
      ])))));
}

/** Who or what made the change, in words. */
function cause(event) {
  if (event.job_id) return "consolidation of a conversation";
  if (event.event === "ADD") return "added by an API request";
  return "changed through the API";
}

function editor(pane, memory, hooks) {
  const text = /** @type {HTMLTextAreaElement} */ (h("textarea", { name: "text", rows: "3" }));
  text.value = memory.memory;
  const metadata = /** @type {HTMLTextAreaElement} */ (h("textarea", {
    name: "metadata", rows: "4", spellcheck: "false",
  }));
  metadata.value = JSON.stringify(memory.metadata, null, 2);
  const problem = h("p", { class: "problem", role: "alert" });
  const form = h("form", { class: "edit", "aria-labelledby": "edit-title" },
    h("h3", { id: "edit-title" }, "Correct this memory"),
    field("Text", text, { wide: true }),
    field("Metadata (JSON object)", metadata, { wide: true }),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Save changes"),
      h("button", { type: "button", class: "danger", onclick: remove }, "Delete memory")),
    problem);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.textContent = "";
    const change = {};
    if (text.value.trim() !== memory.memory) change.text = text.value.trim();
    try {
      const parsed = JSON.parse(metadata.value || "{}");
      if (JSON.stringify(parsed) !== JSON.stringify(memory.metadata)) change.metadata = parsed;
    } catch (error) {
      problem.textContent = `Metadata is not valid JSON: ${error.message}`;
      metadata.focus();
      return;
    }
    if (Object.keys(change).length === 0) {
      problem.textContent = "Nothing changed.";
      return;
    }
    try {
      const updated = await patch(`/v1/memories/${memory.id}`, change);
      hooks.changed(updated);
      await showMemory(pane, memory.id, hooks);
      hooks.say("Memory updated; the old text is kept in its history.");
    } catch (error) {
      hooks.fail(error);
    }
  });

  async function remove() {
    const sure = await confirmDialog(
      `Delete this memory for good? “${memory.memory}” and every copy of its words `
      + "(history, the message text, search context) will be erased.", "Delete");
    if (!sure) return;
    try {
      await del(`/v1/memories/${memory.id}`);
      hooks.deleted(memory.id);
      pane.replaceChildren(h("p", { class: "muted" }, "The memory was deleted."));
      hooks.say("Memory deleted.");
    } catch (error) {
      hooks.fail(error);
    }
  }

  return form;
}
