"""The small pure pieces, where a server round trip would hide which part broke."""

from __future__ import annotations

import numpy as np
import pytest
from seldon_core.proto.tensorflow.core.framework import tensor_pb2, types_pb2

from edgeservers.core.modelfiles import find_model
from edgeservers.core.postprocess import decode_boxes, non_max_suppression, ssd_anchors
from edgeservers.errors import ModelLoadError
from edgeservers.protocols.v1.codecs import tensor_from_tf, tensor_to_tf
from edgeservers.runtimes.base import Quantization
from edgeservers.settings import Settings

from conftest import MOBILENET_V1


def test_face_mask_anchor_layout_gives_5972_anchors_centred_on_their_cells():
    maps, sizes, ratios, _ = Settings(model_uri="x").anchor_layout
    anchors = ssd_anchors(maps, sizes, ratios)
    assert anchors.shape == (5972, 4)
    first = anchors[:4]  # cell (0, 0) of the 33x33 map: sizes 0.04, 0.056 at ratio 1, then 0.04 at 0.62 and 0.42
    centre = 0.5 / 33
    np.testing.assert_allclose((first[:, :2] + first[:, 2:]) / 2, centre, rtol=1e-6)
    widths = first[:, 2] - first[:, 0]
    np.testing.assert_allclose(widths, [0.04, 0.056, 0.04 * np.sqrt(0.62), 0.04 * np.sqrt(0.42)], rtol=1e-5)
    heights = first[:, 3] - first[:, 1]
    np.testing.assert_allclose(heights, [0.04, 0.056, 0.04 / np.sqrt(0.62), 0.04 / np.sqrt(0.42)], rtol=1e-5)


def test_zero_deltas_decode_to_the_anchor_itself():
    anchors = np.array([[0.1, 0.2, 0.3, 0.5]], np.float32)
    np.testing.assert_allclose(
        decode_boxes(anchors, np.zeros((1, 4), np.float32), (0.1, 0.1, 0.2, 0.2)), anchors, rtol=1e-6
    )


