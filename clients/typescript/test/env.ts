/**
 * What every test file needs: a client of the server named by the environment, and the
 * scripted consolidation the pytest wrapper (tests/clients/test_typescript_sdk.py) set up.
 *
 * `npm test` runs against a real server: ANAMNESIS_URL and ANAMNESIS_API_KEY (an admin key of
 * a project the tests may fill and erase) are required. ANAMNESIS_TEST_SCRIPT, set by the
 * wrapper, says which messages the server's scripted LLM distils into which facts and graph;
 * without it (a server with a real LLM) the tests that need those exact answers are skipped.
 */

import { randomUUID } from "node:crypto";
import { Anamnesis, type ClientOptions } from "anamnesis-client";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: npm test runs against a real Anamnesis server. Start one ` +
      "(`anamnesis serve`), create a key (`anamnesis keys create`), and run " +
      "`ANAMNESIS_URL=http://127.0.0.1:8420 ANAMNESIS_API_KEY=... npm test` " +
      "(or run tests/clients/test_typescript_sdk.py, which does all of that)");
  }
  return value;
}

export const BASE_URL = required("ANAMNESIS_URL");
export const API_KEY = required("ANAMNESIS_API_KEY");

export function connect(options: ClientOptions = {}): Anamnesis {
  return new Anamnesis({ baseUrl: BASE_URL, apiKey: API_KEY, ...options });
}

/** A user id no other test uses, so each test sees only its own memories. */
export function newUser(): string {
  return `ts-${randomUUID()}`;
}

/** The wrapper's script for the server's LLM (see tests/clients/test_typescript_sdk.py). */
export interface Script {
  /** A message and the one fact extracted from it. */
  fact: { message: string; fact: string };
  /** Extraction answers with output that never validates: the job fails. */
  fails: string;
  /** Extraction answers after `delayMs`, with no facts. */
  slow: { message: string; delayMs: number };
  /** Three conversations (with when they happened) that build a small graph. */
  graph: { message: string; observedAt: string }[];
  /** A server (on the same database) letting a key make `requests` requests a minute. */
  limited: { url: string; apiKey: string; requests: number };
}

const scriptText = process.env["ANAMNESIS_TEST_SCRIPT"];
export const SCRIPT: Script | undefined = scriptText
  ? (JSON.parse(scriptText) as Script) : undefined;
/** The `skip` option of a test that needs the scripted LLM. */
export const NEEDS_SCRIPT = SCRIPT === undefined
  && "needs the scripted LLM of tests/clients/test_typescript_sdk.py (ANAMNESIS_TEST_SCRIPT)";

/** The script, in a test that is skipped without it ({@link NEEDS_SCRIPT}). */
export function script(): Script {
  return SCRIPT as Script;
}

/** Everything an async iterator yields (Array.fromAsync comes only with Node.js 22). */
export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) {
    all.push(item);
  }
  return all;
}
