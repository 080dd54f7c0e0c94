"""One shard of the in-memory gallery: what the 1:N search holds.

Per searched finger position a packed :class:`~biometrics.fingerprint.matcher.Gallery` of
compact templates (labels are gallery entry ids), a matrix of face embeddings, and an
index of demographics. A shard holds the entries whose ``id % count == index`` (one shard
of one: everything). It changes only through :meth:`GalleryShard.add`,
:meth:`GalleryShard.remove` and :meth:`GalleryShard.link`, which the owner calls while
replaying the committed change log (``central.abis.store``); each is idempotent, so a
replay that overlaps a fresh load does no harm.

Removal marks the entry gone at once (results skip it) and frees its packed rows when
dead rows pass a quarter of a position's gallery (``matcher.Gallery`` only appends).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.matcher import DEFAULT_SEARCH, FingerTemplate, Gallery, SearchParams
from biometrics.fingerprint.matcher import search as finger_search
from central.abis.demographics import Demographics, agree

FaceVector = NDArray[np.float32]
_COMPACT_DEAD_FRACTION = 0.25


class FaceMatrix:
    """Face embeddings of one model, one row per entry, grown by doubling."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.vectors = np.zeros((256, dim), np.float32)
        self.labels = np.zeros(256, np.int64)
        self.alive = np.zeros(256, bool)
        self.size = 0
        self.rows: dict[int, int] = {}

    def add(self, entry_id: int, vector: FaceVector) -> None:
        v = np.asarray(vector, np.float32).reshape(-1)
        if len(v) != self.dim:
            raise ValueError(f"face vector of {len(v)} values, the gallery holds {self.dim}")
        if self.size == len(self.labels):
            grow = len(self.labels)
            self.vectors = np.concatenate([self.vectors, np.zeros((grow, self.dim), np.float32)])
            self.labels = np.concatenate([self.labels, np.zeros(grow, np.int64)])
            self.alive = np.concatenate([self.alive, np.zeros(grow, bool)])
        row = self.size
        self.vectors[row], self.labels[row], self.alive[row] = v, entry_id, True
        self.rows[entry_id] = row
        self.size += 1

    def remove(self, entry_id: int) -> None:
        row = self.rows.pop(entry_id, None)
        if row is not None:
            self.alive[row] = False

    def top(self, vector: FaceVector, k: int, exclude: frozenset[int]) -> list[tuple[int, float]]:
        """The ``k`` live entries most similar to ``vector``, best first."""
        n = self.size
        scores = self.vectors[:n] @ np.asarray(vector, np.float32)
        ok = self.alive[:n]
        if exclude:
            ok = ok & ~np.isin(self.labels[:n], np.fromiter(exclude, np.int64, len(exclude)))
        scores = np.where(ok, scores, -np.inf)
        k = min(k, int(ok.sum()))
        if k <= 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(self.labels[r]), float(scores[r])) for r in best]

    @property
    def nbytes(self) -> int:
        return self.size * (self.dim * 4 + 9)


@dataclass(frozen=True)
class EntryInfo:
    """What a candidate report needs to say about a gallery entry."""

    entry_id: int
    package_id: uuid.UUID
    person_id: uuid.UUID | None
    demographics: Demographics = field(default_factory=Demographics)


@dataclass(frozen=True, eq=False)
class ShardEntry:
    """An entry as a shard holds it: compact templates of the searched positions only."""

    info: EntryInfo
    fingers: Mapping[int, FingerTemplate] = field(default_factory=dict)
    face_model: str | None = None
    face: FaceVector | None = None


@dataclass(frozen=True, eq=False)
class SearchProbe:
    """The part of a probe the shards search with."""

    fingers: Mapping[int, FingerTemplate]  # compact templates, searched positions
    face_model: str | None
    face: FaceVector | None
    demographics: Demographics


@dataclass(frozen=True)
class ShardHits:
    """One shard's answer: per searched position the best entries and their scores, the
    best entries by face, the entries whose demographics agree, and their infos."""

    fingers: dict[int, list[tuple[int, float]]]
    faces: list[tuple[int, float]]
    demographic: list[int]
    entries: dict[int, EntryInfo]
    applied_seq: int


