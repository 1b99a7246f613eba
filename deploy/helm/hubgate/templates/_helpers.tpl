{{/* Names and labels. */}}
{{- define "hubgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hubgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "hubgate.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "hubgate.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hubgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hubgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "api") */}}
{{- define "hubgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubgate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hubgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hubgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hubgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secrets the pods read: the one you name, else the one this chart creates. */}}
{{- define "hubgate.secretName" -}}{{ include "hubgate.fullname" . }}{{- end -}}

{{- define "hubgate.databaseSecret" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecret }}
{{- else if .Values.database.url -}}{{ include "hubgate.secretName" . }}
{{- else -}}{{ fail "database: set database.existingSecret (a Secret holding HUBGATE_DATABASE_URL) or database.url" }}
{{- end -}}
{{- end -}}

{{- define "hubgate.s3Secret" -}}
{{- if .Values.s3.existingSecret -}}{{ .Values.s3.existingSecret }}
{{- else if and .Values.s3.accessKeyId .Values.s3.secretAccessKey -}}{{ include "hubgate.secretName" . }}
{{- else if or .Values.s3.accessKeyId .Values.s3.secretAccessKey -}}{{ fail "s3: set both s3.accessKeyId and s3.secretAccessKey (or s3.existingSecret)" }}
{{- end -}}
{{- end -}}

{{- define "hubgate.upstreamSecret" -}}
{{- if .Values.upstream.existingSecret -}}{{ .Values.upstream.existingSecret }}
{{- else if .Values.upstream.token -}}{{ include "hubgate.secretName" . }}
{{- end -}}
{{- end -}}

{{- define "hubgate.keysSecret" -}}
{{- if .Values.keys.existingSecret -}}{{ .Values.keys.existingSecret }}
{{- else if and .Values.keys.signingKey .Values.keys.secretKey -}}{{ printf "%s-keys" (include "hubgate.fullname" .) }}
{{- else -}}{{ fail "keys: set keys.existingSecret (a Secret with signing-key.pem and secret.key) or both keys.signingKey and keys.secretKey: every pod must share them" }}
{{- end -}}
{{- end -}}

{{- define "hubgate.trustedKeysConfigMap" -}}
{{- if .Values.trustedKeys.existingConfigMap -}}{{ .Values.trustedKeys.existingConfigMap }}
{{- else if .Values.trustedKeys.files -}}{{ printf "%s-trusted-keys" (include "hubgate.fullname" .) }}
{{- end -}}
{{- end -}}

{{/* The HUBGATE_* environment both components share: plain settings from the ConfigMap, secrets by reference. */}}
{{- define "hubgate.env" -}}
- name: HUBGATE_SIGNING_KEY_FILE
  value: /etc/hubgate/keys/signing-key.pem
- name: HUBGATE_SECRET_KEY_FILE
  value: /etc/hubgate/keys/secret.key
- name: HUBGATE_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ include "hubgate.databaseSecret" . | quote }}, key: {{ .Values.database.urlKey | quote }}}
{{- with .Values.database.passwordSecret.name }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.database.passwordSecret.key | quote }}}
{{- end }}
{{- with include "hubgate.s3Secret" . }}
- name: HUBGATE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.s3.accessKeyIdKey | quote }}}
- name: HUBGATE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.s3.secretAccessKeyKey | quote }}}
{{- end }}
{{- with include "hubgate.upstreamSecret" . }}
- name: HUBGATE_UPSTREAM_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.upstream.tokenKey | quote }}}
{{- end }}
{{- if include "hubgate.trustedKeysConfigMap" . }}
- name: HUBGATE_TRUSTED_KEYS
  value: {{ include "hubgate.trustedKeyPaths" . | quote }}
{{- end }}
{{- end -}}

{{- define "hubgate.trustedKeyPaths" -}}
{{- $names := .Values.trustedKeys.existingConfigMapKeys -}}
{{- if not .Values.trustedKeys.existingConfigMap -}}{{- $names = keys .Values.trustedKeys.files | sortAlpha -}}{{- end -}}
{{- if not $names -}}{{- fail "trustedKeys.existingConfigMap: list the key files to trust in trustedKeys.existingConfigMapKeys" -}}{{- end -}}
{{- $paths := list -}}
{{- range $names -}}{{- $paths = append $paths (printf "/etc/hubgate/trusted/%s" .) -}}{{- end -}}
{{- join "," $paths -}}
{{- end -}}

{{/* Volumes both components mount: scratch emptyDirs (the root filesystem is read-only) and the keys. */}}
{{- define "hubgate.volumes" -}}
- name: tmp
  emptyDir: {sizeLimit: {{ .Values.scratch.tmpSizeLimit }}}
- name: data
  emptyDir: {sizeLimit: {{ .Values.scratch.dataSizeLimit }}}
- name: keys
  secret:
    secretName: {{ include "hubgate.keysSecret" . | quote }}
    defaultMode: 0440
    items:
      - {key: {{ .Values.keys.signingKeyKey | quote }}, path: signing-key.pem}
      - {key: {{ .Values.keys.secretKeyKey | quote }}, path: secret.key}
{{- with include "hubgate.trustedKeysConfigMap" . }}
- name: trusted-keys
  configMap:
    name: {{ . | quote }}
    defaultMode: 0444
{{- end }}
{{- end -}}

{{- define "hubgate.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: data, mountPath: /data}
- {name: keys, mountPath: /etc/hubgate/keys, readOnly: true}
{{- if include "hubgate.trustedKeysConfigMap" . }}
- {name: trusted-keys, mountPath: /etc/hubgate/trusted, readOnly: true}
{{- end }}
{{- end -}}

{{/* Restart pods when their configuration changes. */}}
{{- define "hubgate.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{/* HUBGATE_ALLOWED_HOSTS: the values' list, the Service's DNS names, the Ingress hosts, localhost (probes)
and the pod's own IP (Prometheus scrapes pods by address; $(POD_IP) is expanded by the kubelet). */}}
{{- define "hubgate.allowedHosts" -}}
{{- $svc := include "hubgate.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := concat .Values.allowedHosts (list "localhost") -}}
{{- range $name := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $.Values.clusterDomain) -}}
{{- $hosts = append $hosts $name -}}
{{- if ne (int $.Values.service.port) 8080 -}}{{- $hosts = append $hosts (printf "%s:%d" $name (int $.Values.service.port)) -}}{{- end -}}
{{- end -}}
{{- if .Values.ingress.enabled -}}{{- $hosts = concat $hosts .Values.ingress.hosts -}}{{- end -}}
{{- if .Values.allowPodIpHost -}}{{- $hosts = append $hosts "$(POD_IP)" -}}{{- end -}}
{{- join "," (uniq $hosts) -}}
{{- end -}}

{{/* Pod settings both components share. */}}
{{- define "hubgate.podSpec" -}}
serviceAccountName: {{ include "hubgate.serviceAccountName" . }}
automountServiceAccountToken: false
# Service links would put HUBGATE_SERVICE_HOST, HUBGATE_PORT=tcp://… into the environment of every pod
# when the Service is named hubgate: hubgate refuses unknown HUBGATE_* variables.
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "hubgate.volumes" . | nindent 2 }}
{{- end -}}
