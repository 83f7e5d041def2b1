"""The Open Inference Protocol's request and response, as REST and gRPC both decode to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ANSWER = "answer"  # the extra BYTES output holding the post-processed answer as JSON
SERVER_NAME = "edgeservers"
EXTENSIONS = ("binary_tensor_data", "classification")


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    value: np.ndarray | list[bytes]  # numbers in the declared datatype, or BYTES elements


@dataclass
class RequestedOutput:
    name: str
    classification: int = 0  # the classification extension: top-k as "score:index:label" strings
    binary: bool | None = None  # REST: the binary tensor data extension for this output


@dataclass
class InferRequest:
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None  # None: the default outputs
    id: str = ""
    binary_output: bool = False  # REST: parameters.binary_data_output


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    value: np.ndarray | list[bytes]
    binary: bool = False


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)
