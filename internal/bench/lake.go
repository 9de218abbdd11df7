package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"

	"github.com/cmk-project/cmk/internal/devenv"
	"github.com/cmk-project/cmk/internal/lake/blob"
)

// Targets of the data lake, as ratios of encrypted to plaintext throughput
// (reads are from the page cache, so they show the cost of decryption
// alone), and the memory an upload may hold whatever its size.
const (
	LakeIngestTarget = 0.95
	LakeReadTarget   = 0.80
	LakePeakTarget   = 64 * MiB
)

// LakeConfig sizes the data-lake measurement.
type LakeConfig struct {
	Common
	// Size of the file ingested and read. Default 256 MiB.
	Size int64
	// Trials is the number of interleaved pairs of each comparison.
	// Default 11: this machine's disk has slow spells that make single
	// trials of either side several times slower.
	Trials int
	// PeakSize is the size of the upload whose peak memory is measured.
	// Default 2 GiB; negative skips it.
	PeakSize int64
	// NoHTTP skips the comparisons over HTTP.
	NoHTTP bool
}

func (c *LakeConfig) defaults() {
	if c.Size == 0 {
		c.Size = 256 * MiB
	}
	if c.Trials == 0 {
		c.Trials = 11
	}
	if c.PeakSize == 0 {
		c.PeakSize = 2 << 30
	}
}

// LakeResult compares the encrypted lake with plain files on the same file
// system, in process and over HTTP, in MiB/s.
type LakeResult struct {
	Size       int64       `json:"size"`
	Ingest     Comparison  `json:"ingest"`
	Read       Comparison  `json:"read"`
	HTTPIngest *Comparison `json:"httpIngest,omitempty"`
	HTTPRead   *Comparison `json:"httpRead,omitempty"`
	Peak       *PeakMemory `json:"peakMemory,omitempty"`
	// CPU is the CPU time the whole process (in-process HTTP client
	// included) spent per GiB moved, median over the trials, by
	// comparison name. With every core busy, a ratio of throughputs
	// cannot beat the inverse ratio of these.
	CPU map[string]CPUCost `json:"cpuSecondsPerGiB,omitempty"`
}

// CPUCost is CPU seconds per GiB of each side of a comparison.
type CPUCost struct {
	Ours     float64 `json:"ours"`
	Baseline float64 `json:"baseline"`
}

// PeakMemory is the growth of the Go heap in use (runtime/metrics: heap
// objects + unused heap spans) during one encrypted upload over HTTP,
// sampled every few milliseconds, over its value just before.
type PeakMemory struct {
	Size          int64   `json:"size"`
	BaselineBytes uint64  `json:"baselineBytes"`
	PeakBytes     uint64  `json:"peakBytes"`
	GrowthBytes   uint64  `json:"growthBytes"`
	Samples       int     `json:"samples"`
	MiBPerSecond  float64 `json:"mibPerSecond"`
	TargetBytes   uint64  `json:"targetBytes"`
}

