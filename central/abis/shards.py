"""The gallery's shards behind one interface: in this process, or one process each.

``search(probe, exclude, upto_seq)`` asks every shard for its best entries, each shard
first catching up from the database to at least ``upto_seq`` (the last change the caller
saw while holding the dedup lock), so a shard never answers from an older gallery than
the caller's.

- :class:`LocalShards`: one shard in the caller's process (the embedded default).
- :class:`ProcessShards`: N shard processes (``concurrent.futures``, one single-worker
  pool each so that a shard's state lives in its own process); each loads the entries
  whose ``id % N`` is its index from the database URL and replays the change log itself.
  A shard process that dies is started again (it reloads from the database) and the
  search retried once.

Across machines the same interface maps onto an actor framework (docs/registry-dedup.md).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol, TypeVar

from sqlalchemy import Engine

from central.abis.gallery import GalleryShard, SearchProbe, ShardHits
from central.abis.settings import AbisSettings
from central.abis.store import catch_up, load_shard
from central.db.engine import make_engine

T = TypeVar("T")


class ShardSet(Protocol):
    """What the coordinator needs of the shards."""

    def search(self, probe: SearchProbe, exclude: frozenset[int], upto_seq: int) -> list[ShardHits]:
        """Each shard's answer, after catching up to ``upto_seq``."""
        ...

    def refresh(self) -> None:
        """Catch every shard up with the committed change log."""
        ...

    def stats(self) -> list[tuple[int, int, int]]:
        """Per shard: entries held, bytes of packed templates, last change applied."""
        ...

    def close(self) -> None: ...


def _search(
    shard: GalleryShard, probe: SearchProbe, exclude: frozenset[int], settings: AbisSettings
) -> ShardHits:
    return shard.search(
        probe,
        exclude,
        settings.finger_shortlist,
        settings.face_shortlist,
        settings.demographic_candidates,
    )


class LocalShards:
    """The whole gallery in this process."""

    def __init__(self, engine: Engine, settings: AbisSettings, finger_model: str) -> None:
        self.engine, self.settings, self.finger_model = engine, settings, finger_model
        self.shard = GalleryShard(settings.search_positions)
        self._lock = threading.Lock()  # threads of one worker share the copy
        load_shard(self.shard, engine, finger_model)

    def search(self, probe: SearchProbe, exclude: frozenset[int], upto_seq: int) -> list[ShardHits]:
        with self._lock:
            catch_up(self.shard, self.engine, self.finger_model, upto_seq)
            return [_search(self.shard, probe, exclude, self.settings)]

    def refresh(self) -> None:
        with self._lock:
            catch_up(self.shard, self.engine, self.finger_model)

    def stats(self) -> list[tuple[int, int, int]]:
        with self._lock:
            return [(len(self.shard), self.shard.nbytes, self.shard.applied_seq)]

    def close(self) -> None:
        pass


# --- inside a shard process -------------------------------------------------------------

# The shard a worker process holds: set by the pool's initializer, read by the tasks.
_held: dict[str, tuple[GalleryShard, Engine, AbisSettings, str]] = {}


def _start_shard(url: str, index: int, count: int, settings: AbisSettings, model: str) -> None:
    engine = make_engine(url, pool_size=1, max_overflow=1)
    shard = GalleryShard(settings.search_positions, index=index, count=count)
    load_shard(shard, engine, model)
    _held["shard"] = (shard, engine, settings, model)


def _shard_search(probe: SearchProbe, exclude: frozenset[int], upto_seq: int) -> ShardHits:
    shard, engine, settings, model = _held["shard"]
    catch_up(shard, engine, model, upto_seq)
    return _search(shard, probe, exclude, settings)


def _shard_refresh() -> None:
    shard, engine, _, model = _held["shard"]
    catch_up(shard, engine, model)


def _shard_stats() -> tuple[int, int, int, int]:
    shard = _held["shard"][0]
    return len(shard), shard.nbytes, shard.applied_seq, os.getpid()


class ProcessShards:
    """``count`` shard processes over the database at ``url``."""

    def __init__(self, url: str, settings: AbisSettings, finger_model: str, count: int) -> None:
        if url.startswith("sqlite") and ":memory:" in url:
            raise ValueError("shard processes need a database file or server, not :memory:")
        self.url, self.settings, self.finger_model, self.count = url, settings, finger_model, count
        # spawn: the parent holds threads and database connections that fork would copy.
        self._context = multiprocessing.get_context("spawn")
        self._pools: list[ProcessPoolExecutor] = []
        try:
            for index in range(count):
                self._pools.append(self._start(index))
            for pool in self._pools:  # surface a failed load here, not at the first search
                pool.submit(_shard_stats).result()
        except BaseException:
            self.close()
            raise

    def _start(self, index: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=self._context,
            initializer=_start_shard,
            initargs=(self.url, index, self.count, self.settings, self.finger_model),
        )

    def _restart(self, index: int) -> None:
        self._pools[index].shutdown(wait=False, cancel_futures=True)
        self._pools[index] = self._start(index)

    def _submit(self, index: int, call: Callable[..., T], *args: object) -> Future[T]:
        try:
            return self._pools[index].submit(call, *args)
        except BrokenProcessPool:
            self._restart(index)  # it died between calls
            return self._pools[index].submit(call, *args)

    def _each(self, call: Callable[..., T], *args: object) -> list[T]:
        futures = [self._submit(i, call, *args) for i in range(len(self._pools))]
        out: list[T] = []
        for index, future in enumerate(futures):
            try:
                out.append(future.result())
            except BrokenProcessPool:
                # The shard process died during the call: start it again (it reloads from
                # the database) and ask once more.
                self._restart(index)
                out.append(self._pools[index].submit(call, *args).result())
        return out

    def search(self, probe: SearchProbe, exclude: frozenset[int], upto_seq: int) -> list[ShardHits]:
        return self._each(_shard_search, probe, exclude, upto_seq)

    def refresh(self) -> None:
        self._each(_shard_refresh)

    def stats(self) -> list[tuple[int, int, int]]:
        return [(n, b, s) for n, b, s, _ in self._each(_shard_stats)]

    def pids(self) -> list[int]:
        """The shard processes' ids (for operators and tests)."""
        return [p for *_, p in self._each(_shard_stats)]

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools = []
