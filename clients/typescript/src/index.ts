/**
 * Anamnesis: long-term memory for AI agents. A fetch-based client with no runtime
 * dependencies; types generated from the server's OpenAPI schema.
 *
 * ```ts
 * import { Anamnesis } from "anamnesis-client";
 * const memory = new Anamnesis({ baseUrl: "http://127.0.0.1:8420", apiKey: "ana_..." });
 * await memory.add("I moved to Lisbon", { userId: "alice" });
 * const { results } = await memory.search("where does alice live?", { userId: "alice" });
 * ```
 */

export { Anamnesis, DEFAULT_BASE_URL, VERSION } from "./client.js";
export {
  AnamnesisError,
  APIError,
  AuthenticationError,
  ConflictError,
  ConnectionError,
  IdempotencyKeyReusedError,
  InternalServerError,
  InvalidFilterError,
  JobTimeoutError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RateLimitError,
  ServiceUnavailableError,
  TimeoutError,
  ValidationError,
} from "./errors.js";
export type * from "./types.js";
export type { components, operations, paths } from "./schema.js";
