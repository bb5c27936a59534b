"""Audit throughput and peak memory: the shared set, and a 10x set of re-encoded copies.

    .venv/bin/python -m benchmarks.bench_audit [DATA_ROOT] [WORKDIR]

Each audit runs in a fresh subprocess (compute + threshold, i.e. ``run_audit``), which reports its
wall time, its own peak RSS and the largest peak RSS of its pool workers (getrusage). Memory is
flat in image count when the 10x row's peaks stay near the 1x row's.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.context import Context
from benchmarks.report import Row, na, verdict

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from skyclass.data.audit import AuditConfig, run_audit
t = time.perf_counter()
r = run_audit(AuditConfig(Path(sys.argv[1]), workers=int(sys.argv[2])))
dt = time.perf_counter() - t
print(json.dumps({
    "files": len(r.files), "seconds": dt,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a big benchmark
    # process would report its parent's peak.
    "rss_self_mb": next(int(l.split()[1]) for l in open("/proc/self/status")
                        if l.startswith("VmHWM:")) / 1024,
    "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "duplicate_groups": len(r.duplicate_groups),
}))
"""


def _reencode(job: tuple[Path, Path, int]) -> None:
    from PIL import Image

    src, dst, copies = job
    try:
        with Image.open(src) as img:
            img.draft("RGB", (800, 800))
            rgb = img.convert("RGB")
    except Exception:
        return
    for k in range(copies):
        out = dst.with_name(f"{dst.stem}_q{k}.jpg")
        if out.exists():
            continue
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=95 - 5 * k)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, out)


def make_scaled_set(data_root: Path, target: Path, copies: int = 10) -> Path:
    """``copies`` re-encodings (JPEG quality 95, 90, ...; long side <= 800 px) of every image."""
    jobs = []
    for cls in sorted(p for p in data_root.iterdir() if p.is_dir()):
        (target / cls.name).mkdir(parents=True, exist_ok=True)
        jobs += [(f, target / cls.name / f.name, copies) for f in sorted(cls.iterdir())]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_reencode, jobs, chunksize=16))
    return target


def audit_in_subprocess(root: Path, workers: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(data_root: Path, workdir: Path, workers: int = 0) -> list[dict]:
    """Rows: set, files, seconds, images/s, peak RSS (main process and largest worker)."""
    workers = workers or os.cpu_count() or 1
    t = time.perf_counter()
    big = make_scaled_set(data_root, workdir / "flying-objects-x10")
    made = time.perf_counter() - t
    rows = []
    for name, root in (("shared set", data_root), ("10x re-encoded", big)):
        m = audit_in_subprocess(root, workers)
        rows.append(
            {
                "set": name,
                "files": m["files"],
                "workers": workers,
                "seconds": round(m["seconds"], 1),
                "images_per_s": round(m["files"] / m["seconds"], 1),
                "peak_rss_main_mb": round(m["rss_self_mb"], 1),
                "peak_rss_worker_mb": round(m["rss_worker_mb"], 1),
                "duplicate_groups": m["duplicate_groups"],
            }
        )
    rows[-1]["note"] = f"set generated in {made:.0f} s"
    return rows


def markdown(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "note"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def rows(ctx: Context) -> list[Row]:
    """The audit on the shared set and on a 10x re-encoded set: images/s and flat memory."""
    opt, raw = ctx.opt, ctx.raw

    section = "Audit (benchmarks/bench_audit.py)"
    if opt.quick:
        return [Row(section, "audit images/s and peak RSS", na("skipped in --quick"))]
    (opt.work / "audit").mkdir(parents=True, exist_ok=True)
    results = run(opt.data_root, opt.work / "audit")
    raw["audit"] = results
    rows = []
    for r in results:
        name = str(r.get("set") or r.get("name") or "audit")
        ips = r.get("images_per_s")
        if isinstance(ips, int | float) and "peak_rss_main_mb" in r:
            value = (
                f"{ips:.0f} images/s ({r.get('files')} files, {r.get('seconds')} s, "
                f"{r.get('workers')} workers); peak RSS main {r['peak_rss_main_mb']:.0f} MB, "
                f"largest worker {r.get('peak_rss_worker_mb', 0):.0f} MB"
            )
        else:
            value = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("set", "name"))
        first = not rows
        ok = isinstance(ips, int | float) and ips >= 100
        flat = ""
        if not first and "peak_rss_main_mb" in r and "peak_rss_main_mb" in results[0]:
            base = results[0]
            grew = max(
                r["peak_rss_main_mb"] / max(base["peak_rss_main_mb"], 1e-9),
                r.get("peak_rss_worker_mb", 0) / max(base.get("peak_rss_worker_mb", 0), 1e-9),
            )
            flat = verdict(grew < 1.5, f"{grew:.1f}x the shared set's peak")
        rows.append(
            Row(
                section,
                f"{name}: images/s, peak RSS" + (f" ({r['note']})" if r.get("note") else ""),
                value,
                "",
                "",
                ">= 100 images/s" if first else "memory flat vs the shared set",
                verdict(ok, f"{ips:.0f} images/s")
                if first and isinstance(ips, int | float)
                else flat,
            )
        )
    return rows


if __name__ == "__main__":
    repo = Path(__file__).resolve().parents[1]
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else repo.parent / "shared/data/flying-objects"
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else repo / "benchmarks" / "work" / "audit"
    result = run(data, work)
    print(markdown(result))
    for r in result:
        if "note" in r:
            print(f"\n{r['set']}: {r['note']}; {os.cpu_count()} CPU cores")
