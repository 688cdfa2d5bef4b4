import assert from "node:assert/strict";
import { createServer, type AddressInfo } from "node:net";
import { test } from "node:test";

import {
  Anamnesis,
  AnamnesisError,
  APIError,
  AuthenticationError,
  ConnectionError,
  InvalidFilterError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RateLimitError,
  TimeoutError,
  ValidationError,
} from "anamnesis-client";

import { API_KEY, BASE_URL, connect, NEEDS_SCRIPT, newUser, script } from "./env.js";

const client = connect();
const MISSING = "00000000-0000-4000-8000-000000000000";

/** A local port nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The error `promise` rejects with, checked to be an `APIError` of class `kind`. */
async function refusal<E extends APIError>(promise: Promise<unknown>,
                                           kind: abstract new (...args: never[]) => E): Promise<E> {
  const error = await promise.then(() => assert.fail("expected a rejection"), (e: unknown) => e);
  assert.ok(error instanceof kind, `expected ${kind.name}, got ${String(error)}`);
  assert.ok(error.requestId, "every error answer names its request");
  assert.ok(error.detail);
  assert.ok(error.message.includes(error.code));
  return error;
}

test("a bad key is an AuthenticationError with the envelope's fields", async () => {
  const stranger = new Anamnesis({ baseUrl: BASE_URL, apiKey: "ana_not-a-real-key" });
  const error = await refusal(stranger.search("anything"), AuthenticationError);
  assert.equal(error.status, 401);
  assert.equal(error.code, "unauthorized");
  assert.ok(error instanceof AnamnesisError);
  assert.equal(error.name, "AuthenticationError");
});

test("an unknown id is a NotFoundError", async () => {
  const error = await refusal(client.get(MISSING), NotFoundError);
  assert.deepEqual([error.status, error.code], [404, "not_found"]);
  await refusal(client.update(MISSING, { text: "x" }), NotFoundError);
  await refusal(client.delete(MISSING), NotFoundError);
  await refusal(client.history(MISSING), NotFoundError);
});

test("a malformed filter is an InvalidFilterError, itself a ValidationError", async () => {
  const error = await refusal(
    client.search("tea", { filters: { colour: "green" } }), InvalidFilterError);
  assert.ok(error instanceof ValidationError);
  assert.deepEqual([error.status, error.code], [422, "invalid_filter"]);
  assert.match(error.detail, /colour/);
});

test("requests the server cannot take are ValidationErrors and change nothing", async () => {
  const user = newUser();
  const added = await client.add("stays as it is", { userId: user, infer: false });
  const id = added.results[0]!.id;

  const empty = await refusal(client.update(id, {}), ValidationError);
  assert.deepEqual([empty.status, empty.code], [422, "validation_error"]);
  await refusal(client.deleteAll({}), ValidationError);
  await refusal(client.search("x", { userId: user, topK: 0 }), ValidationError);
  await refusal(client.search("x", { asOf: "2024-01-01T00:00:00Z", includeSuperseded: true }),
                ValidationError);
  await refusal(client.listMemories({ userId: user, limit: 0 }), ValidationError);
  assert.equal((await client.get(id)).memory, "stays as it is");
});

test("a body over the server's limit is a PayloadTooLargeError", async () => {
  const error = await refusal(client.add("x".repeat(1_100_000), { userId: newUser(), infer: false }),
                              PayloadTooLargeError);
  assert.deepEqual([error.status, error.code], [413, "payload_too_large"]);
});

test("a read-only key may read but not write; a revoked key is refused", async () => {
  const created = await client.createKey({ name: "ts read-only", scopes: ["read"] });
  assert.deepEqual(created.scopes, ["read"]);
  assert.ok((await client.listKeys()).some((key) => key.prefix === created.prefix));
  const reader = connect({ apiKey: created.key });

  assert.ok(Array.isArray((await reader.search("anything")).results));
  const error = await refusal(reader.add("no", { userId: newUser(), infer: false }),
                              PermissionDeniedError);
  assert.deepEqual([error.status, error.code], [403, "forbidden"]);

  const revoked = await client.revokeKey(created.prefix);
  assert.deepEqual([revoked.prefix, revoked.revoked], [created.prefix, true]);
  await refusal(reader.search("anything"), AuthenticationError);
});

test("a key past its rate is a RateLimitError saying how long to wait",
     { skip: NEEDS_SCRIPT }, async () => {
  const { url, apiKey, requests } = script().limited;
  const limited = new Anamnesis({ baseUrl: url, apiKey });
  for (let i = 0; i < requests; i += 1) {
    await limited.listMemories({ userId: newUser() });
  }
  const error = await refusal(limited.listMemories({ userId: newUser() }), RateLimitError);
  assert.deepEqual([error.status, error.code], [429, "rate_limited"]);
  assert.ok(error.retryAfter !== undefined && error.retryAfter >= 1 && error.retryAfter <= 60,
            String(error.retryAfter));
});

test("an empty id is refused before anything is sent", async () => {
  await assert.rejects(client.delete(""), TypeError);
  await assert.rejects(client.getJob(""), /jobId must be a non-empty string/);
});

test("no answer is a ConnectionError; no answer in time a TimeoutError", async () => {
  const nobody = new Anamnesis({ baseUrl: `http://127.0.0.1:${await closedPort()}`,
                                 apiKey: "ana_x" });
  const refused = await nobody.health().then(() => assert.fail("nothing listens there"),
                                             (e: unknown) => e);
  assert.ok(refused instanceof ConnectionError);
  assert.ok(!(refused instanceof TimeoutError));
  assert.match(refused.message, /GET \/health: TypeError: fetch failed: Error: connect ECONNREFUSED/);

  const hasty = connect({ timeoutMs: 1 });
  const late = await hasty.search("anything").then(() => assert.fail("1 ms is too short"),
                                                   (e: unknown) => e);
  assert.ok(late instanceof TimeoutError);
  assert.ok(late instanceof ConnectionError);
  assert.match(late.message, /no answer within 1 ms/);
});

test("requests go through the given fetch, with the given headers and a request id", async () => {
  const sent: Request[] = [];
  const recording = connect({
    headers: { "X-Request-ID": "ts-trace-1", Authorization: "Bearer not-this-one" },
    fetch: async (input, init) => {
      sent.push(new Request(input, init));
      return fetch(input, init);
    },
  });
  const error = await refusal(recording.get(MISSING), NotFoundError);
  assert.equal(error.requestId, "ts-trace-1");
  assert.equal(sent.length, 1);
  assert.equal(sent[0]?.url, `${BASE_URL}/v1/memories/${MISSING}`);
  assert.equal(sent[0]?.headers.get("authorization"), `Bearer ${API_KEY}`);
  assert.match(sent[0]?.headers.get("user-agent") ?? "", /^anamnesis-typescript\//);
});

test("the key and the address come from the environment when not given", async () => {
  const saved = { ...process.env };
  try {
    process.env["ANAMNESIS_BASE_URL"] = `${BASE_URL}/`;
    process.env["ANAMNESIS_API_KEY"] = API_KEY;
    const fromEnvironment = new Anamnesis();
    assert.equal(fromEnvironment.baseUrl, BASE_URL);
    assert.equal(await fromEnvironment.health(), true);

    delete process.env["ANAMNESIS_API_KEY"];
    assert.throws(() => new Anamnesis({ baseUrl: BASE_URL }),
                  (error: unknown) => error instanceof AnamnesisError
                    && /ANAMNESIS_API_KEY/.test(error.message));
  } finally {
    process.env = saved;
  }
});
