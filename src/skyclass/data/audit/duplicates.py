"""Exact (sha256) and near (perceptual hash + colour thumbnail) duplicates, across classes too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from skyclass.data.audit.schema import (
    ERROR,
    WARNING,
    AuditConfig,
    DuplicateGroup,
    DuplicateLink,
    FileScores,
    Finding,
)
from skyclass.data.union_find import UnionFind


def _hash_words(hexes: Sequence[str]) -> np.ndarray:
    """Hex hashes -> (n, words) uint64 for popcount distances."""
    raw = [bytes.fromhex(h) for h in hexes]
    width = max((len(r) for r in raw), default=8)
    pad = (-width) % 8
    buf = b"".join(r.rjust(width + pad, b"\0") for r in raw)
    words = (width + pad) // 8
    return np.frombuffer(buf, dtype=">u8").astype(np.uint64).reshape(len(raw), words)


def near_pairs(
    hashes: Sequence[str], mirrors: Sequence[str] | None, threshold: int, block: int = 64
) -> Iterator[tuple[int, int, int, bool]]:
    """(i, j, distance, mirrored) for i < j within ``threshold`` bits; O(block * n) memory."""
    h = _hash_words(hashes)
    m = _hash_words(mirrors) if mirrors is not None else None
    n = len(h)
    for start in range(0, n, block):
        stop = min(n, start + block)
        d = np.bitwise_count(h[start:stop, None, :] ^ h[None, :, :]).sum(-1, dtype=np.int32)
        mirrored = np.zeros_like(d, dtype=bool)
        if m is not None:
            dm = np.bitwise_count(h[start:stop, None, :] ^ m[None, :, :]).sum(-1, dtype=np.int32)
            mirrored = dm < d
            d = np.minimum(d, dm)
        rows, cols = np.nonzero(d <= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c > i:
                yield i, c, int(d[r, c]), bool(mirrored[r, c])


def thumb_distance(a: str, b: str, mirrored: bool) -> float:
    """Mean absolute difference (0-255) of two 8x8 RGB thumbnails, ``b`` mirrored if asked."""
    ta = np.frombuffer(bytes.fromhex(a), dtype=np.uint8).reshape(8, 8, 3).astype(np.float32)
    tb = np.frombuffer(bytes.fromhex(b), dtype=np.uint8).reshape(8, 8, 3).astype(np.float32)
    if mirrored:
        tb = tb[:, ::-1]
    return float(np.abs(ta - tb).mean())


def duplicate_groups(scores: Sequence[FileScores], config: AuditConfig) -> list[DuplicateGroup]:
    """Groups of exact (same sha256) and near (pHash) duplicates, across classes too.

    Two files are near duplicates when their pHashes (or one's and the other's mirrored pHash) are
    within ``near_threshold`` bits **and** their 8x8 colour thumbnails differ by at most
    ``colour_threshold`` on average: on the shared set pHash alone links unrelated photos of a
    small dark object on a flat sky (their hashes are noise), while real copies, mirrored or
    recompressed, differ by under 4 levels. Groups are connected components of these links; a
    group is ``exact`` when all members are byte-identical. Its id is its first member's path.
    """
    n = len(scores)
    uf = UnionFind(n)
    links: list[tuple[int, int, DuplicateLink]] = []
    by_sha: dict[str, int] = {}
    for i, s in enumerate(scores):
        if s.sha256 is None or s.size == 0:
            continue
        j = by_sha.setdefault(s.sha256, i)
        if j != i and uf.union(j, i):
            links.append((j, i, DuplicateLink(scores[j].path, s.path, 0, False, True)))
    hashes = {i: s.phash for i, s in enumerate(scores) if s.phash}
    hashed = list(hashes)
    mirrors = [scores[i].phash_mirror or hashes[i] for i in hashed] if config.mirror else None
    for a, b, dist, mirrored in near_pairs(list(hashes.values()), mirrors, config.near_threshold):
        i, j = hashed[a], hashed[b]
        ta, tb = scores[i].thumb, scores[j].thumb
        if ta and tb and thumb_distance(ta, tb, mirrored) > config.colour_threshold:
            continue
        if uf.union(i, j):
            exact = scores[i].sha256 == scores[j].sha256
            links.append(
                (i, j, DuplicateLink(scores[i].path, scores[j].path, dist, mirrored, exact))
            )
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(uf.find(i), []).append(i)
    group_links: dict[int, list[DuplicateLink]] = {}
    for i, _j, link in links:
        group_links.setdefault(uf.find(i), []).append(link)
    out = []
    for root, idx in sorted(members.items()):
        if len(idx) < 2:
            continue
        shas = {scores[i].sha256 for i in idx}
        out.append(
            DuplicateGroup(
                id=scores[idx[0]].path,
                kind="exact" if len(shas) == 1 else "near",
                members=tuple(scores[i].path for i in idx),
                labels=tuple(scores[i].label for i in idx),
                links=tuple(group_links.get(root, [])),
            )
        )
    return out


def duplicate_findings(groups: Sequence[DuplicateGroup], config: AuditConfig) -> list[Finding]:
    """Exact copies after the first are errors; near copies are warnings; cross-class: conflict."""
    out: list[Finding] = []
    for g in groups:
        label_of = dict(zip(g.members, g.labels, strict=True))
        ev_base = {"group": g.id, "members": list(g.members), "labels": sorted(set(g.labels))}
        if g.cross_class:
            sev = ERROR if config.drop_label_conflicts else WARNING
            classes = ", ".join(sorted(set(g.labels)))
            for p in g.members:
                out.append(
                    Finding(
                        p,
                        label_of[p],
                        "label_conflict",
                        sev,
                        f"{g.kind} duplicate filed under {classes}",
                        ev_base,
                    )
                )
            continue
        # within one class: keep the first copy of each byte-identical set
        first_by_sha: dict[str, str] = {}
        sha_of = {lk.b: lk for lk in g.links}
        for p in g.members:
            link = sha_of.get(p)
            if link is not None and link.exact:
                kept = first_by_sha.setdefault(link.a, link.a)
                msg = f"byte-identical to {kept}"
                ev = {**ev_base, "copy_of": kept}
                out.append(Finding(p, label_of[p], "exact_duplicate", ERROR, msg, ev))
        if g.kind == "near":
            for lk in g.links:
                if lk.exact:
                    continue
                how = "mirrored " if lk.mirrored else ""
                for p, q in ((lk.a, lk.b), (lk.b, lk.a)):
                    out.append(
                        Finding(
                            p,
                            label_of[p],
                            "near_duplicate",
                            WARNING,
                            f"{how}near copy of {q} (pHash distance {lk.distance})",
                            {
                                **ev_base,
                                "other": q,
                                "distance": lk.distance,
                                "mirrored": lk.mirrored,
                            },
                        )
                    )
    return out
