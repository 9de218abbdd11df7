package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/kms"
)

// The benchmarks run each measurement once per b.N at small sizes and
// report its figures as metrics; `cmk bench` runs them at report sizes.
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/bench/

func common(b *testing.B) Common {
	b.Helper()
	return Common{Dir: b.TempDir()}
}

func report(b *testing.B, c Comparison, prefix string) {
	b.ReportMetric(c.Ours.Median, prefix+"-ours-"+c.Unit)
	b.ReportMetric(c.Baseline.Median, prefix+"-base-"+c.Unit)
	b.ReportMetric(c.Ratio.Median, prefix+"-ratio")
}

func BenchmarkEnable(b *testing.B) {
	for b.Loop() {
		r, err := Enable(context.Background(), EnableConfig{Common: common(b), Sandboxes: 100, ThrottleLimit: 50, ThrottleWindow: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.WallSeconds, "wall-s")
		b.ReportMetric(r.BoundSeconds, "bound-s")
		b.ReportMetric(r.Ratio, "ratio")
		b.ReportMetric(float64(r.Throttled), "429s")
	}
}

func BenchmarkLake(b *testing.B) {
	for b.Loop() {
		r, err := Lake(context.Background(), LakeConfig{Common: common(b), Size: 32 * MiB, Trials: 3, PeakSize: 64 * MiB})
		if err != nil {
			b.Fatal(err)
		}
		report(b, r.Ingest, "ingest")
		report(b, r.Read, "read")
		report(b, *r.HTTPIngest, "http-ingest")
		report(b, *r.HTTPRead, "http-read")
		b.ReportMetric(float64(r.Peak.GrowthBytes)/MiB, "peak-MiB")
	}
}

func BenchmarkProfile(b *testing.B) {
	for b.Loop() {
		r, err := Profile(context.Background(), ProfileConfig{Common: common(b), Records: 200, Ops: 500, Rounds: 3})
		if err != nil {
			b.Fatal(err)
		}
		for _, row := range r.Rows {
			name := row.Op + "-nocache"
			if row.Cache {
				name = row.Op + "-cache"
			}
			b.ReportMetric(row.Ratio.Median, name+"-ratio")
		}
	}
}

func BenchmarkVaultCalls(b *testing.B) {
	for b.Loop() {
		r, err := VaultCalls(context.Background(), VaultCallsConfig{Common: common(b), Ops: 2000})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.Per100k, "calls/100k-ops")
	}
}

func BenchmarkAge(b *testing.B) {
	for b.Loop() {
		r, err := Age(context.Background(), AgeConfig{Common: common(b), Size: 64 * MiB, Trials: 3})
		if err != nil {
			b.Fatal(err)
		}
		report(b, r.Encrypt, "encrypt")
		report(b, r.Decrypt, "decrypt")
	}
}

func BenchmarkTink(b *testing.B) {
	for b.Loop() {
		r, err := Tink(context.Background(), TinkConfig{Common: common(b), OurRecords: 2000, TinkRecords: 50, Rounds: 2})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.Ours.PerSecond.Median, "ours-records/s")
		b.ReportMetric(r.Tink.PerSecond.Median, "tink-records/s")
		b.ReportMetric(r.Tink.CallsPerRecord, "tink-calls/record")
	}
}

