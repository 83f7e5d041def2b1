"""OpenVINOServer against TFLiteServer on the same models: the .tflite read directly, and the IR
that openvino.save_model writes from it. In-process (Seldon's own Flask app and gRPC servicer), as the
answers do not depend on the processes around them; tests/e2e/test_concurrency.py runs OpenVINOServer end
to end over REST and gRPC, and tests/e2e/test_openvino_server.py refuses a precision the CPU lacks."""

from __future__ import annotations

import shutil

import numpy as np
import openvino as ov
import pytest
from seldon_core.proto import prediction_pb2

from edgeservers.protocols.v1.codecs import tensor_from_tf, tensor_to_tf
from tests.support.ground_truth import plain_image_tensor
from tests.support.paths import FACE_MASK, MOBILENET_V2, tflite_file
from tests.support.precision import CLASSIFIER_PHOTOS, assert_within_auto_tolerance, rounded_model_dir

IMAGES = CLASSIFIER_PHOTOS


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory):
    """An OpenVINO IR (model.xml + model.bin) written from the bundled .tflite, with its labels."""
    target = tmp_path_factory.mktemp("ir")
    ov.save_model(ov.Core().read_model(str(tflite_file(MOBILENET_V2))), str(target / "model.xml"))
    shutil.copy(MOBILENET_V2 / "labels.txt", target / "labels.txt")
    return target


@pytest.fixture(scope="module")
def ov_tflite(load_server):
    return load_server("OpenVINOServer", model_uri=str(MOBILENET_V2))


@pytest.fixture(scope="module")
def ov_ir(load_server, ir_dir):
    return load_server("OpenVINOServer", model_uri=str(ir_dir), performance_hint="THROUGHPUT", pool_size=2)


@pytest.mark.parametrize("image", IMAGES)
def test_openvino_labels_match_tflite_for_the_tflite_file_and_the_ir(mobilenet_in_process, ov_tflite, ov_ir, image):
    reference = mobilenet_in_process.image(image)["jsonData"]
    for server in (ov_tflite, ov_ir):
        answer = server.image(image)["jsonData"]
        assert answer[0]["label"] == reference[0]["label"]
        assert answer[0]["score"] == pytest.approx(reference[0]["score"], abs=0.03)


def test_openvino_tensor_outputs_match_tflite(mobilenet_in_process, ov_tflite, ov_ir):
    tensor = plain_image_tensor(MOBILENET_V2, "cat.bmp")
    expected = np.asarray(
        mobilenet_in_process.rest_ok({"data": {"ndarray": tensor.tolist()}})["data"]["ndarray"], np.float64
    )
    for server in (ov_tflite, ov_ir):
        got = np.asarray(server.rest_ok({"data": {"ndarray": tensor.tolist()}})["data"]["ndarray"], np.float64)
        assert got.shape == expected.shape
        # uint8 probabilities (scale 1/256): OpenVINO's int8 kernels round differently from TFLite's,
        # so outputs may differ by a few quantization steps; 0.03 in probability, as for the labels.
        assert np.abs(got - expected).max() / 256 <= 0.03
        assert got.argmax() == expected.argmax()


def _same_detections(server, reference_server) -> None:
    """The same labels, scores and boxes (within 2 pixels) as the reference on both face photos."""
    for image in ("face_mask_demo.jpg", "grace_hopper.bmp"):
        reference = reference_server.image(image)["jsonData"]
        answer = server.image(image)["jsonData"]
        assert [d["label"] for d in answer] == [d["label"] for d in reference]
        for got, want in zip(answer, reference):
            assert got["score"] == pytest.approx(want["score"], abs=1e-3)
            assert np.abs(np.subtract(got["box"], want["box"])).max() <= 2


def test_openvino_detection_matches_tflite(face_mask_in_process, load_server):
    server = load_server("OpenVINOServer", model_uri=str(FACE_MASK), postprocess="detection")
    _same_detections(server, face_mask_in_process)


