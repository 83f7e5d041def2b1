"""TFLiteServer inside Seldon's own Flask app and gRPC servicer, REST and gRPC, checked against the plain
interpreter (tests/e2e/test_tflite_server.py: the request forms, metadata, health and Prometheus end to end).
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from google.protobuf import json_format
from seldon_core.proto import prediction_pb2

from edgeservers.protocols.v1.codecs import tensor_from_tf, tensor_to_tf
from tests.support.ground_truth import plain_image_tensor, plain_outputs
from tests.support.paths import DEEPLAB, FACE_MASK, IMAGES, MOBILENET_V2, labels, tflite_file

# Top-1 classes the plain interpreter gives for these photos (../models/README.md, shared/models/README.md).
IMAGENET_TOP1 = {
    "parrot.jpg": "macaw",
    "cat.bmp": "Egyptian cat",
    "grace_hopper.bmp": "military uniform",
    "bird.bmp": "chickadee",
}


@pytest.mark.parametrize("image", sorted(IMAGENET_TOP1))
def test_image_gets_top_k_labels_matching_the_plain_interpreter(mobilenet_in_process, image):
    answer = mobilenet_in_process.image(image)["jsonData"]
    expected = plain_outputs(MOBILENET_V2, plain_image_tensor(MOBILENET_V2, image))
    (scores,) = expected.values()
    plain_top1 = labels(MOBILENET_V2)[int(scores.argmax())]
    assert answer[0]["label"] == plain_top1 == IMAGENET_TOP1[image]
    assert len(answer) == 5 and [a["score"] for a in answer] == sorted((a["score"] for a in answer), reverse=True)
    assert set(answer[0]) == {"label", "index", "score"}
    assert 0.0 <= answer[-1]["score"] <= answer[0]["score"] <= 1.0  # dequantized with the output's scale


def test_png_input_is_decoded(mobilenet_in_process):
    import cv2

    ok, png = cv2.imencode(".png", cv2.imread(str(IMAGES / "cat.bmp")))
    answer = mobilenet_in_process.rest_ok({"binData": base64.b64encode(png.tobytes()).decode()})["jsonData"]
    assert answer[0]["label"] == "Egyptian cat"


def _tensor(image: str = "cat.bmp") -> np.ndarray:
    return plain_image_tensor(MOBILENET_V2, image)


def _face_mask_truth(image: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The face-mask detector's float input for `image` and the plain interpreter's outputs for it."""
    tensor = plain_image_tensor(FACE_MASK, image, scale=1 / 255)
    return tensor, plain_outputs(FACE_MASK, tensor)


def test_ndarray_answers_the_exact_output_of_the_plain_interpreter(mobilenet_in_process):
    tensor = _tensor()
    (expected,) = plain_outputs(MOBILENET_V2, tensor).values()
    reply = mobilenet_in_process.rest_ok({"data": {"ndarray": tensor.tolist()}})
    assert reply["data"]["names"] == ["MobilenetV2/Predictions/Softmax"]
    np.testing.assert_array_equal(np.asarray(reply["data"]["ndarray"]), expected)


def test_tensor_form_answers_in_tensor_form_rest_and_grpc(mobilenet_in_process):
    tensor = _tensor("bird.bmp")
    (expected,) = plain_outputs(MOBILENET_V2, tensor).values()
    rest = mobilenet_in_process.rest_ok(
        {"data": {"tensor": {"shape": list(tensor.shape), "values": tensor.ravel().tolist()}}}
    )
    assert rest["data"]["tensor"]["shape"] == list(expected.shape)
    np.testing.assert_array_equal(np.asarray(rest["data"]["tensor"]["values"]).reshape(expected.shape), expected)

    message = prediction_pb2.SeldonMessage()
    message.data.tensor.shape.extend(tensor.shape)
    message.data.tensor.values.extend(tensor.ravel().tolist())
    reply = mobilenet_in_process.grpc(message)
    np.testing.assert_array_equal(
        np.asarray(reply.data.tensor.values).reshape(reply.data.tensor.shape), expected.ravel().reshape(expected.shape)
    )


def test_tftensor_keeps_binary_and_dtype_over_grpc_and_rest(mobilenet_in_process):
    tensor = _tensor("grace_hopper.bmp")
    (expected,) = plain_outputs(MOBILENET_V2, tensor).values()
    message = prediction_pb2.SeldonMessage()
    message.data.tftensor.CopyFrom(tensor_to_tf(tensor))
    reply = mobilenet_in_process.grpc(message)
    got = tensor_from_tf(reply.data.tftensor)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)

    rest = mobilenet_in_process.rest_ok({"data": {"tftensor": json_format.MessageToDict(tensor_to_tf(tensor))}})
    np.testing.assert_array_equal(
        tensor_from_tf(json_format.ParseDict(rest["data"]["tftensor"], type(message.data.tftensor)())), expected
    )