func BenchmarkRevocation(b *testing.B) {
	for b.Loop() {
		r, err := Revocation(context.Background(), RevocationConfig{Common: common(b), Trials: 5, Interval: 500 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range r.Probes {
			name := strings.Fields(p.Name)[0] + "-" + strings.Fields(p.Name)[len(strings.Fields(p.Name))-1]
			b.ReportMetric(p.Refused.P99us/1e3, name+"-refused-p99-ms")
		}
	}
}

func BenchmarkRevocationAWS(b *testing.B) {
	for b.Loop() {
		r, err := Revocation(context.Background(), RevocationConfig{Common: common(b), Trials: 5, Interval: 500 * time.Millisecond, AWS: true})
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range r.Probes {
			name := strings.Fields(p.Name)[0] + "-" + strings.Fields(p.Name)[len(strings.Fields(p.Name))-1]
			b.ReportMetric(p.Refused.P99us/1e3, name+"-refused-p99-ms")
		}
	}
}

func BenchmarkRotation(b *testing.B) {
	for b.Loop() {
		r, err := Rotation(context.Background(), RotationConfig{Common: common(b), Trials: 3, Interval: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.Event.P99us/1e3, "event-p99-ms")
		b.ReportMetric(r.Polling.P99us/1e3, "polling-p99-ms")
	}
}

func BenchmarkFailover(b *testing.B) {
	for b.Loop() {
		r, err := Failover(context.Background(), FailoverConfig{Common: common(b), Trials: 2, Lease: time.Second, Sandboxes: 20})
		if err != nil {
			b.Fatal(err)
		}
		if r.Misses != 0 {
			b.Errorf("%d of %d trials did not move after the kill", r.Misses, r.Trials)
		}
		b.ReportMetric(r.Moved.P50us/1e6, "moved-p50-s")
		b.ReportMetric(r.Moved.Maxus/1e6, "moved-max-s")
		b.ReportMetric(r.Moved.Maxus/1e6/r.LeaseSeconds, "moved-max-leases")
	}
}

func BenchmarkMonitorCost(b *testing.B) {
	for b.Loop() {
		r, err := MonitorCost(context.Background(), MonitorCostConfig{Common: common(b), Orgs: 2, Interval: 200 * time.Millisecond,
			Duration: 5 * time.Second, ThrottleDuration: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.CallsPerCheck, "calls/check")
		b.ReportMetric(r.PerOrgHour, "calls/org-hour")
		b.ReportMetric(float64(r.Throttled.Transitions["REVOKED"]), "false-revocations")
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3}, Spread{N: 1, Median: 3, Min: 3, Max: 3, Samples: []float64{3}}},
		{[]float64{3, 1, 2}, Spread{N: 3, Median: 2, Min: 1, Max: 3, Samples: []float64{3, 1, 2}}},
		{[]float64{4, 1, 2, 3}, Spread{N: 4, Median: 2.5, Min: 1, Max: 4, Samples: []float64{4, 1, 2, 3}}},
	} {
		if got := spreadOf(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestThrottleBound(t *testing.T) {
	for _, tc := range []struct {
		ops, limit int
		want       time.Duration
	}{
		{0, 1000, 0},
		{1000, 1000, 0},
		{1001, 1000, 10 * time.Second},
		{2005, 1000, 20 * time.Second},
	} {
		if got := throttleBound(tc.ops, tc.limit, 10*time.Second); got != tc.want {
			t.Errorf("throttleBound(%d, %d, 10s) = %v, want %v", tc.ops, tc.limit, got, tc.want)
		}
	}
}

func TestPairsAlternatesOrder(t *testing.T) {
	var order []string
	_, _, ratio, err := pairs(4,
		func(i int) (float64, error) { order = append(order, "o"); return 2, nil },
		func(i int) (float64, error) { order = append(order, "b"); return 1, nil })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(order, ""), "obboobbo"; got != want {
		t.Errorf("pairs order = %s, want %s", got, want)
	}
	if got := spreadOf(ratio).Median; got != 2 {
		t.Errorf("median ratio = %v, want 2", got)
	}
}

func TestJSONRecordSize(t *testing.T) {
	for _, n := range []int{128, 1024, 4096} {
		if got := len(jsonRecord("rec-000001", n)); got != n {
			t.Errorf("len(jsonRecord(_, %d)) = %d, want %d", n, got, n)
		}
	}
}

// reversing is a kms.Provider that "wraps" by reversing the bytes under
// its one key version.
type reversing struct{}

func (reversing) Describe(context.Context, kms.KeyRef) (kms.KeyInfo, error) {
	return kms.KeyInfo{Version: "v1"}, nil
}

func (reversing) Wrap(_ context.Context, _ kms.KeyRef, dek []byte) (kms.Wrapped, error) {
	out := slices.Clone(dek)
	slices.Reverse(out)
	return kms.Wrapped{KeyVersion: "v1", Alg: "RSA-OAEP-256", Ciphertext: out}, nil
}

func (reversing) Unwrap(_ context.Context, _ kms.KeyRef, w kms.Wrapped) ([]byte, error) {
	if w.KeyVersion != "v1" || w.Alg != "RSA-OAEP-256" {
		return nil, &kms.Error{Kind: kms.KindUnwrapFailed, Op: "unwrap", Err: fmt.Errorf("version %q alg %q", w.KeyVersion, w.Alg)}
	}
	out := slices.Clone(w.Ciphertext)
	slices.Reverse(out)
	return out, nil
}

func TestVaultAEAD(t *testing.T) {
	a := &vaultAEAD{ctx: context.Background(), provider: reversing{}}
	dek := []byte("0123456789abcdef0123456789abcdef")
	ct, err := a.Encrypt(dek, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Decrypt(ct, nil); err != nil || !bytes.Equal(got, dek) {
		t.Errorf("Decrypt(Encrypt(dek)) = %q, %v, want %q", got, err, dek)
	}
	for _, bad := range [][]byte{nil, {5}, ct[:3], append([]byte{2, 'v', '9'}, ct[3:]...)} {
		if _, err := a.Decrypt(bad, nil); err == nil {
			t.Errorf("Decrypt(%x) succeeded, want an error", bad)
		}
	}
	if _, err := a.Encrypt(dek, []byte("ad")); !errors.Is(err, errAssociatedData) {
		t.Errorf("Encrypt with associated data: err = %v, want errAssociatedData", err)
	}
}

// TestSmallRuns runs one measurement end to end at a tiny size.
func TestSmallRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the emulator and the service; skipped with -short")
	}
	ctx := context.Background()
	r, err := VaultCalls(ctx, VaultCallsConfig{Common: Common{Dir: t.TempDir()}, Ops: 300, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.Per100k != 0 {
		t.Errorf("vault calls per 100k ops = %v, want 0", r.Per100k)
	}
	if !strings.Contains(r.String(), "per 100,000 ops") {
		t.Errorf("VaultCallsResult.String() = %q, missing the per-100k row", r.String())
	}

	// Rotation detection, two short trials: the event side picks every
	// rotation up well within a check interval.
	rot, err := Rotation(ctx, RotationConfig{Common: Common{Dir: t.TempDir()}, Trials: 2, Interval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rot.EventMisses+rot.PollingMisses > 0 || rot.Event.N != 2 || rot.Polling.N != 2 || rot.Event.P99us >= 1e6 {
		t.Errorf("Rotation() = %+v, want 2 trials each, none missed, events picked up within 1 s", rot)
	}
	if !strings.Contains(rot.String(), "Key Vault event") {
		t.Errorf("RotationResult.String() = %q", rot.String())
	}
}

// TestLoadMet: the load run is met only when the unaffected orgs sent
// requests and every one was served; the other orgs do not count.
func TestLoadMet(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    LoadResult
		want bool
	}{
		{"all served", LoadResult{Unaffected: LoadOrgs{Requests: 10, Served: 10}, Revoked: LoadOrgs{Requests: 5, Refused: 3, Errors: 1}}, true},
		{"one error", LoadResult{Unaffected: LoadOrgs{Requests: 10, Served: 9, Errors: 1}}, false},
		{"one refused", LoadResult{Unaffected: LoadOrgs{Requests: 10, Served: 9, Refused: 1}}, false},
		{"no requests", LoadResult{}, false},
	} {
		if got := tc.r.Met(); got != tc.want {
			t.Errorf("%s: Met() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
