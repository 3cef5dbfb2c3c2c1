{{/*
Chart name, truncated to a DNS label.
*/}}
{{- define "espnet-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 56 characters so that "-model" still fits in the
63-character limit of Service names.
*/}}
{{- define "espnet-serve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "espnet-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the release (add app.kubernetes.io/component to select one workload).
*/}}
{{- define "espnet-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "espnet-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "espnet-serve.labels" -}}
helm.sh/chart: {{ include "espnet-serve.chart" . }}
{{ include "espnet-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: espnet-serve
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "espnet-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "espnet-serve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "espnet-serve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The workloads of the selected mode, as a YAML list:
  key        values section of the workload (server, api, model)
  name       Deployment / HPA / PDB name
  service    Service name
  runsModel  whether the pod loads the model (gets the GPU when gpu.enabled)
  public     whether clients call it (gets the API keys when auth.enabled)
  bentoArgs  container args (passed to the Bento image's entrypoint)
The API is always reachable at the Service named after the release's fullname.
*/}}
{{- define "espnet-serve.workloads" -}}
{{- $fullname := include "espnet-serve.fullname" . -}}
{{- $port := toString .Values.bento.port -}}
{{- $shutdown := toString (include "espnet-serve.shutdownTimeout" .) -}}
{{- $keepAlive := toString .Values.bento.keepAliveSeconds -}}
{{- if eq .Values.mode "combined" }}
- key: server
  name: {{ $fullname }}
  service: {{ $fullname }}
  runsModel: true
  public: true
  bentoArgs:
    - serve
    - --host
    - 0.0.0.0
    - --port
    - {{ $port | quote }}
    - --timeout-graceful-shutdown
    - {{ $shutdown | quote }}
    - --timeout-keep-alive
    - {{ $keepAlive | quote }}
{{- else }}
- key: api
  name: {{ $fullname }}-api
  service: {{ $fullname }}
  runsModel: false
  public: true
  bentoArgs:
    - start-http-server
    - --service-name
    - {{ .Values.bento.apiService | quote }}
    - --depends
    - {{ printf "%s=%s" .Values.bento.modelService (include "espnet-serve.modelUrl" .) | quote }}
    - --host
    - 0.0.0.0
    - --port
    - {{ $port | quote }}
    - --timeout-graceful-shutdown
    - {{ $shutdown | quote }}
    - --timeout-keep-alive
    - {{ $keepAlive | quote }}
- key: model
  name: {{ $fullname }}-model
  service: {{ $fullname }}-model
  runsModel: true
  public: false
  bentoArgs:
    - start-http-server
    - --service-name
    - {{ .Values.bento.modelService | quote }}
    - --host
    - 0.0.0.0
    - --port
    - {{ $port | quote }}
    - --timeout-graceful-shutdown
    - {{ $shutdown | quote }}
    - --timeout-keep-alive
    - {{ $keepAlive | quote }}
{{- end }}
{{- end }}

{{/*
In split mode, the URL the API pods reach the model service at: bento.modelUrl, else the model
Service's cluster DNS name.
*/}}
{{- define "espnet-serve.modelUrl" -}}
{{- .Values.bento.modelUrl | default (printf "http://%s-model.%s.svc:%v" (include "espnet-serve.fullname" .) .Release.Namespace .Values.model.service.port) }}
{{- end }}

{{/*
API versions of PodDisruptionBudget (policy/v1 from Kubernetes 1.21, policy/v1beta1 before) and
HorizontalPodAutoscaler (autoscaling/v2 from 1.23, autoscaling/v2beta2 before). Against a
cluster, .Capabilities.APIVersions is what the server serves; offline (helm template, lint)
Helm's default set holds every version, so the Kubernetes version (--kube-version) decides.
*/}}
{{- define "espnet-serve.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end }}
{{- end }}

{{- define "espnet-serve.hpaApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "autoscaling/v2") (semverCompare ">=1.23-0" .Capabilities.KubeVersion.Version) -}}
autoscaling/v2
{{- else -}}
autoscaling/v2beta2
{{- end }}
{{- end }}

{{/*
The Secret holding the API key hashes: auth.existingSecret, or the one the chart creates from
auth.keyHashes.
*/}}
{{- define "espnet-serve.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-api-keys" (include "espnet-serve.fullname" .)) }}
{{- end }}

{{/*
Where the pods that serve clients mount the key hashes (auth.enabled).
*/}}
{{- define "espnet-serve.authMountPath" -}}
/etc/espnet-serve/auth
{{- end }}

{{/*
Seconds a worker drains the requests it accepted after SIGTERM (ESPNET_SERVE_DRAIN_TIMEOUT_SECONDS,
and uvicorn's --timeout-graceful-shutdown after it).
*/}}
{{- define "espnet-serve.shutdownTimeout" -}}
{{- add .Values.requestTimeoutSeconds 5 }}
{{- end }}

{{- define "espnet-serve.terminationGracePeriodSeconds" -}}
{{- $g := .Values.gracefulShutdown -}}
{{- if kindIs "invalid" $g.terminationGracePeriodSeconds }}
{{- add $g.preStopSleepSeconds .Values.requestTimeoutSeconds 20 }}
{{- else }}
{{- $g.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Cross-field checks the JSON schema cannot express; fail with a message naming the values.
*/}}
{{- define "espnet-serve.validate" -}}
{{- $g := .Values.gracefulShutdown -}}
{{- $needed := add $g.preStopSleepSeconds (include "espnet-serve.shutdownTimeout" . | int) -}}
{{- if and (not (kindIs "invalid" $g.terminationGracePeriodSeconds)) (le (int $g.terminationGracePeriodSeconds) (int $needed)) }}
{{- fail (printf "gracefulShutdown.terminationGracePeriodSeconds (%v) must be longer than gracefulShutdown.preStopSleepSeconds + requestTimeoutSeconds + 5 (%v), or in-flight requests are killed on shutdown" $g.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- range $key, $from := dict "ESPNET_SERVE_REQUEST_TIMEOUT_SECONDS" "requestTimeoutSeconds" "ESPNET_SERVE_API_TIMEOUT_SECONDS" "apiTimeoutSeconds" "ESPNET_SERVE_DRAIN_TIMEOUT_SECONDS" "requestTimeoutSeconds" "ESPNET_SERVE_GPU_COUNT" "gpu.enabled and gpu.count" "ESPNET_SERVE_API_KEY_HASHES_FILE" "auth.enabled with auth.existingSecret or auth.keyHashes" "ESPNET_SERVE_PROTECT_METRICS" "auth.protectMetrics" }}
{{- if hasKey $.Values.settings $key }}
{{- fail (printf "settings.%s is set by the chart from %s; set that instead" $key $from) }}
{{- end }}
{{- end }}
{{- if hasKey .Values.settings "ESPNET_SERVE_API_KEYS" }}
{{- fail "settings.ESPNET_SERVE_API_KEYS would put plain API keys into a ConfigMap: use auth.enabled with auth.existingSecret or auth.keyHashes (sha256 digests)" }}
{{- end }}
{{- $auth := .Values.auth }}
{{- if $auth.enabled }}
{{- if and (not $auth.existingSecret) (not $auth.keyHashes) }}
{{- fail "auth.enabled needs the key hashes: set auth.existingSecret (a Secret holding them under auth.secretKey) or auth.keyHashes" }}
{{- end }}
{{- if and $auth.existingSecret $auth.keyHashes }}
{{- fail "auth: set only one of auth.existingSecret and auth.keyHashes (the chart creates a Secret from keyHashes only without existingSecret)" }}
{{- end }}
{{- if and $auth.protectMetrics .Values.serviceMonitor.enabled (not .Values.serviceMonitor.authorization) }}
{{- fail "auth.protectMetrics with serviceMonitor.enabled needs serviceMonitor.authorization (secretName, secretKey of a Secret holding a plain API key for Prometheus), or every scrape gets 401" }}
{{- end }}
{{- end }}
{{- if and $g.useSleepAction (semverCompare "<1.30-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "gracefulShutdown.useSleepAction needs Kubernetes >= 1.30 (this cluster: %s): leave it false to run sleep in the container" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if hasKey .Values.bento.config "version" }}
{{- fail "bento.config must not set version: BentoML reads the file with both its v1 and v2 schemas, and only a file without version passes both" }}
{{- end }}
{{- range $w := fromYamlArray (include "espnet-serve.workloads" .) }}
{{- $v := index $.Values $w.key }}
{{- $a := $v.autoscaling }}
{{- if $a.enabled }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas (%v) must not exceed %s.autoscaling.maxReplicas (%v)" $w.key $a.minReplicas $w.key $a.maxReplicas) }}
{{- end }}
{{- if and (kindIs "invalid" $a.targetCPUUtilizationPercentage) (not $a.podsMetric.enabled) }}
{{- fail (printf "%s.autoscaling is enabled but has no metric: set %s.autoscaling.targetCPUUtilizationPercentage or enable %s.autoscaling.podsMetric" $w.key $w.key $w.key) }}
{{- end }}
{{- if and (not (kindIs "invalid" $a.targetCPUUtilizationPercentage)) (not (dig "requests" "cpu" "" $v.resources)) }}
{{- fail (printf "%s.autoscaling.targetCPUUtilizationPercentage needs %s.resources.requests.cpu (utilization is relative to the request)" $w.key $w.key) }}
{{- end }}
{{- end }}
{{- if $v.pdb.enabled }}
{{- $max := not (kindIs "invalid" $v.pdb.maxUnavailable) }}
{{- $min := not (kindIs "invalid" $v.pdb.minAvailable) }}
{{- if eq $max $min }}
{{- fail (printf "%s.pdb: set exactly one of maxUnavailable and minAvailable, and the other to null (maxUnavailable defaults to 1)" $w.key) }}
{{- end }}
{{- end }}
{{- if and (not $w.runsModel) (hasKey (default dict $v.resources.requests) $.Values.gpu.resourceName) }}
{{- fail (printf "%s.resources must not request %s: API pods are CPU-only; the model pods get the GPU through gpu.enabled" $w.key $.Values.gpu.resourceName) }}
{{- end }}
{{- if and (not $w.runsModel) (hasKey (default dict $v.resources.limits) $.Values.gpu.resourceName) }}
{{- fail (printf "%s.resources must not request %s: API pods are CPU-only; the model pods get the GPU through gpu.enabled" $w.key $.Values.gpu.resourceName) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Container resources of a workload: its values plus the GPU when it runs the model and
gpu.enabled. Call with (dict "root" $ "w" $workload).
*/}}
{{- define "espnet-serve.resources" -}}
{{- $v := index .root.Values .w.key -}}
{{- $res := deepCopy (default dict $v.resources) -}}
{{- if and .w.runsModel .root.Values.gpu.enabled }}
{{- $gpu := .root.Values.gpu -}}
{{- $limits := default dict (get $res "limits") -}}
{{- $_ := set $limits $gpu.resourceName (int $gpu.count) -}}
{{- $_ := set $res "limits" $limits -}}
{{- $requests := default dict (get $res "requests") -}}
{{- $_ := set $requests $gpu.resourceName (int $gpu.count) -}}
{{- $_ := set $res "requests" $requests -}}
{{- end }}
{{- toYaml $res }}
{{- end }}
