"""The runtimes behind the seam (edgeservers/runtimes/): quantization, what each reads of a model, the pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeservers.core.modelfiles import find_model
from edgeservers.runtimes.base import Quantization
from tests.support.paths import MOBILENET_V1, MODELS, tflite_file


def test_quantization_round_trip_clips_to_the_dtype():
    q = Quantization(scale=1 / 128, zero_point=128)
    values = q.quantize(np.array([-1.0, 0.0, 0.5, 2.0], np.float32), np.dtype(np.uint8))
    assert values.tolist() == [0, 128, 192, 255]
    np.testing.assert_allclose(q.dequantize(values), [-1.0, 0.0, 0.5, 127 / 128])


@pytest.mark.parametrize("model_dir", ["mobilenet_v2_quant", "mobilenet_v1_025_quant", "deeplabv3"])
def test_openvino_reads_the_same_quantization_as_tflite(model_dir):
    from edgeservers.runtimes.openvino import OpenVINOOptions, OpenVINORuntime
    from edgeservers.runtimes.tflite import TFLiteOptions, TFLiteRuntime

    model = tflite_file(MODELS / model_dir)
    openvino = OpenVINORuntime.inspect(model, OpenVINOOptions(num_threads=1, pool_size=1))
    assert openvino == TFLiteRuntime.inspect(model, TFLiteOptions(num_threads=1, pool_size=1))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", None])
def test_openvino_reads_the_output_layout_the_model_carries(tmp_path, layout):
    import openvino as ov
    import openvino.opset13 as ops

    from edgeservers.runtimes.openvino import OpenVINOOptions, OpenVINORuntime

    image = ops.parameter([1, 3, 8, 8], np.float32, name="image")
    result = ops.result(ops.sigmoid(image))
    if layout:
        result.set_layout(ov.Layout(layout))
    ov.save_model(ov.Model([result], [image], "m"), str(tmp_path / "model.xml"))
    _, (output,) = OpenVINORuntime.inspect(tmp_path / "model.xml", OpenVINOOptions(1, 1))
    assert output.layout == layout


def test_openvino_compiles_the_model_its_inspection_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a .tflite costs OpenVINO as much as compiling it: the pool is compiled from the model that
    `inspect` read, once (kept only for the next constructor), unless `release_inspected` dropped it."""
    import openvino as ov
    import openvino.opset13 as ops

    from edgeservers.runtimes.base import ModelSignature
    from edgeservers.runtimes.openvino import OpenVINOOptions, OpenVINORuntime

    image = ops.parameter([1, 4], np.float32, name="x")
    ov.save_model(ov.Model([ops.result(ops.sigmoid(image))], [image], "m"), str(tmp_path / "model.xml"))
    reads: list[str] = []
    read_model = ov.Core.read_model

    def counted(core: ov.Core, path: str) -> ov.Model:
        reads.append(path)
        return read_model(core, path)

    monkeypatch.setattr(ov.Core, "read_model", counted)

    model, options = tmp_path / "model.xml", OpenVINOOptions(num_threads=1, pool_size=1)
    inputs, outputs = OpenVINORuntime.inspect(model, options)
    runtime = OpenVINORuntime(model, options, ModelSignature(tuple(inputs), tuple(outputs)), 1)
    (out,) = runtime.infer({"x": np.zeros((1, 4), np.float32)}).values()
    np.testing.assert_allclose(out, 0.5)
    assert len(reads) == 1
    OpenVINORuntime(model, options, ModelSignature((), ()), 1)  # nothing kept twice
    assert len(reads) == 2
    OpenVINORuntime.inspect(model, options)
    OpenVINORuntime.release_inspected()
    OpenVINORuntime(model, options, ModelSignature((), ()), 1)
    assert len(reads) == 4


@pytest.mark.parametrize(
    "cpus, pool_size, num_threads, expected",
    [
        (2, 1, 2, (2,)),  # the chart's one REST thread: one slot with both cores
        (2, 2, 2, (2, 1)),  # GUNICORN_THREADS >= 2 on 2 cores: a lone request gets both, two at once 3 threads
        (2, 2, 1, (1, 1)),
        (4, 4, 4, (4, 1, 1, 1)),
        (8, 2, 8, (8, 4)),
    ],
)
def test_tflite_slots_after_the_first_get_their_share_of_the_cpus(cpus, pool_size, num_threads, expected):
    from edgeservers.runtimes.tflite import TFLiteOptions, TFLiteRuntime

    assert TFLiteRuntime.slot_threads(TFLiteOptions(num_threads=num_threads, pool_size=pool_size), cpus) == expected


def test_a_request_takes_the_first_free_slot():
    """So one request alone always runs on the slot with the most threads."""
    from edgeservers.runtimes.base import ModelSignature
    from edgeservers.runtimes.tflite import TFLiteOptions, TFLiteRuntime

    model = find_model(MOBILENET_V1, (".tflite",))
    inputs, outputs = TFLiteRuntime.inspect(model, TFLiteOptions(num_threads=1, pool_size=1))
    runtime = TFLiteRuntime(
        model, TFLiteOptions(num_threads=2, pool_size=2), ModelSignature(tuple(inputs), tuple(outputs)), 2
    )
    zeros = {inputs[0].name: np.zeros(inputs[0].shape, inputs[0].dtype)}
    for _ in range(3):
        runtime.infer(zeros)
        rank, slot = runtime._slots.get()  # the slot the next request would take
        assert rank == 0
        runtime._slots.put((rank, slot))
