"""`reprank train mix`: one training set from the train splits of several BEIR sets.

A default encoder trained on one kind of text (Debian package descriptions) is a specialist; mixing
in other pairs (`train sources`: man pages, docstrings) is how it learns to generalise. Each part gives
a seeded sample of its train queries (all, or N), never those of its --exclude qrels file, with their
positives. Those positives are the train side `train mine --method bm25` draws negatives from, so a
sampled part also has a smaller negative pool (a query's hard negatives are mostly its own kind of
text). Ids are prefixed with the part's name, so parts cannot collide; written by
`training.sources.write_beir`; source.json records the parts, their counts and the seed.

    reprank train mix --part debian=../shared/data/debian-packages:6000 \\
        --part manpages=/work/data/sources/manpages --part pydoc=/work/data/sources/pydoc:6000 \\
        --exclude debian=data/heldout-150/qrels/heldout.tsv --output data/mix
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from training.data import load_train
from training.sources import Record, write_beir


@dataclass(frozen=True)
class Part:
    name: str
    dataset: str
    queries: int | None  # a seeded sample of this many train queries; None: all
    exclude: str | None = None  # qrels file whose queries are never taken


def parse_part(spec: str) -> Part:
    """NAME=PATH[:N] (a trailing :N is a query count only when it is all digits, so paths may hold ':')."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--part {spec!r}: expected NAME=PATH[:N]")
    path, colon, count = rest.rpartition(":")
    if colon and count.isdigit():
        return Part(name, path, int(count))
    return Part(name, rest, None)


def mix(parts: list[Part], out: str | Path, *, seed: int = 42) -> dict:
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"part names must differ: {names}")
    queries, docs, qrels, counts = {}, {}, {}, {}
    for p in parts:
        train = load_train(p.dataset, p.queries, seed, p.exclude)
        for q in train.query_ids:
            queries[f"{p.name}:{q}"] = train.queries[q]
            qrels[f"{p.name}:{q}"] = {f"{p.name}:{d}" for d in train.positives[q]}
        used = {d for ds in train.positives.values() for d in ds}
        docs.update({f"{p.name}:{d}": Record(None, train.corpus[d].text, train.corpus[d].title) for d in sorted(used)})
        counts[p.name] = {"dataset": p.dataset, "queries": len(train.queries), "documents": len(used),
                          "sampled": p.queries, "excluded": p.exclude}
    write_beir(out, queries, docs, {"train": qrels})
    result = {"seed": seed, "parts": counts}
    (Path(out) / "source.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run(args) -> int:
    excludes = dict(e.split("=", 1) for e in args.exclude)
    parts = [replace(p, exclude=excludes.get(p.name)) for p in map(parse_part, args.part)]
    unknown = excludes.keys() - {p.name for p in parts}
    if unknown:
        raise ValueError(f"--exclude names no part: {sorted(unknown)}")
    print(json.dumps(mix(parts, args.output, seed=args.seed)))
    return 0
