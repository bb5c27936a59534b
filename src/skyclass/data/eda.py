"""EDA plots of an audit (matplotlib, Agg): each function returns PNG bytes."""

from __future__ import annotations

from collections.abc import Callable

from skyclass.data.audit import AuditReport
from skyclass.reporting.figures import draw_png, figure_png, pyplot


def images_per_class(report: AuditReport) -> bytes:
    """Bars: files per class, split into kept and left out."""
    classes = list(report.classes)
    use = [sum(r.label == c and r.status == "use" for r in report.clean) for c in classes]
    out = [sum(r.label == c and r.status != "use" for r in report.clean) for c in classes]

    def draw(fig, ax):
        ax.bar(classes, use, label="use", color="#4C72B0")
        ax.bar(classes, out, bottom=use, label="left out", color="#DD8452")
        for i, (u, o) in enumerate(zip(use, out, strict=True)):
            ax.text(i, u + o, str(u + o), ha="center", va="bottom")
        ax.set_ylabel("images")
        ax.set_title("Images per class")
        ax.legend()
        ax.tick_params(axis="x", labelrotation=15)

    return draw_png(draw)


def file_size_per_class(report: AuditReport) -> bytes:
    """Box plot of file size (KiB, log scale) per class."""
    classes = list(report.classes)
    data = [
        [s.size / 1024 for s in report.files if s.label == c and s.size] or [0] for c in classes
    ]

    def draw(fig, ax):
        ax.boxplot(data, tick_labels=classes, showfliers=True)
        ax.set_yscale("log")
        ax.set_ylabel("file size (KiB, log)")
        ax.set_title("File size per class")
        ax.tick_params(axis="x", labelrotation=15)

    return draw_png(draw)


def height_width_per_class(report: AuditReport) -> bytes:
    """Scatter of width vs height per class (decoded files)."""

    def draw(fig, ax):
        for c in report.classes:
            pts = [(s.width, s.height) for s in report.files if s.label == c and s.decoded]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=10, alpha=0.5, label=c)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width (px)")
        ax.set_ylabel("height (px)")
        ax.set_title("Height and width per class")
        ax.legend(fontsize=8)

    return draw_png(draw)


def kmeans_clusters(report: AuditReport) -> bytes:
    """One panel per class: file size vs pixels, coloured by cluster, outliers circled."""
    info = {s.path: s for s in report.files}
    n = max(1, len(report.kmeans))
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), dpi=90, squeeze=False)
    try:
        for ax, km in zip(axes.flat, report.kmeans, strict=False):
            xs = [(info[p].width or 0) * (info[p].height or 0) / 1e6 for p in km.paths]
            ys = [info[p].size / 1024 for p in km.paths]
            ax.scatter(xs, ys, c=list(km.clusters), cmap="tab10", s=10, alpha=0.7)
            cx = [c[1] * c[2] / 1e6 for c in km.centres]
            cy = [c[0] / 1024 for c in km.centres]
            ax.scatter(cx, cy, marker="X", s=120, c="black", label="centres")
            out = set(km.outliers)
            ox = [x for x, p in zip(xs, km.paths, strict=True) if p in out]
            oy = [y for y, p in zip(ys, km.paths, strict=True) if p in out]
            ax.scatter(ox, oy, s=80, facecolors="none", edgecolors="red", label="outliers")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{km.label}: k={km.k}, {len(km.outliers)} outliers", fontsize=10)
            ax.set_xlabel("megapixels")
            ax.set_ylabel("file size (KiB)")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(report.kmeans) :]:
            ax.axis("off")
        fig.suptitle("K-Means over (file size, height, width), standardised per class")
    except BaseException:
        plt.close(fig)
        raise
    return figure_png(fig, dpi=90)


PLOTS: dict[str, Callable[[AuditReport], bytes]] = {
    "images_per_class.png": images_per_class,
    "file_size_per_class.png": file_size_per_class,
    "height_width_per_class.png": height_width_per_class,
    "kmeans_clusters.png": kmeans_clusters,
}
