import assert from "node:assert/strict";
import { test } from "node:test";

import {
  IdempotencyKeyReusedError,
  NotFoundError,
  ValidationError,
  type Memory,
} from "anamnesis-client";

import { collect, connect, newUser } from "./env.js";

const client = connect();

test("add without inference stores each message, and search finds it", async () => {
  const user = newUser();
  const added = await client.add([
    { role: "user", content: "I am allergic to peanuts" },
    { role: "assistant", content: "Noted, no peanuts." },
  ], { userId: user, infer: false, metadata: { topic: "health" } });

  assert.deepEqual(added.results.map((r) => [r.memory, r.event]),
                   [["I am allergic to peanuts", "ADD"], ["Noted, no peanuts.", "ADD"]]);
  const found = await client.search("what is the user allergic to?", { userId: user, topK: 1 });
  assert.equal(found.results.length, 1);
  const [hit] = found.results;
  assert.equal(hit?.memory, "I am allergic to peanuts");
  assert.equal(hit?.user_id, user);
  assert.deepEqual(hit?.metadata, { topic: "health", role: "user", message_index: 0 });
  assert.ok(typeof hit?.score === "number");
});

test("search takes filters, a threshold, explain and the time options", async () => {
  const user = newUser();
  await client.add("I like green tea", { userId: user, infer: false, metadata: { topic: "food" } });
  await client.add("I run on Sundays", { userId: user, infer: false, metadata: { topic: "sport" } });

  const food = await client.search("hobbies and tastes", {
    userId: user, filters: { "metadata.topic": { in: ["food"] } }, explain: true,
    ranking: "hybrid", include: ["context"] });
  assert.deepEqual(food.results.map((h) => h.memory), ["I like green tea"]);
  assert.ok(food.results[0]?.explain, "explain fills the hit's explain");
  const none = await client.search("hobbies", { userId: user, threshold: 0.99 });
  assert.deepEqual(none.results, []);
  const before = await client.search("tea", { userId: user, asOf: new Date("2001-01-01T00:00:00Z") });
  assert.deepEqual(before.results, [], "nothing held in 2001");
  const everything = await client.search("tea", { userId: user, includeSuperseded: true,
                                                   graph: true });
  assert.equal(everything.results.length, 2);
});

test("get, update and history show a memory and how it changed", async () => {
  const user = newUser();
  const added = await client.add("I live in Porto", { userId: user, infer: false });
  const id = added.results[0]!.id;

  const detail = await client.get(id);
  assert.equal(detail.memory, "I live in Porto");
  assert.equal(detail.kind, "message");

  const updated = await client.update(id, { text: "I live in Lisbon", metadata: { moved: true } });
  assert.equal(updated.memory, "I live in Lisbon");
  assert.deepEqual(updated.metadata, { moved: true });
  const history = await client.history(id);
  assert.deepEqual(history.map((e) => [e.event, e.old_memory, e.new_memory]), [
    ["ADD", null, "I live in Porto"], ["UPDATE", "I live in Porto", "I live in Lisbon"]]);
});

test("getAll follows the cursor page by page; getAllPages and listMemories show the pages", async () => {
  const user = newUser();
  const texts = ["one", "two", "three", "four", "five"].map((n) => `memory number ${n}`);
  for (const text of texts) {
    await client.add(text, { userId: user, infer: false });
  }

  const all: Memory[] = [];
  for await (const memory of client.getAll({ userId: user, limit: 2 })) {
    all.push(memory);
  }
  assert.deepEqual(all.map((m) => m.memory), [...texts].reverse(), "newest first");

  const pages = [];
  for await (const page of client.getAllPages({ userId: user, limit: 2, kind: "message" })) {
    pages.push(page.results.length);
  }
  assert.deepEqual(pages, [2, 2, 1]);

  const first = await client.listMemories({ userId: user, limit: 4 });
  assert.equal(first.results.length, 4);
  assert.ok(first.next_cursor);
  const second = await client.listMemories({ userId: user, limit: 4, cursor: first.next_cursor });
  assert.deepEqual(second.results.map((m) => m.memory), [texts[0]]);
  assert.equal(second.next_cursor, null);

  const facts = await client.listMemories({ userId: user, kind: "fact" });
  assert.deepEqual(facts.results, []);
  const past = await client.listMemories({ userId: user, asOf: "2001-01-01T00:00:00Z" });
  assert.deepEqual(past.results, []);
  const superseded = await client.listMemories({ userId: user, includeSuperseded: true });
  assert.equal(superseded.results.length, 5);
});

