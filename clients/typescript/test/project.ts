import assert from "node:assert/strict";
import { test } from "node:test";

import { ValidationError, type ExportRecord } from "anamnesis-client";

import { connect, newUser } from "./env.js";

const client = connect();

test("the project's instructions are set, read and cleared", async () => {
  const project = await client.getProject();
  assert.ok(project.id);
  assert.ok(project.name);

  const updated = await client.setInstructions("Only keep food preferences.");
  assert.deepEqual([updated.id, updated.instructions], [project.id, "Only keep food preferences."]);
  assert.equal((await client.getProject()).instructions, "Only keep food preferences.");
  assert.equal((await client.setInstructions(null)).instructions, null);
  assert.equal((await client.getProject()).instructions, null);
});

test("health is true for a live server", async () => {
  assert.equal(await client.health(), true);
});

test("an export streams the project; importing it again adds nothing twice", async () => {
  const user = newUser();
  await client.add("exported and back", { userId: user, infer: false });

  const records: ExportRecord[] = [];
  for await (const record of client.exportProject()) {
    records.push(record);
  }
  assert.equal(records[0]?.["record"], "header");
  const mine = records.filter((r) => r["record"] === "memory" && r["user_id"] === user);
  assert.deepEqual(mine.map((r) => r["text"]), ["exported and back"]);

  const receipt = await client.importProject(records);
  assert.equal(receipt.lines, records.length);
  assert.deepEqual(receipt.skipped, []);
  assert.equal(receipt.records["memory"]?.inserted, 0);
  assert.ok((receipt.records["memory"]?.present ?? 0) >= 1);
  assert.equal((await client.listMemories({ userId: user })).results.length, 1);

  const text = records.map((r) => JSON.stringify(r)).join("\n");
  assert.equal((await client.importProject(text)).lines, records.length);
  await assert.rejects(client.importProject(`${text}\n{"record": "nonsense"}\n`), ValidationError);
});