// Lake measures ingest and read of one file through the encrypted data
// lake (lake.Lake with the service's real key resolver, after enabling CMK)
// against the same file stored by a plain blob.FS in the same file system
// with fsync on, and the memory an encrypted upload holds.
func Lake(ctx context.Context, cfg LakeConfig) (*LakeResult, error) {
	cfg.defaults()
	w, dir, done, err := enabledWorld(ctx, cfg.Common, "lake", devenv.Options{NoMonitor: true})
	if err != nil {
		return nil, err
	}
	defer done()
	plain, err := blob.NewFS(filepath.Join(dir, "plain"), blob.FSOptions{Fsync: true})
	if err != nil {
		return nil, err
	}
	defer plain.Close()

	src := filepath.Join(dir, "source")
	cfg.progress("lake: writing a %s source file", humanBytes(cfg.Size))
	if err := writeFile(src, cfg.Size, 1); err != nil {
		return nil, err
	}
	if err := readAll(src); err != nil {
		return nil, err
	}
	l, org := w.env.Svc.Lake, w.env.Org
	const sb, ds = "prod", "bench"

	// Reads from the page cache are fast: each read trial reads the file
	// readReps times, about 1 GiB in all, so that a trial is long enough
	// to measure.
	readReps := max(1, int((1<<30)/cfg.Size))
	timedN := func(reps int, f func() (int64, error)) (float64, error) {
		start := time.Now()
		for range reps {
			n, err := f()
			if err != nil {
				return 0, err
			}
			if n != cfg.Size {
				return 0, fmt.Errorf("moved %d bytes, want %d", n, cfg.Size)
			}
		}
		return mbps(int64(reps)*cfg.Size, time.Since(start)), nil
	}
	timed := func(f func() (int64, error)) (float64, error) { return timedN(1, f) }
	fromSource := func(put func(r io.Reader) (int64, error)) (int64, error) {
		f, err := os.Open(src)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return put(f)
	}
	putOurs := func(name string) func(int) (float64, error) {
		return func(int) (float64, error) {
			_ = l.Delete(ctx, org, sb, ds, name)
			flushDirty()
			return timed(func() (int64, error) {
				return fromSource(func(r io.Reader) (int64, error) { return l.Put(ctx, org, sb, ds, name, r) })
			})
		}
	}
	putPlain := func(key string) func(int) (float64, error) {
		return func(int) (float64, error) {
			_ = plain.Delete(ctx, key)
			flushDirty()
			return timed(func() (int64, error) {
				return fromSource(func(r io.Reader) (int64, error) { return plain.Put(ctx, key, r) })
			})
		}
	}
	readOurs := func(name string) func(int) (float64, error) {
		return func(int) (float64, error) {
			return timedN(readReps, func() (int64, error) {
				rc, _, err := l.Open(ctx, org, sb, ds, name)
				if err != nil {
					return 0, err
				}
				defer rc.Close()
				return io.Copy(io.Discard, rc)
			})
		}
	}
	readPlain := func(key string) func(int) (float64, error) {
		return func(int) (float64, error) {
			return timedN(readReps, func() (int64, error) {
				rc, _, err := plain.Get(ctx, key)
				if err != nil {
					return 0, err
				}
				defer rc.Close()
				return io.Copy(io.Discard, rc)
			})
		}
	}

	res := &LakeResult{Size: cfg.Size, CPU: map[string]CPUCost{}}
	// pairsCPU is pairs, also recording the CPU time of each side.
	pairsCPU := func(name string, reps int, ours, base func(int) (float64, error)) (o, b, r []float64, err error) {
		var co, cb []float64
		withCPU := func(acc *[]float64, f func(int) (float64, error)) func(int) (float64, error) {
			return func(i int) (float64, error) {
				start := processCPU()
				v, err := f(i)
				*acc = append(*acc, (processCPU()-start).Seconds()*float64(1<<30)/float64(int64(reps)*cfg.Size))
				return v, err
			}
		}
		o, b, r, err = pairs(cfg.Trials, withCPU(&co, ours), withCPU(&cb, base))
		if err == nil {
			res.CPU[name] = CPUCost{Ours: spreadOf(co).Median, Baseline: spreadOf(cb).Median}
		}
		return o, b, r, err
	}
	cfg.progress("lake: ingest, %d interleaved pairs", cfg.Trials)
	o, b, r, err := pairsCPU("ingest (fsync)", 1, putOurs("file"), putPlain("plain/file"))
	if err != nil {
		return nil, fmt.Errorf("lake ingest: %w", err)
	}
	res.Ingest = compare("ingest (fsync)", "MiB/s", LakeIngestTarget, o, b, r)
	cfg.progress("lake: read from page cache, %d interleaved pairs", cfg.Trials)
	// Let the kernel write back what the ingests left dirty (the source
	// file) before timing reads from the page cache, and warm both
	// paths up once, untimed.
	flushDirty()
	if _, err := readOurs("file")(0); err != nil {
		return nil, fmt.Errorf("lake read: %w", err)
	}
	if _, err := readPlain("plain/file")(0); err != nil {
		return nil, fmt.Errorf("lake read: %w", err)
	}
	o, b, r, err = pairsCPU("read (page cache)", readReps, readOurs("file"), readPlain("plain/file"))
	if err != nil {
		return nil, fmt.Errorf("lake read: %w", err)
	}
	res.Read = compare("read (page cache)", "MiB/s", LakeReadTarget, o, b, r)

	if !cfg.NoHTTP {
		base, stop, err := servePlain(plain)
		if err != nil {
			return nil, err
		}
		defer stop()
		httpPut := func(req func(body io.Reader) (*http.Request, error), del func()) func(int) (float64, error) {
			return func(int) (float64, error) {
				del()
				flushDirty()
				return timed(func() (int64, error) {
					return fromSource(func(body io.Reader) (int64, error) {
						rq, err := req(body)
						if err != nil {
							return 0, err
						}
						rq.ContentLength = cfg.Size
						return send(w.client, rq, http.StatusCreated, false)
					})
				})
			}
		}
		oursPutReq := func(body io.Reader) (*http.Request, error) {
			return w.request(ctx, http.MethodPut, "/data/lake/datasets/"+ds+"/files/http", "", sb, body)
		}
		plainPutReq := func(body io.Reader) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodPut, base+"/plain/http", body)
		}
		cfg.progress("lake: ingest over HTTP, %d interleaved pairs", cfg.Trials)
		o, b, r, err = pairsCPU("ingest over HTTP (fsync)", 1,
			httpPut(oursPutReq, func() { _ = l.Delete(ctx, org, sb, ds, "http") }),
			httpPut(plainPutReq, func() { _ = plain.Delete(ctx, "plain/http") }))
		if err != nil {
			return nil, fmt.Errorf("lake ingest over HTTP: %w", err)
		}
		ingest := compare("ingest over HTTP (fsync)", "MiB/s", LakeIngestTarget, o, b, r)
		res.HTTPIngest = &ingest

		httpGet := func(req func() (*http.Request, error)) func(int) (float64, error) {
			return func(int) (float64, error) {
				return timed(func() (int64, error) {
					rq, err := req()
					if err != nil {
						return 0, err
					}
					return send(w.client, rq, http.StatusOK, true)
				})
			}
		}
		cfg.progress("lake: read over HTTP, %d interleaved pairs", cfg.Trials)
		o, b, r, err = pairsCPU("read over HTTP (page cache)", 1,
			httpGet(func() (*http.Request, error) {
				return w.request(ctx, http.MethodGet, "/data/lake/datasets/"+ds+"/files/http", "", sb, nil)
			}),
			httpGet(func() (*http.Request, error) {
				return http.NewRequestWithContext(ctx, http.MethodGet, base+"/plain/http", nil)
			}))
		if err != nil {
			return nil, fmt.Errorf("lake read over HTTP: %w", err)
		}
		read := compare("read over HTTP (page cache)", "MiB/s", LakeReadTarget, o, b, r)
		res.HTTPRead = &read
	}

	if cfg.PeakSize > 0 {
		// Free the disk space of the comparisons first.
		_ = l.Delete(ctx, org, sb, ds, "file")
		_ = l.Delete(ctx, org, sb, ds, "http")
		cfg.progress("lake: peak memory of a %s encrypted upload over HTTP", humanBytes(cfg.PeakSize))
		res.Peak, err = peakUpload(ctx, w, cfg.PeakSize)
		if err != nil {
			return nil, err
		}
		_ = l.Delete(ctx, org, sb, ds, "peak")
	}
	return res, nil
}

