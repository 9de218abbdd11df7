package envelope

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	ratioRounds = flag.Int("ratio.rounds", 7, "rounds of BenchmarkFileRatio")
	ratioMiB    = flag.Int("ratio.mib", 256, "file size of BenchmarkFileRatio, in MiB")
)

// BenchmarkFileRatio measures what encryption costs on files, side by side:
// every round runs each read case once, in an order that alternates
// between rounds so that drift on a noisy machine hits both sides alike;
// then the write cases are run the same way. It reports
// the median throughput of every case, its spread (min–max), and the
// ratio of encrypted to plaintext medians:
//
//   - read: a file in the page cache, os.File → io.Discard (with 64 KiB and
//     1 MiB buffers; the faster is the reference) against
//     NewReader(os.File).WriteTo(io.Discard);
//   - write: plaintext written to a new file and fsynced against the same
//     through NewWriter (Close, then fsync).
//
// Run it, once, with
//
//	go test -run '^$' -bench FileRatio -benchtime 1x ./internal/envelope/ [-ratio.rounds 7] [-ratio.mib 256]
func BenchmarkFileRatio(b *testing.B) {
	size := *ratioMiB << 20
	data := detBytes(77, size)
	dir := b.TempDir()
	plainPath, encPath := filepath.Join(dir, "plain"), filepath.Join(dir, "enc")
	if err := os.WriteFile(plainPath, data, 0o600); err != nil {
		b.Fatal(err)
	}
	{
		f, err := os.Create(encPath)
		if err != nil {
			b.Fatal(err)
		}
		w, _ := NewWriter(f, testDEK, testKeyID, testBind)
		if _, err := w.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	// Both files on disk before anything is timed: writeback of dirty
	// pages would otherwise take CPU from the first reads.
	for _, p := range []string{plainPath, encPath} {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err == nil {
			err = f.Sync()
			f.Close()
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	keyFor := func(string) ([]byte, error) { return testDEK, nil }

	readPlain := func(bufSize int) func() error {
		buf := make([]byte, bufSize)
		return func() error {
			f, err := os.Open(plainPath)
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
			if err == nil && n != int64(size) {
				err = fmt.Errorf("read %d bytes", n)
			}
			return err
		}
	}
	readEnc := func() error {
		f, err := os.Open(encPath)
		if err != nil {
			return err
		}
		defer f.Close()
		r, err := NewReader(f, testBind, keyFor)
		if err != nil {
			return err
		}
		n, err := r.WriteTo(io.Discard)
		if err == nil && n != int64(size) {
			err = fmt.Errorf("read %d bytes", n)
		}
		r.Close()
		return err
	}
	// Writes go to files removed beforehand, outside the timing, so that
	// freeing the previous round's blocks is not counted.
	writeFile := func(name string, write func(f *os.File) error) func() error {
		path := filepath.Join(dir, name)
		return func() error {
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			if err := write(f); err != nil {
				f.Close()
				return err
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}
	}
	writePlain := writeFile("wplain", func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
	writeEnc := writeFile("wenc", func(f *os.File) error {
		w, err := NewWriter(f, testDEK, testKeyID, testBind)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		return w.Close()
	})

	type bench struct {
		name  string
		run   func() error
		reset func()
		secs  []float64
	}
	rm := func(name string) func() { return func() { os.Remove(filepath.Join(dir, name)) } }
	cases := []*bench{
		{name: "read plain 64KiB", run: readPlain(64 << 10)},
		{name: "read plain 1MiB", run: readPlain(1 << 20)},
		{name: "read encrypted", run: readEnc},
		{name: "write+fsync plain", run: writePlain, reset: rm("wplain")},
		{name: "write+fsync encrypted", run: writeEnc, reset: rm("wenc")},
	}
	// Warm up: the files into the page cache, the code paths.
	for _, c := range cases[:3] {
		if err := c.run(); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
	}
	b.ResetTimer()
	// Reads first, then writes: the writes leave the kernel busy for a
	// while after their fsync (writeback, freeing the blocks of removed
	// files), which would steal the second core from encrypted reads.
	for _, group := range [][]*bench{cases[:3], cases[3:]} {
		for round := range *ratioRounds {
			order := slices.Clone(group)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, c := range order {
				if c.reset != nil {
					c.reset()
				}
				start := time.Now()
				if err := c.run(); err != nil {
					b.Fatalf("%s: %v", c.name, err)
				}
				c.secs = append(c.secs, time.Since(start).Seconds())
			}
		}
	}
	b.StopTimer()

	mbps := func(s float64) float64 { return float64(size) / s / 1e6 }
	med := func(c *bench) float64 {
		s := slices.Clone(c.secs)
		slices.Sort(s)
		if len(s)%2 == 1 {
			return mbps(s[len(s)/2])
		}
		return mbps((s[len(s)/2-1] + s[len(s)/2]) / 2)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%d MiB, %d rounds, GOMAXPROCS %d\n", *ratioMiB, *ratioRounds, runtime.GOMAXPROCS(0))
	for _, c := range cases {
		fmt.Fprintf(&out, "  %-22s median %6.0f MB/s  (min %6.0f, max %6.0f)\n",
			c.name, med(c), mbps(slices.Max(c.secs)), mbps(slices.Min(c.secs)))
	}
	plainRead := max(med(cases[0]), med(cases[1]))
	readRatio := med(cases[2]) / plainRead
	writeRatio := med(cases[4]) / med(cases[3])
	// Per-round ratios show how stable the medians' ratio is.
	var rr, wr []float64
	for i := range *ratioRounds {
		rr = append(rr, min(cases[0].secs[i], cases[1].secs[i])/cases[2].secs[i])
		wr = append(wr, cases[3].secs[i]/cases[4].secs[i])
	}
	slices.Sort(rr)
	slices.Sort(wr)
	fmt.Fprintf(&out, "  read ratio  (encrypted / faster plain) %.3f   per round %.3f..%.3f\n", readRatio, rr[0], rr[len(rr)-1])
	fmt.Fprintf(&out, "  write ratio (encrypted / plain, fsync) %.3f   per round %.3f..%.3f\n", writeRatio, wr[0], wr[len(wr)-1])
	b.Log("\n" + out.String())
	b.ReportMetric(readRatio, "read-ratio")
	b.ReportMetric(writeRatio, "write-ratio")
}
