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
The model services of the Bento (bento.modelServices, in order) and where each runs in split
mode, as a YAML list:
  service    BentoML service name (ModelService, ModelService2, ...)
  component  its own name: model, model2, ... (its Kubernetes Service is <fullname>-<component>)
  group      the component of the model Deployment that runs it: its own, or that of the first
             service of its modelGroups entry
  index      its place in that Deployment's pods: it listens on bento.port + index
*/}}
{{- define "espnet-serve.modelServices" -}}
{{- $components := dict -}}
{{- range $i, $s := .Values.bento.modelServices }}
{{- $_ := set $components $s (ternary "model" (printf "model%d" (add $i 1)) (eq $i 0)) }}
{{- end }}
{{- range $s := .Values.bento.modelServices }}
{{- $group := get $components $s }}
{{- $index := 0 }}
{{- range $g := $.Values.modelGroups }}
{{- if has $s $g }}
{{- $group = get $components (first $g) }}
{{- range $i, $member := $g }}{{ if eq $member $s }}{{ $index = $i }}{{ end }}{{ end }}
{{- end }}
{{- end }}
- service: {{ $s }}
  component: {{ get $components $s }}
  group: {{ $group }}
  index: {{ $index }}
{{- end }}
{{- end }}

{{/*
Container args of one BentoML server of the Bento: start-http-server for the service .name on
.port (with .depends, a list of NAME=URL), or `bentoml serve` (the whole Bento) when .name is
empty. Call with (dict "root" $ "name" NAME "port" PORT "depends" LIST).
*/}}
{{- define "espnet-serve.bentoArgs" -}}
{{- if .name }}
- start-http-server
- --service-name
- {{ .name | quote }}
{{- range .depends }}
- --depends
- {{ . | quote }}
{{- end }}
{{- else }}
- serve
{{- end }}
- --host
- 0.0.0.0
- --port
- {{ toString .port | quote }}
- --timeout-graceful-shutdown
- {{ include "espnet-serve.shutdownTimeout" .root | quote }}
- --timeout-keep-alive
- {{ toString .root.Values.bento.keepAliveSeconds | quote }}
{{- end }}

{{/*
The workloads of the selected mode, as a YAML list:
  key        component label, and its Deployment's name suffix (server, api, model, model2, ...)
  values     its values section (server, api, model)
  name       Deployment / HPA / PDB name
  runsModel  whether the pod loads a model (gets the GPU when gpu.enabled)
  public     whether clients call it (gets the API keys when auth.enabled)
  servers    the BentoML servers in each pod, one per port:
               service      the Kubernetes Service in front of it
               bentoService the BentoML service it serves (model servers)
               port         container port; portName its name
               bentoArgs    its start-http-server args (model servers)
  bentoArgs  container args (passed to the Bento image's entrypoint); a pod of several model
             servers (a modelGroups entry) runs circusd with its configuration (espnet-serve.circus)
The API is always reachable at the Service named after the release's fullname.
*/}}
{{- define "espnet-serve.workloads" -}}
{{- $root := . -}}
{{- $fullname := include "espnet-serve.fullname" . -}}
{{- $port := int .Values.bento.port -}}
{{- if eq .Values.mode "combined" }}
- key: server
  values: server
  name: {{ $fullname }}
  runsModel: true
  public: true
  servers:
    - service: {{ $fullname }}
      port: {{ $port }}
      portName: http
  bentoArgs:
    {{- include "espnet-serve.bentoArgs" (dict "root" . "name" "" "port" $port) | nindent 4 }}
{{- else }}
{{- $models := fromYamlArray (include "espnet-serve.modelServices" .) }}
{{- $depends := list }}
{{- range $m := $models }}
{{- $depends = append $depends (printf "%s=%s" $m.service (include "espnet-serve.modelUrl" (dict "root" $root "m" $m))) }}
{{- end }}
- key: api
  values: api
  name: {{ $fullname }}-api
  runsModel: false
  public: true
  servers:
    - service: {{ $fullname }}
      port: {{ $port }}
      portName: http
  bentoArgs:
    {{- include "espnet-serve.bentoArgs" (dict "root" . "name" .Values.bento.apiService "port" $port "depends" $depends) | nindent 4 }}
{{- range $g := $models }}
{{- if eq $g.group $g.component }}
{{- $members := list }}
{{- range $m := $models }}{{ if eq $m.group $g.component }}{{ $members = append $members $m }}{{ end }}{{ end }}
- key: {{ $g.component }}
  values: model
  name: {{ $fullname }}-{{ $g.component }}
  runsModel: true
  public: false
  servers:
    {{- range $m := $members }}
    {{- $p := add $port $m.index }}
    - service: {{ $fullname }}-{{ $m.component }}
      bentoService: {{ $m.service }}
      port: {{ $p }}
      portName: {{ ternary "http" (printf "http-%d" (add1 (int $m.index))) (eq (int $m.index) 0) }}
      bentoArgs:
        {{- include "espnet-serve.bentoArgs" (dict "root" $root "name" $m.service "port" $p) | nindent 8 }}
    {{- end }}
  bentoArgs:
    {{- if eq (len $members) 1 }}
    {{- include "espnet-serve.bentoArgs" (dict "root" $root "name" $g.service "port" $port) | nindent 4 }}
    {{- else }}
    - circusd
    - {{ printf "%s/%s.ini" (include "espnet-serve.circusDir" $root) $g.component }}
    {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The exec probe of a pod of several model servers: GET argv[1] on 127.0.0.1 at each later
argument's port; any failure (refused, timeout, a status >= 400) fails the probe.
*/}}
{{- define "espnet-serve.probeScript" -}}
import sys, urllib.request
for port in sys.argv[2:]: urllib.request.urlopen(f"http://127.0.0.1:{port}{sys.argv[1]}", timeout=2).close()
{{- end }}

