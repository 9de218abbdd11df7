package blob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// FSOptions configures an FS backend.
type FSOptions struct {
	// Fsync, when true, makes every Put and Delete durable before it
	// returns: the data and the directory entries are fsynced. Turn it off
	// only for tests and scratch data. DefaultFSOptions sets it.
	Fsync bool
	// MinFree is how many bytes of its volume the lake leaves to
	// everything else (the state and profile databases when they share
	// the disk, the other orgs): a Put that finds fewer free, before it
	// starts or at any point while it writes, fails with ENOSPC (a
	// storage-full error) and stores nothing. One org's uploads cannot
	// take the last of the disk from the rest. Zero: no floor.
	MinFree int64
}

// floorCheckEvery is how much a Put writes between two looks at the free
// space: a statfs call per 16 MiB costs nothing next to the writes, and
// bounds how far below the floor concurrent uploads can go.
const floorCheckEvery = 16 << 20

// DefaultFSOptions returns the options an FS backend should use in
// production: Fsync on.
func DefaultFSOptions() FSOptions { return FSOptions{Fsync: true} }

// FS is a Backend on a local directory.
//
// Layout under the directory given to NewFS:
//
//	LOCK            held (flock) while an FS has the directory open
//	staging/        Put writes here first; emptied by NewFS
//	objects/        the objects: key "a/b/c" is objects/a.d/b.d/c.f
//
// Each key segment gets a suffix — ".d" for a directory, ".f" for an
// object — so that "a/b" and "a/b/c" can both be objects, as they can in
// Azure. A Put writes a temp file in staging/ (same file system), fsyncs
// it, renames it into place and fsyncs the directory; rename replaces the
// old object atomically, so a crash leaves either the old or the new
// object, never a mix. A Put that fails to make its object durable (the
// file's fsync, the rename, or the directory's fsync fails, for a full disk
// or an I/O error) returns the error and leaves the key as it was: until
// the directory is synced, the object being replaced is kept under a second
// name in staging/, and put back if the sync fails.
//
// Only one FS may have a directory open at a time, in any process: NewFS
// takes an exclusive lock, which Close (or the process's death) releases.
type FS struct {
	root    string
	objects string
	staging string
	opts    FSOptions
	lock    *os.File
	ops     fsOps

	// dirs orders directory creation in Put against pruning of empty
	// directories in Delete, so that Delete never removes a directory
	// between Put creating it and renaming into it.
	dirs sync.RWMutex
}

var _ Backend = (*FS)(nil)

// fsOps are the calls on which a Put's durability rests. They are the
// operating system's; tests replace them to make one fail.
type fsOps struct {
	syncFile func(*os.File) error
	rename   func(oldpath, newpath string) error
	syncDir  func(dir string) error
	free     func(dir string) (int64, error)
}

var osOps = fsOps{syncFile: (*os.File).Sync, rename: os.Rename, syncDir: syncDir, free: freeBytes}

// freeBytes is the space an unprivileged writer may still use on dir's
// volume.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// aboveFloor fails with ENOSPC when the volume has no more than MinFree
// bytes free.
func (b *FS) aboveFloor() error {
	if b.opts.MinFree <= 0 {
		return nil
	}
	free, err := b.ops.free(b.root)
	if err != nil {
		return fmt.Errorf("free space of the lake's volume: %w", err)
	}
	if free <= b.opts.MinFree {
		return fmt.Errorf("the lake's volume has %d bytes free, at or below the %d it keeps free: %w", free, b.opts.MinFree, syscall.ENOSPC)
	}
	return nil
}

// floorWriter writes to w and looks at the free space every
// floorCheckEvery bytes.
type floorWriter struct {
	w     io.Writer
	b     *FS
	since int64
}

func (f *floorWriter) Write(p []byte) (int, error) {
	if f.since += int64(len(p)); f.since >= floorCheckEvery {
		f.since = 0
		if err := f.b.aboveFloor(); err != nil {
			return 0, err
		}
	}
	return f.w.Write(p)
}

const (
	dirSuffix  = ".d"
	fileSuffix = ".f"
)

