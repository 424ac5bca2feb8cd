{{- define "vx11.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vx11.labels" -}}
app.kubernetes.io/name: vx11
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "vx11.selector" -}}
app.kubernetes.io/name: vx11
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vx11.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The restricted Pod Security Standard, for every pod and container. */}}
{{- define "vx11.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "vx11.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "vx11.backendName" -}}
{{ include "vx11.fullname" . }}-operator-backend
{{- end -}}

{{/*
Ingress to a metrics port (dict: root, port, controller): from the monitoring peers of
networkPolicy.metrics (pods in namespaces with `namespaceLabels`, narrowed to `podLabels`;
only `podLabels`: those pods of the release's namespace; plus `extraFrom`) and, with
controller=true, from the release's controller pods (they ask `GET /generation` for staged
rotation). No peer at all: no rule (nothing but the node gets in).
*/}}
{{- define "vx11.metricsIngress" -}}
{{- $m := .root.Values.networkPolicy.metrics -}}
{{- if or .controller $m.namespaceLabels $m.podLabels $m.extraFrom -}}
- from:
    {{- if .controller }}
    - podSelector:
        matchLabels:
          {{- include "vx11.selector" (dict "root" .root "component" "controller") | nindent 10 }}
    {{- end }}
    {{- if $m.namespaceLabels }}
    - namespaceSelector:
        matchLabels:
          {{- toYaml $m.namespaceLabels | nindent 10 }}
      {{- if $m.podLabels }}
      podSelector:
        matchLabels:
          {{- toYaml $m.podLabels | nindent 10 }}
      {{- end }}
    {{- else if $m.podLabels }}
    - podSelector:
        matchLabels:
          {{- toYaml $m.podLabels | nindent 10 }}
    {{- end }}
    {{- with $m.extraFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end }}
{{- end -}}

{{/* Egress to DNS servers, wherever the cluster runs them (a Service or the node). */}}
{{- define "vx11.dnsEgress" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}
