/**
 * The SDK's vocabulary: response types are the server's, taken from the generated OpenAPI
 * schema (`schema.ts`, regenerated with `npm run generate`), so they cannot drift from it;
 * option types are the SDK's own, in camelCase.
 */

import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];

/** One message of a conversation. */
export type Message = Schemas["Message"];
/** The answer to `add(..., { infer: false })`: one stored memory per non-empty message. */
export type AddResult = Schemas["AddResponse"];
export type AddedMemory = Schemas["AddedMemory"];
/** The immediate answer to an inferred `add`: the job to follow. */
export type JobAccepted = Schemas["JobAccepted"];
/** A consolidation job: one stored conversation distilled into memories. */
export type Job = Schemas["JobRead"];
export type JobStatus = Job["status"];
export type JobResult = Schemas["JobResult"];
export type JobPage = Schemas["JobPage"];
export type Memory = Schemas["MemoryRead"];
/** A memory with what it replaced and the messages it came from. */
export type MemoryDetail = Schemas["MemoryDetail"];
export type MemoryPage = Schemas["MemoryPage"];
export type SearchHit = Schemas["SearchHit"];
export type SearchResponse = Schemas["SearchResponse"];
export type HistoryEvent = Schemas["HistoryEventRead"];
export type MemoryDeleted = Schemas["MemoryDeleted"];
export type ScopeDeleted = Schemas["ScopeDeleted"];
export type UserErased = Schemas["UserErased"];
/** A user, agent or run id memories are stored under, with how many (in every state). */
export type ScopeCount = Schemas["ScopeRead"];
export type ScopePage = Schemas["ScopePage"];
/** Which ids a scope listing names: users, agents or runs. */
export type ScopeKind = paths["/v1/scopes"]["get"]["parameters"]["query"]["kind"];
export type Project = Schemas["ProjectRead"];
export type Key = Schemas["KeyRead"];
/** A new key; `key` is the secret, shown this once. */
export type KeyCreated = Schemas["KeyCreated"];
export type KeyRevoked = Schemas["KeyRevoked"];
export type KeyScope = Schemas["KeyRead"]["scopes"][number];
export type Entity = Schemas["EntityRead"];
/** An entity with its current relations, the memories that mention it and its aliases. */
export type EntityDetail = Schemas["EntityDetail"];
export type EntityPage = Schemas["EntityPage"];
export type EntityDeleted = Schemas["EntityDeleted"];
export type Neighbor = Schemas["Neighbor"];
export type Relation = Schemas["RelationRead"];
export type Unmerged = Schemas["Unmerged"];
export type ImportReceipt = Schemas["ImportReceipt"];
/** The body of every error answer. */
export type ErrorBody = Schemas["ErrorBody"];

/** A search filter tree, e.g. `{ AND: [{ category: "food" }, { rating: { gte: 4 } }] }`. */
export type Filters = NonNullable<Schemas["SearchRequest"]["filters"]>;
export type Metadata = Record<string, unknown>;
export type Ranking = NonNullable<Schemas["SearchRequest"]["ranking"]>;
export type SearchInclude = NonNullable<Schemas["SearchRequest"]["include"]>[number];
/** A string is one user message. */
export type MessagesInput = string | Message[];
/** A time: a `Date`, or an ISO 8601 string (read as UTC without a zone). */
export type Instant = Date | string;

/** Who a memory belongs to; an unset id matches any. */
export interface ScopeOptions {
  userId?: string;
  agentId?: string;
  runId?: string;
}

/** Which memories a read sees: current ones (default), what held at `asOf`, or all. */
export interface TimelineOptions {
  asOf?: Instant;
  /** Superseded memories too; excludes `asOf`. */
  includeSuperseded?: boolean;
}

export interface ClientOptions {
  /** Default: `ANAMNESIS_BASE_URL`, else `http://127.0.0.1:8420`. */
  baseUrl?: string;
  /** Default: `ANAMNESIS_API_KEY`; one of the two is required. */
  apiKey?: string;
  /** Per request, in milliseconds (default 30 000); a request that holds gets the server's wait on top. */
  timeoutMs?: number;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof globalThis.fetch;
}

interface AddCommon extends ScopeOptions {
  metadata?: Metadata;
  /** Retrying with the same key and body replays the first answer. */
  idempotencyKey?: string;
  /** After this time the memories are gone. */
  expiresAt?: Instant;
}

/** `add` storing the messages verbatim, one memory each. */
export interface AddVerbatimOptions extends AddCommon {
  infer: false;
}

/** `add` leaving the messages to the server's LLM to distil (the default). */
export interface AddInferOptions extends AddCommon {
  infer?: true;
  /** When the conversation happened (relative dates in it are read against it). */
  observedAt?: Instant;
  /** Extra extraction rules for this call, after the project's. */
  instructions?: string;
  /** Answer once the job finished (or as it stands when the server's wait bound ran out). */
  wait?: boolean;
}

export type AddOptions = AddVerbatimOptions | AddInferOptions;

export interface SearchOptions extends ScopeOptions, TimelineOptions {
  filters?: Filters;
  /** Default 10. */
  topK?: number;
  /** Drop hits whose cosine similarity is below this. */
  threshold?: number;
  ranking?: Ranking;
  /** Also memories one relation away from the entities the query names. */
  graph?: boolean;
  /** Fill each hit's `explain` with the ranks and scores behind its score. */
  explain?: boolean;
  /** `"relations"`: the relations among the hits' entities; `"context"`: each hit's exchange. */
  include?: SearchInclude[];
}

export interface ListOptions extends ScopeOptions, TimelineOptions {
  /** Page size (default 100). */
  limit?: number;
  /** `"fact"` or `"message"`; default both. */
  kind?: "fact" | "message";
}

export interface ListPageOptions extends ListOptions {
  /** The `next_cursor` of the page before. */
  cursor?: string;
}

export interface UpdateOptions {
  text?: string;
  metadata?: Metadata;
}

export interface WaitOptions {
  /** Give up after this many milliseconds (default 60 000); `null` waits for as long as it takes. */
  timeoutMs?: number | null;
  /** Default 500. */
  pollIntervalMs?: number;
}

export interface EntityListOptions extends ScopeOptions {
  /** Part of a name. */
  name?: string;
  limit?: number;
}

export interface EntityPageOptions extends EntityListOptions {
  cursor?: string;
}

export interface JobListOptions {
  /** Only jobs in this state. */
  status?: JobStatus;
  /** Page size (default 50). */
  limit?: number;
}

export interface JobPageOptions extends JobListOptions {
  cursor?: string;
}

export interface ScopeListOptions {
  kind: ScopeKind;
  /** Only ids starting with it. */
  prefix?: string;
  /** Page size (default 100). */
  limit?: number;
}

export interface ScopePageOptions extends ScopeListOptions {
  cursor?: string;
}

export interface NeighborOptions {
  /** 1 to 3 (default 1). */
  depth?: number;
  asOf?: Instant;
}

export interface RelationOptions extends ScopeOptions {
  source?: string;
  target?: string;
  type?: string;
  asOf?: Instant;
  /** Relations that no longer hold too. */
  includeInvalid?: boolean;
  limit?: number;
}

export interface KeyCreateOptions {
  name?: string;
  /** Default `["read", "write"]`. */
  scopes?: KeyScope[];
}

/** One line of an export: a JSON object, told apart by its `record` field. */
export type ExportRecord = Record<string, unknown>;
