#!/bin/sh
# The image's command, run under tini (PID 1, forwards signals to the whole process group).
# MODEL_NAME picks the Seldon component class: TFLiteServer (default) or OpenVINOServer.
# Ports come from the operator's env (PREDICTIVE_UNIT_HTTP_SERVICE_PORT, ..._GRPC_..., ..._METRICS_...),
# parameters from PREDICTIVE_UNIT_PARAMETERS. Extra arguments go to seldon-core-microservice.
set -e
exec seldon-core-microservice "${MODEL_NAME:-TFLiteServer}" --service-type "${SERVICE_TYPE:-MODEL}" "$@"
