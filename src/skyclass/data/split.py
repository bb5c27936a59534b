"""Stratified, group-aware train/val/test split of a manifest.

A *leakage group* is a set of files that must land in one split: the manifest's ``group`` column
(the audit puts exact and near duplicates, mirrored copies included, under one group id) and, when
a metadata file is given, a metadata group (for the shared set, ``SOURCES.tsv``'s
``source_repo``). Metadata groups are assigned whole; then a duplicate group whose copies came
from different metadata groups (one photo in two sources) is put on one side, the side most of its
copies are on (ties: the held-out side). So no photo is on both sides, and source purity gives way
only for a file whose near copy belongs to another source. Merging instead would chain whole
sources together through single shared photos (on the shared set every small_quadcopters source
would become one group and the class would have no test photos).

Metadata groups are keyed by **label + value**, not by value alone. A source such as one course
repository contributes photos to all four classes; keying by the bare source would force all of
them into one split and leave some class without test photos from any source the model has not
seen. Keyed per class, each class holds out whole sources of its own: a test photo of class C
comes from a source whose class-C photos the model never saw, so it cannot score by learning
"this source's look means class C". (The same source may still appear in other classes' train
split; that teaches the look is *not* a class cue.)

Components are assigned greedily, big ones (a whole source) first, then the rest in seeded random
order, each to the split whose per-class targets it fills best, so the split is stratified by class
as far as the group sizes allow, and it is reproducible by seed.

A label review (``--review``, the sheet ``skyclass label-issues`` writes, filled in by a person) is
applied after the assignment: excluded files leave their split, relabeled ones change label where
they are, and every other file stays exactly where the unreviewed split put it.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyclass.data.split_empty import PARTS, empty_message, empty_parts
from skyclass.data.split_inputs import (
    DECISIONS,
    SplitInputError,
    read_groups,
    read_manifest,
    read_review,
)
from skyclass.data.union_find import UnionFind
from skyclass.reporting.cells import spreadsheet_safe

log = logging.getLogger(__name__)

SPLITS = PARTS


@dataclass(frozen=True)
class SplitConfig:
    manifest: Path
    val: float = 0.10
    test: float = 0.15
    seed: int = 0
    groups: Path | None = None  # CSV/TSV with a path (or class + file) column and group_column
    group_column: str = "source_repo"
    review: Path | None = None  # a filled-in label review sheet (skyclass label-issues)
    #: A class with no image in a part (train, or val/test when their fraction is > 0) is an error
    #: unless this is set; then it is a warning (the counts are in the summary either way).
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise ValueError(f"val={self.val} and test={self.test} must be in [0, 1), sum < 1")

    def fractions(self) -> dict[str, float]:
        return {"train": 1.0 - self.val - self.test, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class Row:
    path: str
    label: str
    group: str  # the leakage component id after merging
    source: str | None = None  # the metadata group value, when a groups file is given


@dataclass(frozen=True)
class SplitResult:
    config: SplitConfig
    splits: dict[str, tuple[Row, ...]]
    dropped: int  # manifest rows with status other than "use"
    missing_groups: int  # rows without an entry in the groups file (kept as their own group)
    moved_for_duplicates: int = 0  # files placed with their near copy outside their own group
    #: decision -> paths, from the review sheet (applied after the assignment)
    reviewed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            s: dict(sorted(Counter(r.label for r in rows).items()))
            for s, rows in self.splits.items()
        }

    def empty_parts(self) -> dict[str, list[str]]:
        """class -> the parts (with a fraction > 0) where it has no image."""
        return empty_parts(self.counts(), self.config.fractions())

    def empty_message(self) -> str:
        """One line naming each class left empty somewhere, with its counts per part."""
        return empty_message(self.counts(), self.empty_parts())

    def summary(self) -> dict[str, Any]:
        labels = sorted({r.label for rows in self.splits.values() for r in rows})
        per_split: dict[str, Any] = {}
        for s, rows in self.splits.items():
            per_split[s] = {
                "n": len(rows),
                "per_class": {lb: sum(r.label == lb for r in rows) for lb in labels},
                "groups": len({r.group for r in rows}),
            }
        sources: dict[str, dict[str, int]] = {}
        for s, rows in self.splits.items():
            for r in rows:
                if r.source is not None:
                    key = f"{r.label} | {r.source}"
                    sources.setdefault(key, {k: 0 for k in SPLITS})[s] += 1
        multi: dict[str, dict[str, int]] = {}
        for s, rows in self.splits.items():
            sizes = Counter(r.group for r in rows)
            for g, n in sizes.items():
                if n > 1:
                    multi.setdefault(g, {})[s] = n
        cfg = self.config
        return {
            "manifest": str(cfg.manifest),
            "fractions": cfg.fractions(),
            "seed": cfg.seed,
            "groups_file": None if cfg.groups is None else str(cfg.groups),
            "group_column": cfg.group_column if cfg.groups else None,
            "dropped_excluded_rows": self.dropped,
            "rows_without_metadata_group": self.missing_groups,
            "moved_for_duplicates": self.moved_for_duplicates,
            "review_file": None if cfg.review is None else str(cfg.review),
            "reviewed": {d: list(p) for d, p in self.reviewed.items()},
            "labels": labels,
            "splits": per_split,
            "per_source": dict(sorted(sources.items())),
            "groups_with_several_files": dict(sorted(multi.items())),
            "empty_parts": self.empty_parts(),
        }


def _components(keys: Sequence[Sequence[str]]) -> list[int]:
    """Component index per row, rows linked when they share any key."""
    uf = UnionFind(len(keys))
    first: dict[str, int] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            uf.union(i, first.setdefault(k, i))
    return [uf.find(i) for i in range(len(keys))]


def assign(
    members: dict[int, list[int]],
    labels: Sequence[str],
    fractions: dict[str, float],
    seed: int,
) -> dict[int, str]:
    """Component -> split: largest first, each to the split whose class targets it fills best."""
    totals = Counter(labels)
    target = {s: {lb: f * n for lb, n in totals.items()} for s, f in fractions.items()}
    current: dict[str, Counter[str]] = {s: Counter() for s in fractions}
    order = sorted(members)
    random.Random(seed).shuffle(order)
    # Big components (a whole source) first, while every split still has room; the rest in
    # seeded random order so that duplicate groups spread over all splits like single files.
    big = max(10, int(0.01 * len(labels)))
    order.sort(key=lambda c: -len(members[c]) if len(members[c]) >= big else 0)
    out: dict[int, str] = {}
    for c in order:
        need = Counter(labels[i] for i in members[c])
        best, best_score = None, None
        for s in fractions:
            if fractions[s] <= 0:
                continue
            # fit: how much of this component fills an open deficit, minus overshoot, each class
            # weighted by 1/its size so small classes count as much as big ones; ties go to the
            # split with the largest share of its targets still open (proportional filling)
            fit, room = 0.0, 0.0
            for lb, n in need.items():
                deficit = max(target[s][lb] - current[s][lb], 0.0)
                fit += (min(n, deficit) - max(0.0, n - deficit)) / totals[lb]
                room += deficit / target[s][lb] if target[s][lb] else 0.0
            score = (round(fit, 9), room)
            if best_score is None or score > best_score:
                best, best_score = s, score
        assert best is not None
        out[c] = best
        current[best].update(need)
    return out


def _sources(config: SplitConfig, rows: Sequence[dict[str, str]]) -> tuple[dict[str, str], int]:
    """path -> metadata group value from the groups file, and how many rows it does not name."""
    if config.groups is None:
        return {}, 0
    meta = read_groups(config.groups, config.group_column)
    source_of = {r["path"]: meta[r["path"]] for r in rows if r["path"] in meta}
    missing = len(rows) - len(source_of)
    if missing:
        log.warning(
            "%d manifest rows have no entry in %s: each is its own group", missing, config.groups
        )
    return source_of, missing


def _settle_duplicates(dup: Sequence[str], where: list[str]) -> int:
    """Put every duplicate group on one side (its majority; on a tie the held-out side keeps it,
    train loses the copy); returns how many files moved."""
    by_dup: dict[str, list[int]] = {}
    for i, g in enumerate(dup):
        by_dup.setdefault(g, []).append(i)
    moved = 0
    for idx in by_dup.values():
        sides = Counter(where[i] for i in idx)
        if len(sides) > 1:
            side = max(sides, key=lambda s: (sides[s], SPLITS.index(s)))
            moved += sum(where[i] != side for i in idx)
            for i in idx:
                where[i] = side
    return moved


def make_split(config: SplitConfig) -> SplitResult:
    """Read the manifest (and groups file), merge groups, assign components. No I/O of outputs."""
    rows, dropped = read_manifest(config.manifest)
    source_of, missing = _sources(config, rows)
    dup = [r.get("group") or r["path"] for r in rows]
    if source_of:
        # Metadata groups decide; a duplicate group spanning metadata groups is then settled
        # below (merging would chain whole sources together through one shared photo).
        keys = [[f"m:{r['label']}|{source_of.get(r['path'], '#' + r['path'])}"] for r in rows]
    else:
        keys = [[f"g:{g}"] for g in dup]
    comp = _components(keys)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(comp):
        members.setdefault(c, []).append(i)
    labels = [r["label"] for r in rows]
    where_comp = assign(members, labels, config.fractions(), config.seed)
    where = [where_comp[comp[i]] for i in range(len(rows))]
    moved = _settle_duplicates(dup, where) if source_of else 0
    group_id = {
        i: f"{r['label']}|{source_of[r['path']]}" if r["path"] in source_of else dup[i]
        for i, r in enumerate(rows)
    }
    decisions = read_review(config.review, rows) if config.review is not None else {}
    splits: dict[str, list[Row]] = {s: [] for s in SPLITS}
    for i, r in enumerate(rows):
        decision, new_label = decisions.get(r["path"], ("keep", ""))
        if decision == "exclude":
            continue
        label = new_label if decision == "relabel" else r["label"]
        splits[where[i]].append(Row(r["path"], label, group_id[i], source_of.get(r["path"])))
    if moved:
        log.info("%d files moved to the side of their duplicates", moved)
    result = SplitResult(
        config=config,
        splits={s: tuple(sorted(v, key=lambda x: x.path)) for s, v in splits.items()},
        dropped=dropped,
        missing_groups=missing,
        moved_for_duplicates=moved,
        reviewed={
            d: tuple(sorted(p for p, (dd, _) in decisions.items() if dd == d)) for d in DECISIONS
        },
    )
    return _check_empty(result)


def _check_empty(result: SplitResult) -> SplitResult:
    """Refuse a split that leaves a class empty in a part (a warning with ``allow_empty``)."""
    if not result.empty_parts():
        return result
    message = result.empty_message()
    if not result.config.allow_empty:
        raise SplitInputError(
            f"empty class in a split: {message}; try another --seed, other --val/--test "
            "fractions or groups, or pass --allow-empty to write it anyway"
        )
    log.warning("empty class in a split (--allow-empty): %s", message)
    return result


def manifest_text(rows: Sequence[Row], with_source: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "group", *(["source"] if with_source else [])])
    for r in rows:
        cells = [r.path, r.label, r.group, *([r.source or ""] if with_source else [])]
        w.writerow([spreadsheet_safe(c) for c in cells])
    return buf.getvalue()


def write_split(result: SplitResult, out: Path, force: bool = False, prefixes=()) -> list[Path]:
    """train/val/test.csv, summary.json and, per prefix P, test-P.csv (test rows named P*)."""
    import json

    from skyclass.outputs import atomic_dir

    with_source = result.config.groups is not None
    with atomic_dir(out, force) as tmp:
        for s, rows in result.splits.items():
            (tmp / f"{s}.csv").write_text(manifest_text(rows, with_source), encoding="utf-8")
            for p in prefixes:
                sub = [r for r in rows if r.path.rsplit("/", 1)[-1].startswith(p)]
                if sub and s == "test":
                    name = f"test-{p.rstrip('_')}.csv"
                    (tmp / name).write_text(manifest_text(sub, with_source), encoding="utf-8")
        summary = result.summary()
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return sorted(Path(out).iterdir())
