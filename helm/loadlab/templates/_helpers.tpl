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

{{/* The namespaces experiments may run in, comma-separated: the release's own unless
     experimentNamespaces names others, or "*" for every namespace. */}}
{{- define "loadlab.experimentNamespaces" -}}
{{- $namespaces := .Values.experimentNamespaces | default (list .Release.Namespace) -}}
{{- if and (has "*" $namespaces) (gt (len $namespaces) 1) -}}
{{- fail "experimentNamespaces: \"*\" (every namespace) stands alone" -}}
{{- end -}}
{{- join "," $namespaces -}}
{{- end -}}

{{/* What the controller does in a namespace experiments run in. */}}
{{- define "loadlab.experimentRules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "deletecollection"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- if .Values.networkPolicy.enabled }}
# One per experiment, owned by it: only this controller reaches its pods.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create"]
{{- end }}
{{- end -}}
