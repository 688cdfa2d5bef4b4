import assert from "node:assert/strict";
import { test } from "node:test";

import { NotFoundError, ValidationError, type Entity } from "anamnesis-client";

import { connect, NEEDS_SCRIPT, newUser, script } from "./env.js";

const client = connect();
const MISSING = "00000000-0000-4000-8000-000000000000";

test("a scope without conversations has an empty graph", async () => {
  const user = newUser();
  const page = await client.listEntities({ userId: user });
  assert.deepEqual(page, { results: [], next_cursor: null });
  assert.deepEqual(await client.relations({ userId: user, includeInvalid: true }), []);
  await assert.rejects(client.getEntity(MISSING), NotFoundError);
  await assert.rejects(client.neighbors(MISSING), NotFoundError);
  await assert.rejects(client.deleteEntity(MISSING), NotFoundError);
  await assert.rejects(client.unmerge(MISSING, "Mel"), NotFoundError);
  await assert.rejects(client.neighbors(MISSING, { depth: 4 }), ValidationError);
});

test("three conversations become a graph to list, walk, split and prune",
     { skip: NEEDS_SCRIPT }, async () => {
  const user = newUser();
  for (const { message, observedAt } of script().graph) {
    const job = await client.add(message, { userId: user, observedAt, wait: true });
    assert.equal(job.status, "SUCCEEDED", JSON.stringify(job.error));
  }

  const entities: Entity[] = [];
  for await (const entity of client.getAllEntities({ userId: user, limit: 2 })) {
    entities.push(entity);
  }
  const byName = new Map(entities.map((e) => [e.name, e]));
  assert.deepEqual(new Set(byName.keys()), new Set(["User", "Melanie", "Paris", "Berlin", "Siemens"]));
  const id = (name: string): string => byName.get(name)!.id;
  const named = await client.listEntities({ userId: user, name: "siem" });
  assert.deepEqual(named.results.map((e) => e.name), ["Siemens"]);

  const triples = (relations: { source_name: string; type: string; target_name: string }[]) =>
    new Set(relations.map((r) => `${r.source_name} ${r.type} ${r.target_name}`));
  const now = await client.relations({ userId: user });
  assert.ok(triples(now).has("Mel lives_in Berlin"));
  const then = await client.relations({ userId: user, asOf: new Date("2024-01-15T00:00:00Z") });
  assert.ok(triples(then).has("Melanie lives_in Paris"));
  assert.ok(!triples(then).has("Mel lives_in Berlin"));
  const fromMelanie = await client.relations({ source: id("Melanie"), type: "works_at" });
  assert.deepEqual([...triples(fromMelanie)], ["Mel works_at Siemens"]);
  const all = await client.relations({ userId: user, includeInvalid: true, limit: 100 });
  assert.ok(all.length > now.length, "the move to Berlin ended living in Paris");
  assert.deepEqual(await client.relations({ target: id("Siemens"), userId: user }), fromMelanie);

  const melanie = await client.getEntity(id("Melanie"));
  assert.deepEqual(melanie.aliases.map((a) => a.alias), ["Mel"]);
  const hops = await client.neighbors(id("Siemens"), { depth: 2 });
  assert.deepEqual(new Set(hops.map((n) => `${n.entity.name} ${n.distance}`)),
                   new Set(["Melanie 1", "User 2", "Berlin 2"]));
  const before = await client.neighbors(id("Melanie"), { asOf: "2024-01-15T00:00:00Z" });
  assert.deepEqual(new Set(before.map((n) => n.entity.name)), new Set(["User", "Paris"]));

  const undone = await client.unmerge(id("Melanie"), "Mel");
  assert.equal(undone.undone, 1);
  assert.equal(undone.entity?.id, id("Melanie"));
  assert.equal(undone.split?.name, "Mel");
  assert.deepEqual((await client.getEntity(id("Melanie"))).aliases, []);
  await assert.rejects(client.unmerge(id("Melanie"), "Mel"), NotFoundError);

  const deleted = await client.deleteEntity(id("Berlin"));
  assert.deepEqual(deleted, { id: id("Berlin"), deleted: true });
  await assert.rejects(client.getEntity(id("Berlin")), NotFoundError);
  const memories = (await client.listMemories({ userId: user, kind: "fact" })).results;
  assert.ok(memories.some((m) => m.memory === "Melanie lives in Berlin"), "the memories stay");
});