// NewFS opens (creating if needed) an FS backend in dir and deletes the
// temp files that a crashed Put left in its staging directory. Call Close
// to release the directory.
func NewFS(dir string, opts FSOptions) (*FS, error) {
	b := &FS{
		root:    dir,
		objects: filepath.Join(dir, "objects"),
		staging: filepath.Join(dir, "staging"),
		opts:    opts,
		ops:     osOps,
	}
	for _, d := range []string{dir, b.objects, b.staging} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open blob store %s: %w", dir, err)
		}
	}
	lock, err := lockDir(filepath.Join(dir, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("open blob store %s: %w", dir, err)
	}
	b.lock = lock
	if err := b.cleanStaging(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open blob store %s: %w", dir, err)
	}
	return b, nil
}

// Close releases the directory. Calls in flight must have returned.
func (b *FS) Close() error {
	if b.lock == nil {
		return nil
	}
	err := b.lock.Close()
	b.lock = nil
	return err
}

// cleanStaging removes what a crashed Put left behind. We hold the lock, so
// no other Put can be writing there.
func (b *FS) cleanStaging() error {
	entries, err := os.ReadDir(b.staging)
	if err != nil {
		return fmt.Errorf("clean staging: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(b.staging, e.Name())); err != nil {
			return fmt.Errorf("clean staging: %w", err)
		}
	}
	return nil
}

// path maps a valid key to its file and the directory holding it.
func (b *FS) path(key string) (file, dir string) {
	segs := strings.Split(key, "/")
	parts := make([]string, 0, len(segs)+1)
	parts = append(parts, b.objects)
	for _, s := range segs[:len(segs)-1] {
		parts = append(parts, s+dirSuffix)
	}
	dir = filepath.Join(parts...)
	return filepath.Join(dir, segs[len(segs)-1]+fileSuffix), dir
}

// Put implements Backend.
func (b *FS) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := ValidateKey(key); err != nil {
		return 0, err
	}
	if err := b.aboveFloor(); err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	tmp, err := os.CreateTemp(b.staging, "put-*")
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	var w io.Writer = tmp
	if b.opts.MinFree > 0 {
		w = &floorWriter{w: tmp, b: b}
	}
	n, err := copyCtx(ctx, w, r)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	if b.opts.Fsync {
		if err := b.ops.syncFile(tmp); err != nil {
			return 0, fmt.Errorf("put %q: sync: %w", key, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	// Last chance to give up before the object becomes visible.
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}

	file, dir := b.path(key)
	b.dirs.RLock()
	defer b.dirs.RUnlock()
	created, err := b.mkdirs(dir)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	// The object this Put replaces, if any, is kept under a second name
	// until the new one is durable, so that a failed directory sync can
	// put it back.
	var prev string
	var mine os.FileInfo
	if b.opts.Fsync {
		if mine, err = os.Stat(tmp.Name()); err != nil {
			return 0, fmt.Errorf("put %q: %w", key, err)
		}
		if prev, err = b.keep(file); err != nil {
			return 0, fmt.Errorf("put %q: %w", key, err)
		}
	}
	if err := b.ops.rename(tmp.Name(), file); err != nil {
		if prev != "" {
			os.Remove(prev)
		}
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	committed = true
	if b.opts.Fsync {
		// The new entry lives in dir; each directory we created lives in its
		// parent. Sync them all so the object survives a power loss.
		for _, d := range append([]string{dir}, created...) {
			if err := b.ops.syncDir(d); err != nil {
				// The new object may not survive a power loss, so it must not
				// be acknowledged, nor stay visible as if it had been.
				b.undo(file, mine, prev)
				return 0, fmt.Errorf("put %q: %w", key, err)
			}
		}
		if prev != "" {
			os.Remove(prev)
		}
	}
	return n, nil
}

// keep links the object at file, if there is one, to a new name in
// staging/ and returns that name ("" if there was no object).
func (b *FS) keep(file string) (string, error) {
	for {
		var r [8]byte
		rand.Read(r[:])
		name := filepath.Join(b.staging, "prev-"+hex.EncodeToString(r[:]))
		err := os.Link(file, name)
		switch {
		case err == nil:
			return name, nil
		case errors.Is(err, fs.ErrNotExist):
			return "", nil
		case errors.Is(err, fs.ErrExist):
			continue
		default:
			return "", fmt.Errorf("keep the object being replaced: %w", err)
		}
	}
}

// undo takes back a Put whose rename happened but whose directory sync
// failed: the previous object returns (or, if there was none, the new one
// goes), but only if the name still holds this Put's file; a concurrent
// Put that replaced it since owns it now.
func (b *FS) undo(file string, mine os.FileInfo, prev string) {
	if now, err := os.Stat(file); err == nil && os.SameFile(mine, now) {
		if prev != "" {
			if os.Rename(prev, file) == nil {
				prev = ""
			}
		} else {
			os.Remove(file)
		}
	}
	if prev != "" {
		os.Remove(prev)
	}
}

// copyCtx copies r to w in copyBufSize chunks, stopping when ctx is done.
// A source that can write itself (io.WriterTo) writes straight to w, which
// saves a copy through the buffer; ctx is then checked before every write.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	if wt, ok := r.(io.WriterTo); ok {
		return wt.WriteTo(ctxWriter{ctx, w})
	}
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	var total int64
	for {
		n, err := readFull(ctx, r, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// ctxWriter fails writes once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// mkdirs creates dir and its missing parents below b.objects and returns
// the parents of the directories it created, which must be synced for the
// new entries to be durable.
func (b *FS) mkdirs(dir string) ([]string, error) {
	if _, err := os.Stat(dir); err == nil {
		return nil, nil
	}
	rel, err := filepath.Rel(b.objects, dir)
	if err != nil {
		return nil, err
	}
	var created []string
	cur := b.objects
	for _, seg := range strings.Split(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, seg)
		err := os.Mkdir(cur, 0o700)
		switch {
		case err == nil:
			created = append(created, parent)
		case errors.Is(err, fs.ErrExist):
		default:
			return nil, err
		}
	}
	return created, nil
}

// Get implements Backend. The returned reader is the open file: since Put
// replaces objects by rename, it keeps reading the object it opened even if
// the key is overwritten or deleted meanwhile.
func (b *FS) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := ValidateKey(key); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("get %q: %w", key, err)
	}
	file, _ := b.path(key)
	f, err := os.Open(file)
	if err != nil {
		return nil, 0, fmt.Errorf("get %q: %w", key, notFound(err))
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("get %q: %w", key, err)
	}
	return f, st.Size(), nil
}

