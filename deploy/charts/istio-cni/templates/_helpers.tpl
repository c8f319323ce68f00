{{/*
Values of Istio's cni chart that this plugin cannot honour, and combinations that contradict each
other: refused with the reason, before anything is rendered. (values.schema.json refuses unknown
keys and values of the wrong kind.)
*/}}
{{- define "istio-cni.refuse" -}}
{{- if not .Values.chained -}}
{{- fail "chained: false (the plugin in a config file of its own) is not supported: istio-cni runs chained after the primary plugin, in the config the runtime uses" -}}
{{- end -}}
{{- if ne .Values.provider "default" -}}
{{- fail (printf "provider: %q is not supported: only \"default\" (the primary plugin's config in cniConfDir; no multus NetworkAttachmentDefinition)" .Values.provider) -}}
{{- end -}}
{{- if .Values.ambient.enabled -}}
{{- fail "ambient.enabled: true is not supported: this plugin sets up sidecar capture only" -}}
{{- end -}}
{{- if .Values.repair.repairPods -}}
{{- fail "repair.repairPods: true (rewiring a running pod's network namespace in place) is not supported: use repair.labelPods or repair.deletePods" -}}
{{- end -}}
{{- if and .Values.repair.enabled (not (or .Values.repair.labelPods .Values.repair.deletePods)) -}}
{{- fail "repair.enabled: true needs repair.labelPods or repair.deletePods (or set repair.enabled: false)" -}}
{{- end -}}
{{- if and .Values.global.nativeNftables (not (has .Values.iptablesBackend (list "auto" "nftables"))) -}}
{{- fail (printf "global.nativeNftables: true (native nftables) contradicts iptablesBackend: %q (iptables): set one of them" .Values.iptablesBackend) -}}
{{- end -}}
{{- end -}}

{{/* <hub>/<image>:<tag>, or the image as given when it is a whole reference already. */}}
{{- define "istio-cni.image" -}}
{{- if or (contains "/" .Values.image) (contains ":" .Values.image) -}}
{{ .Values.image }}
{{- else -}}
{{- $hub := .Values.hub | default .Values.global.hub -}}
{{ if $hub }}{{ $hub }}/{{ end }}{{ .Values.image }}:{{ .Values.tag | default .Values.global.tag }}
{{- end -}}
{{- end -}}

{{/* Istio's levels; the installer calls "none" silent. */}}
{{- define "istio-cni.logLevel" -}}
{{ coalesce .Values.logging.level .Values.global.logging.level "info" }}
{{- end -}}

{{/* global.nativeNftables is Istio's name for iptablesBackend: nftables. */}}
{{- define "istio-cni.backend" -}}
{{ ternary "nftables" .Values.iptablesBackend .Values.global.nativeNftables }}
{{- end -}}

{{/* Repair's action, Istio's precedence: deletePods over labelPods. */}}
{{- define "istio-cni.repairMode" -}}
{{- if .Values.repair.enabled -}}
{{ ternary "delete" "label" .Values.repair.deletePods }}
{{- end -}}
{{- end -}}

{{- define "istio-cni.labels" -}}
app.kubernetes.io/name: istio-cni
{{- end -}}
