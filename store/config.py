"""Store settings: where collections live, and the collection settings of a Qdrant server or cluster.

Defaults leave everything to the server (HNSW m=16, ef_construct=100, vectors in RAM, one shard, no
quantization). Sizing for each choice is worked out in README "Qdrant server: settings and sizing".
Legacy fields (`on_disk`, `always_ram`) are used rather than the 1.19 `memory` tiers, so the same
settings work on older servers too. Qdrant's local mode (`:memory:`) stores them and ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qdrant_client import models as qm

Quantization = Literal["none", "int8", "binary"]
INDEX_TYPES = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
}


def parse_payload_indexes(specs: list[str]) -> tuple[tuple[str, str], ...]:
    """Metadata fields to index: ["section", "size:integer"] -> (("section", "keyword"), ("size", "integer"))."""
    out = []
    for spec in specs:
        field, _, kind = spec.partition(":")
        kind = kind or "keyword"
        if not field or kind not in INDEX_TYPES:
            raise ValueError(f"payload index {spec!r}: use FIELD or FIELD:TYPE, "
                             f"TYPE one of {', '.join(INDEX_TYPES)}")
        out.append((field, kind))
    return tuple(out)


@dataclass(frozen=True)
class ServerConfig:
    hnsw_m: int | None = None  # graph degree (level 0 gets 2m links); more = better recall, more RAM
    hnsw_ef_construct: int | None = None  # build-time beam
    hnsw_ef: int | None = None  # query-time beam
    quantization: Quantization = "none"  # int8 scalar (4x smaller) or binary (32x)
    quantization_always_ram: bool = True  # keep the quantized copy in RAM even when originals are on disk
    oversampling: float | None = None  # fetch limit * oversampling by quantized score, then rescore
    rescore: bool | None = None  # rescore with the original vectors (default: on for binary only)
    on_disk: bool = False  # original vectors memory-mapped from disk
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    payload_indexes: tuple[tuple[str, str], ...] = ()  # (metadata field, type) for filters

    def vector_params(self, dim: int) -> qm.VectorParams:
        """The dense vector's params, HNSW and quantization included (per vector: the server and
        local mode both keep them there; local mode drops the collection-level ones)."""
        return qm.VectorParams(size=dim, distance=qm.Distance.COSINE, on_disk=self.on_disk or None,
                               hnsw_config=self.hnsw(), quantization_config=self.quantization_config())

    def hnsw(self) -> qm.HnswConfigDiff | None:
        if self.hnsw_m is None and self.hnsw_ef_construct is None:
            return None
        return qm.HnswConfigDiff(m=self.hnsw_m, ef_construct=self.hnsw_ef_construct)

    def quantization_config(self) -> qm.ScalarQuantization | qm.BinaryQuantization | None:
        if self.quantization == "int8":
            return qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(
                type=qm.ScalarType.INT8, quantile=0.99, always_ram=self.quantization_always_ram))
        if self.quantization == "binary":
            return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(
                always_ram=self.quantization_always_ram))
        return None

    def cluster(self) -> dict:
        """shard_number, replication_factor, write_consistency_factor: fixed at creation."""
        fields = ("shard_number", "replication_factor", "write_consistency_factor")
        return {f: getattr(self, f) for f in fields if getattr(self, f) is not None}

    def search_params(self) -> qm.SearchParams | None:
        quant = None
        if self.quantization != "none" and (self.oversampling is not None or self.rescore is not None):
            quant = qm.QuantizationSearchParams(rescore=self.rescore, oversampling=self.oversampling)
        if self.hnsw_ef is None and quant is None:
            return None
        return qm.SearchParams(hnsw_ef=self.hnsw_ef, quantization=quant)


@dataclass(frozen=True)
class StoreConfig:
    """Where the collections live: the embedded Edge store under ``data_dir``, or a server at ``url``."""

    data_dir: str | Path = "data"
    url: str | None = None
    api_key: str | None = None
    server: ServerConfig = ServerConfig()
