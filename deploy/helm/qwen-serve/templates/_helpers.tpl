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
{{- if and (ne $m.source "url") (ne $m.download.cache "pod") }}
{{- fail (printf "model.download.cache %s is where downloads are kept: it needs model.source url (not %s)" $m.download.cache $m.source) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.secretName) }}
{{- fail "auth.enabled needs auth.secretName" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int64 .Values.metrics.port) (int64 .Values.server.port)) }}
{{- fail "metrics.port must differ from server.port" }}
{{- end }}
{{- if and (include "qwen-serve.useHealthPort" .) (or (eq (int64 .Values.probes.healthPort) (int64 .Values.server.port)) (and .Values.metrics.enabled (eq (int64 .Values.probes.healthPort) (int64 .Values.metrics.port)))) }}
{{- fail "probes.healthPort must differ from server.port and metrics.port" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- if lt (int64 .Values.autoscaling.maxReplicas) (int64 .Values.autoscaling.minReplicas) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- if not .Values.metrics.enabled }}
{{- fail "autoscaling.enabled needs metrics.enabled: it scales on the server's queue and slot gauges" }}
{{- end }}
{{- end }}
{{- if hasKey .Values.lifecycle "terminationGracePeriodSeconds" }}
{{- if lt (int64 .Values.lifecycle.terminationGracePeriodSeconds) (add (int64 .Values.lifecycle.preStopSleepSeconds) (int64 .Values.server.gracePeriodSeconds) 6) }}
{{- fail "lifecycle.terminationGracePeriodSeconds must cover preStopSleepSeconds + server.gracePeriodSeconds + 6 s (gRPC close and worker stop), or streams are killed mid-drain" }}
{{- end }}
{{- end }}
{{- if hasKey .Values.lifecycle "progressDeadlineSeconds" }}
{{- if lt (int64 .Values.lifecycle.progressDeadlineSeconds) (int64 (include "qwen-serve.startBudgetSeconds" .)) }}
{{- fail (printf "lifecycle.progressDeadlineSeconds must cover the download and the startup budget (%s s), or a first rollout that is still downloading is reported as failed" (include "qwen-serve.startBudgetSeconds" .)) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.route.enabled (not .Values.route.parentRefs) }}
{{- fail "route.enabled needs route.parentRefs (the Gateway to attach to)" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs ingress.hosts" }}
{{- end }}
{{- end }}

{{/*
Whether the probes use the loopback health port (`qwen health` in the container): the kubelet's
native gRPC probes speak neither TLS nor send a token.
*/}}
{{- define "qwen-serve.useHealthPort" -}}
{{- if or .Values.tls.enabled (and .Values.auth.enabled (not .Values.auth.exemptProbes)) }}true{{ end }}
{{- end }}

{{/* Whether the pod downloads the model itself (an init container running fetch-model). */}}
{{- define "qwen-serve.podDownloads" -}}
{{- if and (eq .Values.model.source "url") (ne .Values.model.download.cache "cluster") }}true{{ end }}
{{- end }}

{{/* Seconds from a pod's creation to its readiness at worst: its download (or its wait for the
cluster's) and the startup probe's budget. */}}
{{- define "qwen-serve.startBudgetSeconds" -}}
{{- $download := 0 }}
{{- if eq .Values.model.source "url" }}{{ $download = int64 .Values.model.download.budgetSeconds }}{{ end }}
{{- add $download (int64 .Values.probes.startup.budgetSeconds) }}
{{- end }}

{{- define "qwen-serve.progressDeadlineSeconds" -}}
{{- if hasKey .Values.lifecycle "progressDeadlineSeconds" }}
{{- int64 .Values.lifecycle.progressDeadlineSeconds }}
{{- else }}
{{- add (int64 (include "qwen-serve.startBudgetSeconds" .)) 60 }}
{{- end }}
{{- end }}

{{/* Labels of the cluster cache's download Job: not the server's selector (no Service, PDB or
NetworkPolicy of the server selects it). */}}
{{- define "qwen-serve.fetchSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-model-fetch" (include "qwen-serve.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The download's environment: TMPDIR, then model.download.extraEnv. */}}
{{- define "qwen-serve.fetchEnv" -}}
env:
  - name: TMPDIR
    value: /tmp
  {{- with .Values.model.download.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.model.download.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* requests = limits: Guaranteed QoS needs every container, init containers too, so. */}}
{{- define "qwen-serve.fetchResources" -}}
requests:
  cpu: {{ .Values.model.download.resources.cpu | quote }}
  memory: {{ .Values.model.download.resources.memory | quote }}
limits:
  cpu: {{ .Values.model.download.resources.cpu | quote }}
  memory: {{ .Values.model.download.resources.memory | quote }}
{{- end }}

{{/* fetch-model's arguments for the model. */}}
{{- define "qwen-serve.fetchArgs" -}}
- --url
- {{ .Values.model.url | quote }}
- --sha256
- {{ .Values.model.sha256 | quote }}
- --size
- {{ int64 .Values.model.memory.weightsBytes | quote }}
- --out
- /models
- --file
- {{ .Values.model.file | quote }}
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

{{/* The download volume (pod cache) or claim (cluster cache): the file plus 64 MiB. */}}
{{- define "qwen-serve.modelVolumeSize" -}}
{{- printf "%dMi" (add (div (add (int64 .Values.model.memory.weightsBytes) 1048575) 1048576) 64) }}
{{- end }}

{{/* Node disk the pod's emptyDirs may use: the downloaded model (cache pod) and /tmp. */}}
{{- define "qwen-serve.ephemeralStorage" -}}
{{- $tmp := int64 (regexReplaceAll "Mi$" .Values.volumes.tmpSizeLimit "") }}
{{- if and (eq .Values.model.source "url") (eq .Values.model.download.cache "pod") }}
{{- printf "%dMi" (add (int64 (trimSuffix "Mi" (include "qwen-serve.modelVolumeSize" .))) $tmp) }}
{{- else }}
{{- printf "%dMi" $tmp }}
{{- end }}
{{- end }}

{{- define "qwen-serve.terminationGracePeriodSeconds" -}}
{{- if hasKey .Values.lifecycle "terminationGracePeriodSeconds" }}
{{- int64 .Values.lifecycle.terminationGracePeriodSeconds }}
{{- else }}
{{- add (int64 .Values.lifecycle.preStopSleepSeconds) (int64 .Values.server.gracePeriodSeconds) 15 }}
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
- --http_port={{ ternary (int64 .Values.http.port) 0 .Values.http.enabled }}
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
{{- if or .Values.tls.enabled .Values.auth.enabled }}
- --credentials_reload_interval={{ int64 .Values.credentialsReloadSeconds }}s
{{- end }}
{{- if include "qwen-serve.useHealthPort" . }}
- --health_port={{ int64 .Values.probes.healthPort }}
{{- end }}
{{- $limits := $s.limits | default dict }}
{{- if hasKey $limits "maxMessageBytes" }}
- --max_message_bytes={{ int64 $limits.maxMessageBytes }}
{{- end }}
{{- if hasKey $limits "maxConcurrentStreams" }}
- --max_concurrent_streams={{ int64 $limits.maxConcurrentStreams }}
{{- end }}
{{- if hasKey $limits "maxTools" }}
- --max_tools={{ int64 $limits.maxTools }}
{{- end }}
{{- if hasKey $limits "maxStopStrings" }}
- --max_stop_strings={{ int64 $limits.maxStopStrings }}
{{- end }}
{{- range $s.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
A probe's check: the kubelet's gRPC health check on the public port, or, when that port speaks
TLS or wants a token (see useHealthPort), `qwen health` in the container against the plaintext
health port on the pod's loopback. `timeout` is the probe's timeoutSeconds.
*/}}
{{- define "qwen-serve.probeCheck" -}}
{{- $ := index . 0 }}
{{- $timeout := int64 (index . 1) }}
{{- if include "qwen-serve.useHealthPort" $ -}}
exec:
  command:
    - /usr/local/bin/qwen
    - health
    - --service={{ $.Values.probes.grpcService }}
    - --probe_timeout={{ max 1 (sub $timeout 1) }}s
    - 127.0.0.1:{{ int64 $.Values.probes.healthPort }}
{{- else -}}
grpc:
  port: {{ int64 $.Values.server.port }}
  service: {{ $.Values.probes.grpcService }}
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

{{/* NetworkPolicy egress rules of a download: DNS, and the download's address and ports. */}}
{{- define "qwen-serve.downloadEgress" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    {{- toYaml $np.dnsTo | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    {{- toYaml $np.downloadTo | nindent 4 }}
  ports:
    {{- range $np.downloadPorts }}
    - port: {{ int64 . }}
      protocol: TCP
    {{- end }}
{{- end }}

{{/* The autoscaler's pace: up at once (a queue is waiting), down slowly (a new pod takes
minutes to download and load the model). */}}
{{- define "qwen-serve.hpaBehavior" -}}
behavior:
  scaleUp:
    stabilizationWindowSeconds: 0
    policies:
      - type: Pods
        value: 2
        periodSeconds: 60
  scaleDown:
    stabilizationWindowSeconds: {{ int64 .Values.autoscaling.scaleDownStabilizationSeconds }}
    policies:
      - type: Pods
        value: 1
        periodSeconds: 300
{{- end }}

{{/* The cluster cache's download Job: its pod template, and a name that changes with it. */}}
{{- define "qwen-serve.fetchJobPod" -}}
metadata:
  labels:
    {{- include "qwen-serve.fetchSelectorLabels" . | nindent 4 }}
spec:
  restartPolicy: OnFailure
  serviceAccountName: {{ include "qwen-serve.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with .Values.image.pullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ int64 .Values.securityContext.runAsUser }}
    runAsGroup: {{ int64 .Values.securityContext.runAsGroup }}
    fsGroup: {{ int64 .Values.securityContext.fsGroup }}
    fsGroupChangePolicy: OnRootMismatch
    seccompProfile:
      type: RuntimeDefault
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: fetch-model
      image: {{ include "qwen-serve.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - fetch-model
        {{- include "qwen-serve.fetchArgs" . | nindent 8 }}
      {{- include "qwen-serve.fetchEnv" . | nindent 6 }}
      resources:
        {{- include "qwen-serve.fetchResources" . | nindent 8 }}
      securityContext:
        {{- include "qwen-serve.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: model
          mountPath: /models
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: model
      persistentVolumeClaim:
        claimName: {{ include "qwen-serve.fullname" . }}-model
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.volumes.tmpSizeLimit }}
{{- end }}

{{- define "qwen-serve.fetchJobName" -}}
{{- printf "%s-fetch-%s" (include "qwen-serve.fullname" . | trunc 46 | trimSuffix "-") (include "qwen-serve.fetchJobPod" . | sha256sum | trunc 10) }}
{{- end }}
