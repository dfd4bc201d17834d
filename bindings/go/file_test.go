package mc

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A file segment opens by name like any other: file:///abs/path?size=N, one buffer at address 0.
func TestFileSegment(t *testing.T) {
	a := newEngine(t)
	path := filepath.Join(t.TempDir(), "seg.bin")
	seg, err := a.Open("file://" + path + "?size=64K")
	must(t, err)
	defer seg.Close()
	info, err := seg.Info()
	must(t, err)
	bufs, err := seg.Buffers()
	must(t, err)
	if info.Transport != "file" || len(bufs) != 1 || bufs[0].Addr != 0 || bufs[0].Length != 65536 {
		t.Fatalf("file segment: transport %q, buffers %+v", info.Transport, bufs)
	}
	src, dst := alloc(t, a, 4096), alloc(t, a, 4096)
	for i := range src {
		src[i] = byte(i * 7)
	}
	must(t, a.Write(src, seg, 1000, NoTimeout))
	must(t, a.Read(dst, seg, 1000, NoTimeout))
	disk, err := os.ReadFile(path)
	must(t, err)
	if !bytes.Equal(dst, src) || !bytes.Equal(disk[1000:5096], src) {
		t.Fatal("file segment: the bytes read back differ")
	}
	_, err = a.Open("file://" + path + "-missing")
	wantErr(t, "missing file", err, ErrNotFound, "-missing")
}
