"""Seldon's v1 protocol over the model: a request (a REST dict or a gRPC SeldonMessage) decoded, predicted and
answered in its own form, images named by URI fetched from the image store first."""

from __future__ import annotations

from typing import Any

from seldon_core.proto import prediction_pb2

from ...core.model import EdgeModel
from ...core.payload import IMAGE, Payload, Prediction
from ...errors import TooLarge
from ...metrics import PREPROCESS, RequestMetrics
from .. import json_limits
from . import codecs


class V1Handler:
    """Answers v1 predictions for `model`; `metrics` gives the request metrics due to hand over with an answer."""

    def __init__(self, model: EdgeModel):
        self.model = model
        self.values_limit = json_limits.values_limit(model.input_elements)

    def predict(self, request: Any) -> Any:
        """The request decoded, predicted and answered in the request's own protocol and form."""
        proto = isinstance(request, prediction_pb2.SeldonMessage)
        metrics = RequestMetrics()
        with metrics.timed(PREPROCESS):
            payload = (
                codecs.decode_grpc(request, self.values_limit)
                if proto
                else codecs.decode_rest(request, self.values_limit)
            )
        if payload.form in codecs.REFERENCE_FORMS:
            return self._predict_references(payload, metrics, proto)
        # Images get the model's post-processing; tensors get raw outputs unless one was asked for explicitly.
        wants_answer = payload.form == IMAGE or self.model.settings.postprocess != "auto"
        prediction = self.model.predict(payload, wants_answer, metrics)
        meta = {"tags": self.model.tags(prediction), "metrics": self.model.due_metrics()}
        return codecs.encode(payload.form, prediction.outputs, prediction.answer, meta, proto)

    def _predict_references(self, payload: Payload, metrics: RequestMetrics, proto: bool) -> Any:
        """Images named by URI (jsonData.image_uri, S3 event records): their number and every URI are checked
        against max_event_records and image_store before any is fetched, and all are fetched within one
        image_store_timeout; each image is then predicted as if its bytes had been sent."""
        model, store = self.model, self.model.image_store
        limit = model.settings.max_event_records
        if len(payload.image_uris) > limit:
            raise TooLarge(
                f"the notification names {len(payload.image_uris)} objects, more than max_event_records={limit} "
                "(the parameter sets it): send fewer records per notification"
            )
        refs = [store.check(uri) for uri in payload.image_uris]
        deadline = store.deadline()
        answers = []
        for i, ref in enumerate(refs):
            image = Payload(IMAGE, image=store.fetch(ref, deadline), tags=payload.tags)
            prediction = model.predict(image, True, metrics if i == 0 else RequestMetrics(), ref.uri)
            if payload.form == "image_uri":
                tags = {**model.tags(prediction), "image_uri": ref.uri}
                meta = {"tags": tags, "metrics": model.due_metrics()}
                return codecs.encode(IMAGE, prediction.outputs, prediction.answer, meta, proto)
            answers.append({"image_uri": ref.uri, "answer": _plain(prediction), **prediction.report()})
        return codecs.encode_batch(answers, {"tags": model.tags(), "metrics": model.due_metrics()}, proto)


def _plain(prediction: Prediction) -> Any:
    """An answer inside a list of answers: the post-processed body, else the outputs as lists."""
    if prediction.answer is not None:
        return prediction.answer.body
    return {name: array.tolist() for name, array in prediction.outputs.items()}
