{{/* SeldonDeployment name: .Values.name, else the release name. */}}
{{- define "edge-model.name" -}}
{{- .Values.name | default .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge-model.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "edge-model.labels" -}}
app.kubernetes.io/name: {{ include "edge-model.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: model-server
app.kubernetes.io/part-of: edgeservers
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
Names the Seldon operator itself uses for the model download (operator/controllers/model_initializer_injector.go):
init container "<container>-model-initializer", emptyDir volume "<container>-provision-location", both cut at 63.
With an init container of exactly that name already in componentSpecs, InjectModelInitializer adds no second
one, and it mounts no second volume at /mnt/models on the model container because ours has that name.
*/}}
{{- define "edge-model.initializerName" -}}
{{- printf "%s-model-initializer" .Values.unitName | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge-model.modelVolume" -}}
{{- printf "%s-provision-location" .Values.unitName | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The server class the image runs (env MODEL_NAME), per implementation. */}}
{{- define "edge-model.serverClass" -}}
{{- $classes := dict "TFLITE_SERVER" "TFLiteServer" "OPENVINO_SERVER" "OpenVINOServer" -}}
{{- get $classes .Values.implementation | required (printf "implementation must be TFLITE_SERVER or OPENVINO_SERVER, got %q" .Values.implementation) -}}
{{- end -}}

{{/*
Graph parameters as Seldon wants them: [{name, type, value}] with string values. Types follow the
server's Settings (edgeservers/settings.py); a test checks this table against it. values.schema.json
lists the names the server knows (model_uri is not among them: the operator sets it to /mnt/models).
*/}}
{{- define "edge-model.parameters" -}}
{{- $types := dict "top_k" "INT" "num_threads" "INT" "pool_size" "INT" "max_detections" "INT" "min_region_area" "INT" "confidence_threshold" "FLOAT" "metrics_interval" "FLOAT" "model_poll_interval" "FLOAT" "score_threshold" "FLOAT" "nms_iou_threshold" "FLOAT" "mask_threshold" "FLOAT" "return_mask" "BOOL" "grpc_reflection" "BOOL" "reduced_decode" "BOOL" "max_request_bytes" "INT" "max_image_pixels" "INT" "max_connections" "INT" "header_timeout" "FLOAT" "body_timeout" "FLOAT" "graceful_timeout" "FLOAT" "uncertain_queue_size" "INT" "max_response_bytes" "INT" "image_store_timeout" "FLOAT" "max_event_records" "INT" "uncertain_spool_max_bytes" "INT" "uncertain_spool_max_files" "INT" "weak_box_fraction" "FLOAT" "escalate_timeout" "FLOAT" "escalate_breaker_failures" "INT" "escalate_breaker_cooldown" "FLOAT" -}}
{{- range $name := keys .Values.parameters | sortAlpha }}
{{- $value := get $.Values.parameters $name }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
- name: {{ $name }}
  type: {{ get $types $name | default "STRING" }}
  value: {{ include "edge-model.parameterValue" $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
One parameter value as Seldon's text: a number read from a values file is a float64 to Helm (8388608
is 8.388608e+06 to toString), so a whole number is written in digits ("%.0f", exact at any size up to
2^53, digits beyond) and any other number in Go's shortest form that reads back as the same float
(0.6, 1e-07); strings and booleans as given.
*/}}
{{- define "edge-model.parameterValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- printf "%.0f" . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "edge-model.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "edge-model.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end -}}
