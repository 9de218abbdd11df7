// Package recordstest is the conformance suite every records.Backend must
// pass. Each backend's tests call Run with a function that opens a fresh,
// empty backend; passing it is what makes the backends interchangeable.
package recordstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/profile/records"
)

// Run runs the suite. open must return a fresh, empty backend for the test
// it is given; Run closes every backend it opens. Subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) records.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b records.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"CallerOwnsValues", testCallerOwnsValues},
		{"Delete", testDelete},
		{"NotFound", testNotFound},
		{"Isolation", testIsolation},
		{"Pagination", testPagination},
		{"PaginationLargeValues", testPaginationLargeValues},
		{"PaginationConcurrentInserts", testPaginationConcurrentInserts},
		{"PageByteBudget", testPageByteBudget},
		{"Usage", testUsage},
		{"InvalidInputs", testInvalidInputs},
		{"DeleteOrg", testDeleteOrg},
		{"ConcurrentUpsertSameID", testConcurrentUpsertSameID},
		{"ContextCancelled", testContextCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close() = %v, want nil", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func mustUpsert(t *testing.T, b records.Backend, org, sandbox, id string, v []byte) {
	t.Helper()
	if err := b.Upsert(t.Context(), org, sandbox, id, v); err != nil {
		t.Fatalf("Upsert(%s, %s, %s, %d bytes) = %v, want nil", org, sandbox, id, len(v), err)
	}
}

func mustGet(t *testing.T, b records.Backend, org, sandbox, id string) records.Record {
	t.Helper()
	r, err := b.Get(t.Context(), org, sandbox, id)
	if err != nil {
		t.Fatalf("Get(%s, %s, %s) = %v, want nil", org, sandbox, id, err)
	}
	return r
}

// listAll walks a sandbox with the given page size and returns the ids.
func listAll(t *testing.T, b records.Backend, org, sandbox string, limit int) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("List(%s, %s) walk did not end after %d pages", org, sandbox, pages)
		}
		p, err := b.List(t.Context(), org, sandbox, cursor, limit, records.MaxPageBytes)
		if err != nil {
			t.Fatalf("List(%s, %s, %q, %d) = %v, want nil", org, sandbox, cursor, limit, err)
		}
		if len(p.Records) > limit {
			t.Fatalf("List(..., %d) returned %d records, want at most %d", limit, len(p.Records), limit)
		}
		if p.Next != "" && len(p.Records) == 0 {
			t.Fatalf("List(%s, %s, %q, %d) returned an empty page with Next %q", org, sandbox, cursor, limit, p.Next)
		}
		for _, r := range p.Records {
			ids = append(ids, r.ID)
		}
		if p.Next == "" {
			return ids
		}
		cursor = p.Next
	}
}

func testRoundTrip(t *testing.T, b records.Backend) {
	values := []struct {
		name  string
		value []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one byte", []byte{0}},
		{"1 KiB", randBytes(1 << 10)},
		{"4 MiB", randBytes(records.MaxValueBytes)},
	}
	for i, v := range values {
		id := fmt.Sprintf("rec-%d", i)
		before := time.Now().Add(-time.Millisecond)
		mustUpsert(t, b, "org", "sb", id, v.value)
		after := time.Now().Add(time.Millisecond)
		r := mustGet(t, b, "org", "sb", id)
		if r.ID != id {
			t.Errorf("%s: Get().ID = %q, want %q", v.name, r.ID, id)
		}
		if r.Value == nil {
			t.Errorf("%s: Get().Value = nil, want non-nil", v.name)
		}
		if !bytes.Equal(r.Value, v.value) {
			t.Errorf("%s: Get().Value = %d bytes, want the %d bytes stored", v.name, len(r.Value), len(v.value))
		}
		if r.Updated.Before(before) || r.Updated.After(after) {
			t.Errorf("%s: Get().Updated = %v, want between %v and %v", v.name, r.Updated, before, after)
		}
	}
	// Ids at the length limit and with non-ASCII text round-trip too.
	for _, id := range []string{strings.Repeat("x", records.MaxIDBytes), "ünïcødé/日本", "with space", "a'b\"c;--"} {
		mustUpsert(t, b, "org", "sb", id, []byte(id))
		if r := mustGet(t, b, "org", "sb", id); string(r.Value) != id {
			t.Errorf("Get(%q).Value = %q, want %q", id, r.Value, id)
		}
	}
}

