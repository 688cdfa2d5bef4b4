import {
  AnamnesisError,
  apiError,
  ConnectionError,
  JobTimeoutError,
  TimeoutError,
  type APIError,
} from "./errors.js";
import type {
  AddInferOptions,
  AddOptions,
  AddResult,
  AddVerbatimOptions,
  ClientOptions,
  EntityDeleted,
  EntityDetail,
  EntityListOptions,
  EntityPage,
  EntityPageOptions,
  ExportRecord,
  HistoryEvent,
  ImportReceipt,
  Instant,
  Job,
  JobAccepted,
  JobListOptions,
  JobPage,
  JobPageOptions,
  Key,
  KeyCreated,
  KeyCreateOptions,
  KeyRevoked,
  ListOptions,
  ListPageOptions,
  Memory,
  MemoryDeleted,
  MemoryDetail,
  MemoryPage,
  Message,
  MessagesInput,
  Neighbor,
  NeighborOptions,
  Project,
  Relation,
  RelationOptions,
  ScopeCount,
  ScopeDeleted,
  ScopeListOptions,
  ScopeOptions,
  ScopePage,
  ScopePageOptions,
  SearchOptions,
  SearchResponse,
  Entity,
  Unmerged,
  UpdateOptions,
  UserErased,
  WaitOptions,
} from "./types.js";

export const VERSION = "0.1.0";
export const DEFAULT_BASE_URL = "http://127.0.0.1:8420";
const DEFAULT_TIMEOUT_MS = 30_000;
// The server bounds a held request ("wait": true) by its consolidation.max_wait_s, at most this.
const SERVER_MAX_WAIT_MS = 600_000;
const FINISHED: ReadonlySet<string> = new Set(["SUCCEEDED", "FAILED"]);

type Query = Record<string, string | number | boolean | undefined>;

/** One request: where it goes, what it carries. */
interface Call {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  path: string;
  query?: Query;
  json?: unknown;
  /** A raw body with its content type (an import's NDJSON). */
  text?: { body: string; contentType: string };
  /** The server may hold the request open while it waits for a job. */
  holds?: boolean;
}

/** The environment's variables where there is one (Node, Deno, Bun); none in a browser. */
function environment(name: string): string | undefined {
  const holder = globalThis as { process?: { env?: Record<string, string | undefined> } };
  return holder.process?.env?.[name];
}

function segment(id: string, name: string): string {
  // An empty id would address the collection instead (DELETE /v1/memories/ erases a scope).
  if (!id) {
    throw new TypeError(`${name} must be a non-empty string`);
  }
  return encodeURIComponent(id);
}

function instant(value: Instant | undefined): string | undefined {
  return value instanceof Date ? value.toISOString() : value;
}

function scope(options: ScopeOptions): Query {
  return { user_id: options.userId, agent_id: options.agentId, run_id: options.runId };
}

function messages(input: MessagesInput): Message[] {
  return typeof input === "string" ? [{ role: "user", content: input }] : input;
}

/** The JSON body without the fields left unset, as the server's defaults should apply. */
function defined(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}

/**
 * A client of one Anamnesis server, authenticated by one API key (which names the project).
 *
 * Methods mirror the Python SDK's (`getAll` for `get_all`, ...); answers are the server's own
 * shapes (snake_case fields), typed from its OpenAPI schema. Errors are {@link AnamnesisError}s.
 */
export class Anamnesis {
  readonly baseUrl: string;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #fetch: typeof globalThis.fetch;

  /** Throws {@link AnamnesisError} when no API key is given or found in `ANAMNESIS_API_KEY`. */
  constructor(options: ClientOptions = {}) {
    const apiKey = options.apiKey ?? environment("ANAMNESIS_API_KEY");
    if (!apiKey) {
      throw new AnamnesisError(
        "no API key: pass { apiKey } or set the ANAMNESIS_API_KEY environment variable");
    }
    const base = options.baseUrl ?? environment("ANAMNESIS_BASE_URL") ?? DEFAULT_BASE_URL;
    this.baseUrl = base.replace(/\/+$/, "");
    this.#headers = {
      "User-Agent": `anamnesis-typescript/${VERSION}`,
      ...options.headers,
      Authorization: `Bearer ${apiKey}`,
    };
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  // -- memories ---------------------------------------------------------------------------

