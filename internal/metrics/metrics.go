// Package metrics holds cmk's Prometheus metrics. One Metrics value is made
// per service and passed to the parts that count; there is no global
// registry, so tests can run several services in one process.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the service's instruments.
type Metrics struct {
	Registry       *prometheus.Registry
	KeyChecks      *prometheus.CounterVec // outcome: ok | a failure kind
	KeyState       *prometheus.GaugeVec   // state -> number of orgs
	Alerts         *prometheus.CounterVec // event, kind
	Webhooks       *prometheus.CounterVec // outcome
	VaultCalls     *prometheus.CounterVec // op, outcome
	DataRefused    *prometheus.CounterVec // store, cause
	DataOps        *prometheus.CounterVec // store, op
	DEKCacheLoads  prometheus.Counter
	RewrappedKeys  *prometheus.CounterVec // reason: enablement | rotation
	CheckDurations prometheus.Histogram
}

// New creates and registers the metrics.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry:       r,
		KeyChecks:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cmk_key_checks_total", Help: "Key health checks by outcome (ok or failure kind)."}, []string{"outcome"}),
		KeyState:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cmk_orgs_by_key_state", Help: "Orgs using customer keys, by key health state."}, []string{"state"}),
		Alerts:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cmk_alert_events_total", Help: "Alerts opened and resolved, by kind."}, []string{"event", "kind"}),
		Webhooks:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cmk_webhook_deliveries_total", Help: "Webhook delivery attempts by outcome."}, []string{"outcome"}),
		VaultCalls:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cmk_vault_calls_total", Help: "Calls to customer key vaults by operation and outcome."}, []string{"op", "outcome"}),
		DataRefused:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cmk_data_requests_refused_total", Help: "Data-plane requests refused because the org's key is unusable."}, []string{"store", "cause"}),
		DataOps:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cmk_data_operations_total", Help: "Data-plane operations served."}, []string{"store", "op"}),
		DEKCacheLoads:  prometheus.NewCounter(prometheus.CounterOpts{Name: "cmk_dek_cache_loads_total", Help: "Data keys unwrapped on a cache miss."}),
		RewrappedKeys:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cmk_data_keys_rewrapped_total", Help: "Data keys re-wrapped, by reason."}, []string{"reason"}),
		CheckDurations: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cmk_key_check_seconds", Help: "Duration of key health checks.", Buckets: prometheus.DefBuckets}),
	}
	r.MustRegister(m.KeyChecks, m.KeyState, m.Alerts, m.Webhooks, m.VaultCalls, m.DataRefused, m.DataOps, m.DEKCacheLoads, m.RewrappedKeys, m.CheckDurations,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
