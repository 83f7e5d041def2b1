"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (stubs generated from the OIP proto,
package `open-inference-grpc`), beside Seldon's service on the wrapper's gRPC server. Tensors come and go as
raw bytes (typed `contents` accepted too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from open_inference.grpc import protocol as pb
from open_inference.grpc import service

from ...datatypes import BY_NAME
from ...errors import BadRequest, EdgeError
from ..errors import grpc_abort
from .model import OipModel
from .tensors import datatype_of, output_raw, tensor_from_raw, tensor_from_values
from .types import InferRequest, InputTensor, RequestedOutput


def _grpc_params(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None
    return out


def decode_grpc(req: Any, max_outputs: int) -> InferRequest:
    """A ModelInferRequest (its values counted before it was parsed: grpc_limits.ValueBudget)."""
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs: one per input, in order"
        )
    inputs = []
    for i, tensor in enumerate(req.inputs):
        where = f"input {tensor.name}"
        datatype = datatype_of(tensor.datatype, where)
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: shape must be non-negative integers, got {shape}")
        if raw:
            value = tensor_from_raw(datatype, shape, raw[i], where)
        else:
            field_name = BY_NAME[datatype].contents
            if field_name is None:
                raise BadRequest(f"{where}: {datatype} travels only in raw_input_contents")
            value = tensor_from_values(datatype, shape, list(getattr(tensor.contents, field_name)), where)
        inputs.append(InputTensor(tensor.name, datatype, shape, value))
    outputs = None
    if len(req.outputs) > max_outputs:
        raise BadRequest(
            f"the request names {len(req.outputs)} outputs; the model has {max_outputs}, each requested at most once"
        )
    if len(req.outputs):
        outputs = []
        for out in req.outputs:
            k = _grpc_params(out.parameters).get("classification", 0)
            if not isinstance(k, int) or isinstance(k, bool):
                raise BadRequest(f"output {out.name}: classification must be a whole number, got {k!r}")
            outputs.append(RequestedOutput(out.name, k))
    return InferRequest(inputs, outputs, req.id)


def registrar(model: OipModel) -> Callable[[grpc.Server], None]:
    """Adds `inference.GRPCInferenceService` to a gRPC server (the Seldon adapter calls it for the wrapper's
    server, whose interceptor counts every request before it is parsed: grpc_limits.ValueBudget)."""

    def answering(method: Callable[[Any], Any]) -> Callable[[Any, Any, grpc.ServicerContext], Any]:
        """A servicer method; every refusal of ours aborts the call with its code."""

        def handle(servicer: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return method(request)
            except EdgeError as e:
                grpc_abort(context, e)

        return handle

    def model_ready(request: Any) -> Any:
        model.check(request.name, request.version)
        return pb.ModelReadyResponse(ready=model.ready)

    def model_metadata(request: Any) -> Any:
        model.check(request.name, request.version)
        meta = model.metadata()
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
            properties=meta.get("parameters", {}),
        )

    def model_infer(request: Any) -> Any:
        model.check(request.model_name, request.model_version)
        result = model.infer(decode_grpc(request, model.max_outputs))
        reply = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version, id=result.id)
        for key, value in result.parameters.items():
            if isinstance(value, bool):
                reply.parameters[key].bool_param = value
            else:
                reply.parameters[key].string_param = str(value)
        for out in result.outputs:
            reply.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
            reply.raw_output_contents.append(output_raw(out.datatype, out.value))
        return reply

    class Servicer(service.GRPCInferenceServiceServicer):
        ServerLive = answering(lambda r: pb.ServerLiveResponse(live=True))
        ServerReady = answering(lambda r: pb.ServerReadyResponse(ready=model.ready))
        ModelReady = answering(model_ready)
        ServerMetadata = answering(lambda r: pb.ServerMetadataResponse(**model.server_metadata()))
        ModelMetadata = answering(model_metadata)
        ModelInfer = answering(model_infer)

    servicer = Servicer()

    def register(server: grpc.Server) -> None:
        service.add_GRPCInferenceServiceServicer_to_server(servicer, server)

    return register
