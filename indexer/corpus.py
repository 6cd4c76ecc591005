"""Read documents from BEIR `corpus.jsonl[.gz]`, plain JSONL or Parquet.

Fields: `_id` or `id` (required, any scalar, kept as a string), `text` (required, non-empty), and
optional `title` and `metadata` (an object). A bad record stops the run with its line number rather
than indexing a silent hole. A BEIR dataset folder also has `queries.jsonl[.gz]` and
`qrels/{split}.tsv`, read here for evaluation and training.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from store.documents import Document


class CorpusError(ValueError):
    pass


def to_document(rec: dict, where: str) -> Document:
    doc_id = rec.get("_id", rec.get("id"))
    text = rec.get("text")
    if doc_id is None or str(doc_id) == "":
        raise CorpusError(f"{where}: no `_id` or `id`")
    if not isinstance(text, str) or not text.strip():
        raise CorpusError(f"{where}: `text` must be a non-empty string")
    title = rec.get("title") or ""
    metadata = rec.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CorpusError(f"{where}: `metadata` must be an object")
    return Document(str(doc_id), text, str(title), metadata)


def corpus_file(path: str | Path) -> Path:
    """The file itself, or the corpus of a BEIR dataset folder."""
    path = Path(path)
    if path.is_dir():
        path = next((p for p in (path / "corpus.jsonl", path / "corpus.jsonl.gz") if p.exists()), path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such corpus file")
    return path


def read_corpus(path: str | Path) -> Iterator[Document]:
    path = corpus_file(path)
    if path.suffix == ".parquet":
        yield from _read_parquet(path)
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise CorpusError(f"{path}:{n}: a record must be a JSON object")
            yield to_document(rec, f"{path}:{n}")


def _read_parquet(path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            n += 1
            yield to_document(rec, f"{path}: row {n}")


def count_documents(path: str | Path) -> int | None:
    """Cheap total for the progress bar (None when it would cost a full parse)."""
    path = corpus_file(path)  # cmd_index counts first: a bad path fails before any model loads
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _dataset_file(dataset: str | Path, name: str) -> Path:
    """`name` or `name.gz` inside a BEIR dataset folder."""
    for path in (Path(dataset) / name, Path(dataset) / f"{name}.gz"):
        if path.is_file():
            return path
    raise CorpusError(f"{dataset}: no {name}[.gz]")


def read_queries(dataset: str | Path, ids: set[str] | None = None) -> dict[str, str]:
    """BEIR `queries.jsonl[.gz]` -> {query id: text}, only the `ids` asked for when given."""
    path = _dataset_file(dataset, "queries.jsonl")
    opener = gzip.open if path.suffix == ".gz" else open
    out = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            qid = str(rec.get("_id", rec.get("id", "")))
            if not qid or not isinstance(rec.get("text"), str):
                raise CorpusError(f"{path}:{n}: a query needs `_id` and `text`")
            if ids is None or qid in ids:
                out[qid] = rec["text"]
    return out


def read_qrels(dataset: str | Path, split: str) -> dict[str, dict[str, int]]:
    """BEIR `qrels/{split}.tsv` (header line, then `query-id corpus-id score`) -> {qid: {doc id: grade}}."""
    return read_qrels_file(Path(dataset) / "qrels" / f"{split}.tsv")


def read_qrels_file(path: str | Path) -> dict[str, dict[str, int]]:
    """One BEIR qrels TSV, wherever it lies (e.g. a held-out set's, to keep its queries out of training)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such qrels file")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if n == 1 and not cols[-1].lstrip("-").isdigit():
                continue  # the header
            if len(cols) != 3:
                raise CorpusError(f"{path}:{n}: expected 3 tab-separated columns")
            qrels.setdefault(cols[0], {})[cols[1]] = int(cols[2])
    return qrels
