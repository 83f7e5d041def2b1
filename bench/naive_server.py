"""The naive baseline: a minimal Seldon model server as the usual tutorial writes it.

One shared TFLite interpreter, no pool; Seldon's default `predict(X, features_names)` path, so the
wrapper parses the JSON `ndarray` into a numpy array (nested Python lists first) and turns the
returned array back into a JSON `ndarray` with `tolist()`. A model with several outputs returns
them concatenated along the last axis (the face-mask detector: boxes [1,5972,4] + scores [1,5972,2]
-> [1,5972,6]), which is what such tutorials do to fit one `ndarray`.

Run from the repo root: `seldon-core-microservice bench.naive_server.NaiveServer --service-type MODEL`
with model_uri (a directory with one .tflite) and optionally num_threads in PREDICTIVE_UNIT_PARAMETERS.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from edgeservers.runtimes.tflite import Interpreter  # the runtime's own class (LiteRT; tflite_runtime on armv7)


class NaiveServer:
    def __init__(self, model_uri: str, num_threads: int = 0, **_: object):
        (self.model_path,) = glob.glob(os.path.join(model_uri, "*.tflite"))
        self.num_threads = int(num_threads) or (os.cpu_count() or 1)
        self.interpreter = None

    def load(self):
        # In load(), not __init__: each forked worker gets its own interpreter (a TFLite thread pool
        # does not survive fork). Still one interpreter per worker, shared by all its requests.
        self.interpreter = Interpreter(model_path=self.model_path, num_threads=self.num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()

    def predict(self, X, features_names=None):
        self.interpreter.set_tensor(self.input["index"], np.array(X, dtype=self.input["dtype"]))
        self.interpreter.invoke()
        outputs = [self.interpreter.get_tensor(o["index"]) for o in self.outputs]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=-1)
