"""The one settings object. Every ``ANAMNESIS_*`` variable is read here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="postgresql+asyncpg://… URL. Unset: start the bundled Postgres.",
    )
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=10, ge=0, le=200)
    pool_timeout_s: float = Field(default=30.0, gt=0, le=600,
                                  description="How long a request waits for a connection.")
    graph_pool_size: int = Field(
        default=5, ge=1, le=200, description="Connections of the Postgres graph store's own "
        "pool (a request holding one of the main pool may wait on it; never the reverse).")
    index_pool_size: int = Field(
        default=2, ge=1, le=200, description="Connections of the in-process search index's "
        "own pool (it reads the change log during searches that hold a main-pool one).")
    migrate_on_start: bool = True

    @field_validator("url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix) :]
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("database url must be a postgresql:// URL")
        return value


class EmbeddingSettings(BaseModel):
    model: str | None = Field(
        default=None,
        description="all-MiniLM-L6-v2 (unset: the default) or all-mpnet-base-v2, both shipped "
        "inside PyPI packages, or the folder of another sentence-transformers model.",
    )
    dimension: int = Field(
        default=384, ge=8, le=16000, description="Vector size of new databases; checked at start."
    )
    device: str = Field(default="cpu", description="cpu, cuda, or auto")
    backend: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="auto: ONNX Runtime when the device is cpu (an export of the same weights, "
        "made once into <data_dir>/models/onnx and checked against torch), else torch, and "
        "torch where the export cannot be made; onnx: that or fail; torch: torch.",
    )
    batch_size: int = Field(default=64, ge=1, le=4096)
    threads: int | None = Field(
        default=None, ge=1, le=256,
        description="CPU threads for the model; unset: half the cores (the rest serve requests).",
    )


class LLMSettings(BaseModel):
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (…/v1). Unset: start the bundled local model.",
    )
    api_key: SecretStr | None = None
    model: str = Field(default="qwen2.5-coder-1.5b-instruct",
                       description="Model name sent to the endpoint.")
    timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10,
                              description="Tries per call on 429/5xx/timeouts, with backoff.")
    max_output_retries: int = Field(default=2, ge=0, le=10,
                                    description="Re-asks, with the error, on invalid output.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=16)
    local_threads: int | None = Field(default=None, ge=1, le=256,
                                      description="CPU threads of the bundled model (default: "
                                      "every core up to four, then all but one).")
    local_context: int = Field(default=8192, ge=512,
                               description="Context tokens of the bundled model, shared by "
                               "its request slots.")


class RedisSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="redis://… URL of the Celery broker and result backend. Unset: the API "
        "consolidates in-process.",
    )


class Neo4jSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="bolt://… or neo4j://… URL of the graph store. Unset: the graph lives in "
        "Postgres tables.",
    )
    user: str = "neo4j"
    password: SecretStr | None = None
    database: str | None = Field(default=None, description="Neo4j database; unset: default.")


class ConsolidationSettings(BaseModel):
    concurrency: int = Field(default=2, ge=1, le=64,
                             description="Jobs the in-process queue runs at once.")
    context_episodes: int = Field(default=3, ge=0, le=20,
                                  description="Earlier episodes of the scope shown as context.")
    candidates_per_fact: int = Field(default=5, ge=1, le=50,
                                     description="Existing memories compared with each fact.")
    max_facts: int = Field(default=50, ge=1, le=500, description="Facts kept per episode.")
    extract_graph: bool = Field(default=True,
                                description="Also extract entities and relations (one more "
                                "LLM call per episode).")
    lease_s: float = Field(default=60.0, gt=0,
                           description="A RUNNING job whose heartbeat is older is re-run.")
    pending_grace_s: float = Field(default=300.0, gt=0,
                                   description="A job PENDING longer is enqueued again.")
    sweep_interval_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=50,
                             description="Re-runs after transient failures (LLM 5xx, DB drops).")
    retry_backoff_s: float = Field(default=2.0, gt=0)
    retry_backoff_max_s: float = Field(default=120.0, gt=0)
    max_wait_s: float = Field(default=60.0, gt=0, le=600,
                              description='How long "wait": true holds a request at most.')


class SearchSettings(BaseModel):
    """How search finds and ranks memories. Weights were tuned on the LoCoMo dev split only
    (``bench.locomo_recall``); see the README."""

    index: Literal["memory", "postgres"] = Field(
        default="memory",
        description="memory: FAISS and BM25 kept in the API process, fed by the change log; "
        "postgres: pgvector's HNSW index and Postgres full-text search (no process state).")
    ranking: Literal["hybrid", "dense", "lexical"] = Field(
        default="hybrid", description="The default of a search's `ranking`.")
    candidates: int = Field(default=50, ge=1, le=1000,
                            description="Candidates taken from each signal before fusion "
                            "(at least top_k), of each kind when a search ranks messages "
                            "and facts together.")
    dense_weight: float = Field(default=0.5, ge=0.0, le=10.0)
    lexical_weight: float = Field(default=0.5, ge=0.0, le=10.0)
    lexical_clarity: float = Field(
        default=0.4, ge=0.0, le=10.0, description="A lexical list whose ten best BM25 "
        "scores average under this share of the query's term weight (what a memory of mean "
        "length holding each query term once scores) matches incidental words of the query: "
        "lexical_weight is scaled down in proportion. 0: never.")
    graph_weight: float = Field(default=1.0, ge=0.0, le=10.0,
                                description="Added for a memory the graph reached.")
    date_weight: float = Field(
        default=0.5, ge=0.0, le=10.0, description="Added for a memory said or true within "
        'the period a query names ("in May 2023", "last June").')
    conversation_weight: float = Field(
        default=0.3, ge=0.0, le=10.0, description="Share of the best score among the "
        "candidates of a message's conversation that the message gains.")
    neighbour_weight: float = Field(
        default=0.2, ge=0.0, le=10.0, description="Share of its better neighbouring turn's "
        "score that a message gains (and half that of the better turn two away).")
    speaker_weight: float = Field(
        default=2.0, ge=0.0, le=10.0, description="Added for a message said by someone the "
        'query names ("what did Caroline paint?": what Caroline said), and for a fact naming '
        "them; a hybrid query is searched without those names.")
    length_weight: float = Field(
        default=0.3, ge=0.0, le=10.0, description="Weight of ln((words + 1) / 21) for a "
        "message: a turn of more words than the usual twenty tends to say more (a greeting "
        "that names the topic says little of it).")
    recency_weight: float = Field(default=0.0, ge=0.0, le=10.0,
                                  description="Weight of exp(-age / recency_half_life_days).")
    recency_half_life_days: float = Field(default=30.0, gt=0)
    superseded_penalty: float = Field(default=0.5, ge=0.0, le=10.0,
                                      description="Taken off memories no longer true "
                                      "(seen with include_superseded or as_of).")
    query_cache_size: int = Field(default=1024, ge=0, le=1_000_000,
                                  description="Query embeddings kept (LRU); 0 turns it off.")
    flat_max: int = Field(default=200_000, ge=0,
                          description="Up to this many vectors the FAISS index is exact "
                          "(flat); beyond, HNSW.")
    hnsw_m: int = Field(default=32, ge=4, le=128)
    hnsw_ef_construction: int = Field(default=64, ge=8, le=1024)
    hnsw_ef_search: int = Field(default=128, ge=8, le=4096)
    exact_max: int = Field(default=50_000, ge=0,
                           description="Filtered searches matching up to this many memories "
                           "are scored exactly, whatever the index type.")
    filter_ids_max: int = Field(default=100_000, ge=1,
                                description="Metadata/time filters are resolved by Postgres to "
                                "at most this many ids; beyond, that search takes the "
                                "postgres path.")
    poll_interval_s: float = Field(default=0.25, gt=0, le=60,
                                   description="How often the index reads the change log.")
    gap_timeout_s: float = Field(default=10.0, gt=0,
                                 description="How long a hole in the change log's sequence "
                                 "(a transaction still open) is waited for.")
    snapshot_dir: Path | None = Field(
        default=None, description="Where the index is saved (one folder per database); "
        "default: <data_dir>/index.")
    change_log_days: float = Field(default=7.0, gt=0,
                                   description="Changes older than this are pruned by the "
                                   "sweep; an index snapshot older is rebuilt, not caught up.")
    snapshot_every: int = Field(default=50_000, ge=1,
                                description="Changes after which the index is saved again.")
    erase_snapshot_s: float = Field(
        default=5.0, ge=0, description="After memories are erased, the index is compacted and "
        "saved again within this many seconds, so no snapshot keeps their words or vectors.")
    device: str = Field(
        default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="Where the exact scan of the vectors runs: auto (cuda when torch sees a "
        "GPU, else cpu), cpu, cuda or cuda:N (a GPU that is not there stops the start).")
    vector_backend: Literal["auto", "index", "torch", "faiss"] = Field(
        default="auto", description="index: the host FAISS index alone (flat, then HNSW); "
        "torch / faiss: also a copy of every vector on `device`, fed incrementally, that "
        "searches allowed more than host_max memories scan exactly (torch: matmul + top-k; "
        "faiss: its brute-force kernel); auto: index on the CPU, on a GPU faiss when the "
        "installed faiss has GPU support, else torch.")
    host_max: int = Field(default=4096, ge=0,
                          description="Searches allowed at most this many memories are "
                          "scored on the host (gather + multiply), never on the device copy.")
    gpu: Literal["auto", "off"] = Field(
        default="auto", description="Deprecated: off is device=cpu (when device is auto).")
    batch_window_ms: float = Field(default=1.0, ge=0.0, le=50.0,
                                   description="Searches of the device copy within this "
                                   "window go to it as one batch.")
    embed_window_ms: float = Field(default=0.0, ge=0.0, le=50.0,
                                   description="0: a query to embed goes at once (sharing "
                                   "a forward pass with those queued while one runs); above "
                                   "0, those arriving within this window of the first share "
                                   "one (each waits for it).")

    @model_validator(mode="after")
    def _gpu_off(self) -> SearchSettings:
        if self.gpu == "off" and self.device == "auto":
            self.device = "cpu"
        return self


class LimitSettings(BaseModel):
    """Rate limits and quotas: none unless set (``app.throttle``)."""

    key_requests: int | None = Field(
        default=None, ge=1, description="Requests one API key may make in any window_s "
        "seconds; more get 429 with Retry-After. Counted in Redis when ANAMNESIS_REDIS__URL is "
        "set (every replica together), else per process.")
    project_requests: int | None = Field(
        default=None, ge=1, description="Requests all the keys of one project may make in any "
        "window_s seconds.")
    window_s: int = Field(default=1, ge=1, le=86400,
                          description="The moving window the request limits count over.")
    project_llm_tokens_per_day: int | None = Field(
        default=None, ge=1, description="LLM tokens a project's consolidation may spend in any "
        "24 hours; past it, infer=true adds get 429 quota_exceeded (infer=false still works).")


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=0, le=65535)
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger request bodies get 413."
    )
    max_import_bytes: int = Field(
        default=8 * 1024**3, ge=1024, description="The body limit of POST /v1/import (an "
        "export of a million memories with their vectors is about 3 GB).")
    key_touch_interval_s: float = Field(
        default=60.0, ge=0, description="How often an API key's last_used_at is refreshed."
    )
    key_cache_s: float = Field(
        default=2.0, ge=0, le=60, description="A key found active is trusted this long "
        "without looking it up again (0: looked up on every request). Revoked through this "
        "process it stops at once; through another process or the CLI, within this time.")
    metrics: bool = Field(default=True, description="Serve /metrics (Prometheus text, every "
                          "project's aggregates: expose it to operators only).")
    project_concurrency: int = Field(
        default=8, ge=1, le=1000, description="Requests of one project this process serves at "
        "once; more wait their turn, holding no database connection, so one busy project "
        "cannot starve the others (keep it below db.pool_size + db.max_overflow).")
    idempotency_hours: float = Field(
        default=24.0, gt=0, description="How long the answer to a request sent with an "
        "idempotency key is kept for its retries; the sweep prunes older ones.")


class Settings(BaseSettings):
    """Validated once at boot. Nested groups read as ``ANAMNESIS_<GROUP>__<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="ANAMNESIS_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("anamnesis")),
        description="Where the embedded database and local state live.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: a line for a person at a terminal; json: one JSON "
        "object per line (ts, level, logger, message, request_id, job_id) for a log pipeline.")
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    neo4j: Neo4jSettings = Field(default_factory=Neo4jSettings)
    consolidation: ConsolidationSettings = Field(default_factory=ConsolidationSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    url: str | None = Field(
        default=None, description="The running server `anamnesis mcp` talks to (ANAMNESIS_URL); "
        "default: http://<api.host>:<api.port>.")
    api_key: SecretStr | None = Field(
        default=None, description="The key `anamnesis mcp` calls it with (ANAMNESIS_API_KEY).")

    def server_url(self) -> str:
        """Where a client of this configuration finds the API: ``url``, else its own address."""
        host = "127.0.0.1" if self.api.host in ("0.0.0.0", "::") else self.api.host  # noqa: S104
        return self.url or f"http://{host}:{self.api.port}"
