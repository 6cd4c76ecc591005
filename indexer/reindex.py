"""Zero-downtime reindexing on a Qdrant server: build NAME-v<n>, then move the alias NAME to it.

Readers (the service) always query NAME. While a new version is built they keep reading the old one;
the alias moves in one `update_collection_aliases` call (delete + create), which Qdrant applies
atomically. A build that was interrupted is the newest version with no alias on it: running again
resumes it (the indexer skips documents already stored) instead of starting another.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from store import StoreError, StoreMismatch
from store.layout import check_name
from store.server import ServerStore

log = logging.getLogger(__name__)


@dataclass
class Reindexed:
    alias: str
    collection: str  # the version the alias now points to
    previous: str | None  # where it pointed before
    deleted: list[str]  # old versions dropped beyond `keep`


def versions(store: ServerStore, alias: str) -> list[str]:
    """NAME-v<n> collections, oldest first."""
    pattern = re.compile(rf"{re.escape(alias)}-v(\d+)")
    found = [(int(m.group(1)), c) for c in store.list_collections() if (m := pattern.fullmatch(c))]
    return [c for _, c in sorted(found)]


def next_version(store: ServerStore, alias: str) -> str:
    """The interrupted build to resume, else NAME-v<last + 1>."""
    have = versions(store, alias)
    if have and have[-1] != store.alias_target(alias):
        return have[-1]
    n = int(have[-1].rsplit("-v", 1)[1]) + 1 if have else 1
    return check_name(f"{alias}-v{n}")


def reindex(store: ServerStore, alias: str, build: Callable[[str], object], *, keep: int = 1) -> Reindexed:
    """Run `build(collection)` into the next version, then point the alias at it.

    `keep` old versions stay for a rollback (`point_alias` back); older ones are deleted.
    """
    check_name(alias)
    if alias in store.list_collections():
        raise StoreMismatch(
            f"{alias!r} is a plain collection on {store.where}, so it cannot become an alias: index into "
            f"it with --in-place, or delete it once a versioned build has replaced it"
        )
    target = next_version(store, alias)
    log.info("building %s for alias %s", target, alias)
    build(target)
    if store.count(target) == 0:
        raise StoreError(f"{target} is empty after indexing: the alias {alias!r} stays where it was")
    previous = store.alias_target(alias)
    store.point_alias(alias, target)
    old = [c for c in versions(store, alias) if c != target]
    deleted = old[: max(len(old) - keep, 0)]
    for name in deleted:
        store.delete_collection(name)
    return Reindexed(alias, target, previous, deleted)
