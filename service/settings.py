"""All configuration in one place: env `REPRANK_*`, and the CLI flags map onto the same fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]  # env: comma-separated, not JSON


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPRANK_", protected_namespaces=())

    data_dir: Path = Path("data")  # where the embedded Qdrant Edge store lives
    qdrant_url: str | None = None  # a Qdrant server instead of the embedded store
    qdrant_api_key: str | None = None
    collection: str = "default"  # searched when a request names none

    model: str = "smollm2-retriever"  # encoder: a preset name or a local checkpoint/adapter path
    model_preset: str | None = None
    reranker: str = "smollm2-rankllama-trained"  # "none" serves without a reranker
    reranker_preset: str | None = None
    base: str | None = None  # base model for adapters whose config names none we can find
    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: str = "auto"  # auto = bfloat16 on cuda, float32 on cpu

    host: str = "127.0.0.1"
    port: int = 8000

    max_batch_tokens: int | None = None  # padded tokens per forward pass; auto: 2048 on cpu, 16384 on gpu
    max_batch_size: int = 64
    max_queue_tokens: int = 262_144  # beyond this, requests get 429
    max_inputs: int = 1024  # texts per /v1/embeddings call
    max_documents: int = 1000  # documents per /v1/rerank call
    max_top_k: int = 100
    max_candidates: int = 200
    default_candidates: int = 20  # retrieved then reranked when a search names no count
    hybrid: bool = True  # search fuses dense and BM25 unless a request says "hybrid": false
    rerank_fusion: Literal["rrf", "none"] = "rrf"  # search order: RRF of retrieval and rerank ranks, or rerank alone
    warmup: bool = True

    # reliability and security (README: Operations)
    request_timeout: float = 60.0  # seconds a request may take (504 after); X-Request-Timeout can shorten it
    shutdown_delay: float = 0.0  # after SIGTERM: seconds of service with /readyz 503 before draining
    max_body_bytes: int = 10 * 1024 * 1024  # larger request bodies get 413 before they are parsed
    api_keys: SecretStr | None = None  # comma-separated; when set (or a file), every data route needs a key
    api_keys_file: Path | None = None  # one key, or sha256:<hex digest>, per line
    metrics_port: int | None = None  # serve /metrics on this port instead of the API port

    # gateway/worker split (service/workers.py)
    role: Literal["all", "gateway", "worker"] = "all"  # all = models and search in this one process
    encoder_urls: CommaList = []  # gateway: encoder worker replicas (env REPRANK_ENCODER_URLS=a,b)
    reranker_urls: CommaList = []  # gateway: reranker worker replicas; none = no reranking
    worker_timeout_s: float = 30.0  # per attempt; a replica slower than this counts as down
    worker_retries: int = 1  # extra rounds over all replicas after the first
    worker_backoff_s: float = 0.2  # before round n: backoff * 2**(n-1)
    worker_max_connections: int = 64  # pooled keep-alive connections per worker pool
    worker_api_key: str | None = None  # sent as a bearer token to the workers
    # a vLLM worker applies no reprank template: the gateway formats the text (README: vLLM workers)
    remote_query_format: str | None = None  # e.g. "query: {text}</s>"
    remote_passage_format: str | None = None
    remote_rerank_query_format: str | None = None  # e.g. "query: {query}"
    remote_rerank_document_format: str | None = None  # e.g. "document: {document}"

    @field_validator("encoder_urls", "reranker_urls", "qdrant_payload_indexes", mode="before")
    @classmethod
    def _split_commas(cls, v):
        items = v.split(",") if isinstance(v, str) else [p for x in v for p in str(x).split(",")]
        return [u.strip() for u in items if u.strip()]

    # Qdrant server collections (indexer/qdrant_config.py; README: Qdrant server)
    qdrant_hnsw_m: int | None = None  # server default 16
    qdrant_hnsw_ef_construct: int | None = None  # server default 100
    qdrant_hnsw_ef: int | None = None  # query-time beam; server default = ef_construct
    qdrant_quantization: Literal["none", "int8", "binary"] = "none"
    qdrant_quantization_always_ram: bool = True
    qdrant_oversampling: float | None = None  # e.g. 2.0: preselect 2x by quantized score, then rescore
    qdrant_rescore: bool | None = None
    qdrant_on_disk: bool = False  # original vectors on disk (memory-mapped)
    qdrant_shard_number: int | None = None
    qdrant_replication_factor: int | None = None
    qdrant_write_consistency_factor: int | None = None
    qdrant_payload_indexes: CommaList = []  # metadata fields filters use: "section,size:integer"

    def server_config(self):
        from indexer.qdrant_config import ServerConfig, parse_payload_indexes

        return ServerConfig(
            hnsw_m=self.qdrant_hnsw_m, hnsw_ef_construct=self.qdrant_hnsw_ef_construct,
            hnsw_ef=self.qdrant_hnsw_ef, quantization=self.qdrant_quantization,
            quantization_always_ram=self.qdrant_quantization_always_ram, oversampling=self.qdrant_oversampling,
            rescore=self.qdrant_rescore, on_disk=self.qdrant_on_disk, shard_number=self.qdrant_shard_number,
            replication_factor=self.qdrant_replication_factor,
            write_consistency_factor=self.qdrant_write_consistency_factor,
            payload_indexes=parse_payload_indexes(self.qdrant_payload_indexes))

    def open_store(self):
        """The embedded store under data_dir, or the Qdrant server at qdrant_url with these settings."""
        from indexer.store import open_store

        return open_store(self.data_dir, self.qdrant_url, self.qdrant_api_key, self.server_config())

    def torch_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device

    def batch_tokens(self, device: str | None = None) -> int:
        """Small batches win on CPU (measured: 32 x 90 tokens ran slower than 8 x 90); GPUs want big ones.
        `device`: where the model runs, when not here (a Ray actor)."""
        if self.max_batch_tokens:
            return self.max_batch_tokens
        return 16384 if (device or self.torch_device()).startswith("cuda") else 2048

    def model_kwargs(self) -> dict:
        """What open_encoder / open_reranker take from these settings: base, device, dtype, batch shape."""
        return dict(base=self.base, device=self.torch_device(), dtype=self.torch_dtype(),
                    max_batch_tokens=self.batch_tokens(), max_batch_size=self.max_batch_size)

    def torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().startswith("cuda") else torch.float32
        return getattr(torch, self.dtype)