// send sends rq, checks the status and returns the bytes of the request
// body sent (uploads) or of the answer read (downloads).
func send(c *http.Client, rq *http.Request, want int, download bool) (int64, error) {
	resp, err := c.Do(rq)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct {
			ErrorCode string `json:"errorCode"`
		}
		json.Unmarshal(b, &e)
		return 0, &unexpectedAnswer{method: rq.Method, path: rq.URL.Path, status: resp.StatusCode, code: e.ErrorCode, body: b}
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, err
	}
	if download {
		return n, nil
	}
	return rq.ContentLength, nil
}

// unexpectedAnswer is an HTTP answer other than the one wanted.
type unexpectedAnswer struct {
	method, path string
	status       int
	code         string // the API's errorCode, if any
	body         []byte
}

func (e *unexpectedAnswer) Error() string {
	return fmt.Sprintf("%s %s = %d %.300s", e.method, e.path, e.status, e.body)
}

// servePlain serves a blob.FS over HTTP the way a plain file server does:
// PUT stores the body, GET streams the stored file (http.ServeContent, so
// the kernel copies it when it can).
func servePlain(fs *blob.FS) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /plain/{name}", func(w http.ResponseWriter, r *http.Request) {
		n, err := fs.Put(r.Context(), "plain/"+r.PathValue("name"), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"size":%d}`, n)
	})
	mux.HandleFunc("GET /plain/{name}", func(w http.ResponseWriter, r *http.Request) {
		rc, _, err := fs.Get(r.Context(), "plain/"+r.PathValue("name"))
		if errors.Is(err, blob.ErrNotFound) {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer rc.Close()
		f, ok := rc.(*os.File)
		if !ok {
			io.Copy(w, rc)
			return
		}
		st, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", st.ModTime(), f)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// heapInUse reads the bytes of heap spans in use, live or not yet swept:
// what runtime.MemStats calls HeapInuse, without stopping the world.
func heapInUse(s []metrics.Sample) uint64 {
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			n += x.Value.Uint64()
		}
	}
	return n
}

// peakUpload uploads size pseudo-random bytes over HTTP to the encrypted
// lake while sampling the heap.
func peakUpload(ctx context.Context, w *world, size int64) (*PeakMemory, error) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	runtime.GC()
	res := &PeakMemory{Size: size, TargetBytes: LakePeakTarget}
	res.BaselineBytes = heapInUse(samples)
	res.PeakBytes = res.BaselineBytes

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		own := []metrics.Sample{{Name: samples[0].Name}, {Name: samples[1].Name}}
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if v := heapInUse(own); v > res.PeakBytes {
				res.PeakBytes = v
			}
			res.Samples++
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	rq, err := w.request(ctx, http.MethodPut, "/data/lake/datasets/bench/files/peak", "", "prod", io.LimitReader(newFill(2), size))
	if err != nil {
		close(stop)
		wg.Wait()
		return nil, err
	}
	rq.ContentLength = size
	start := time.Now()
	_, err = send(w.client, rq, http.StatusCreated, false)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("peak-memory upload: %w", err)
	}
	res.GrowthBytes = res.PeakBytes - res.BaselineBytes
	res.MiBPerSecond = mbps(size, elapsed)
	return res, nil
}

func (r *LakeResult) String() string {
	cs := []Comparison{r.Ingest, r.Read}
	if r.HTTPIngest != nil {
		cs = append(cs, *r.HTTPIngest)
	}
	if r.HTTPRead != nil {
		cs = append(cs, *r.HTTPRead)
	}
	s := comparisonTable(fmt.Sprintf("lake: one %s file, encrypted lake vs plain files on the same file system", humanBytes(r.Size)),
		"encrypted", "plain", cs...).String()
	if len(r.CPU) > 0 {
		t := newTable("lake: CPU seconds per GiB of the whole process (HTTP client included), median")
		t.row("", "encrypted", "plain", "plain / encrypted")
		for _, c := range cs {
			if cpu, ok := r.CPU[c.Name]; ok && cpu.Ours > 0 {
				t.row(c.Name, strconv.FormatFloat(cpu.Ours, 'f', 3, 64), strconv.FormatFloat(cpu.Baseline, 'f', 3, 64),
					strconv.FormatFloat(cpu.Baseline/cpu.Ours, 'f', 3, 64))
			}
		}
		s += t.String()
	}
	if p := r.Peak; p != nil {
		verdict := "met"
		if p.GrowthBytes >= p.TargetBytes {
			verdict = "MISSED"
		}
		t := newTable(fmt.Sprintf("lake: heap during one %s encrypted upload over HTTP (%d samples)", humanBytes(p.Size), p.Samples))
		t.row("heap in use before", humanBytes(int64(p.BaselineBytes)))
		t.row("peak", humanBytes(int64(p.PeakBytes)))
		t.row("growth", humanBytes(int64(p.GrowthBytes)), verdict+" (< "+humanBytes(int64(p.TargetBytes))+")")
		t.row("upload rate", strconv.FormatFloat(p.MiBPerSecond, 'f', 1, 64)+" MiB/s")
		s += t.String()
	}
	return s
}
