"""K-Means outliers per class over (file size, height, width)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skyclass.data.audit.schema import WARNING, AuditConfig, FileScores, Finding, KMeansResult

KMEANS_FEATURES = ("file_size", "height", "width")


def kmeans_outliers(scores: Sequence[FileScores], config: AuditConfig) -> list[KMeansResult]:
    """Per class: K-Means on standardised (file size, height, width); far points are outliers.

    Features are z-scored within the class so bytes do not swamp pixels. k is fixed by
    ``config.kmeans_k`` or picked by the best silhouette score in ``kmeans_k_range``. A file is an
    outlier when its distance to its centre exceeds q3 + ``kmeans_iqr`` * IQR of the class's
    distances (a robust fence, so one huge file cannot hide the others).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    out = []
    labels = sorted({s.label for s in scores})
    for label in labels:
        rows = [s for s in scores if s.label == label and s.decoded]
        if len(rows) < 4:
            continue
        x = np.array([[s.size, s.height, s.width] for s in rows], dtype=np.float64)
        mean, std = x.mean(0), x.std(0)
        std[std == 0] = 1.0
        z = (x - mean) / std
        distinct = len(np.unique(z, axis=0))
        lo, hi = config.kmeans_k_range
        candidates = [config.kmeans_k] if config.kmeans_k else list(range(lo, hi + 1))
        candidates = [k for k in candidates if 1 <= k < distinct] or [1]
        best = None
        for k in candidates:
            km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(z)
            # silhouette is O(n^2) in memory: score a fixed-size sample of big classes
            sample = 2000 if len(z) > 2000 else None
            sil = (
                float(silhouette_score(z, km.labels_, sample_size=sample, random_state=0))
                if k > 1
                else None
            )
            if best is None or (sil is not None and (best[1] is None or sil > best[1])):
                best = (km, sil, k)
        assert best is not None
        km, sil, k = best
        dist = np.linalg.norm(z - km.cluster_centers_[km.labels_], axis=1)
        q1, q3 = np.percentile(dist, [25, 75])
        fence = float(q3 + config.kmeans_iqr * (q3 - q1))
        centres = km.cluster_centers_ * std + mean
        out.append(
            KMeansResult(
                label=label,
                k=k,
                silhouette=None if sil is None else round(sil, 4),
                features=KMEANS_FEATURES,
                centres=tuple(tuple(round(float(v), 1) for v in c) for c in centres),
                cluster_sizes=tuple(int(v) for v in np.bincount(km.labels_, minlength=k)),
                threshold=round(fence, 4),
                paths=tuple(s.path for s in rows),
                clusters=tuple(int(c) for c in km.labels_),
                distances=tuple(round(float(d), 4) for d in dist),
                outliers=tuple(s.path for s, d in zip(rows, dist, strict=True) if d > fence),
            )
        )
    return out


def kmeans_findings(results: Sequence[KMeansResult], scores: Sequence[FileScores]) -> list[Finding]:
    info = {s.path: s for s in scores}
    out = []
    for r in results:
        dist = dict(zip(r.paths, r.distances, strict=True))
        cluster = dict(zip(r.paths, r.clusters, strict=True))
        for p in r.outliers:
            s = info[p]
            c = cluster[p]
            out.append(
                Finding(
                    p,
                    r.label,
                    "kmeans_outlier",
                    WARNING,
                    f"{s.size:,} B, {s.width}x{s.height}: distance {dist[p]:.2f} to centre of "
                    f"cluster {c} (fence {r.threshold:.2f}, k={r.k})",
                    {
                        "k": r.k,
                        "cluster": c,
                        "distance": dist[p],
                        "threshold": r.threshold,
                        "centre": list(r.centres[c]),
                    },
                )
            )
    return out