def test_batch_dimension_may_be_left_out(mobilenet_in_process):
    tensor = _tensor()
    (expected,) = plain_outputs(MOBILENET_V2, tensor).values()
    reply = mobilenet_in_process.rest_ok({"data": {"ndarray": tensor[0].tolist()}})
    np.testing.assert_array_equal(np.asarray(reply["data"]["ndarray"]), expected)


def test_json_data_feeds_inputs_by_name_and_answers_outputs_by_name(face_mask_in_process):
    tensor, expected = _face_mask_truth("face_mask_demo.jpg")
    # face_mask runs with postprocess=detection: explicit post-processing applies to tensors too.
    reply = face_mask_in_process.rest_ok({"jsonData": {"data_1": tensor.tolist()}})
    assert reply["jsonData"][0]["label"] == "Mask"
    scores = expected["cls_branch_concat_1/concat"][0]
    assert reply["jsonData"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-5)


@pytest.fixture(scope="module")
def raw_face_mask(load_server):
    return load_server("TFLiteServer", model_uri=str(FACE_MASK))  # no post-processing: raw outputs


def test_several_outputs_come_back_as_json_data_keyed_by_name(raw_face_mask):
    tensor, expected = _face_mask_truth("grace_hopper.bmp")
    reply = raw_face_mask.rest_ok({"data": {"ndarray": tensor.tolist()}})
    assert set(reply["jsonData"]) == set(expected)
    for name, value in expected.items():  # float32 outputs, written as float32: exact once read as float32
        np.testing.assert_array_equal(np.asarray(reply["jsonData"][name], np.float32), value)


def test_several_outputs_of_a_tftensor_request_stay_binary_over_grpc(raw_face_mask):
    tensor, expected = _face_mask_truth("face_mask_demo.jpg")
    message = prediction_pb2.SeldonMessage()
    message.data.tftensor.CopyFrom(tensor_to_tf(tensor))
    reply = json_format.MessageToDict(raw_face_mask.grpc(message).jsonData)
    assert set(reply) == set(expected)
    for name, value in expected.items():
        got = tensor_from_tf(json_format.ParseDict(reply[name], type(message.data.tftensor)()))
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)


def test_output_tensor_name_selects_one_output(load_server):
    server = load_server(
        "TFLiteServer",
        model_uri=str(FACE_MASK),
        input_tensor_name="data_1",
        output_tensor_name="cls_branch_concat_1/concat",
    )
    tensor = plain_image_tensor(FACE_MASK, "grace_hopper.bmp", scale=1 / 255)
    expected = plain_outputs(FACE_MASK, tensor)["cls_branch_concat_1/concat"]
    reply = server.rest_ok({"data": {"ndarray": tensor.tolist()}})
    assert reply["data"]["names"] == ["cls_branch_concat_1/concat"]
    np.testing.assert_array_equal(np.asarray(reply["data"]["ndarray"], np.float32), expected)
    metadata = server.get("/api/v1.0/metadata").json()
    assert [o["name"] for o in metadata["outputs"]] == ["cls_branch_concat_1/concat"]


def test_detection_finds_one_mask_face_and_one_bare_face(face_mask_in_process):
    mask = face_mask_in_process.image("face_mask_demo.jpg")["jsonData"]
    bare = face_mask_in_process.image("grace_hopper.bmp")["jsonData"]
    assert [d["label"] for d in mask] == ["Mask"] and [d["label"] for d in bare] == ["NoMask"]
    # Scores equal the best anchor's score from the plain interpreter on the same photo.
    for answer, image in ((mask, "face_mask_demo.jpg"), (bare, "grace_hopper.bmp")):
        scores = _face_mask_truth(image)[1]["cls_branch_concat_1/concat"]
        assert answer[0]["score"] == pytest.approx(float(scores.max()), abs=2e-3)
    import cv2

    height, width = cv2.imread(str(IMAGES / "grace_hopper.bmp")).shape[:2]
    x0, y0, x1, y1 = bare[0]["box"]
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height  # input-image pixels
    assert (x1 - x0) * (y1 - y0) > 0.05 * width * height  # a face, not a speck