{{/*
Where pods of several model servers read their circusd configuration.
*/}}
{{- define "espnet-serve.circusDir" -}}
/etc/espnet-serve/circus
{{- end }}

{{/*
circusd configuration of a pod that runs several model servers (a modelGroups entry): one
watcher per BentoML server, as `bentoml serve` itself runs its services under circus. SIGTERM
stops every server gracefully (uvicorn's graceful shutdown, then the drain); a server that exits
is started again. Call with (dict "root" $ "w" $workload).
*/}}
{{- define "espnet-serve.circus" -}}
[circus]
# Control sockets stay inside the pod, on /tmp (the root filesystem is read-only).
endpoint = ipc://{{ .root.Values.writableDirs.tmp.mountPath }}/circus-{{ .w.key }}.sock
pubsub_endpoint = ipc://{{ .root.Values.writableDirs.tmp.mountPath }}/circus-{{ .w.key }}-pubsub.sock
statsd = False
{{- range $s := .w.servers }}

[watcher:{{ $s.bentoService }}]
cmd = python -m bentoml_cli._internal.start {{ join " " $s.bentoArgs }} $(circus.env.bento_path)
copy_env = True
stop_signal = TERM
# uvicorn's graceful shutdown (--timeout-graceful-shutdown), then 5 s for the worker to exit.
graceful_timeout = {{ add (include "espnet-serve.shutdownTimeout" $.root) 5 }}
respawn = True
{{- end }}
{{- end }}