  /**
   * Remember `messages` (a string is one user message) for the given scope.
   *
   * By default (`infer` unset or true) the conversation is stored as an episode that the
   * server's LLM distils into memories in the background, and the answer is the job to follow
   * ({@link waitForJob}); with `wait: true` the server answers once the job finished. With
   * `infer: false` each non-empty message is stored verbatim as one memory.
   */
  add(messages: MessagesInput, options: AddVerbatimOptions): Promise<AddResult>;
  add(messages: MessagesInput, options: AddInferOptions & { wait: true }): Promise<Job>;
  add(messages: MessagesInput, options?: AddInferOptions): Promise<JobAccepted>;
  add(messages: MessagesInput, options?: AddOptions): Promise<AddResult | Job | JobAccepted>;
  async add(input: MessagesInput,
            options: AddOptions = {}): Promise<AddResult | Job | JobAccepted> {
    const inferred = options.infer === false ? {} : options;
    const body = defined({
      messages: messages(input),
      infer: options.infer ?? true,
      ...scope(options),
      metadata: options.metadata,
      idempotency_key: options.idempotencyKey,
      expires_at: instant(options.expiresAt),
      observed_at: instant(inferred.observedAt),
      instructions: inferred.instructions,
      wait: inferred.wait,
    });
    return this.#json({ method: "POST", path: "/v1/memories", json: body,
                        holds: inferred.wait === true });
  }

  /** The best memories for `query` (`results`, best first), and `relations` when included. */
  async search(query: string, options: SearchOptions = {}): Promise<SearchResponse> {
    const body = defined({
      query,
      filters: options.filters,
      top_k: options.topK,
      threshold: options.threshold,
      ...scope(options),
      as_of: instant(options.asOf),
      include_superseded: options.includeSuperseded,
      ranking: options.ranking,
      graph: options.graph,
      explain: options.explain,
      include: options.include,
    });
    return this.#json({ method: "POST", path: "/v1/memories/search", json: body });
  }

  /** The memory with this id (superseded ones included), with what it replaced and its sources. */
  async get(memoryId: string): Promise<MemoryDetail> {
    return this.#json({ method: "GET", path: `/v1/memories/${segment(memoryId, "memoryId")}` });
  }

  /** One page of the scope's memories, newest first; pass its `next_cursor` for the next. */
  async listMemories(options: ListPageOptions = {}): Promise<MemoryPage> {
    return this.#json({ method: "GET", path: "/v1/memories", query: {
      ...scope(options),
      limit: options.limit,
      cursor: options.cursor,
      as_of: instant(options.asOf),
      include_superseded: options.includeSuperseded,
      kind: options.kind,
    } });
  }

  /** Every page of the scope's memories, requested as the iteration goes. */
  async *getAllPages(options: ListOptions = {}): AsyncGenerator<MemoryPage, void, undefined> {
    yield* this.#pages((cursor) => this.listMemories({ ...options, cursor }));
  }

  /** Every memory of the scope, newest first, fetched a page (`limit`) at a time. */
  async *getAll(options: ListOptions = {}): AsyncGenerator<Memory, void, undefined> {
    for await (const page of this.getAllPages(options)) {
      yield* page.results;
    }
  }

  /** Replace the text and/or metadata of a memory; the old ones stay in its history. */
  async update(memoryId: string, changes: UpdateOptions): Promise<MemoryDetail> {
    return this.#json({ method: "PATCH", path: `/v1/memories/${segment(memoryId, "memoryId")}`,
                        json: defined({ text: changes.text, metadata: changes.metadata }) });
  }

  /** Erase one memory and every copy of its words (history included). */
  async delete(memoryId: string): Promise<MemoryDeleted> {
    return this.#json({ method: "DELETE",
                        path: `/v1/memories/${segment(memoryId, "memoryId")}` });
  }

  /** Erase everything of a scope (at least one id): memories, history, conversations, graph. */
  async deleteAll(options: ScopeOptions): Promise<ScopeDeleted> {
    return this.#json({ method: "DELETE", path: "/v1/memories", query: scope(options) });
  }

  /**
   * One page of the user (`kind: "user"`), agent or run ids the project's memories are stored
   * under, in id order, each with its number of memories in every state.
   */
  async listScopes(options: ScopePageOptions): Promise<ScopePage> {
    return this.#json({ method: "GET", path: "/v1/scopes", query: {
      kind: options.kind, prefix: options.prefix, limit: options.limit, cursor: options.cursor } });
  }

  /** Every user, agent or run id of the project, in id order, a page (`limit`) at a time. */
  async *getAllScopes(options: ScopeListOptions): AsyncGenerator<ScopeCount, void, undefined> {
    for await (const page of this.#pages((cursor) => this.listScopes({ ...options, cursor }))) {
      yield* page.results;
    }
  }

  /** Erase everything of a user, across agents and runs. */
  async deleteUser(userId: string): Promise<UserErased> {
    return this.#json({ method: "DELETE", path: `/v1/users/${segment(userId, "userId")}` });
  }

  /** The memory's change events, oldest first. */
  async history(memoryId: string): Promise<HistoryEvent[]> {
    const page = await this.#json<{ results: HistoryEvent[] }>({
      method: "GET", path: `/v1/memories/${segment(memoryId, "memoryId")}/history` });
    return page.results;
  }

  // -- jobs -------------------------------------------------------------------------------

  /** One page of the project's consolidation jobs, newest first; `status` keeps those in it. */
  async listJobs(options: JobPageOptions = {}): Promise<JobPage> {
    return this.#json({ method: "GET", path: "/v1/jobs", query: {
      status: options.status, limit: options.limit, cursor: options.cursor } });
  }

  /** Every consolidation job of the project, newest first, fetched a page (`limit`) at a time. */
  async *getAllJobs(options: JobListOptions = {}): AsyncGenerator<Job, void, undefined> {
    for await (const page of this.#pages((cursor) => this.listJobs({ ...options, cursor }))) {
      yield* page.results;
    }
  }

  /** The consolidation job as it stands. */
  async getJob(jobId: string): Promise<Job> {
    return this.#json({ method: "GET", path: `/v1/jobs/${segment(jobId, "jobId")}` });
  }

  /** Run a FAILED job again from its stored episode; {@link ConflictError} if it did not fail. */
  async retryJob(jobId: string): Promise<Job> {
    return this.#json({ method: "POST", path: `/v1/jobs/${segment(jobId, "jobId")}/retry` });
  }

  /**
   * Poll the job until it is SUCCEEDED or FAILED and return it (a FAILED job is returned, not
   * thrown: see its `error`). Throws {@link JobTimeoutError} after `timeoutMs`.
   */
  async waitForJob(jobId: string, options: WaitOptions = {}): Promise<Job> {
    const timeoutMs = options.timeoutMs === undefined ? 60_000 : options.timeoutMs;
    const pollMs = options.pollIntervalMs ?? 500;
    if (!(pollMs > 0)) {
      throw new RangeError("pollIntervalMs must be positive");
    }
    const deadline = timeoutMs === null ? Infinity : Date.now() + timeoutMs;
    for (;;) {
      const job = await this.getJob(jobId);
      if (FINISHED.has(job.status)) {
        return job;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new JobTimeoutError(job, timeoutMs ?? Infinity);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, remaining)));
    }
  }

  // -- project ----------------------------------------------------------------------------

  /** The key's project, with its extraction instructions. */
  async getProject(): Promise<Project> {
    return this.#json({ method: "GET", path: "/v1/project" });
  }

  /** Set the extraction instructions for every episode from now on; `null` or `""` clears them. */
  async setInstructions(instructions: string | null): Promise<Project> {
    return this.#json({ method: "PATCH", path: "/v1/project", json: { instructions } });
  }

  /** Create a key in this project (admin keys only); its secret is in `key`, shown once. */
  async createKey(options: KeyCreateOptions = {}): Promise<KeyCreated> {
    return this.#json({ method: "POST", path: "/v1/keys",
                        json: defined({ name: options.name, scopes: options.scopes }) });
  }

  /** The project's keys, revoked ones too, oldest first (prefixes, never the secrets). */
  async listKeys(): Promise<Key[]> {
    return (await this.#json<{ results: Key[] }>({ method: "GET", path: "/v1/keys" })).results;
  }

  /** Revoke a key by its prefix. */
  async revokeKey(prefix: string): Promise<KeyRevoked> {
    return this.#json({ method: "DELETE", path: `/v1/keys/${segment(prefix, "prefix")}` });
  }

  // -- graph ------------------------------------------------------------------------------

  /** One page of the scope's entities, oldest first; `name` matches part of a name. */
  async listEntities(options: EntityPageOptions = {}): Promise<EntityPage> {
    return this.#json({ method: "GET", path: "/v1/entities", query: {
      ...scope(options), name: options.name, limit: options.limit, cursor: options.cursor } });
  }

  /** Every entity of the scope, fetched a page (`limit`) at a time. */
  async *getAllEntities(options: EntityListOptions = {}): AsyncGenerator<Entity, void, undefined> {
    for await (const page of this.#pages((cursor) => this.listEntities({ ...options, cursor }))) {
      yield* page.results;
    }
  }

  /** An entity with its current relations, the memories that mention it and its aliases. */
  async getEntity(entityId: string): Promise<EntityDetail> {
    return this.#json({ method: "GET", path: `/v1/entities/${segment(entityId, "entityId")}` });
  }

  /** Entities at most `depth` relations away, nearest first. */
  async neighbors(entityId: string, options: NeighborOptions = {}): Promise<Neighbor[]> {
    const page = await this.#json<{ results: Neighbor[] }>({
      method: "GET", path: `/v1/entities/${segment(entityId, "entityId")}/neighbors`,
      query: { depth: options.depth, as_of: instant(options.asOf) } });
    return page.results;
  }

  /** Remove the entity and its relations; the memories stay. */
  async deleteEntity(entityId: string): Promise<EntityDeleted> {
    return this.#json({ method: "DELETE",
                        path: `/v1/entities/${segment(entityId, "entityId")}` });
  }

  /**
   * Undo the merge of `alias` (one of the entity's `aliases`) into the entity: the alias
   * becomes an entity of its own, with what named it, and is not merged back later.
   */
  async unmerge(entityId: string, alias: string): Promise<Unmerged> {
    return this.#json({ method: "POST",
                        path: `/v1/entities/${segment(entityId, "entityId")}/unmerge`,
                        json: { alias } });
  }

  /** Relations holding now (or at `asOf`; all with `includeInvalid`). */
  async relations(options: RelationOptions = {}): Promise<Relation[]> {
    const page = await this.#json<{ results: Relation[] }>({
      method: "GET", path: "/v1/relations", query: {
        ...scope(options), source: options.source, target: options.target,
        type: options.type, as_of: instant(options.asOf),
        include_invalid: options.includeInvalid, limit: options.limit } });
    return page.results;
  }

  // -- transfer ---------------------------------------------------------------------------

  /** The whole project (admin keys only), one record per line of the export, streamed. */
  async *exportProject(): AsyncGenerator<ExportRecord, void, undefined> {
    const response = await this.#send({ method: "GET", path: "/v1/export" });
    // A streamed 200 always has a body; the type allows none for a HEAD or a 204.
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { done, value } = await this.#guard("GET /v1/export", () => reader.read());
      buffered += decoder.decode(value, { stream: !done });
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        yield JSON.parse(line) as ExportRecord;
      }
      if (done) {
        break;
      }
    }
  }

  /**
   * Load an export (records, or its NDJSON text) into this project (admin keys only). Every
   * line is checked first: one bad line and nothing is written ({@link ValidationError}).
   */
  async importProject(records: Iterable<ExportRecord> | string): Promise<ImportReceipt> {
    const body = typeof records === "string"
      ? records
      : Array.from(records, (record) => JSON.stringify(record) + "\n").join("");
    return this.#json({ method: "POST", path: "/v1/import",
                        text: { body, contentType: "application/x-ndjson" } });
  }

  // -- ops --------------------------------------------------------------------------------

  /** True when the server reports `ok`; a server that cannot be reached throws {@link ConnectionError}. */
  async health(): Promise<boolean> {
    const answer = await this.#json<{ status?: string }>({ method: "GET", path: "/health" });
    return answer.status === "ok";
  }

  // -- transport --------------------------------------------------------------------------

  async *#pages<P extends { next_cursor: string | null }>(
    fetchPage: (cursor: string | undefined) => Promise<P>,
  ): AsyncGenerator<P, void, undefined> {
    let cursor: string | undefined;
    for (;;) {
      const page = await fetchPage(cursor);
      yield page;
      // A cursor that does not move would loop for ever: the last page then.
      if (page.next_cursor === null || page.next_cursor === cursor) {
        return;
      }
      cursor = page.next_cursor;
    }
  }

  async #json<T>(call: Call): Promise<T> {
    return this.#send(call, async (response) => (await response.json()) as T);
  }

  /**
   * Send `call`; throw the mapped {@link APIError} for an error status. With `read`, the
   * timeout covers reading the answer too; without, it ends at the headers and the caller
   * reads the (streamed) body.
   */
  #send(call: Call): Promise<Response>;
  #send<T>(call: Call, read: (response: Response) => Promise<T>): Promise<T>;
  async #send<T>(call: Call,
                 read?: (response: Response) => Promise<T>): Promise<T | Response> {
    const url = new URL(this.baseUrl + call.path);
    for (const [name, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) {
        url.searchParams.set(name, String(value));
      }
    }
    const headers: Record<string, string> = { ...this.#headers };
    let body: string | undefined;
    if (call.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(call.json);
    } else if (call.text !== undefined) {
      headers["Content-Type"] = call.text.contentType;
      body = call.text.body;
    }
    const timeoutMs = this.#timeoutMs + (call.holds ? SERVER_MAX_WAIT_MS : 0);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    const what = `${call.method} ${call.path}`;
    try {
      return await this.#guard(what, async () => {
        const response = await this.#fetch(url, { method: call.method, headers, body,
                                                  signal: controller.signal });
        if (!response.ok) {
          throw await errorOf(response);
        }
        return read ? await read(response) : response;
      }, () => controller.signal.aborted, timeoutMs);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Run `step`, turning a transport failure into {@link ConnectionError} / {@link TimeoutError}. */
  async #guard<T>(what: string, step: () => Promise<T>, timedOut: () => boolean = () => false,
                  timeoutMs = this.#timeoutMs): Promise<T> {
    try {
      return await step();
    } catch (error) {
      if (error instanceof AnamnesisError) {
        throw error;
      }
      if (timedOut()) {
        throw new TimeoutError(`${what}: no answer within ${timeoutMs} ms`, { cause: error });
      }
      // fetch says "fetch failed"; the reason (refused, reset, DNS) is in its cause.
      const reasons = [error, (error as { cause?: unknown }).cause].filter(Boolean).map(String);
      throw new ConnectionError(`${what}: ${reasons.join(": ")}`, { cause: error });
    }
  }
}

/** The {@link APIError} for an error answer, from its envelope (or its status and text). */
async function errorOf(response: Response): Promise<APIError> {
  const text = await response.text();
  let envelope: { error?: unknown; detail?: unknown; request_id?: unknown } = {};
  try {
    envelope = JSON.parse(text) as typeof envelope;
  } catch {
    // Not the server's envelope (a proxy's page, say): the status and text say what there is.
  }
  const code = typeof envelope.error === "string" ? envelope.error : "unknown";
  const detail = typeof envelope.detail === "string" ? envelope.detail
    : text || response.statusText;
  const requestId = typeof envelope.request_id === "string" ? envelope.request_id
    : response.headers.get("x-request-id") ?? undefined;
  const retryAfter = Number(response.headers.get("retry-after") ?? NaN);
  return apiError(response.status, code, detail, requestId,
                  Number.isFinite(retryAfter) ? retryAfter : undefined);
}
