{{/* The chart's name, cut to the 63 characters of a DNS label. */}}
{{- define "procsnap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the resources: the release name, with the chart name unless the release name
already holds it; 63 characters at most.
*/}}
{{- define "procsnap.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "procsnap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels of every resource. */}}
{{- define "procsnap.labels" -}}
helm.sh/chart: {{ include "procsnap.chart" . }}
{{ include "procsnap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: metrics
{{- with .Values.commonLabels }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end }}

{{/* The labels that select the pods (the DaemonSet's, the Service's and the monitors'). */}}
{{- define "procsnap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "procsnap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The namespace of every resource. */}}
{{- define "procsnap.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "procsnap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "procsnap.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag[@digest]; the tag defaults to the chart's appVersion. */}}
{{- define "procsnap.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- $ref := printf "%s:%s" .Values.image.repository $tag }}
{{- with .Values.image.registry }}{{ $ref = printf "%s/%s" . $ref }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- $ref }}
{{- end }}
{{- end }}

{{/* true when procsnap serves HTTP (/metrics, /healthz): everything but OTLP-only. */}}
{{- define "procsnap.serveHTTP" -}}
{{- if not (and .Values.otlp.enabled .Values.otlp.only) }}true{{ end }}
{{- end }}

{{/* Where the process config is mounted, and the file procsnap reads. */}}
{{- define "procsnap.configDir" -}}/etc/procsnap{{- end }}
{{- define "procsnap.configFile" -}}{{ include "procsnap.configDir" . }}/config.yaml{{- end }}

{{/*
The container's security context: containerSecurityContext, plus exactly SYS_PTRACE and
DAC_READ_SEARCH with fullVisibility and BPF and PERFMON with bpf (both need uid 0: the kernel
gives a container's added capabilities to uid 0 only).
*/}}
{{- define "procsnap.containerSecurityContext" -}}
{{- $sc := deepCopy (default dict .Values.containerSecurityContext) }}
{{- $add := list }}
{{- $uid := .Values.securityContext.runAsUser }}
{{- if hasKey $sc "runAsUser" }}{{ $uid = $sc.runAsUser }}{{ end }}
{{- $root := not (or (kindIs "invalid" $uid) (ne (int64 $uid) 0)) }}
{{- if .Values.fullVisibility }}
{{- if not $root }}
{{- fail "fullVisibility needs runAsUser 0: Kubernetes gives added capabilities to uid 0 only (no ambient capabilities)" }}
{{- end }}
{{- $add = concat $add (list "SYS_PTRACE" "DAC_READ_SEARCH") }}
{{- end }}
{{- if .Values.bpf }}
{{- if not $root }}
{{- fail "bpf needs runAsUser 0: Kubernetes gives added capabilities to uid 0 only (no ambient capabilities)" }}
{{- end }}
{{- $add = concat $add (list "BPF" "PERFMON") }}
{{- end }}
{{- if $add }}
{{- $caps := deepCopy (default dict $sc.capabilities) }}
{{- $_ := set $caps "add" $add }}
{{- $_ := set $sc "capabilities" $caps }}
{{- end }}
{{- toYaml $sc }}
{{- end }}
