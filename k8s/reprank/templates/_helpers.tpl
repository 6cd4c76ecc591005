{{/* Names and labels */}}
{{- define "reprank.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "reprank.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "reprank.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "reprank.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "reprank.labels" -}}
app.kubernetes.io/name: {{ include "reprank.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "reprank.metaLabels" . }}
{{- end -}}

{{- define "reprank.metaLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: reprank
{{- end -}}

{{/* Selector labels of one component: dict "root" $ "component" "gateway" */}}
{{- define "reprank.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reprank.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "reprank.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "reprank.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The CPU image (gateway, role all, CPU indexer) or the CUDA image (GPU workers): dict "root" $ "gpu" bool */}}
{{- define "reprank.image" -}}
{{- $img := ternary .root.Values.gpuImage .root.Values.image .gpu -}}
{{- $tag := $img.tag | default (printf "%s%s" .root.Chart.AppVersion ($img.tagSuffix | default "")) -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}

{{/* Qdrant server URL: an external one, else the bundled chart's Service, else "" (embedded store). */}}
{{- define "reprank.qdrantUrl" -}}
{{- if .Values.externalQdrant.url -}}
{{- .Values.externalQdrant.url -}}
{{- else if .Values.qdrant.enabled -}}
{{- $name := .Values.qdrant.fullnameOverride | default (ternary .Release.Name (printf "%s-qdrant" .Release.Name) (contains "qdrant" .Release.Name)) -}}
{{- printf "http://%s:6333" ($name | trunc 63 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{- define "reprank.apiKeySecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "reprank.fullname" .)) -}}
{{- end -}}

{{/* The Service's metrics port, when /metrics has a port of its own */}}
{{- define "reprank.metricsServicePort" -}}
{{- with .Values.metrics.port }}
- name: metrics
  port: {{ . }}
  targetPort: metrics
  protocol: TCP
{{- end }}
{{- end -}}

{{- define "reprank.workerUrl" -}}
{{- printf "http://%s-%s:%v" (include "reprank.fullname" .root) .component .root.Values.workerServicePort -}}
{{- end -}}

{{/* REPRANK_* env items from values: dict "c" <values map> "fields" <values key: settings field, upper case> */}}
{{- define "reprank.settingsEnv" -}}
{{- range $key, $field := .fields }}
{{- $value := index $.c $key }}
{{- if or (kindIs "bool" $value) $value }}
- name: REPRANK_{{ $field }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The settings of a model-serving process: its model fields plus the batching knobs */}}
{{- define "reprank.modelEnv" -}}
{{- $fields := merge (dict "device" "DEVICE" "dtype" "DTYPE" "maxBatchTokens" "MAX_BATCH_TOKENS" "maxBatchSize" "MAX_BATCH_SIZE" "maxQueueTokens" "MAX_QUEUE_TOKENS") .fields -}}
{{- include "reprank.settingsEnv" (dict "c" .c "fields" $fields) }}
{{- end -}}

{{/* Qdrant server collection settings (indexer/qdrant_config.py), for the processes that open the store */}}
{{- define "reprank.qdrantEnv" -}}
{{- if include "reprank.qdrantUrl" . }}
{{- $fields := dict "hnswM" "QDRANT_HNSW_M" "hnswEfConstruct" "QDRANT_HNSW_EF_CONSTRUCT" "hnswEf" "QDRANT_HNSW_EF" "quantization" "QDRANT_QUANTIZATION" "quantizationAlwaysRam" "QDRANT_QUANTIZATION_ALWAYS_RAM" "oversampling" "QDRANT_OVERSAMPLING" "rescore" "QDRANT_RESCORE" "onDisk" "QDRANT_ON_DISK" "shardNumber" "QDRANT_SHARD_NUMBER" "replicationFactor" "QDRANT_REPLICATION_FACTOR" "writeConsistencyFactor" "QDRANT_WRITE_CONSISTENCY_FACTOR" "payloadIndexes" "QDRANT_PAYLOAD_INDEXES" }}
{{- include "reprank.settingsEnv" (dict "c" .Values.qdrantCollection "fields" $fields) }}
{{- end }}
{{- end -}}

{{/*
The pod template of one component.
dict "root" $ "component" "gateway" "c" .Values.gateway "args" (list ...) "gpu" false "data" bool "store" bool
     "env" (list ...): data mounts the embedded store's volume, store passes the Qdrant settings
     "fields" (dict "model" "MODEL" ...): which of the component's values become which REPRANK_* setting
*/}}
{{- define "reprank.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $probes := .c.probes | default $v.probes -}}
metadata:
  labels:
    {{- include "reprank.selectorLabels" . | nindent 4 }}
    {{- include "reprank.metaLabels" $root | nindent 4 }}
  {{- $annotations := deepCopy (.c.podAnnotations | default dict) }}
  {{- if and $v.apiKeys.enabled (not $v.apiKeys.existingSecret) (eq .component "gateway") }}
  {{- $_ := set $annotations "checksum/api-keys" ($v.apiKeys.keys | toJson | sha256sum) }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "reprank.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .c.terminationGracePeriodSeconds | default 30 }}
  containers:
    - name: {{ .component }}
      image: {{ include "reprank.image" (dict "root" $root "gpu" .gpu) | quote }}
      imagePullPolicy: {{ (ternary $v.gpuImage $v.image .gpu).pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      ports:
        - name: http
          containerPort: 8000
          protocol: TCP
        {{- with $v.metrics.port }}
        - name: metrics
          containerPort: {{ . }}
          protocol: TCP
        {{- end }}
      env:
        {{- with $v.metrics.port }}
        - name: REPRANK_METRICS_PORT  # /metrics here instead of on the API port
          value: {{ . | quote }}
        {{- end }}
        - name: REPRANK_HOST
          value: "0.0.0.0"
        - name: REPRANK_PORT
          value: "8000"
        - name: HOME
          value: /tmp
        - name: HF_HUB_OFFLINE
          value: "1"
        - name: REPRANK_MODEL_CACHE  # where the bundled GGUF model is de-quantized once
          value: {{ ternary "/tmp/model-cache" (printf "%s/cache" $v.models.mountPath) (.c.modelsReadOnly | default false) | quote }}
        - name: REPRANK_SHUTDOWN_DELAY  # /readyz says 503 this long after SIGTERM, then in-flight requests drain
          value: {{ $v.shutdownDelaySeconds | quote }}
        {{- if .store }}
        - name: REPRANK_COLLECTION
          value: {{ $v.collection | quote }}
        {{- with include "reprank.qdrantUrl" $root }}
        - name: REPRANK_QDRANT_URL
          value: {{ . | quote }}
        {{- end }}
        {{- with $v.qdrantApiKey.existingSecret }}
        - name: REPRANK_QDRANT_API_KEY
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $v.qdrantApiKey.key }}
        {{- end }}
        {{- include "reprank.qdrantEnv" $root | nindent 8 }}
        {{- end }}
        {{- if .data }}
        - name: REPRANK_DATA_DIR
          value: /data
        {{- end }}
        {{- include "reprank.modelEnv" (dict "c" .c "fields" .fields) | nindent 8 }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- range $name, $value := $v.extraEnv }}
        - name: {{ $name }}
          value: {{ $value | quote }}
        {{- end }}
        {{- range $name, $value := .c.extraEnv }}
        - name: {{ $name }}
          value: {{ $value | quote }}
        {{- end }}
      startupProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $probes.startup.periodSeconds }}
        failureThreshold: {{ $probes.startup.failureThreshold }}
        timeoutSeconds: 5
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $probes.readiness.periodSeconds }}
        failureThreshold: {{ $probes.readiness.failureThreshold }}
        timeoutSeconds: 5
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: {{ $probes.liveness.periodSeconds }}
        failureThreshold: {{ $probes.liveness.failureThreshold }}
        timeoutSeconds: 5
      resources:
        {{- $res := deepCopy (.c.resources | default dict) -}}
        {{- if and .gpu .c.gpus }}
        {{- $limits := merge (dict "nvidia.com/gpu" .c.gpus) ($res.limits | default dict) -}}
        {{- $_ := set $res "limits" $limits -}}
        {{- end }}
        {{- toYaml $res | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: models
          mountPath: {{ $v.models.mountPath }}
          readOnly: {{ .c.modelsReadOnly | default false }}
        {{- if .data }}
        - name: data
          mountPath: /data
        {{- end }}
        {{- if and $v.apiKeys.enabled (eq .component "gateway") }}
        - name: api-keys
          mountPath: /etc/reprank/api-keys
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    - name: models
      {{- include "reprank.modelVolume" $root | nindent 6 }}
    {{- if .data }}
    - name: data
      {{- if $v.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ $v.persistence.existingClaim | default (printf "%s-data" (include "reprank.fullname" $root)) }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- if and $v.apiKeys.enabled (eq .component "gateway") }}
    - name: api-keys
      secret:
        secretName: {{ include "reprank.apiKeySecretName" $root }}
    {{- end }}
  {{- with .c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .c.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .c.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "reprank.modelVolume" -}}
{{- $m := .Values.models.volume -}}
{{- if eq $m.type "pvc" -}}
persistentVolumeClaim:
  claimName: {{ $m.existingClaim | default (printf "%s-models" (include "reprank.fullname" .)) }}
{{- else if eq $m.type "hostPath" -}}
hostPath:
  path: {{ $m.hostPath }}
  type: Directory
{{- else if eq $m.type "emptyDir" -}}
emptyDir: {}
{{- else -}}
{{- fail (printf "models.volume.type must be pvc, hostPath or emptyDir, not %q" $m.type) -}}
{{- end -}}
{{- end -}}
