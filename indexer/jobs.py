"""`reprank index`: pick the engine (this process, or Ray) and, on a Qdrant server, build a new version
behind the collection's alias (indexer/reindex.py) unless asked to write in place."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from indexer.corpus import count_documents, read_corpus
from indexer.passages import window_for
from indexer.run import IndexStats, collection_info, index_corpus
from store import open_store

log = logging.getLogger(__name__)


@dataclass
class IndexJob:
    corpus: str
    collection: str
    engine: str = "local"  # local | ray
    chunk_size: int = 64
    progress: bool = True
    in_place: bool = False  # server: upsert into NAME (or its alias target) instead of a new version
    keep_versions: int = 1  # server: old versions kept for rollback
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray instance
    ray_actors: int | None = None  # default: one per GPU, else CPUs - 1


def _local(job: IndexJob, s, store, name: str) -> IndexStats:
    from models import open_encoder

    total = count_documents(job.corpus)
    with open_encoder(s.model, s.model_preset, **s.model_kwargs()) as encoder:
        return index_corpus(read_corpus(job.corpus), encoder, store, name, chunk_size=job.chunk_size,
                            total=total, progress=job.progress,
                            window=window_for(encoder, s.passage_tokens, s.passage_stride))


def _ray(job: IndexJob, s, store, name: str) -> IndexStats:
    if s.engine != "torch":
        raise ValueError(f"--engine ray runs the torch engine in each actor; REPRANK_ENGINE={s.engine} is for "
                         "the one-process indexer")
    try:
        import ray
    except ImportError as e:
        raise ValueError("--engine ray needs Ray: pip install 'reprank[ray]'") from e

    from indexer.ray_index import EncoderSpec, index_with_ray
    from models import encoder_source

    count_documents(job.corpus)  # a bad path fails before Ray starts
    info = collection_info(*encoder_source(s.model, s.model_preset))
    if not ray.is_initialized():
        ray.init(address=job.ray_address, include_dashboard=False)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if s.device in ("auto", "cuda") else 0
    device = "cuda" if gpus else "cpu"
    dtype = ("bfloat16" if gpus else "float32") if s.dtype == "auto" else s.dtype
    actors = job.ray_actors or gpus or max(1, int(resources.get("CPU", 2)) - 1)  # leave a CPU to read/parse
    spec = EncoderSpec(s.model, s.model_preset, s.base, device, dtype,
                       s.batch_tokens(device), s.max_batch_size, s.passage_tokens, s.passage_stride)
    log.info("ray: %d encoder actors on %s (%s)", actors, device, resources)
    return index_with_ray(job.corpus, spec, info, store, name,
                          actors=actors, chunk_size=job.chunk_size, gpus_per_actor=1.0 if gpus else 0.0)


def run_index(job: IndexJob, settings) -> str:
    """Index the corpus; returns the summary line the CLI prints."""
    from indexer.reindex import reindex

    engine = _ray if job.engine == "ray" else _local
    stats: list[IndexStats] = []
    with open_store(settings.store_config()) as store:
        if settings.qdrant_url and not job.in_place:
            def build(name: str) -> None:
                stats.append(engine(job, settings, store, name))

            done = reindex(store, job.collection, build, keep=job.keep_versions)
            where = (f"{done.collection} (alias {done.alias} moved from {done.previous or 'nothing'}"
                     f"{'; deleted ' + ', '.join(done.deleted) if done.deleted else ''})")
        else:
            stats.append(engine(job, settings, store, job.collection))
            where = job.collection
        count = store.count(job.collection)
    st = stats[0]
    split = f" as {st.passages} passages" if st.passages > st.indexed else ""
    return (f"{where}: {st.indexed} documents encoded{split} ({st.docs_per_s:.1f} docs/s), {st.skipped} already "
            f"present, {count} in the collection; {st.truncated_tokens} tokens truncated")