{{/*
In split mode, the URL the API pods reach a model service at: bento.modelUrls[service], else
its Service's cluster DNS name. Call with (dict "root" $ "m" $modelService).
*/}}
{{- define "espnet-serve.modelUrl" -}}
{{- $v := .root.Values -}}
{{- get $v.bento.modelUrls .m.service | default (printf "http://%s-%s.%s.svc:%v" (include "espnet-serve.fullname" .root) .m.component .root.Release.Namespace $v.model.service.port) }}
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
{{- if and (eq .Values.mode "split") (hasKey .Values.settings "ESPNET_SERVE_MODEL_IN_PROCESS") (include "espnet-serve.truthy" (get .Values.settings "ESPNET_SERVE_MODEL_IN_PROCESS")) }}
{{- fail "settings.ESPNET_SERVE_MODEL_IN_PROCESS loads the model into the API pods: split mode serves it from the model pods (use it in combined mode)" }}
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
{{- $services := .Values.bento.modelServices }}
{{- if ne (len $services) (len (uniq $services)) }}
{{- fail (printf "bento.modelServices lists a service twice: %s" (join ", " $services)) }}
{{- end }}
{{- $grouped := list }}
{{- range $g := .Values.modelGroups }}
{{- range $s := $g }}
{{- if not (has $s $services) }}
{{- fail (printf "modelGroups: %s is not one of bento.modelServices (%s)" $s (join ", " $services)) }}
{{- end }}
{{- if has $s $grouped }}
{{- fail (printf "modelGroups: %s is in more than one group; a model service runs in one Deployment" $s) }}
{{- end }}
{{- $grouped = append $grouped $s }}
{{- end }}
{{- end }}
{{- range $s, $url := .Values.bento.modelUrls }}
{{- if not (has $s $services) }}
{{- fail (printf "bento.modelUrls: %s is not one of bento.modelServices (%s)" $s (join ", " $services)) }}
{{- end }}
{{- end }}
{{- if and .Values.modelGroups (eq .Values.mode "combined") }}
{{- fail "modelGroups applies to split mode only: in combined mode every model service already shares the one pod" }}
{{- end }}
{{- range $w := fromYamlArray (include "espnet-serve.workloads" .) }}
{{- $v := index $.Values $w.values }}
{{- $a := $v.autoscaling }}
{{- if $a.enabled }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas (%v) must not exceed %s.autoscaling.maxReplicas (%v)" $w.values $a.minReplicas $w.values $a.maxReplicas) }}
{{- end }}
{{- if and (kindIs "invalid" $a.targetCPUUtilizationPercentage) (not $a.podsMetric.enabled) }}
{{- fail (printf "%s.autoscaling is enabled but has no metric: set %s.autoscaling.targetCPUUtilizationPercentage or enable %s.autoscaling.podsMetric" $w.values $w.values $w.values) }}
{{- end }}
{{- if and (not (kindIs "invalid" $a.targetCPUUtilizationPercentage)) (not (dig "requests" "cpu" "" $v.resources)) }}
{{- fail (printf "%s.autoscaling.targetCPUUtilizationPercentage needs %s.resources.requests.cpu (utilization is relative to the request)" $w.values $w.values) }}
{{- end }}
{{- end }}
{{- if $v.pdb.enabled }}
{{- $max := not (kindIs "invalid" $v.pdb.maxUnavailable) }}
{{- $min := not (kindIs "invalid" $v.pdb.minAvailable) }}
{{- if eq $max $min }}
{{- fail (printf "%s.pdb: set exactly one of maxUnavailable and minAvailable, and the other to null (maxUnavailable defaults to 1)" $w.values) }}
{{- end }}
{{- end }}
{{- if and (not $w.runsModel) (hasKey (default dict $v.resources.requests) $.Values.gpu.resourceName) }}
{{- fail (printf "%s.resources must not request %s: API pods are CPU-only; the model pods get the GPU through gpu.enabled" $w.values $.Values.gpu.resourceName) }}
{{- end }}
{{- if and (not $w.runsModel) (hasKey (default dict $v.resources.limits) $.Values.gpu.resourceName) }}
{{- fail (printf "%s.resources must not request %s: API pods are CPU-only; the model pods get the GPU through gpu.enabled" $w.values $.Values.gpu.resourceName) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Container resources of a workload: its values plus the GPU when it runs the model and
gpu.enabled. Call with (dict "root" $ "w" $workload).
*/}}
{{- define "espnet-serve.resources" -}}
{{- $v := index .root.Values .w.values -}}
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

{{/*
Whether a setting's value reads as true to the service (pydantic: true, 1, yes, on).
*/}}
{{- define "espnet-serve.truthy" -}}
{{- if has (lower (toString .)) (list "true" "1" "yes" "on" "t" "y") }}true{{- end }}
{{- end }}