// testCallerOwnsValues checks that the values Get and List return, and the
// value given to Upsert, are not shared with the backend: the profile
// store decrypts values in place.
func testCallerOwnsValues(t *testing.T, b records.Backend) {
	v := []byte("sealed bytes")
	mustUpsert(t, b, "org", "sb", "id", v)
	clear(v)
	r := mustGet(t, b, "org", "sb", "id")
	if string(r.Value) != "sealed bytes" {
		t.Fatalf("Get() after the caller changed its upserted slice = %q, want %q", r.Value, "sealed bytes")
	}
	clear(r.Value)
	page, err := b.List(t.Context(), "org", "sb", "", 10, records.MaxPageBytes)
	if err != nil || len(page.Records) != 1 || string(page.Records[0].Value) != "sealed bytes" {
		t.Fatalf("List() after the caller changed a value from Get = %+v, %v", page, err)
	}
	clear(page.Records[0].Value)
	if r := mustGet(t, b, "org", "sb", "id"); string(r.Value) != "sealed bytes" {
		t.Errorf("Get() after the caller changed a value from List = %q, want %q", r.Value, "sealed bytes")
	}
}

func testOverwrite(t *testing.T, b records.Backend) {
	mustUpsert(t, b, "org", "sb", "id", []byte("first"))
	first := mustGet(t, b, "org", "sb", "id")
	mustUpsert(t, b, "org", "sb", "id", []byte("second, longer"))
	r := mustGet(t, b, "org", "sb", "id")
	if string(r.Value) != "second, longer" {
		t.Errorf("Get() after overwrite = %q, want %q", r.Value, "second, longer")
	}
	if r.Updated.Before(first.Updated) {
		t.Errorf("Updated after overwrite = %v, want not before %v", r.Updated, first.Updated)
	}
	mustUpsert(t, b, "org", "sb", "id", nil)
	if r := mustGet(t, b, "org", "sb", "id"); len(r.Value) != 0 {
		t.Errorf("Get() after overwrite with empty = %d bytes, want 0", len(r.Value))
	}
	if ids := listAll(t, b, "org", "sb", 10); !slices.Equal(ids, []string{"id"}) {
		t.Errorf("List() after overwrites = %q, want [id]", ids)
	}
}

