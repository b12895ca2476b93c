{{/* The release's name prefix, at most 63 characters. */}}
{{- define "gantry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gantry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gantry
{{- end -}}

{{- define "gantry.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gantry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "gantry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "gantry.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the Redis URL. */}}
{{- define "gantry.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "gantry.fullname" .)) -}}
{{- end -}}
{{- define "gantry.redisSecretKey" -}}
{{- if .Values.redis.existingSecret -}}{{ .Values.redis.existingSecretKey }}{{- else -}}url{{- end -}}
{{- end -}}

{{/* The retention policy as one line of TOML ("key = value;..."), for GANTRY_RETENTION. */}}
{{- define "gantry.retention" -}}
{{- $parts := list -}}
{{- range $k, $v := .Values.retention -}}
{{- $parts = append $parts (printf "%s = %s" $k (toJson $v)) -}}
{{- end -}}
{{- join ";" $parts -}}
{{- end -}}

{{/* Environment every pod shares: Redis, outputs, retention, extra variables. */}}
{{- /* No default scheduler configuration: the embedded one's API keys are published. Checked
first wherever a pod is rendered, so it is the error a values file without one gets. */ -}}
{{- define "gantry.requireConfig" -}}
{{- $_ := required "scheduler.config is required: the scheduler's TOML with your own tenants and API key hashes (start from `gantry scheduler --print-dev-config`, replace every key; see helm/gantry/README.md)" .Values.scheduler.config -}}
{{- end -}}

{{- define "gantry.env" -}}
{{- include "gantry.requireConfig" . -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "gantry.redisSecret" . }}
      key: {{ include "gantry.redisSecretKey" . }}
- name: GANTRY_OUTPUTS
  value: {{ .Values.outputs | quote }}
- name: GANTRY_RETENTION
  value: {{ include "gantry.retention" . | quote }}
{{- if .Values.dataKeys.existingSecret }}
- name: GANTRY_DATA_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.dataKeys.existingSecret }}
      key: {{ .Values.dataKeys.existingSecretKey }}
{{- else }}
{{- fail "dataKeys.existingSecret is required with your own scheduler.config: prompts and reference images are sealed at rest (see values.yaml)" }}
{{- end }}
{{- if .Values.evidenceKeys.existingSecret }}
- name: GANTRY_EVIDENCE_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.evidenceKeys.existingSecret }}
      key: {{ .Values.evidenceKeys.existingSecretKey }}
{{- end }}
- name: RUST_LOG
  value: info
- name: GANTRY_LOG_FORMAT
  value: {{ .Values.observability.logFormat | quote }}
{{- with .Values.observability.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $.Values.observability.otlpProtocol | default "http/protobuf" | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gantry.envFrom" -}}
{{- range .Values.envFromSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}
