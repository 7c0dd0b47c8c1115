{{/*
Helpers of the qwen-serve chart. Numbers from values files are float64 in Helm, so every number
that is printed goes through int64 (a large one would otherwise print as 2.29e+09).
*/}}

{{- define "qwen-serve.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "qwen-serve.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "qwen-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qwen-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "qwen-serve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "qwen-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "qwen-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "qwen-serve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "qwen-serve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The directory the server sees the model in, and the file's path. */}}
{{- define "qwen-serve.modelDir" -}}
{{- if eq .Values.model.source "image" }}
{{- .Values.model.image.dir }}
{{- else }}
{{- "/models" }}
{{- end }}
{{- end }}

{{- define "qwen-serve.modelPath" -}}
{{- printf "%s/%s" (include "qwen-serve.modelDir" .) .Values.model.file }}
{{- end }}

{{/* Fails on combinations the schema cannot express. */}}
{{- define "qwen-serve.validate" -}}
{{- $m := .Values.model }}
{{- if and (eq $m.source "url") (or (not $m.url) (not $m.sha256)) }}
{{- fail "model.source url needs model.url and model.sha256" }}
{{- end }}
{{- if and (eq $m.source "pvc") (not $m.pvc.claimName) }}
{{- fail "model.source pvc needs model.pvc.claimName" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.secretName) }}
{{- fail "auth.enabled needs auth.secretName" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.exemptProbes) (not .Values.tls.enabled) }}
{{- fail "auth.exemptProbes false would fail the kubelet's gRPC probes, which send no token" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int64 .Values.metrics.port) (int64 .Values.server.port)) }}
{{- fail "metrics.port must differ from server.port" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int64 .Values.autoscaling.maxReplicas) (int64 .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- if not (kindIs "invalid" .Values.lifecycle.terminationGracePeriodSeconds) }}
{{- if lt (int64 .Values.lifecycle.terminationGracePeriodSeconds) (add (int64 .Values.lifecycle.preStopSleepSeconds) (int64 .Values.server.gracePeriodSeconds) 6) }}
{{- fail "lifecycle.terminationGracePeriodSeconds must cover preStopSleepSeconds + server.gracePeriodSeconds + 6 s (gRPC close and worker stop), or streams are killed mid-drain" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- end }}

{{/*
Memory of one pod in bytes, the formula of values.yaml (resources):
weights + workers x slots x (state + kvPerToken x ctx) + workers x (prefixCache + workerOverhead)
+ frontEndOverhead
*/}}
{{- define "qwen-serve.memoryBytes" -}}
{{- $s := .Values.server }}
{{- $mem := .Values.model.memory }}
{{- $kvPerToken := int64 $mem.kvBytesPerTokenF16 }}
{{- if eq $s.kvType "f32" }}{{ $kvPerToken = mul $kvPerToken 2 }}{{ end }}
{{- $slot := add (int64 $mem.stateBytesPerSlot) (mul $kvPerToken (int64 $s.ctxSize)) }}
{{- $slots := mul (int64 $s.workers) (int64 $s.slots) $slot }}
{{- $perWorker := add (mul (int64 $s.prefixCacheMb) 1048576) (int64 .Values.resources.workerOverheadBytes) }}
{{- $overhead := add (mul (int64 $s.workers) $perWorker) (int64 .Values.resources.frontEndOverheadBytes) }}
{{- $weights := int64 $mem.weightsBytes }}
{{- if $s.packedWeights }}{{ $weights = mul $weights 2 }}{{ end }}
{{- add $weights $slots $overhead }}
{{- end }}

{{- define "qwen-serve.memory" -}}
{{- if .Values.resources.memory }}
{{- .Values.resources.memory }}
{{- else }}
{{- $bytes := int64 (include "qwen-serve.memoryBytes" .) }}
{{- printf "%dMi" (div (add $bytes 1048575) 1048576) }}
{{- end }}
{{- end }}

{{- define "qwen-serve.cpu" -}}
{{- if .Values.resources.cpu }}
{{- .Values.resources.cpu }}
{{- else }}
{{- mul (int64 .Values.server.workers) (int64 .Values.server.threads) }}
{{- end }}
{{- end }}

{{/* The download volume: the file plus 64 MiB. */}}
{{- define "qwen-serve.modelVolumeSize" -}}
{{- printf "%dMi" (add (div (add (int64 .Values.model.memory.weightsBytes) 1048575) 1048576) 64) }}
{{- end }}