class GalleryShard:
    """Shard ``index`` of ``count`` of the gallery."""

    def __init__(
        self,
        positions: tuple[int, ...],
        *,
        index: int = 0,
        count: int = 1,
        search: SearchParams = DEFAULT_SEARCH,
    ) -> None:
        if not 0 <= index < count:
            raise ValueError(f"shard index {index} outside 0..{count - 1}")
        self.positions = positions
        self.index, self.count = index, count
        self.search_params = search
        self.applied_seq = 0
        self._infos: dict[int, EntryInfo] = {}
        self._galleries = {p: Gallery(capacity=256) for p in positions}
        self._dead_rows = dict.fromkeys(positions, 0)
        self._faces: dict[str, FaceMatrix] = {}  # by model: never compared across models
        self._by_demographics: dict[tuple[str, str], set[int]] = {}

    # --- changes ---------------------------------------------------------------------

    def owns(self, entry_id: int) -> bool:
        return entry_id % self.count == self.index

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, entry_id: int) -> EntryInfo | None:
        return self._infos.get(entry_id)

    def finger_gallery(self, position: int) -> Gallery | None:
        """The packed rows of one searched position (read-only use)."""
        return self._galleries.get(position)

    def add(self, entry: ShardEntry) -> None:
        """Add an entry (no-op if present or not this shard's)."""
        eid = entry.info.entry_id
        if eid in self._infos or not self.owns(eid):
            return
        self._infos[eid] = entry.info
        for position, template in entry.fingers.items():
            if position in self._galleries and len(template.cylinders):
                self._galleries[position].add(template, label=eid)
        if entry.face is not None and entry.face_model is not None:
            if entry.face_model not in self._faces:
                self._faces[entry.face_model] = FaceMatrix(len(entry.face))
            self._faces[entry.face_model].add(eid, entry.face)
        key = entry.info.demographics.index_key
        if key is not None:
            self._by_demographics.setdefault(key, set()).add(eid)

    def add_packed(
        self,
        infos: list[EntryInfo],
        fingers: Mapping[int, Gallery],
        face_model: str | None = None,
        faces: NDArray[np.float32] | None = None,
    ) -> None:
        """Bulk load: ``infos`` with finger rows already packed (labels are entry ids) and
        ``faces`` one row per info. For large loads built elsewhere (other processes)."""
        if any(not self.owns(i.entry_id) or i.entry_id in self._infos for i in infos):
            raise ValueError("add_packed takes new entries of this shard only")
        for info in infos:
            self._infos[info.entry_id] = info
            key = info.demographics.index_key
            if key is not None:
                self._by_demographics.setdefault(key, set()).add(info.entry_id)
        for position, packed in fingers.items():
            if position in self._galleries:
                self._galleries[position].extend(packed)
        if faces is not None and face_model is not None:
            if face_model not in self._faces:
                self._faces[face_model] = FaceMatrix(faces.shape[1])
            for info, vector in zip(infos, faces, strict=True):
                self._faces[face_model].add(info.entry_id, vector)

    def remove(self, entry_id: int) -> None:
        """Forget an entry (no-op if absent)."""
        info = self._infos.pop(entry_id, None)
        if info is None:
            return
        key = info.demographics.index_key
        if key is not None:
            self._by_demographics.get(key, set()).discard(entry_id)
        for faces in self._faces.values():
            faces.remove(entry_id)
        for position, gallery in self._galleries.items():
            n = len(gallery)
            self._dead_rows[position] += int(np.count_nonzero(gallery.labels[:n] == entry_id))
            if self._dead_rows[position] > _COMPACT_DEAD_FRACTION * max(n, 1):
                self._compact(position)

    def link(self, entry_id: int, person_id: uuid.UUID | None) -> None:
        info = self._infos.get(entry_id)
        if info is not None:
            self._infos[entry_id] = EntryInfo(
                info.entry_id, info.package_id, person_id, info.demographics
            )

    def _compact(self, position: int) -> None:
        old = self._galleries[position]
        n = len(old)
        keep = np.isin(old.labels[:n], np.fromiter(self._infos, np.int64, len(self._infos)))
        new = Gallery(old.params, old.sig_params, capacity=max(int(keep.sum()), 1))
        for column in Gallery.columns():
            getattr(new, column)[: int(keep.sum())] = getattr(old, column)[:n][keep]
        new.size = int(keep.sum())
        self._galleries[position] = new
        self._dead_rows[position] = 0

    # --- search ----------------------------------------------------------------------

    def search(
        self,
        probe: SearchProbe,
        exclude: frozenset[int],
        finger_top: int,
        face_top: int,
        demographic_top: int,
    ) -> ShardHits:
        """The best live entries (other than ``exclude``) by each searched finger, by
        face, and those whose demographics agree."""
        named: set[int] = set()
        fingers: dict[int, list[tuple[int, float]]] = {}
        for position, template in probe.fingers.items():
            gallery = self._galleries.get(position)
            if gallery is None or len(gallery) == 0 or len(template.cylinders) == 0:
                continue
            found = finger_search(template, gallery, top=len(gallery), params=self.search_params)
            hits: list[tuple[int, float]] = []
            for c in found:
                if c.label in self._infos and c.label not in exclude:
                    hits.append((c.label, c.score))
                    if len(hits) == finger_top:
                        break
            fingers[position] = hits
            named.update(e for e, _ in hits)
        faces: list[tuple[int, float]] = []
        matrix = self._faces.get(probe.face_model or "")
        if probe.face is not None and face_top > 0 and matrix is not None:
            faces = matrix.top(probe.face, face_top, exclude)
            named.update(e for e, _ in faces)
        demographic: list[int] = []
        key = probe.demographics.index_key
        if key is not None and demographic_top > 0:
            same = sorted(self._by_demographics.get(key, ()))
            demographic = [
                e
                for e in same
                if e not in exclude and agree(self._infos[e].demographics, probe.demographics)
            ][:demographic_top]
            named.update(demographic)
        return ShardHits(
            fingers, faces, demographic, {e: self._infos[e] for e in named}, self.applied_seq
        )

    @property
    def nbytes(self) -> int:
        """Memory of the packed templates and face vectors in use (not Python objects)."""
        fingers = sum(g.nbytes for g in self._galleries.values())
        return fingers + sum(f.nbytes for f in self._faces.values())