test("delete erases one memory; deleteAll a scope; deleteUser a user across agents", async () => {
  const user = newUser();
  const kept = await client.add("keep me", { userId: user, agentId: "a1", infer: false });
  const gone = await client.add("erase me", { userId: user, agentId: "a1", infer: false });
  await client.add("agent two", { userId: user, agentId: "a2", runId: "r1", infer: false });

  const receipt = await client.delete(gone.results[0]!.id);
  assert.equal(receipt.id, gone.results[0]!.id);
  assert.equal(receipt.deleted, true);
  await assert.rejects(client.get(gone.results[0]!.id), NotFoundError);
  await assert.rejects(client.history(gone.results[0]!.id), NotFoundError);

  const scope = await client.deleteAll({ userId: user, agentId: "a2", runId: "r1" });
  assert.equal(scope.deleted, 1);
  const left = await client.listMemories({ userId: user });
  assert.deepEqual(left.results.map((m) => m.id), [kept.results[0]!.id]);

  const erased = await client.deleteUser(user);
  assert.deepEqual([erased.user_id, erased.deleted], [user, 1]);
  assert.deepEqual((await client.listMemories({ userId: user })).results, []);
});

test("an idempotency key replays the first answer and refuses another body", async () => {
  const user = newUser();
  const key = `ts-${user}`;
  const expiresAt = new Date(Date.now() + 3_600_000);
  const first = await client.add("only once", { userId: user, infer: false, idempotencyKey: key,
                                                expiresAt });
  const again = await client.add("only once", { userId: user, infer: false, idempotencyKey: key,
                                                expiresAt });
  assert.deepEqual(again, first);
  const stored = (await client.listMemories({ userId: user })).results;
  assert.equal(stored.length, 1);
  assert.equal(Date.parse(stored[0]?.expires_at ?? ""), expiresAt.getTime());

  const reused = await client.add("something else", { userId: user, infer: false,
                                                       idempotencyKey: key }).then(
    () => assert.fail("a reused key with another body must be refused"),
    (error: unknown) => error);
  assert.ok(reused instanceof IdempotencyKeyReusedError);
  assert.equal(reused.status, 409);
  assert.equal(reused.code, "idempotency_key_reused");
});

test("the user, agent and run ids are listed in id order, with their counts", async () => {
  // Every test's users are in the project: these share a prefix no other test uses.
  const prefix = `${newUser()}-`;
  const [ann, anna, bob] = [`${prefix}ann`, `${prefix}anna`, `${prefix}bob`];
  await client.add([{ role: "user", content: "Note a" }, { role: "user", content: "Note b" }],
                   { userId: ann, infer: false });
  await client.add("Note c", { userId: anna, infer: false });
  await client.add("Note d", { userId: bob, infer: false });
  await client.add("Agent note", { agentId: `${prefix}planner`, infer: false });

  const users = await collect(client.getAllScopes({ kind: "user", prefix, limit: 2 }));
  assert.deepEqual(users, [{ id: ann, memories: 2 }, { id: anna, memories: 1 },
                           { id: bob, memories: 1 }]);
  const page = await client.listScopes({ kind: "user", prefix, limit: 2 });
  assert.deepEqual(page.results.map((s) => s.id), [ann, anna]);
  assert.ok(page.next_cursor);
  assert.deepEqual(await client.listScopes({ kind: "user", prefix, limit: 2,
                                             cursor: page.next_cursor }),
                   { results: [{ id: bob, memories: 1 }], next_cursor: null });
  const ids = (await collect(client.getAllScopes({ kind: "user" }))).map((s) => s.id);
  assert.ok([ann, anna, bob].every((id) => ids.includes(id)), "all users, ours among them");

  assert.deepEqual((await collect(client.getAllScopes({ kind: "user", prefix: ann })))
    .map((s) => s.id), [ann, anna]);
  assert.deepEqual(await collect(client.getAllScopes({ kind: "agent", prefix })),
                   [{ id: `${prefix}planner`, memories: 1 }]);
  assert.deepEqual(await client.listScopes({ kind: "run", prefix }),
                   { results: [], next_cursor: null });

  await client.deleteUser(bob);
  assert.deepEqual((await collect(client.getAllScopes({ kind: "user", prefix })))
    .map((s) => s.id), [ann, anna]);
  await assert.rejects(client.listScopes({ kind: "user", limit: 0 }), ValidationError);
});