func testDelete(t *testing.T, b records.Backend) {
	ctx := t.Context()
	mustUpsert(t, b, "org", "sb", "keep", []byte("k"))
	mustUpsert(t, b, "org", "sb", "gone", []byte("g"))
	if err := b.Delete(ctx, "org", "sb", "gone"); err != nil {
		t.Fatalf("Delete(gone) = %v, want nil", err)
	}
	if _, err := b.Get(ctx, "org", "sb", "gone"); !errors.Is(err, records.ErrNotFound) {
		t.Errorf("Get(gone) after Delete = %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, "org", "sb", "gone"); !errors.Is(err, records.ErrNotFound) {
		t.Errorf("second Delete(gone) = %v, want ErrNotFound", err)
	}
	if r := mustGet(t, b, "org", "sb", "keep"); string(r.Value) != "k" {
		t.Errorf("Get(keep) = %q, want %q", r.Value, "k")
	}
	// A deleted id can be written again.
	mustUpsert(t, b, "org", "sb", "gone", []byte("back"))
	if r := mustGet(t, b, "org", "sb", "gone"); string(r.Value) != "back" {
		t.Errorf("Get(gone) after re-create = %q, want %q", r.Value, "back")
	}
}

func testNotFound(t *testing.T, b records.Backend) {
	ctx := t.Context()
	if _, err := b.Get(ctx, "org", "sb", "missing"); !errors.Is(err, records.ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, "org", "sb", "missing"); !errors.Is(err, records.ErrNotFound) {
		t.Errorf("Delete(missing) = %v, want ErrNotFound", err)
	}
	p, err := b.List(ctx, "org", "sb", "", 10, records.MaxPageBytes)
	if err != nil || len(p.Records) != 0 || p.Next != "" {
		t.Errorf("List(empty sandbox) = %d records, Next %q, %v; want 0, \"\", nil", len(p.Records), p.Next, err)
	}
	if err := b.DeleteOrg(ctx, "no-such-org"); err != nil {
		t.Errorf("DeleteOrg(no-such-org) = %v, want nil", err)
	}
}

// keys that would collide if a backend joined org, sandbox and id into one
// string, or matched by prefix.
var isolationKeys = [][2]string{
	{"o1", "s1"}, {"o1", "s2"}, {"o2", "s1"}, {"o2", "s2"},
	{"a", "bc"}, {"ab", "c"}, {"a/b", "c"}, {"a", "b/c"}, {"o1", "s"}, {"o", "1s1"},
}

func testIsolation(t *testing.T, b records.Backend) {
	ctx := t.Context()
	val := func(k [2]string) []byte { return []byte(k[0] + "|" + k[1]) }
	for _, k := range isolationKeys {
		mustUpsert(t, b, k[0], k[1], "x", val(k))
	}
	for _, k := range isolationKeys {
		if r := mustGet(t, b, k[0], k[1], "x"); !bytes.Equal(r.Value, val(k)) {
			t.Errorf("Get(%s, %s, x) = %q, want %q", k[0], k[1], r.Value, val(k))
		}
		p, err := b.List(ctx, k[0], k[1], "", 100, records.MaxPageBytes)
		if err != nil || len(p.Records) != 1 || !bytes.Equal(p.Records[0].Value, val(k)) {
			t.Errorf("List(%s, %s) = %d records, %v; want only its own record", k[0], k[1], len(p.Records), err)
		}
	}
	if err := b.Delete(ctx, "o1", "s1", "x"); err != nil {
		t.Fatalf("Delete(o1, s1, x) = %v", err)
	}
	for _, k := range isolationKeys[1:] {
		if r := mustGet(t, b, k[0], k[1], "x"); !bytes.Equal(r.Value, val(k)) {
			t.Errorf("after Delete(o1, s1, x): Get(%s, %s, x) = %q, want %q", k[0], k[1], r.Value, val(k))
		}
	}
	if _, err := b.Get(ctx, "o1", "s1", "x"); !errors.Is(err, records.ErrNotFound) {
		t.Errorf("Get(o1, s1, x) after its Delete = %v, want ErrNotFound", err)
	}
}

// upsertMany writes ids concurrently (order of arrival is random).
func upsertMany(t *testing.T, b records.Backend, org, sandbox string, ids []string, value func(id string) []byte) {
	t.Helper()
	work := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range 8 {
		wg.Go(func() {
			for id := range work {
				if err := b.Upsert(t.Context(), org, sandbox, id, value(id)); err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("Upsert: %v", *err)
	}
}

func testPagination(t *testing.T, b records.Backend) {
	const n = 2500
	ids := make([]string, 0, n)
	for i := range n - 5 {
		ids = append(ids, fmt.Sprintf("rec-%05d", i))
	}
	// Byte order, not locale order: "Z" < "a" < "é" and "B" < "a".
	ids = append(ids, "Z", "a", "é", "B", "rec-")
	mrand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	upsertMany(t, b, "org", "sb", ids, func(id string) []byte { return []byte("v:" + id) })
	// Neighbours in other sandboxes must not leak in.
	mustUpsert(t, b, "org", "sb2", "a", []byte("other"))
	mustUpsert(t, b, "org2", "sb", "a", []byte("other"))

	want := slices.Clone(ids)
	slices.Sort(want) // Go compares strings bytewise
	for _, limit := range []int{1, 7, 1000, records.MaxPageSize - 1} {
		got := listAll(t, b, "org", "sb", limit)
		if !slices.Equal(got, want) {
			t.Errorf("List walk with page size %d: %d ids, want %d in byte order without dupes or gaps (first difference at %d)",
				limit, len(got), len(want), firstDiff(got, want))
		}
	}

	// Pages are full until the last, and Next is "" exactly when nothing
	// follows: 2,500 = 2×1000 + 500, and a limit that divides the count ends
	// without an extra empty page.
	for _, tc := range []struct{ limit, pages int }{{1000, 3}, {500, 5}, {625, 4}} {
		pages, cursor := 0, ""
		for {
			p, err := b.List(t.Context(), "org", "sb", cursor, tc.limit, records.MaxPageBytes)
			if err != nil {
				t.Fatalf("List(limit %d) = %v", tc.limit, err)
			}
			pages++
			if p.Next != "" && len(p.Records) != tc.limit {
				t.Errorf("List(limit %d) page %d has %d records with 1 KiB-or-less values, want %d", tc.limit, pages, len(p.Records), tc.limit)
			}
			if p.Next == "" {
				break
			}
			cursor = p.Next
		}
		if pages != tc.pages {
			t.Errorf("walk with limit %d took %d pages, want %d", tc.limit, pages, tc.pages)
		}
	}

	// Values come back with their ids.
	p, err := b.List(t.Context(), "org", "sb", "", 50, records.MaxPageBytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Records {
		if string(r.Value) != "v:"+r.ID || r.Updated.IsZero() {
			t.Errorf("List record %q = value %q, updated %v; want %q and a time", r.ID, r.Value, r.Updated, "v:"+r.ID)
		}
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// testPaginationLargeValues walks records too large to fetch 1,000 of at
// once; a backend may cut pages short but must still return every record.
func testPaginationLargeValues(t *testing.T, b records.Backend) {
	big := randBytes(records.MaxValueBytes)
	var want []string
	for i := range 12 {
		id := fmt.Sprintf("big-%02d", i)
		want = append(want, id)
		mustUpsert(t, b, "org", "sb", id, big)
	}
	var got []string
	cursor := ""
	for {
		p, err := b.List(t.Context(), "org", "sb", cursor, records.MaxPageSize, records.MaxPageBytes)
		if err != nil {
			t.Fatalf("List = %v", err)
		}
		for _, r := range p.Records {
			got = append(got, r.ID)
			if !bytes.Equal(r.Value, big) {
				t.Errorf("List record %s value differs from the 4 MiB stored", r.ID)
			}
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if !slices.Equal(got, want) {
		t.Errorf("List walk of 4 MiB records = %q, want %q", got, want)
	}
}

// testPageByteBudget checks that a page stops before the record that would
// take its values past the byte budget, holds one record even when that
// record alone is over it, and that the walk still returns every record.
func testPageByteBudget(t *testing.T, b records.Backend) {
	const size = 1000
	var want []string
	for i := range 10 {
		id := fmt.Sprintf("r%02d", i)
		want = append(want, id)
		mustUpsert(t, b, "org", "sb", id, randBytes(size))
	}
	for _, tc := range []struct{ budget, perPage int }{
		{size - 1, 1}, // one record over the budget still makes a page
		{size, 1},
		{2*size - 1, 1},
		{2 * size, 2},
		{3*size + 500, 3},
		{records.MaxPageBytes, 10},
	} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			p, err := b.List(t.Context(), "org", "sb", cursor, records.MaxPageSize, tc.budget)
			if err != nil {
				t.Fatalf("List(budget %d) = %v", tc.budget, err)
			}
			if n := len(p.Records); p.Next != "" && n != tc.perPage {
				t.Errorf("List(budget %d) page %d = %d records of %d bytes, want %d", tc.budget, pages, n, size, tc.perPage)
			}
			for _, r := range p.Records {
				got = append(got, r.ID)
			}
			if p.Next == "" {
				break
			}
			cursor = p.Next
		}
		if !slices.Equal(got, want) {
			t.Errorf("List walk with budget %d = %q, want %q", tc.budget, got, want)
		}
	}
}

// testUsage checks that Usage counts an org's records and value bytes over
// all its sandboxes, follows overwrites and deletes, and sees no other org.
func testUsage(t *testing.T, b records.Backend) {
	ctx := t.Context()
	usage := func(org string) records.Usage {
		t.Helper()
		u, err := b.Usage(ctx, org)
		if err != nil {
			t.Fatalf("Usage(%s) = %v, want nil", org, err)
		}
		return u
	}
	if u := usage("org"); u != (records.Usage{}) {
		t.Errorf("Usage(empty org) = %+v, want zero", u)
	}
	mustUpsert(t, b, "org", "s1", "a", make([]byte, 100))
	mustUpsert(t, b, "org", "s2", "a", make([]byte, 50))
	mustUpsert(t, b, "org", "s2", "b", nil)
	mustUpsert(t, b, "org2", "s1", "a", make([]byte, 7))
	if u, want := usage("org"), (records.Usage{Records: 3, Bytes: 150}); u != want {
		t.Errorf("Usage(org) = %+v, want %+v", u, want)
	}
	mustUpsert(t, b, "org", "s1", "a", make([]byte, 10))
	if err := b.Delete(ctx, "org", "s2", "b"); err != nil {
		t.Fatal(err)
	}
	if u, want := usage("org"), (records.Usage{Records: 2, Bytes: 60}); u != want {
		t.Errorf("Usage(org) after an overwrite and a delete = %+v, want %+v", u, want)
	}
	if u, want := usage("org2"), (records.Usage{Records: 1, Bytes: 7}); u != want {
		t.Errorf("Usage(org2) = %+v, want %+v", u, want)
	}
}

// testPaginationConcurrentInserts walks a sandbox while other records are
// inserted and deleted: every record present throughout must be returned
// exactly once, in order.
func testPaginationConcurrentInserts(t *testing.T, b records.Backend) {
	var stable []string
	for i := range 1000 {
		stable = append(stable, fmt.Sprintf("k-%06d", 2*i))
	}
	upsertMany(t, b, "org", "sb", stable, func(string) []byte { return []byte("stable") })

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var churnErr atomic.Pointer[error]
	for w := range 2 {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += 2 {
				// Odd ids between the stable ones, and ids before and after.
				id := fmt.Sprintf("k-%06d", (2*i+1)%2000)
				for _, id := range []string{id, "a-" + id, "z-" + id} {
					err := b.Upsert(ctx, "org", "sb", id, []byte("churn"))
					if err == nil && i%3 == 0 {
						err = b.Delete(ctx, "org", "sb", id)
					}
					if err != nil && ctx.Err() == nil {
						churnErr.CompareAndSwap(nil, &err)
						return
					}
				}
			}
		})
	}
	for _, limit := range []int{7, 100} {
		got := listAll(t, b, "org", "sb", limit)
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("walk with page size %d under concurrent inserts is not strictly ascending (duplicates?)", limit)
		}
		seen := make(map[string]bool, len(got))
		for _, id := range got {
			seen[id] = true
		}
		for _, id := range stable {
			if !seen[id] {
				t.Errorf("walk with page size %d under concurrent inserts missed %s", limit, id)
				break
			}
		}
	}
	cancel()
	wg.Wait()
	if err := churnErr.Load(); err != nil {
		t.Fatalf("concurrent Upsert/Delete: %v", *err)
	}
}

func testInvalidInputs(t *testing.T, b records.Backend) {
	ctx := t.Context()
	long := strings.Repeat("x", records.MaxIDBytes+1)
	tooBig := make([]byte, records.MaxValueBytes+1)
	type call struct {
		name string
		fn   func() error
	}
	upsert := func(org, sb, id string, v []byte) func() error {
		return func() error { return b.Upsert(ctx, org, sb, id, v) }
	}
	get := func(org, sb, id string) func() error {
		return func() error { _, err := b.Get(ctx, org, sb, id); return err }
	}
	del := func(org, sb, id string) func() error {
		return func() error { return b.Delete(ctx, org, sb, id) }
	}
	list := func(org, sb, cursor string, limit int) func() error {
		return func() error { _, err := b.List(ctx, org, sb, cursor, limit, records.MaxPageBytes); return err }
	}
	calls := []call{
		{"Upsert empty org", upsert("", "sb", "id", nil)},
		{"Upsert empty sandbox", upsert("org", "", "id", nil)},
		{"Upsert empty id", upsert("org", "sb", "", nil)},
		{"Upsert long org", upsert(long, "sb", "id", nil)},
		{"Upsert long sandbox", upsert("org", long, "id", nil)},
		{"Upsert long id", upsert("org", "sb", long, nil)},
		{"Upsert NUL in id", upsert("org", "sb", "a\x00b", nil)},
		{"Upsert invalid UTF-8 id", upsert("org", "sb", "a\xffb", nil)},
		{"Upsert value over 4 MiB", upsert("org", "sb", "id", tooBig)},
		{"Get empty org", get("", "sb", "id")},
		{"Get empty sandbox", get("org", "", "id")},
		{"Get empty id", get("org", "sb", "")},
		{"Get long id", get("org", "sb", long)},
		{"Delete empty org", del("", "sb", "id")},
		{"Delete empty sandbox", del("org", "", "id")},
		{"Delete empty id", del("org", "sb", "")},
		{"Delete long id", del("org", "sb", long)},
		{"List empty org", list("", "sb", "", 10)},
		{"List empty sandbox", list("org", "", "", 10)},
		{"List limit 0", list("org", "sb", "", 0)},
		{"List limit -1", list("org", "sb", "", -1)},
		{"List limit 1001", list("org", "sb", "", records.MaxPageSize+1)},
		{"List garbage cursor", list("org", "sb", "not a cursor", 10)},
		{"List truncated cursor", list("org", "sb", "1.!!", 10)},
		{"List byte budget 0", func() error { _, err := b.List(ctx, "org", "sb", "", 10, 0); return err }},
		{"List byte budget over 32 MiB", func() error { _, err := b.List(ctx, "org", "sb", "", 10, records.MaxPageBytes+1); return err }},
		{"Usage empty org", func() error { _, err := b.Usage(ctx, ""); return err }},
		{"DeleteOrg empty", func() error { return b.DeleteOrg(ctx, "") }},
		{"DeleteOrg long", func() error { return b.DeleteOrg(ctx, long) }},
	}
	for _, c := range calls {
		err := c.fn()
		if !errors.Is(err, records.ErrInvalid) {
			t.Errorf("%s = %v, want ErrInvalid", c.name, err)
			continue
		}
		if msg := err.Error(); len(msg) <= len(records.ErrInvalid.Error())+2 {
			t.Errorf("%s error %q does not say what is wrong", c.name, msg)
		}
	}
	// Nothing was written by the rejected calls.
	if p, err := b.List(ctx, "org", "sb", "", 10, records.MaxPageBytes); err != nil || len(p.Records) != 0 {
		t.Errorf("List after rejected calls = %d records, %v; want 0, nil", len(p.Records), err)
	}
	// The limits themselves are allowed.
	mustUpsert(t, b, "org", "sb", strings.Repeat("y", records.MaxIDBytes), make([]byte, records.MaxValueBytes))
	if _, err := b.List(ctx, "org", "sb", "", records.MaxPageSize, records.MaxPageBytes); err != nil {
		t.Errorf("List(limit %d) = %v, want nil", records.MaxPageSize, err)
	}
	if _, err := b.List(ctx, "org", "sb", "", 1, records.MaxPageBytes); err != nil {
		t.Errorf("List(limit 1) = %v, want nil", err)
	}
}

func testDeleteOrg(t *testing.T, b records.Backend) {
	ctx := t.Context()
	for _, org := range []string{"victim", "victim2", "vict", "other"} {
		for _, sb := range []string{"s1", "s2"} {
			for i := range 30 {
				mustUpsert(t, b, org, sb, fmt.Sprintf("r%d", i), []byte(org))
			}
		}
	}
	if err := b.DeleteOrg(ctx, "victim"); err != nil {
		t.Fatalf("DeleteOrg(victim) = %v, want nil", err)
	}
	for _, sb := range []string{"s1", "s2"} {
		if ids := listAll(t, b, "victim", sb, 100); len(ids) != 0 {
			t.Errorf("List(victim, %s) after DeleteOrg = %d records, want 0", sb, len(ids))
		}
		if _, err := b.Get(ctx, "victim", sb, "r0"); !errors.Is(err, records.ErrNotFound) {
			t.Errorf("Get(victim, %s, r0) after DeleteOrg = %v, want ErrNotFound", sb, err)
		}
		for _, org := range []string{"victim2", "vict", "other"} {
			if ids := listAll(t, b, org, sb, 100); len(ids) != 30 {
				t.Errorf("List(%s, %s) after DeleteOrg(victim) = %d records, want 30", org, sb, len(ids))
			}
		}
	}
	if err := b.DeleteOrg(ctx, "victim"); err != nil {
		t.Errorf("second DeleteOrg(victim) = %v, want nil", err)
	}
	// The org can be used again afterwards.
	mustUpsert(t, b, "victim", "s1", "new", []byte("n"))
	if r := mustGet(t, b, "victim", "s1", "new"); string(r.Value) != "n" {
		t.Errorf("Get after re-creating org = %q, want %q", r.Value, "n")
	}
}

func testConcurrentUpsertSameID(t *testing.T, b records.Backend) {
	const writers, rounds, size = 8, 20, 64 << 10
	// Each writer's value is one repeated byte, so a torn write shows.
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for w := range writers {
		v := bytes.Repeat([]byte{byte('A' + w)}, size)
		wg.Go(func() {
			for range rounds {
				if err := b.Upsert(t.Context(), "org", "sb", "hot", v); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Upsert of one id = %v, want nil", err)
	}
	r := mustGet(t, b, "org", "sb", "hot")
	if len(r.Value) != size || !bytes.Equal(r.Value, bytes.Repeat(r.Value[:1], size)) || r.Value[0] < 'A' || r.Value[0] >= 'A'+writers {
		t.Errorf("value after concurrent upserts is not one writer's value (len %d)", len(r.Value))
	}
	// The last write wins.
	mustUpsert(t, b, "org", "sb", "hot", []byte("last"))
	if r := mustGet(t, b, "org", "sb", "hot"); string(r.Value) != "last" {
		t.Errorf("Get after final Upsert = %q, want %q", r.Value, "last")
	}
	if ids := listAll(t, b, "org", "sb", 10); len(ids) != 1 {
		t.Errorf("List after concurrent upserts of one id = %d records, want 1", len(ids))
	}
}

func testContextCancelled(t *testing.T, b records.Backend) {
	mustUpsert(t, b, "org", "sb", "existing", []byte("v"))
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()

	for _, c := range []struct {
		ctx  context.Context
		want error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		ctx := c.ctx
		calls := map[string]error{
			"Upsert":    b.Upsert(ctx, "org", "sb", "new", []byte("v")),
			"Delete":    b.Delete(ctx, "org", "sb", "existing"),
			"DeleteOrg": b.DeleteOrg(ctx, "org"),
		}
		_, calls["Get"] = b.Get(ctx, "org", "sb", "existing")
		_, calls["List"] = b.List(ctx, "org", "sb", "", 10, records.MaxPageBytes)
		_, calls["Usage"] = b.Usage(ctx, "org")
		for name, err := range calls {
			if !errors.Is(err, c.want) {
				t.Errorf("%s with a done context = %v, want %v", name, err, c.want)
			}
		}
	}
	// Nothing changed.
	if _, err := b.Get(t.Context(), "org", "sb", "new"); !errors.Is(err, records.ErrNotFound) {
		t.Errorf("Get(new) after cancelled Upsert = %v, want ErrNotFound", err)
	}
	mustGet(t, b, "org", "sb", "existing")

	// A context cancelled while calls are in flight stops them with its
	// error, and the backend stays usable.
	ctx, cancel3 := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var bad atomic.Pointer[error]
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := b.Upsert(ctx, "org", "sb2", fmt.Sprintf("w%d-%d", w, i), randBytes(4<<10))
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						bad.CompareAndSwap(nil, &err)
					}
					return
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	cancel3()
	wg.Wait()
	if err := bad.Load(); err != nil {
		t.Errorf("Upsert interrupted by cancellation = %v, want an error matching context.Canceled", *err)
	}
	mustUpsert(t, b, "org", "sb", "after", []byte("ok"))
}
