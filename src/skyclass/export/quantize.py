"""int8 by ONNX Runtime static quantization: QDQ, per-channel weights, calibrated on real images.

The calibration images are preprocessed by the serving code, so the activation ranges are those the
served model sees. The output LogSoftmax stays in float.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Operators left in float: the output's (log-)softmax needs its dynamic range.
KEEP_FLOAT = ("LogSoftmax", "Softmax")
#: The first convolutions (MobileNetV2: the stem and the first inverted-residual block) stay in
#: float: they see the raw normalised pixels, whose range int8 covers worst, and their error
#: carries through every later layer. Measured on the flagship at 288 px (235 test photos):
#: int8 vs fp32 top-1 agreement 98.30% with them quantized, 99.15% without, for +1 KB.
FLOAT_CONVS = 3
#: The last Conv/Gemm nodes kept in float (0: all quantized); see scripts/measure_int8.py.
FLOAT_TAIL = 0


@contextlib.contextmanager
def _temp_files_in(folder: Path) -> Iterator[None]:
    """Make ``tempfile`` put its files in ``folder`` for the duration.

    ONNX Runtime's quantizer writes its augmented calibration model (as big as the fp32 model)
    into a ``tempfile.TemporaryDirectory`` under the system temp dir, which a killed run never
    removes. Inside the export's own temp folder it goes with the folder: cleaned on failure, and
    by the next export after a SIGKILL (``skyclass.outputs.remove_stale_temp_dirs``).
    """
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    *,
    batch_size: int = 16,
    method: str = "minmax",
    float_convs: int = FLOAT_CONVS,
    float_tail: int = FLOAT_TAIL,
) -> None:
    """Write a QDQ int8 model of ``fp32_path`` to ``out_path``, calibrated on ``calibration``.

    ``calibration``: (N,3,H,W) float32, the model's real inputs. ``quant_pre_process`` (shape
    inference and graph optimisation) runs first, as ONNX Runtime recommends. The first
    ``float_convs`` Conv nodes and the last ``float_tail`` Conv/Gemm nodes, in graph order, and the
    softmax stay in float.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }

    class Reader(CalibrationDataReader):
        def __init__(self, data: np.ndarray, input_name: str) -> None:
            self._batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
            self._input_name = input_name
            self._next = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._next >= len(self._batches):
                return None
            self._next += 1
            return {self._input_name: self._batches[self._next - 1]}

        def rewind(self) -> None:
            self._next = 0

    model = onnx.load(str(fp32_path))
    input_name = model.graph.input[0].name
    with (
        tempfile.TemporaryDirectory(prefix="quant-", dir=out_path.parent) as tmp,
        _temp_files_in(Path(tmp)),
    ):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        pre_model = onnx.load(str(pre))
        keep_float = [n.name for n in pre_model.graph.node if n.op_type in KEEP_FLOAT]
        convs = [n.name for n in pre_model.graph.node if n.op_type == "Conv"]
        keep_float += convs[:float_convs]
        if float_tail:
            layers = [n.name for n in pre_model.graph.node if n.op_type in ("Conv", "Gemm")]
            keep_float += layers[-float_tail:]
        quantize_static(
            str(pre),
            str(out_path),
            Reader(calibration.astype(np.float32), input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    log.info("int8 model written (%d calibration images, %s)", len(calibration), method)