def test_nms_keeps_the_best_of_overlapping_boxes_and_distant_ones():
    boxes = np.array([[0, 0, 1, 1], [0.05, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert non_max_suppression(boxes, scores, iou_threshold=0.4, limit=10) == [1, 2]
    assert non_max_suppression(boxes, scores, iou_threshold=0.4, limit=1) == [1]


def test_quantization_round_trip_clips_to_the_dtype():
    q = Quantization(scale=1 / 128, zero_point=128)
    values = q.quantize(np.array([-1.0, 0.0, 0.5, 2.0], np.float32), np.dtype(np.uint8))
    assert values.tolist() == [0, 128, 192, 255]
    np.testing.assert_allclose(q.dequantize(values), [-1.0, 0.0, 0.5, 127 / 128])


def test_tftensor_value_lists_and_the_single_value_shorthand():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.5])
    for size in (2, 3):
        proto.tensor_shape.dim.add(size=size)
    np.testing.assert_array_equal(tensor_from_tf(proto), np.full((2, 3), 1.5, np.float32))
    array = np.arange(6, dtype=np.int8).reshape(1, 6)
    np.testing.assert_array_equal(tensor_from_tf(tensor_to_tf(array)), array)


@pytest.mark.parametrize(
    "parameters, words",
    [
        ({"model_uri": "m", "top_k": "five"}, "top_k='five': expected int"),
        ({"model_uri": "m", "top_k": 0}, "top_k=0: expected a whole number >= 1"),
        ({"model_uri": "m", "score_threshold": 1.5}, "expected a number from 0 to 1"),
        ({"model_uri": "m", "return_mask": "maybe"}, "return_mask='maybe': expected bool"),
        ({"model_uri": "m", "input_scale": "mean_std", "input_std": "0"}, "input_mean and input_std (non-zero)"),
        ({"model_uri": "m", "postprocess": "detection", "anchor_sizes": "0.1"}, "need 5 ';'-separated anchor_sizes"),
    ],
)
def test_settings_name_the_bad_parameter(parameters, words):
    with pytest.raises(ModelLoadError) as error:
        Settings.from_parameters(parameters)
    assert words in str(error.value)


def test_settings_accept_strings_for_typed_values():
    settings = Settings.from_parameters(
        {"model_uri": "m", "top_k": "3", "return_mask": "true", "confidence_threshold": "0.7"}
    )
    assert (settings.top_k, settings.return_mask, settings.confidence_threshold) == (3, True, 0.7)


def test_openvino_prefers_the_ir_and_needs_its_weights(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x")
    (tmp_path / "model.xml").write_text("<net/>")
    with pytest.raises(ModelLoadError, match="no weights file model.bin"):
        find_model(tmp_path, (".xml", ".onnx", ".tflite"))
    (tmp_path / "model.bin").write_bytes(b"x")
    assert find_model(tmp_path, (".xml", ".onnx", ".tflite")).name == "model.xml"
    assert find_model(tmp_path, (".tflite",)).name == "model.tflite"


@pytest.mark.parametrize("model_dir", ["mobilenet_v2_quant", "mobilenet_v1_025_quant", "deeplabv3"])
def test_openvino_reads_the_same_quantization_as_tflite(model_dir):
    from pathlib import Path

    from edgeservers.runtimes.openvino import OpenVINOOptions, OpenVINORuntime
    from edgeservers.runtimes.tflite import TFLiteOptions, TFLiteRuntime

    (model,) = (Path(__file__).parent.parent / "models" / model_dir).glob("*.tflite")
    openvino = OpenVINORuntime.inspect(model, OpenVINOOptions(num_threads=1, pool_size=1))
    assert openvino == TFLiteRuntime.inspect(model, TFLiteOptions(num_threads=1, pool_size=1))


@pytest.mark.parametrize(
    "requests_at_once, cpus, expected",
    [
        (1, 2, {"pool_size": 1, "num_threads": 2}),  # the chart's one REST thread: one request gets both cores
        (8, 2, {"pool_size": 2, "num_threads": 2}),  # many threads: a slot per core, each with every core
        (2, 4, {"pool_size": 2, "num_threads": 4}),
        (3, 1, {"pool_size": 1, "num_threads": 1}),
    ],
)
def test_adaptive_concurrency_gives_one_request_every_core(requests_at_once, cpus, expected):
    from edgeservers.process_tuning import adaptive_concurrency

    chosen = adaptive_concurrency(requests_at_once, cpus)
    assert chosen == expected and chosen["pool_size"] <= min(requests_at_once, cpus)


def test_explicit_parameters_win_over_adaptive_defaults():
    defaults = {"pool_size": 2, "num_threads": 1}
    assert Settings.from_parameters({"model_uri": "m"}, defaults).pool_size == 2
    chosen = Settings.from_parameters({"model_uri": "m", "pool_size": "4", "num_threads": 3}, defaults)
    assert (chosen.pool_size, chosen.num_threads) == (4, 3)


def test_the_wrapper_thread_settings_give_the_requests_one_worker_runs_at_once(monkeypatch):
    from edgeservers.seldon import concurrent_requests

    for name in ("GUNICORN_THREADS", "GRPC_THREADS", "GRPC_WORKERS", "FLASK_SINGLE_THREADED"):
        monkeypatch.delenv(name, raising=False)
    assert concurrent_requests() == 1
    monkeypatch.setenv("GUNICORN_THREADS", "8")
    assert concurrent_requests() == 8
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    monkeypatch.setenv("GRPC_THREADS", "4")
    assert concurrent_requests() == 4
    monkeypatch.setenv("GRPC_WORKERS", "0")
    assert concurrent_requests() == 1


@pytest.mark.parametrize(
    "shape, model_layout, wanted, expected",
    [
        ((1, 513, 513), None, "auto", None),
        ((1, 1, 96, 128), None, "auto", "NCHW"),
        ((1, 96, 128, 1), None, "auto", "NHWC"),
        ((1, 21, 513, 513), None, "auto", "NCHW"),
        ((1, 513, 513, 21), None, "auto", "NHWC"),
        ((1, 8, 8, 8), None, "NCHW", "NCHW"),
        ((1, 8, 8, 8), "NHWC", "auto", "NHWC"),  # the model's own layout
        ((1, 2, 64, 64), "NHWC", "NHWC", "NHWC"),  # ... even against the shape
    ],
)
def test_output_layout_from_the_model_the_parameter_or_the_shape(shape, model_layout, wanted, expected):
    from edgeservers.core.postprocess import output_layout
    from edgeservers.runtimes.base import TensorSpec

    assert output_layout(TensorSpec("map", np.dtype(np.float32), shape, layout=model_layout), wanted) == expected


@pytest.mark.parametrize(
    "shape, model_layout, wanted, words",
    [
        ((1, 8, 8, 8), None, "auto", "may be NHWC or NCHW: set parameter output_layout to NHWC or NCHW"),
        ((1, -1, -1, 3), None, "auto", "may be NHWC or NCHW: set parameter output_layout to NHWC or NCHW"),
        ((1, 1, 96, 128), "NCHW", "NHWC", "output_layout=NHWC: output map is NCHW by the model's own layout"),
    ],
)
def test_output_layout_that_cannot_be_told_stops_the_server(shape, model_layout, wanted, words):
    from edgeservers.core.postprocess import output_layout
    from edgeservers.runtimes.base import TensorSpec

    with pytest.raises(ModelLoadError, match=words):
        output_layout(TensorSpec("map", np.dtype(np.float32), shape, layout=model_layout), wanted)


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


def test_openvino_compiles_the_model_its_inspection_read_once(tmp_path, monkeypatch):
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
    monkeypatch.setattr(ov.Core, "read_model", lambda core, path: reads.append(path) or read_model(core, path))

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


def test_classification_ranks_raw_unsigned_scores_best_first():
    from edgeservers.core.postprocess import Classification
    from edgeservers.runtimes.base import TensorSpec

    spec = TensorSpec("scores", np.dtype(np.uint8), (1, 4))
    answer = Classification([spec], ["a", "b", "c", "d"], top_k=2)(
        {"scores": np.array([[3, 200, 0, 90]], np.uint8)}, (1, 1)
    )
    assert [a["label"] for a in answer.body] == ["b", "d"] and answer.top_score == 200


_B64 = "QUJD" * 20_000  # 80 kB of base64: above one_string_member's floor


@pytest.mark.parametrize(
    "body, split",
    [
        ('{"binData":"%s"}', True),  # compact, as clients write it
        ('{"binData": "%s"}', True),  # Python's json.dumps
        (' \r\n\t{ "strData" :\n"%s" } \n', True),  # whitespace anywhere JSON allows it
        ('{"binData": "%s=="}', True),
        ('{"binData": "%s", "meta": {"tags": {"a": "b"}}}', False),  # two members
        ('{"meta": {"x": "%s"}}', False),  # a nested object
        ('{"binData": "%s\\n"}', False),  # an escape: the parser decodes it
        ('{"bin\\"Data": "%s"}', False),  # an escaped quote in the key
        ('{"binData": "%s\u00e9"}', False),  # non-ASCII
        ('{"binData": "%s\t"}', False),  # a raw control character: not valid JSON
        ('{"binData": "%s}', False),  # unterminated string
        ('{"binData": "%s"', False),  # no closing brace
        ('{"binData" "%s"}', False),  # no colon
        ('{"binData": "%s"} x', False),  # trailing text
        ('["%s"]', False),
        ('"%s"', False),
    ],
)
def test_a_one_string_body_is_split_exactly_as_orjson_parses_it(body, split):
    """seldon_compat.one_string_member takes the JSON parser's place for a camera JPEG's binData body:
    it must give what orjson gives, or leave the body to orjson (which then parses or refuses it)."""
    import orjson

    from edgeservers.protocols.json_limits import one_string_member

    data = (body % _B64).encode()
    result = one_string_member(data)
    assert (result is not None) == split
    if split:
        assert result == orjson.loads(data)


def test_small_bodies_are_left_to_the_parser():
    from edgeservers.protocols.json_limits import one_string_member

    assert one_string_member(b'{"binData": "QUJD"}') is None  # orjson is as quick there


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


def test_info_gauges_go_with_the_first_hand_over_only():
    from edgeservers.metrics import MetricsBatch, RequestMetrics, info_gauge

    gauge = info_gauge("edgeservers_delegate_info", {"delegate": "libedgetpu.so.1", "applied": "true"})
    assert gauge == {
        "type": "GAUGE",
        "key": "edgeservers_delegate_info",
        "value": 1,
        "tags": {"delegate": "libedgetpu.so.1", "applied": "true"},
    }
    batch = MetricsBatch(0, [gauge])
    assert batch.due() == [gauge]
    request = RequestMetrics()
    with request.timed("edgeservers_inference_ms"):
        pass
    batch.add(request)
    assert [m["type"] for m in batch.due()] == ["TIMER"]