{{/* Node disk the pod's emptyDirs may use: the downloaded model (source url) and /tmp. */}}
{{- define "qwen-serve.ephemeralStorage" -}}
{{- $tmp := int64 (regexReplaceAll "Mi$" .Values.volumes.tmpSizeLimit "") }}
{{- if eq .Values.model.source "url" }}
{{- printf "%dMi" (add (int64 (trimSuffix "Mi" (include "qwen-serve.modelVolumeSize" .))) $tmp) }}
{{- else }}
{{- printf "%dMi" $tmp }}
{{- end }}
{{- end }}

{{- define "qwen-serve.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.lifecycle.terminationGracePeriodSeconds }}
{{- add (int64 .Values.lifecycle.preStopSleepSeconds) (int64 .Values.server.gracePeriodSeconds) 15 }}
{{- else }}
{{- int64 .Values.lifecycle.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
The arguments of `qwen serve`, one per line: every flag is derived from one value, so the
command line reads straight off values.yaml (strings are quoted: "--host=::" is not YAML's key). tests/deploy checks it with `qwen serve --check_config`.
*/}}
{{- define "qwen-serve.args" -}}
{{- $s := .Values.server -}}
- serve
- {{ printf "--model=%s" (include "qwen-serve.modelPath" .) | quote }}
- {{ printf "--host=%s" $s.host | quote }}
- --port={{ int64 $s.port }}
- --workers={{ int64 $s.workers }}
- --slots={{ int64 $s.slots }}
- --threads={{ int64 $s.threads }}
- --ctx_size={{ int64 $s.ctxSize }}
- {{ printf "--kv_type=%s" $s.kvType | quote }}
- --prefill_chunk={{ int64 $s.prefillChunk }}
- --prefix_cache_mb={{ int64 $s.prefixCacheMb }}
- --snapshot_interval={{ int64 $s.snapshotInterval }}
{{- if $s.packedWeights }}
- --packed_dir=/dev/shm
{{- else }}
- --packed_dir=
{{- end }}
- --queue_size={{ int64 $s.queueSize }}
- --default_max_tokens={{ int64 $s.defaultMaxTokens }}
- {{ printf "--socket_dir=%s" $s.socketDir | quote }}
- --grace_period={{ int64 $s.gracePeriodSeconds }}s
- --worker_startup_timeout={{ int64 $s.workerStartupTimeoutSeconds }}s
- --max_connection_age={{ int64 $s.maxConnectionAgeSeconds }}s
- --max_connection_age_grace={{ int64 $s.maxConnectionAgeGraceSeconds }}s
- --metrics_port={{ ternary (int64 .Values.metrics.port) 0 .Values.metrics.enabled }}
{{- with .Values.logging.level }}
- {{ printf "--log_level=%s" . | quote }}
{{- end }}
- {{ printf "--log_format=%s" .Values.logging.format | quote }}
{{- if .Values.tls.enabled }}
- --tls_cert=/etc/qwen/tls/tls.crt
- --tls_key=/etc/qwen/tls/tls.key
{{- if .Values.tls.clientCA }}
- --tls_client_ca=/etc/qwen/tls/ca.crt
{{- end }}
{{- end }}
{{- if .Values.auth.enabled }}
- {{ printf "--auth_tokens_file=/etc/qwen/auth/%s" .Values.auth.secretKey | quote }}
- --auth_exempt_probes={{ .Values.auth.exemptProbes }}
{{- end }}
{{- with $s.limits }}
{{- if not (kindIs "invalid" .maxMessageBytes) }}
- --max_message_bytes={{ int64 .maxMessageBytes }}
{{- end }}
{{- if not (kindIs "invalid" .maxConcurrentStreams) }}
- --max_concurrent_streams={{ int64 .maxConcurrentStreams }}
{{- end }}
{{- if not (kindIs "invalid" .maxTools) }}
- --max_tools={{ int64 .maxTools }}
{{- end }}
{{- if not (kindIs "invalid" .maxStopStrings) }}
- --max_stop_strings={{ int64 .maxStopStrings }}
{{- end }}
{{- end }}
{{- range $s.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* A probe's check: gRPC health, or a TCP connect when the port speaks TLS (see tls). */}}
{{- define "qwen-serve.probeCheck" -}}
{{- if .Values.tls.enabled -}}
tcpSocket:
  port: grpc
{{- else -}}
grpc:
  port: {{ int64 .Values.server.port }}
  service: {{ .Values.probes.grpcService }}
{{- end -}}
{{- end }}

{{/* Every container: the image's non-root user, nothing to escalate, a read-only root. */}}
{{- define "qwen-serve.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int64 .Values.securityContext.runAsUser }}
runAsGroup: {{ int64 .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
