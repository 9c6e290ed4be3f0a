{{- define "loadlab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "loadlab.labels" -}}
app.kubernetes.io/name: loadlab
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "loadlab.selector" -}}
app.kubernetes.io/name: loadlab
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "loadlab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "loadlab.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "loadlab.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "loadlab.postgresql" -}}
{{- printf "%s-postgresql" (include "loadlab.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "loadlab.tokenKeySecret" -}}
{{- default (printf "%s-token-key" (include "loadlab.fullname" . | trunc 53 | trimSuffix "-")) .Values.controller.tokenKey.existingSecret -}}
{{- end -}}
