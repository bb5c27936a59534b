"""Measure int8 variants of an exported fp32 model against it, on real photos (issue 20).

    python scripts/measure_int8.py models/flying-objects --out int8-variants.json

Calibrates each variant (calibration images, float layers at both ends, calibration method) on the
training manifest through the serving preprocess, and reports its top-1 agreement with the fp32
file (with the 95% Wilson lower bound that ``skyclass export`` judges), accuracy and size, on the
test split, its EVA4 (``ifo_``) and other-source parts, and on out-of-scope photos from sources
the model never saw. Needs the train extra (onnx, onnxruntime quantization).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from skyclass.core.bundle import load_bundle
from skyclass.export.images import load_images, read_manifest, sample_rows, scan_folder
from skyclass.export.parity import onnx_probabilities, wilson_interval
from skyclass.export.quantize import quantize_int8

#: (name, calibration images, float convs at the start, float Conv/Gemm at the end, method).
#: Not here: "percentile" calibration of 300 images at 288 px grew to 19 GB RSS and was killed by
#: the OOM killer on a 23 GB machine (ONNX Runtime keeps every activation's histogram samples).
VARIANTS = (
    ("shipped rule: 300 calib, 3 float convs", 300, 3, 0, "minmax"),
    ("1000 calib", 1000, 3, 0, "minmax"),
    ("300 calib + float head (last conv + linear)", 300, 3, 2, "minmax"),
    ("1000 calib + float head", 1000, 3, 2, "minmax"),
    ("300 calib + float linear", 300, 3, 1, "minmax"),
    ("1000 calib + float linear", 1000, 3, 1, "minmax"),
)


def _parts(rows: list, probs: np.ndarray) -> dict[str, np.ndarray]:
    ifo = np.array([r.path.name.startswith("ifo_") for r in rows])
    return {"test": np.ones(len(rows), bool), "test EVA4 (ifo_)": ifo, "test other sources": ~ifo}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--train", type=Path, default=Path("docs/data/splits-reviewed/train.csv"))
    ap.add_argument("--test", type=Path, default=Path("docs/data/splits-reviewed/test.csv"))
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data/flying-objects"))
    ap.add_argument("--out-of-scope", type=Path, default=Path("../shared/data/out-of-scope"))
    ap.add_argument("--oos-size", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default="", help="Measure only variants whose name contains this.")
    args = ap.parse_args()

    bundle = load_bundle(args.model)
    fp32 = args.model / bundle.files["fp32"].path
    labels = {c: i for i, c in enumerate(bundle.labels)}
    train = read_manifest(args.train, args.data_root)
    test = load_images(read_manifest(args.test, args.data_root), bundle.preprocess)
    oos = load_images(
        sample_rows(scan_folder(args.out_of_scope), args.oos_size, 0), bundle.preprocess
    )
    truth = np.array([labels[r.label] for r in test.rows])
    p32 = {
        "test": onnx_probabilities(fp32, test.tensors),
        "oos": onnx_probabilities(fp32, oos.tensors),
    }
    variants = [v for v in VARIANTS if args.only in v[0]]
    calib = {
        n: load_images(sample_rows(train, n, 0), bundle.preprocess).tensors
        for n in {v[1] for v in variants}
    }
    results = []
    for name, n_calib, head, tail, method in variants:
        with tempfile.TemporaryDirectory(prefix="skyclass-int8-") as tmp:
            path = Path(tmp) / "model.int8.onnx"
            t = time.perf_counter()
            quantize_int8(
                fp32, path, calib[n_calib], method=method, float_convs=head, float_tail=tail
            )
            seconds = time.perf_counter() - t
            size = path.stat().st_size
            p8 = {
                "test": onnx_probabilities(path, test.tensors),
                "oos": onnx_probabilities(path, oos.tensors),
            }
        row = {
            "variant": name,
            "bytes": size,
            "size_ratio": fp32.stat().st_size / size,
            "seconds": seconds,
        }
        top32, top8 = p32["test"].argmax(1), p8["test"].argmax(1)
        for part, mask in _parts(list(test.rows), p32["test"]).items():
            same = int((top32[mask] == top8[mask]).sum())
            row[part] = {
                "n": int(mask.sum()),
                "agreement": same / int(mask.sum()),
                "lower95": wilson_interval(same, int(mask.sum()))[0],
                "accuracy_fp32": float((top32[mask] == truth[mask]).mean()),
                "accuracy_int8": float((top8[mask] == truth[mask]).mean()),
            }
        same = int((p32["oos"].argmax(1) == p8["oos"].argmax(1)).sum())
        row["out-of-scope (other sources)"] = {
            "n": len(oos.rows),
            "agreement": same / len(oos.rows),
            "lower95": wilson_interval(same, len(oos.rows))[0],
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
