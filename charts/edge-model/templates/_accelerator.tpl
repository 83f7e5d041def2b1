{{/*
The accelerator of the node (docs/accelerators.md): a TFLite delegate library, from the node (delegate.hostPath,
a directory mounted read-only and put on LD_LIBRARY_PATH so that the libraries the delegate needs may sit beside
it) or from the image; and its device files, granted by a device plugin or Akri (devices.resource) and/or
mounted from the node (devices.hostPaths), opened as the group devices.group. Never privileged.
*/}}

{{/* Where delegate.hostPath is mounted in the server container. */}}
{{- define "edge-model.delegateDir" -}}
/opt/edgeservers/delegate
{{- end -}}

{{/* The server parameter `delegate`: delegate.library, inside the mounted directory when delegate.hostPath is set. */}}
{{- define "edge-model.delegateLibrary" -}}
{{- $d := .Values.delegate | default dict -}}
{{- if and $d.hostPath (not $d.library) -}}
{{- fail "delegate.hostPath needs delegate.library: the library's file name in that directory" -}}
{{- end -}}
{{- if $d.library -}}
{{- if hasKey .Values.parameters "delegate" -}}
{{- fail "set the delegate library once: delegate.library (with delegate.hostPath) or parameters.delegate, not both" -}}
{{- end -}}
{{- if $d.hostPath -}}
{{- if contains "/" $d.library -}}
{{- fail (printf "delegate.library %q: with delegate.hostPath, the library's file name in that directory" $d.library) -}}
{{- end -}}
{{- printf "%s/%s" (include "edge-model.delegateDir" .) $d.library -}}
{{- else -}}
{{- $d.library -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The server container's resources: server.resources, plus devices.resource as a limit. */}}
{{- define "edge-model.serverResources" -}}
{{- $resources := deepCopy .Values.server.resources -}}
{{- with (.Values.devices | default dict).resource -}}
{{- $limits := $resources.limits | default dict -}}
{{- $_ := set $limits . ($.Values.devices.count | default 1 | int) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}
