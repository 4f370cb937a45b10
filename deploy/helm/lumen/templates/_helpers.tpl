{{/* Names, labels and the values several templates derive. */}}

{{- define "lumen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lumen.fullname" -}}
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

{{- define "lumen.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lumen.labels" -}}
helm.sh/chart: {{ include "lumen.chart" . }}
app.kubernetes.io/name: {{ include "lumen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lumen
{{- end }}

{{/* The Lumen pods; the in-chart PostgreSQL and Redis have their own component. */}}
{{- define "lumen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lumen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "lumen.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "lumen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lumen.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret whose keys become the environment of the Lumen pods and the migration Job. */}}
{{- define "lumen.secretName" -}}
{{- default (include "lumen.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "lumen.postgresqlName" -}}
{{- printf "%s-postgresql" (include "lumen.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lumen.redisName" -}}
{{- printf "%s-redis" (include "lumen.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* LUMEN_DATABASE_URL: the in-chart PostgreSQL, or the external one. */}}
{{- define "lumen.databaseUrl" -}}
{{- if .Values.postgresql.enabled }}
{{- $auth := .Values.postgresql.auth }}
{{- $password := required "postgresql.auth.password is required with the in-chart PostgreSQL (e.g. --set postgresql.auth.password=$(openssl rand -hex 24))" $auth.password }}
{{- printf "postgresql+asyncpg://%s:%s@%s:5432/%s" $auth.username $password (include "lumen.postgresqlName" .) $auth.database }}
{{- else }}
{{- required "a database is required: set externalDatabase.url (PostgreSQL) or postgresql.enabled=true" .Values.externalDatabase.url }}
{{- end }}
{{- end }}

{{/* LUMEN_REDIS_URL: the in-chart Redis, the external one, or empty. */}}
{{- define "lumen.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- $password := required "redis.auth.password is required with the in-chart Redis (e.g. --set redis.auth.password=$(openssl rand -hex 24))" .Values.redis.auth.password }}
{{- printf "redis://:%s@%s:6379/0" $password (include "lumen.redisName" .) }}
{{- else }}
{{- .Values.externalRedis.url }}
{{- end }}
{{- end }}

{{/* Refuses combinations that would run but lose correctness. */}}
{{- define "lumen.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.secrets.existingSecret) (not .Values.redis.enabled) (not .Values.externalRedis.url) }}
{{- fail "replicaCount > 1 needs Redis (redis.enabled=true or externalRedis.url): without it every replica keeps its own coin balances and rate limits" }}
{{- end }}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.url }}
{{- fail "set either postgresql.enabled=true or externalDatabase.url, not both" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.externalRedis.url }}
{{- fail "set either redis.enabled=true or externalRedis.url, not both" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.secrets.existingSecret) (not .Values.secrets.metricsToken) }}
{{- fail "metrics.serviceMonitor.enabled needs secrets.metricsToken: without a token /metrics is off" }}
{{- end }}
{{- end }}

{{/* The Lumen container's security context and the volumes it writes to (the root file system
is read-only). */}}
{{- define "lumen.writableVolumes" -}}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "lumen.writableMounts" -}}
- name: data
  mountPath: /var/lib/lumen
- name: tmp
  mountPath: /tmp
{{- end }}