def test_openvino_grpc_tftensor_float_model_matches_tflite(load_server):
    tensor = plain_image_tensor(FACE_MASK, "face_mask_demo.jpg", scale=1 / 255)
    results = []
    for server_class in ("TFLiteServer", "OpenVINOServer"):
        server = load_server(server_class, model_uri=str(FACE_MASK), output_tensor_name="cls_branch_concat_1/concat")
        message = prediction_pb2.SeldonMessage()
        message.data.tftensor.CopyFrom(tensor_to_tf(tensor))
        results.append(tensor_from_tf(server.grpc(message).data.tftensor))
    np.testing.assert_allclose(results[1], results[0], atol=2e-3)


def test_openvino_metadata_and_health(ov_ir):
    metadata = ov_ir.get("/api/v1.0/metadata").json()
    assert metadata["platform"] == "openvino" and metadata["name"] == "model"
    assert metadata["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [1, 224, 224, 3]}]
    assert ov_ir.get("/health/status").status_code == 200
    assert ov_ir.image("parrot.jpg")["meta"]["tags"]["runtime"] == "openvino"


def test_nchw_input_gets_the_same_detections(face_mask_in_process, load_server, tmp_path):
    """The face-mask detector re-laid out to take NCHW (OpenVINO's PrePostProcessor), as an IR."""
    from openvino.preprocess import PrePostProcessor

    model = ov.Core().read_model(str(tflite_file(FACE_MASK)))
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_layout(ov.Layout("NCHW"))
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    model = ppp.build()
    ov.save_model(model, str(tmp_path / "model.xml"))
    shutil.copy(FACE_MASK / "labels.txt", tmp_path / "labels.txt")
    server = load_server("OpenVINOServer", model_uri=str(tmp_path), postprocess="detection")
    metadata = server.get("/api/v1.0/metadata").json()
    assert metadata["inputs"][0]["shape"] == [1, 3, 260, 260]
    _same_detections(server, face_mask_in_process)


# --- inference_precision: f32 (the default) on every CPU, `auto` within its tolerance ------------------------


def _rounded_dir(model_dir, tmp_path_factory, precision: str):
    return rounded_model_dir(model_dir, precision, tmp_path_factory.mktemp(f"{model_dir.name}_{precision}"))


@pytest.fixture(scope="module")
def ov_auto(load_server):
    return load_server("OpenVINOServer", model_uri=str(MOBILENET_V2), inference_precision="auto")


def test_metadata_says_which_precision_runs(ov_tflite, ov_auto):
    assert ov_tflite.get("/api/v1.0/metadata").json()["custom"]["inference_precision"] == "f32"
    device_default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert ov_auto.get("/api/v1.0/metadata").json()["custom"]["inference_precision"] == device_default


def test_auto_precision_stays_within_its_tolerance(mobilenet_in_process, face_mask_in_process, ov_auto, load_server):
    classifier = ov_auto
    detector = load_server(
        "OpenVINOServer", model_uri=str(FACE_MASK), postprocess="detection", inference_precision="auto"
    )
    assert_within_auto_tolerance(classifier, detector, mobilenet_in_process, face_mask_in_process)


@pytest.mark.parametrize("precision", ["bf16", "f16"])
def test_the_auto_tolerance_holds_for_bf16_and_f16_rounding(
    mobilenet_in_process, face_mask_in_process, load_server, tmp_path_factory, precision
):
    """On this CPU `auto` may be f32; models rounded to bf16 / f16 at every tensor show that the tolerance
    holds where it is not, and that it is needed (the rounded answers differ from f32 beyond its tolerance)."""
    classifier = load_server("OpenVINOServer", model_uri=str(_rounded_dir(MOBILENET_V2, tmp_path_factory, precision)))
    detector = load_server(
        "OpenVINOServer", model_uri=str(_rounded_dir(FACE_MASK, tmp_path_factory, precision)), postprocess="detection"
    )
    assert_within_auto_tolerance(classifier, detector, mobilenet_in_process, face_mask_in_process)
    differences = [
        abs(classifier.image(i)["jsonData"][0]["score"] - mobilenet_in_process.image(i)["jsonData"][0]["score"])
        for i in IMAGES
    ]
    assert (
        max(differences) > 0.03
    )  # the f32 tolerance of test_openvino_labels_match_tflite_for_the_tflite_file_and_the_ir
