// Fails when src/schema.ts is not what openapi-typescript makes of openapi.json now: the
// types were edited by hand, or openapi.json changed without `npm run generate:types`.
// (That openapi.json is the server's current schema is checked on the Python side:
// tests/clients/test_typescript_sdk.py.)
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "anamnesis-schema-"));
try {
  const fresh = join(scratch, "schema.ts");
  execFileSync(join(root, "node_modules", ".bin", "openapi-typescript"),
               [join(root, "openapi.json"), "--output", fresh], { stdio: "pipe" });
  if (readFileSync(fresh, "utf8") !== readFileSync(join(root, "src", "schema.ts"), "utf8")) {
    console.error("src/schema.ts is stale: run `npm run generate:types` (or `npm run generate` " +
                  "after a server change) in clients/typescript and commit the result");
    process.exit(1);
  }
  console.log("src/schema.ts matches openapi.json");
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
