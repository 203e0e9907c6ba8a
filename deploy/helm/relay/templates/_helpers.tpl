{{/* Chart label value: name-version. */}}
{{- define "relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The image reference: repository@digest, or repository:tag (default appVersion). */}}
{{- define "relay.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* relay-server labels. */}}
{{- define "relay.server.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.server.name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "relay.server.labels" -}}
{{ include "relay.server.selectorLabels" . }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: relay
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "relay.chart" . }}
{{- end -}}

{{/* relay-agent labels. */}}
{{- define "relay.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.agent.name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "relay.agent.labels" -}}
{{ include "relay.agent.selectorLabels" . }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: relay
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "relay.chart" . }}
{{- end -}}

{{/* relay.yaml: the configured values plus what the chart owns (ports, data directory). */}}
{{- define "relay.server.config" -}}
{{- $config := deepCopy .Values.server.config -}}
{{- $_ := set $config "listen" (printf "0.0.0.0:%v" .Values.server.tunnelPort) -}}
{{- $_ := set $config "http" (printf "0.0.0.0:%v" .Values.server.httpPort) -}}
{{- $_ := set $config "dataDir" "/var/lib/relay" -}}
{{- toYaml $config -}}
{{- end -}}

{{/* agent.yaml: the configured values plus listen, dataDir and the default flux.url. */}}
{{- define "relay.agent.config" -}}
{{- $config := deepCopy .Values.agent.config -}}
{{- $_ := set $config "listen" (printf "0.0.0.0:%v" .Values.agent.port) -}}
{{- $_ := set $config "dataDir" "/var/lib/relay-agent" -}}
{{- $flux := $config.flux | default dict -}}
{{- if not $flux.url -}}
{{- $_ := set $flux "url" (printf "http://%s.%s.svc.%s.:%v" .Values.agent.name .Release.Namespace .Values.clusterDomain .Values.agent.port) -}}
{{- end -}}
{{- $_ := set $config "flux" $flux -}}
{{- toYaml $config -}}
{{- end -}}