// Delete implements Backend. It also removes directories left empty, so
// that deleted datasets leave no trace in the tree.
func (b *FS) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	file, dir := b.path(key)
	b.dirs.Lock()
	defer b.dirs.Unlock()
	if err := os.Remove(file); err != nil {
		return fmt.Errorf("delete %q: %w", key, notFound(err))
	}
	// Prune empty directories up to objects/. os.Remove fails on a
	// non-empty directory, which ends the walk.
	synced := dir
	for d := dir; d != b.objects; d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
		synced = filepath.Dir(d)
	}
	if b.opts.Fsync {
		if err := syncDir(synced); err != nil {
			return fmt.Errorf("delete %q: %w", key, err)
		}
	}
	return nil
}

// List implements Backend. It walks only the directory that the prefix's
// complete segments name.
func (b *FS) List(ctx context.Context, prefix string) ([]Object, error) {
	start := b.objects
	startKey := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		startKey = prefix[:i]
		if ValidateKey(startKey) != nil {
			// No valid key lies below an invalid directory.
			return []Object{}, nil
		}
		file, _ := b.path(startKey)
		start = strings.TrimSuffix(file, fileSuffix) + dirSuffix
		startKey += "/"
	}

	objs := []Object{}
	var walk func(dir, keyPrefix string) error
	walk = func(dir, keyPrefix string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			// Missing, or pruned by a concurrent Delete.
			return nil
		}
		if err != nil {
			return err
		}
		for _, e := range entries {
			name := e.Name()
			switch {
			case e.IsDir() && strings.HasSuffix(name, dirSuffix):
				sub := keyPrefix + strings.TrimSuffix(name, dirSuffix) + "/"
				// Descend only where keys may still match the prefix.
				if strings.HasPrefix(sub, prefix) || strings.HasPrefix(prefix, sub) {
					if err := walk(filepath.Join(dir, name), sub); err != nil {
						return err
					}
				}
			case e.Type().IsRegular() && strings.HasSuffix(name, fileSuffix):
				key := keyPrefix + strings.TrimSuffix(name, fileSuffix)
				if !strings.HasPrefix(key, prefix) {
					continue
				}
				info, err := e.Info()
				if errors.Is(err, fs.ErrNotExist) {
					continue // deleted since ReadDir
				}
				if err != nil {
					return err
				}
				objs = append(objs, Object{Key: key, Size: info.Size(), Modified: info.ModTime()})
			}
		}
		return nil
	}
	if err := walk(start, startKey); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	return objs, nil
}

func notFound(err error) error {
	// ENOTDIR: a key segment names an object, not a directory.
	if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
