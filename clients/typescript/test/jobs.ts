import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ConflictError,
  IdempotencyKeyReusedError,
  JobTimeoutError,
  NotFoundError,
  ValidationError,
  type Job,
} from "anamnesis-client";

import { collect, connect, NEEDS_SCRIPT, newUser, script } from "./env.js";

const client = connect();
const FAST = { timeoutMs: 60_000, pollIntervalMs: 50 };

test("an inferred add answers with its job; waitForJob follows it to the facts",
     { skip: NEEDS_SCRIPT }, async () => {
  const { fact } = script();
  const user = newUser();

  const accepted = await client.add(fact.message, {
    userId: user, observedAt: new Date("2024-05-01T10:00:00Z"),
    instructions: "Write facts in English." });
  assert.equal(accepted.status, "PENDING");
  const job = await client.waitForJob(accepted.job_id, FAST);

  assert.equal(job.status, "SUCCEEDED", JSON.stringify(job.error));
  assert.deepEqual(job.results.map((r) => [r.memory, r.event]), [[fact.fact, "ADD"]]);
  assert.equal(job.usage.model, "scripted-model");
  assert.deepEqual(await client.getJob(job.id), job);
  const facts = await client.listMemories({ userId: user, kind: "fact" });
  assert.deepEqual(facts.results.map((m) => m.memory), [fact.fact]);

  const conflict = await client.retryJob(job.id).then(
    () => assert.fail("only a FAILED job can be retried"), (e: unknown) => e);
  assert.ok(conflict instanceof ConflictError);
  assert.ok(!(conflict instanceof IdempotencyKeyReusedError));
  assert.deepEqual([conflict.status, conflict.code], [409, "conflict"]);
  assert.match(conflict.detail, /SUCCEEDED/);
});

test("add with wait answers once the job finished", { skip: NEEDS_SCRIPT }, async () => {
  const { fact } = script();
  const job = await client.add(fact.message, { userId: newUser(), wait: true });
  assert.equal(job.status, "SUCCEEDED");
  assert.deepEqual(job.results.map((r) => r.memory), [fact.fact]);
});

test("a failed job is run again by retryJob", { skip: NEEDS_SCRIPT }, async () => {
  const accepted = await client.add(script().fails, { userId: newUser() });
  const failed = await client.waitForJob(accepted.job_id, FAST);
  assert.equal(failed.status, "FAILED");
  assert.equal(failed.error?.code, "llm_bad_output");

  const retried = await client.retryJob(failed.id);
  assert.deepEqual([retried.id, retried.status, retried.error, retried.attempts],
                   [failed.id, "PENDING", null, 0]);
  assert.equal((await client.waitForJob(failed.id, FAST)).status, "FAILED");
});

test("waitForJob gives up after timeoutMs, with the job as last seen",
     { skip: NEEDS_SCRIPT }, async () => {
  const { slow } = script();
  const accepted = await client.add(slow.message, { userId: newUser() });

  const error = await client.waitForJob(accepted.job_id, { timeoutMs: 100, pollIntervalMs: 20 })
    .then(() => assert.fail(`the job takes ${slow.delayMs} ms`), (e: unknown) => e);
  assert.ok(error instanceof JobTimeoutError);
  assert.equal(error.job.id, accepted.job_id);
  assert.ok(["PENDING", "RUNNING"].includes(error.job.status), error.job.status);
  assert.equal(error.timeoutMs, 100);

  const done = await client.waitForJob(accepted.job_id, { timeoutMs: null, pollIntervalMs: 50 });
  assert.deepEqual([done.status, done.results], ["SUCCEEDED", []]);
});

test("jobs of nobody are not found; a poll interval must be positive", async () => {
  const missing = "00000000-0000-4000-8000-000000000000";
  await assert.rejects(client.getJob(missing), NotFoundError);
  await assert.rejects(client.retryJob(missing), NotFoundError);
  await assert.rejects(client.waitForJob(missing, { pollIntervalMs: 0 }), RangeError);
});

test("the project's jobs are listed newest first, page by page, and by status",
     { skip: NEEDS_SCRIPT }, async () => {
  const { fact, fails } = script();
  const first = await client.add(fact.message, { userId: newUser(), wait: true });
  const second = await client.add(fact.message, { userId: newUser(), wait: true });
  const failed = await client.waitForJob(
    (await client.add(fails, { userId: newUser() })).job_id, FAST);

  const page = await client.listJobs({ limit: 1 });
  assert.deepEqual(page.results, [failed]);
  assert.ok(page.next_cursor, "more jobs than one page");
  const next = await client.listJobs({ limit: 1, cursor: page.next_cursor });
  assert.deepEqual(next.results, [second]);

  // The project holds the other tests' jobs too, all older than these three.
  const newest: Job[] = [];
  for await (const job of client.getAllJobs({ limit: 1 })) {
    newest.push(job);
    if (newest.length === 3) {
      break;
    }
  }
  assert.deepEqual(newest.map((j) => [j.id, j.status]), [
    [failed.id, "FAILED"], [second.id, "SUCCEEDED"], [first.id, "SUCCEEDED"]]);
  assert.deepEqual(newest[2]?.results.map((r) => r.memory), [fact.fact]);

  const all = await collect(client.getAllJobs());
  assert.ok(all.length > 3);
  assert.deepEqual(all.slice(0, 3), newest);
  const onlyFailed = await collect(client.getAllJobs({ status: "FAILED", limit: 1 }));
  assert.deepEqual(onlyFailed.map((j) => j.id),
                   all.filter((j) => j.status === "FAILED").map((j) => j.id));
  assert.deepEqual([onlyFailed[0]?.id, onlyFailed[0]?.error?.code], [failed.id, "llm_bad_output"]);
  const succeeded = await collect(client.getAllJobs({ status: "SUCCEEDED" }));
  assert.deepEqual(succeeded.slice(0, 2), [second, first]);
  assert.ok(succeeded.every((j) => j.status === "SUCCEEDED"));
  await assert.rejects(client.listJobs({ limit: 0 }), ValidationError);
});
