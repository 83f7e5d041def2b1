"""The model behind the Open Inference Protocol: names, metadata, the outputs a request may ask for, and one
infer step through the same model, pool, pre- and post-processing as a v1 request."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from ... import __version__
from ...core import postprocess
from ...core.model import EdgeModel, as_input
from ...core.payload import IMAGE, NAMED, Payload
from ...errors import BadRequest, NotFound, TooLarge
from ...metrics import PREPROCESS, RequestMetrics
from ...runtimes.base import TensorSpec
from .. import json_limits
from .tensors import CLASS_STRING_BYTES, classes_of, json_chars, json_size
from .types import (
    ANSWER,
    EXTENSIONS,
    SERVER_NAME,
    InferRequest,
    InferResponse,
    InputTensor,
    OutputTensor,
    RequestedOutput,
)


class OipModel:
    """The model as the Open Inference Protocol sees it: its name, version, tensors, limits and one infer step.
    `hand_over` gives the request metrics due to the server's metrics (neither protocol's answer carries them)."""

    def __init__(self, model: EdgeModel, hand_over: Callable[[list[dict]], None]):
        self.model = model
        self.hand_over = hand_over
        settings = model.settings
        self.name = model.name
        self.platform = model.runtime_class.name
        self.inputs: tuple[TensorSpec, ...] = model.signature.inputs
        self.outputs: tuple[TensorSpec, ...] = model.signature.outputs
        self.by_output = {s.name: s for s in self.outputs}
        self.image_input = model.image is not None
        self.has_answer = model.has_answer
        self.answer_for_tensors = settings.postprocess != "auto"
        self.max_response_bytes = settings.max_response_bytes or max(
            settings.max_request_bytes, 2 * sum(json_size(spec) for spec in self.outputs)
        )
        self.max_outputs = len(self.outputs) + self.has_answer  # each output at most once
        self.values_limit = json_limits.values_limit(model.input_elements)

    # --- identity, health, metadata

    @property
    def version(self) -> str:
        """model_version, else the version of the model's files serving now (they may be updated in place)."""
        return self.model.version

    @property
    def labels(self) -> Sequence[str] | None:
        return self.model.labels

    @property
    def longest_label(self) -> int:
        return max((len(label.encode()) for label in self.labels or ()), default=0)

    def check(self, name: str, version: str = "") -> None:
        if name != self.name:
            raise NotFound(f"unknown model {name!r}: this server serves {self.name!r}")
        if version and version != self.version:
            served = f"version {self.version!r}" if self.version else "no versions (leave the version out)"
            raise NotFound(f"model {name!r} has no version {version!r}: it serves {served}")

    @property
    def ready(self) -> bool:
        return self.model.loaded

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def metadata(self) -> dict[str, Any]:
        outputs = [spec.describe() for spec in self.outputs]
        if self.has_answer:
            outputs.append({"name": ANSWER, "datatype": "BYTES", "shape": [1]})
        meta: dict[str, Any] = {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": self.platform,
            "inputs": [spec.describe() for spec in self.inputs],
            "outputs": outputs,
        }
        provenance = self.model.live.provenance
        if provenance:  # its files' version (sha256 prefix), where they came from and when they were fetched
            meta["parameters"] = dict(provenance)
        return meta

    # --- infer

    def check_outputs(self, requested: Sequence[RequestedOutput]) -> None:
        """Each output named at most once, known, and classified into at most its classes: refused before any work."""
        seen: set[str] = set()
        for out in requested:
            if out.name in seen:
                raise BadRequest(f"output {out.name!r} is requested more than once: name each output at most once")
            seen.add(out.name)
            if out.name == ANSWER:
                if not self.has_answer:
                    raise BadRequest(
                        f"output {ANSWER!r} needs a post-processing; this model has none (postprocess=none)"
                    )
                if out.classification:
                    raise BadRequest(
                        f"classification applies to the model's outputs ({', '.join(self.by_output)}), not {ANSWER!r}"
                    )
                continue
            spec = self.by_output.get(out.name)
            if spec is None:
                raise BadRequest(
                    f"unknown output {out.name!r}; the model's outputs: {', '.join([*self.by_output, *([ANSWER] if self.has_answer else [])])}"
                )
            classes = classes_of(spec)
            if out.classification < 0 or (classes is not None and out.classification > classes):
                raise BadRequest(
                    f"output {out.name!r}: classification must be a count from 1 to its {classes or 'number of'} "
                    f"classes, got {out.classification}"
                )

    def infer(self, req: InferRequest) -> InferResponse:
        metrics = RequestMetrics()
        with metrics.timed(PREPROCESS):
            payload = self._payload(req.inputs)
        requested = req.outputs
        if requested is None:
            requested = [RequestedOutput(s.name) for s in self.outputs]
            if self.has_answer and (payload.form == IMAGE or self.answer_for_tensors):
                requested.append(RequestedOutput(ANSWER))
        self.check_outputs(requested)
        wants_answer = any(o.name == ANSWER for o in requested)
        prediction = self.model.predict(payload, wants_answer, metrics)
        answer = b""
        if wants_answer:
            assert prediction.answer is not None
            answer = orjson.dumps(prediction.answer.body, option=orjson.OPT_SERIALIZE_NUMPY)
        self._check_response_size(requested, prediction.outputs, len(answer), req.binary_output)
        outputs = []
        for out in requested:
            binary = req.binary_output if out.binary is None else out.binary
            if out.name == ANSWER:
                outputs.append(OutputTensor(ANSWER, "BYTES", [1], [answer], binary))
            elif out.classification:
                strings, shape = self._classify(
                    self.by_output[out.name], prediction.outputs[out.name], out.classification
                )
                outputs.append(OutputTensor(out.name, "BYTES", shape, strings, binary))
            else:
                array = prediction.outputs[out.name]
                outputs.append(
                    OutputTensor(out.name, self.by_output[out.name].datatype, list(array.shape), array, binary)
                )
        # Parameters are scalars: the edge model's answer beside an escalated one travels as JSON text.
        parameters = {
            k: orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode() if k == "edge_answer" else v
            for k, v in prediction.report().items()
        }
        self.hand_over(self.model.due_metrics())
        return InferResponse(self.name, prediction.model_version, req.id, outputs, parameters)

    def _check_response_size(
        self, requested: Sequence[RequestedOutput], arrays: Mapping[str, np.ndarray], answer: int, binary: bool
    ) -> None:
        """413 before the response is built when its tensors would exceed max_response_bytes."""
        size = answer
        for out in requested:
            if out.name == ANSWER:
                continue
            array = arrays[out.name]
            if out.classification:
                size += out.classification * (CLASS_STRING_BYTES + self.longest_label)
            elif (binary if out.binary is None else out.binary) or array.dtype.kind == "O":
                size += array.nbytes
            else:
                size += array.size * json_chars(array.dtype)
        if size > self.max_response_bytes:
            raise TooLarge(
                f"the response would hold about {size} bytes, more than max_response_bytes={self.max_response_bytes} "
                "(the parameter sets it): request fewer outputs or a smaller classification"
            )

    def _payload(self, inputs: list[InputTensor]) -> Payload:
        names = [s.name for s in self.inputs]
        if not inputs:
            raise BadRequest(f"the request has no inputs: expected {', '.join(names)}")
        seen = [t.name for t in inputs]
        unknown = [n for n in seen if n not in names]
        if unknown:
            raise BadRequest(f"unknown input {unknown[0]!r}; the model's inputs: {', '.join(names)}")
        if len(set(seen)) != len(seen):
            raise BadRequest("an input is given more than once")
        if len(inputs) == 1 and inputs[0].datatype == "BYTES":
            return self._image(inputs[0])
        missing = [n for n in names if n not in seen]
        if missing:
            raise BadRequest(f"missing input(s) {', '.join(missing)}: the model needs {', '.join(names)}")
        tensors: dict[str | None, np.ndarray] = {}
        for tensor in inputs:
            spec = self.inputs[names.index(tensor.name)]
            if tensor.datatype != spec.datatype:
                hint = " (or BYTES [1]: an encoded image)" if self.image_input else ""
                raise BadRequest(
                    f"input {spec.name} expects datatype {spec.datatype}{hint} and shape {list(spec.shape)}; got {tensor.datatype} {tensor.shape}"
                )
            tensors[spec.name] = as_input(spec, tensor.value, "the request")  # type: ignore[arg-type]
        return Payload(NAMED, tensors)

    def _image(self, tensor: InputTensor) -> Payload:
        if not self.image_input:
            raise BadRequest(
                f"this model does not take images ({self.model.not_image}): send {self.inputs[0].datatype} tensors"
            )
        if len(tensor.value) != 1:
            raise BadRequest(
                f"input {tensor.name}: one encoded image per request (BYTES shape [1]); got shape {tensor.shape}"
            )
        return Payload(IMAGE, image=tensor.value[0], image_field=f"input {tensor.name} (BYTES)")

    def _classify(self, spec: TensorSpec, raw: np.ndarray, k: int) -> tuple[list[bytes], list[int]]:
        """Triton's classification extension, through postprocess.Classification: "score:index[:label]"."""
        values = spec.quantization.dequantize(raw) if spec.quantization is not None else raw
        body = postprocess.Classification([spec], self.labels, k)({spec.name: values}, (0, 0)).body
        strings = [(f"{c['score']:f}:{c['index']}" + (f":{c['label']}" if self.labels else "")).encode() for c in body]
        shape = [1, len(strings)] if raw.ndim >= 2 and raw.shape[0] == 1 else [len(strings)]
        return strings, shape
