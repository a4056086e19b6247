{{/* The chart name, overridable. */}}
{{- define "abacus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name alone when it already contains the chart name. */}}
{{- define "abacus.fullname" -}}
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

{{- define "abacus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: immutable, so only name and instance (and component for Redis). */}}
{{- define "abacus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "abacus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "abacus.labels" -}}
helm.sh/chart: {{ include "abacus.chart" . }}
{{ include "abacus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "abacus.serverSelectorLabels" -}}
{{ include "abacus.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "abacus.serverLabels" -}}
{{ include "abacus.labels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "abacus.redisSelectorLabels" -}}
{{ include "abacus.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "abacus.redisLabels" -}}
{{ include "abacus.labels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "abacus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "abacus.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the AbacusConfig the pods watch. */}}
{{- define "abacus.configMapName" -}}
{{- printf "%s-config" (include "abacus.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "abacus.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "abacus.redisName" -}}
{{- printf "%s-redis" (include "abacus.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret with the Redis password, generated or the user's. */}}
{{- define "abacus.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- default (include "abacus.redisName" .) .Values.redis.auth.existingSecret }}
{{- else }}
{{- .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{/* The URL Abacus connects to (without the password, which comes from a file). */}}
{{- define "abacus.redisUrl" -}}
{{- $redis := include "abacus.redisName" . }}
{{- if not .Values.redis.enabled }}
{{- required "externalRedis.url is required when redis.enabled=false" .Values.externalRedis.url }}
{{- else if .Values.redis.sentinel.enabled }}
{{- $hosts := list }}
{{- range $i := until (int .Values.redis.sentinel.replicas) }}
{{- $hosts = append $hosts (printf "%s-%d.%s-headless:26379" $redis $i $redis) }}
{{- end }}
{{- printf "redis+sentinel://%s/%s" (join "," $hosts) .Values.redis.sentinel.masterName }}
{{- else }}
{{- printf "redis://%s:6379" $redis }}
{{- end }}
{{- end }}

{{/* The Secret with the requestState keys (and the JWKS, when given inline). */}}
{{- define "abacus.secretName" -}}
{{- include "abacus.fullname" . }}
{{- end }}

{{/* A random value kept across upgrades: the existing Secret's key if there is one. */}}
{{- define "abacus.keepOrGenerate" -}}
{{- $secret := lookup "v1" "Secret" .namespace .name }}
{{- if and $secret (index ($secret.data | default dict) .key) }}
{{- index $secret.data .key }}
{{- else }}
{{- randAlphaNum .length | b64enc }}
{{- end }}
{{- end }}

{{/* Host names of the Service, always allowed by the Host check. */}}
{{- define "abacus.serviceHosts" -}}
{{- $svc := include "abacus.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}
