"""The Open Inference Protocol (OIP, "V2"; KServe, Triton, OpenVINO Model Server, MLServer) beside Seldon's v1.

Same model, same pool, same pre- and post-processing: a request decodes to the neutral types (types.py) and
goes through the model (model.py) like a v1 request; only the wire format differs (rest.py, grpc.py).

- REST: a Flask blueprint with `/v2`, `/v2/health/{live,ready}`, `/v2/models/{name}[/versions/{v}]`,
  `.../ready`, `.../infer` on Seldon's REST app (JSON tensors, and Triton's binary tensor data
  extension: a JSON header of `Inference-Header-Content-Length` bytes, then the raw tensors).
- gRPC: `inference.GRPCInferenceService` (stubs generated from the OIP proto, package
  `open-inference-grpc`) on Seldon's gRPC server; tensors come and go as raw bytes.

Inputs: the model's named tensors with their OIP datatype, or one `BYTES` tensor of shape `[1]` holding
an encoded JPEG/PNG/BMP (as OpenVINO Model Server takes images), preprocessed like v1's `binData`.
Outputs: the model's tensors by name; `answer`, a BYTES tensor `[1]` holding the post-processing's JSON
(the v1 `jsonData`: labels, detections, regions); and Triton's classification extension: a model
output requested with `parameters.classification = k` comes back as `k` BYTES `"score:index:label"`.
Errors: `{"error": "..."}` with the status the same error gets over Seldon's v1 protocol (400 bad request,
404 unknown model or version, 413 over a limit, ...); over gRPC the code edgeservers/protocols/errors.py maps it to,
with the same message.

Limits, checked before the work they bound: a request names each model output at most once, asks for a
classification of at most the output's classes, and the response may hold at most `max_response_bytes`;
JSON (a whole body or the binary extension's header) and gRPC messages may hold at most as many values
as the model's inputs could use (twice their size plus some slack), counted before they are parsed.
"""
