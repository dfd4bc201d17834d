package mc

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// mmapped returns n bytes of memory Go does not manage, unmapped at the end of the test (after
// the engines' cleanups, which run first: t.Cleanup is LIFO and engines are made later).
func mmapped(t *testing.T, n int) []byte {
	t.Helper()
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(b) })
	return b
}

func TestStatusesDeniedCanceled(t *testing.T) {
	if StatusCanceled != -14 || StatusDenied != -15 {
		t.Fatalf("statuses %d %d", StatusCanceled, StatusDenied)
	}
	err := error(&Error{Status: -15, Message: "x"})
	if !errors.Is(err, ErrDenied) || errors.Is(err, ErrCanceled) {
		t.Fatalf("errors.Is wrong for %v", err)
	}
	if AccessRead != 1 || AccessWrite != 2 || AccessReadWrite != 3 || AccessNone != 0 {
		t.Fatal("access bits")
	}
}

func TestRegisterBatchTransferIntoLast(t *testing.T) {
	const n, size = 100, 4096
	mem := mmapped(t, n*size)
	a, b := newEngine(t), newEngine(t)
	descs := make([]BufferDesc, n)
	ptrs := make([]unsafe.Pointer, n)
	for i := range descs {
		descs[i] = BufferDesc{Ptr: unsafePtr(mem[i*size:]), Len: size}
		ptrs[i] = descs[i].Ptr
	}
	descs[n-1].Location = "cpu"
	must(t, b.RegisterBatch(descs))
	seg, err := a.Open(b.Name())
	must(t, err)
	bufs, err := seg.Buffers()
	must(t, err)
	if len(bufs) != n {
		t.Fatalf("%d buffers published, want %d", len(bufs), n)
	}
	last := uint64(uintptr(ptrs[n-1]))
	src := alloc(t, a, size)
	for i := range src {
		src[i] = byte(i*7 + 1)
	}
	must(t, a.Write(src, seg, last, within(5*time.Second)))
	if !bytes.Equal(mem[(n-1)*size:], src) {
		t.Fatal("write into the last buffer mismatch")
	}
	if !bytes.Equal(mem[(n-2)*size:(n-1)*size], make([]byte, size)) {
		t.Fatal("the buffer before the last changed")
	}

	// All or nothing, both ways.
	extra := mmapped(t, size)
	if err := b.RegisterBatch([]BufferDesc{{Ptr: unsafePtr(extra), Len: size}, {Ptr: ptrs[3], Len: 16}}); !errors.Is(err, ErrExists) {
		t.Fatalf("overlapping batch: %v", err)
	}
	if err := b.Unregister(unsafePtr(extra)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failed batch registered its first buffer: %v", err)
	}
	if err := b.UnregisterBatch([]unsafe.Pointer{ptrs[0], unsafePtr(extra)}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unregister with an unknown one: %v", err)
	}
	must(t, b.RegisterBatch(nil))
	must(t, b.UnregisterBatch(nil))
	must(t, b.UnregisterBatch(ptrs)) // ptrs[0] is still registered: the failed call kept it
	if err := b.Unregister(ptrs[n-1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("still registered after UnregisterBatch: %v", err)
	}
	b.Close()
	if err := b.RegisterBatch(descs); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("closed engine: %v", err)
	}
}

func TestSetAccessDeniesPeerWrite(t *testing.T) {
	a, b := newEngine(t), newEngine(t)
	const n = 8192
	target := alloc(t, b, n)
	for i := range target {
		target[i] = 'r'
	}
	src := alloc(t, a, n)
	for i := range src {
		src[i] = 'w'
	}
	seg, err := a.Open(b.Name())
	must(t, err)
	remote := uint64(uintptr(unsafePtr(target)))

	must(t, b.SetAccess(unsafePtr(target), AccessRead))
	if err := a.Write(src, seg, remote, within(5*time.Second)); !errors.Is(err, ErrDenied) {
		t.Fatalf("WRITE into a read-only buffer: %v", err)
	}
	if !bytes.Equal(target, bytes.Repeat([]byte{'r'}, n)) {
		t.Fatal("a denied WRITE changed the target")
	}
	must(t, a.Read(src, seg, remote, within(5*time.Second)))
	if !bytes.Equal(src, target) {
		t.Fatal("READ of a read-only buffer mismatch")
	}

	must(t, b.SetAccess(unsafePtr(target), AccessNone))
	bt, err := a.NewBatch(4)
	must(t, err)
	if _, err := bt.Submit([]Request{{Op: Read, Local: src, Segment: seg, Remote: remote}}); err == nil {
		if err := bt.Wait(within(5 * time.Second)); !errors.Is(err, ErrDenied) {
			t.Fatalf("READ of a no-access buffer: %v", err)
		}
	} else if !errors.Is(err, ErrDenied) {
		t.Fatalf("submit READ of a no-access buffer: %v", err)
	}
	must(t, bt.Close())

	// Concurrent changes and transfers (for -race): writes either land or are denied.
	must(t, b.SetAccess(unsafePtr(target), AccessReadWrite))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; k < 10; k++ {
				if i == 0 {
					acc := AccessReadWrite
					if k%2 == 0 {
						acc = AccessRead
					}
					if err := b.SetAccess(unsafePtr(target), acc); err != nil {
						t.Error(err)
					}
					continue
				}
				err := a.Write(src[i*1024:(i+1)*1024], seg, remote+uint64(i*1024), within(5*time.Second))
				if err != nil && !errors.Is(err, ErrDenied) {
					t.Error(err)
				}
			}
		}(i)
	}
	wg.Wait()
	must(t, b.SetAccess(unsafePtr(target), AccessReadWrite))
	must(t, a.Write(src, seg, remote, within(5*time.Second)))

	if err := b.SetAccess(unsafePtr(target), 4); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("unknown bits: %v", err)
	}
	if err := b.SetAccess(unsafePtr(target[1:]), AccessRead); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not the start of a buffer: %v", err)
	}
}

func TestAuthTokenMismatchDenied(t *testing.T) {
	eng := func(token string) *Engine {
		cfg := map[string]string{"listen": "127.0.0.1:0", "timeout_ms": "3000"}
		if token != "" {
			cfg["auth_token"] = token
		}
		e, err := NewEngine(cfg)
		must(t, err)
		t.Cleanup(func() { e.Close() })
		return e
	}
	token := strings.Repeat("t", 32)
	a, b, c, d := eng(token), eng(strings.Repeat("u", 32)), eng(""), eng(token)
	for _, other := range []*Engine{b, c} {
		_, err := a.Open(other.Name())
		if !errors.Is(err, ErrDenied) || strings.Contains(err.Error(), token) {
			t.Fatalf("open with a different token: %v", err)
		}
	}
	if _, err := c.Open(a.Name()); !errors.Is(err, ErrDenied) {
		t.Fatalf("open without a token: %v", err)
	}
	dst, src := alloc(t, a, 4096), alloc(t, d, 4096)
	src[0] = 'k'
	seg, err := d.Open(a.Name())
	must(t, err)
	must(t, d.Write(src, seg, uint64(uintptr(unsafePtr(dst))), within(5*time.Second)))
	if dst[0] != 'k' {
		t.Fatal("write with the same token mismatch")
	}
}
