"""The delegate's trial at start, in a process of its own (edgeservers.delegates.run_trial starts it):

    python -m edgeservers.runtimes.delegate_trial MODEL_PATH TFLITE_OPTIONS_JSON

prints one marked JSON line: why the delegate cannot run the model (null: it ran it) and the nodes it took.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .tflite import TFLiteOptions, TFLiteRuntime

if __name__ == "__main__":
    model, options = sys.argv[1:]
    TFLiteRuntime.trial(Path(model), TFLiteOptions(**json.loads(options))).emit()