def test_segmentation_counts_regions_and_returns_the_mask(load_server):
    import cv2

    server = load_server(
        "TFLiteServer", model_uri=str(DEEPLAB), postprocess="segmentation", segmentation_class="bird", return_mask=True
    )
    answer = server.image("bird_segmentation.bmp")["jsonData"]
    (class_map,) = plain_outputs(DEEPLAB, plain_image_tensor(DEEPLAB, "bird_segmentation.bmp")).values()
    bird = labels(DEEPLAB).index("bird")
    image = cv2.imread(str(IMAGES / "bird_segmentation.bmp"))
    expected = cv2.resize((class_map[0] == bird).astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(answer["mask_png"]), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
    assert answer["class"] == "bird" and answer["count"] >= 1
    agreement = (mask == expected.astype(bool)).mean()
    assert agreement > 0.99, agreement
    # The photo's own ground-truth mask overlaps the found bird.
    truth = cv2.imread(str(IMAGES / "bird_segmentation_mask.bmp"), cv2.IMREAD_GRAYSCALE) > 0
    if truth.shape == mask.shape:
        iou = (truth & mask).sum() / (truth | mask).sum()
        assert iou > 0.5, iou
    x0, y0, x1, y1 = answer["regions"][0]["box"]
    assert mask[y0:y1, x0:x1].sum() == answer["mask_pixels"] or answer["count"] > 1


def test_confidence_threshold_marks_uncertain_answers_and_counts_them(load_server):
    server = load_server(
        "TFLiteServer", own_metrics=True, model_uri=str(MOBILENET_V2), confidence_threshold=0.9, metrics_interval=0.0
    )
    sure = server.image("parrot.jpg")  # macaw, 0.996
    unsure = server.image("cat.bmp")  # Egyptian cat, ~0.8
    assert sure["meta"]["tags"]["uncertain"] is False
    assert unsure["meta"]["tags"]["uncertain"] is True
    prometheus = server.prometheus()
    counted = [line for line in prometheus.splitlines() if line.startswith("edgeservers_uncertain_predictions_total")]
    assert counted and float(counted[0].split()[-1]) == 1.0


def _prometheus_count(server, name: str) -> float:
    text = server.prometheus()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_metrics_are_handed_to_seldon_in_batches_and_none_is_lost(load_server):
    import time

    server = load_server("TFLiteServer", own_metrics=True, model_uri=str(MOBILENET_V2), metrics_interval=1.0)
    first = server.image("cat.bmp")
    assert {m["key"] for m in first["meta"]["metrics"]} >= {"edgeservers_inference_seconds"}  # the first at once
    for _ in range(4):
        server.image("cat.bmp")
    time.sleep(1.2)  # past the interval: the next response hands over everything gathered
    last = server.image("cat.bmp")
    assert sum(m["key"] == "edgeservers_inference_seconds" for m in last["meta"]["metrics"]) >= 1
    assert _prometheus_count(server, "edgeservers_inference_seconds_count") == 6
    # in seconds, as the name says (Seldon divides a TIMER's milliseconds by 1000): a unit check, not a speed one
    mean = _prometheus_count(server, "edgeservers_inference_seconds_sum") / 6
    assert 1e-5 < mean < 5, mean


def _allowing_fp16(target):
    """The face-mask detector with the metadata the converter writes for
    `_experimental_supported_accumulation_type = tf.float16`, which lets XNNPACK compute it in fp16 on
    ARM CPUs with fp16 arithmetic (tensorflow/lite/delegates/xnnpack/README.md)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(tflite_file(FACE_MASK).read_bytes())
    value = schema.BufferT()
    value.data = np.frombuffer(b"fp16accfp16", np.uint8)
    model.buffers.append(value)
    metadata = schema.MetadataT()
    metadata.name, metadata.buffer = "reduced_precision_support", len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [metadata]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    (target / "face_mask_fp16_allowed.tflite").write_bytes(builder.Output())
    return target


@pytest.mark.parametrize("precision", ["f32", "auto"])
def test_inference_precision_of_a_model_that_allows_fp16(load_server, tmp_path, precision):
    """f32 keeps such a model off XNNPACK (TFLite's own f32 kernels, bit for bit); auto leaves it to XNNPACK."""
    import platform

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model_dir = _allowing_fp16(tmp_path)
    server = load_server("TFLiteServer", model_uri=str(model_dir), inference_precision=precision, num_threads=1)
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if precision == "f32" else OpResolverType.AUTO
    interpreter = Interpreter(
        model_path=str(tflite_file(model_dir)), num_threads=1, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    tensor = plain_image_tensor(FACE_MASK, "face_mask_demo.jpg", scale=1 / 255)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    reply = server.rest_ok({"data": {"ndarray": tensor.tolist()}})
    for detail in interpreter.get_output_details():
        np.testing.assert_array_equal(
            np.asarray(reply["jsonData"][detail["name"]], np.float32), interpreter.get_tensor(detail["index"])
        )
    metadata = server.get("/api/v1.0/metadata").json()
    # XNNPACK computes in fp16 only on CPUs with native fp16 arithmetic (ARM), never on x86.
    expected = (
        "f32" if precision == "f32" or platform.machine() == "x86_64" else metadata["custom"]["inference_precision"]
    )
    assert metadata["custom"]["inference_precision"] == expected
