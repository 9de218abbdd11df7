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
	// CheckLateness is how long after its scheduled time each scheduled
	// key check started (claim, queue for a free slot): the measure of
	// whether a replica keeps every org's check on schedule.
	CheckLateness prometheus.Histogram
	// VaultCallSeconds is the latency of each call to a customer key
	// service, by provider (azure_key_vault, aws_kms) and operation.
	VaultCallSeconds *prometheus.HistogramVec
	// Jobs counts unfinished enablement jobs by status; JobDataKeys sums
	// their progress (kind done or total); OldestJobSeconds is the age of
	// the oldest unfinished job (0 when none): a stuck job shows there.
	Jobs             *prometheus.GaugeVec
	JobDataKeys      *prometheus.GaugeVec
	OldestJobSeconds prometheus.Gauge
	// PlatformKeyDataKeys counts the system-managed data keys under each
	// generation of the system key (its fingerprint, never key material)
	// and whether it is the current one: after a rotation the others fall
	// to zero as the background re-wrap runs.
	PlatformKeyDataKeys *prometheus.GaugeVec

	// own lists cmk's collectors (not the Go and process ones), so a test
	// can check the deploy files' queries against the metrics that exist.
	own []prometheus.Collector
}

func (m *Metrics) register(cs ...prometheus.Collector) {
	m.Registry.MustRegister(cs...)
	m.own = append(m.own, cs...)
}

// LatenessBuckets are the bounds of cmk_check_lateness_seconds: fine below
// a second, where a replica that keeps up lands, and up to five minutes;
// 3 s is a tenth of the default 30 s check interval, the lateness allowed.
var LatenessBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2, 3, 5, 10, 30, 60, 300}

// VaultCallBuckets span a fast vault answer (tens of milliseconds) to the
// vault timeout (seconds).
var VaultCallBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

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
		CheckLateness: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cmk_check_lateness_seconds",
			Help: "How long after its scheduled time each scheduled key check started.", Buckets: LatenessBuckets}),
		VaultCallSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cmk_vault_call_seconds", Help: "Latency of calls to customer key services, by provider and operation.",
			Buckets: VaultCallBuckets}, []string{"provider", "op"}),
		Jobs:                prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cmk_enablement_jobs", Help: "Unfinished enablement jobs, by status."}, []string{"status"}),
		JobDataKeys:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cmk_enablement_data_keys", Help: "Data keys of unfinished enablement jobs: re-wrapped so far (done) and in all (total)."}, []string{"kind"}),
		OldestJobSeconds:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "cmk_enablement_oldest_job_seconds", Help: "Age of the oldest unfinished enablement job, 0 when none."}),
		PlatformKeyDataKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cmk_platform_key_data_keys", Help: "System-managed data keys per generation of the system key (current: true or false)."}, []string{"generation", "current"}),
	}
	m.register(m.KeyChecks, m.KeyState, m.Alerts, m.Webhooks, m.VaultCalls, m.DataRefused, m.DataOps, m.DEKCacheLoads, m.RewrappedKeys, m.CheckDurations, m.CheckLateness,
		m.VaultCallSeconds, m.Jobs, m.JobDataKeys, m.OldestJobSeconds, m.PlatformKeyDataKeys)
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// ObserveDEKCache exports a data-key cache's lookups, read at each scrape
// (the cache counts them under its own lock, at no cost to a lookup):
// cmk_dek_cache_hits_total and cmk_dek_cache_lookups_total, whose ratio is
// the hit ratio.
func (m *Metrics) ObserveDEKCache(hits, loads func() int64) {
	m.register(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cmk_dek_cache_hits_total", Help: "Data-key lookups answered from the cache."},
			func() float64 { return float64(hits()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cmk_dek_cache_lookups_total", Help: "Data-key lookups, from the cache or unwrapped by the key service."},
			func() float64 { return float64(hits() + loads()) }),
	)
}
