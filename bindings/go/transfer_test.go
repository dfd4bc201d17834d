package mc

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair is two engines, a registered buffer on each and a on b's segment.
func pair(t *testing.T, n int) (a *Engine, src, dst []byte, seg *Segment, remote uint64) {
	t.Helper()
	a, b := newEngine(t), newEngine(t)
	src, dst = alloc(t, a, n), alloc(t, b, n)
	seg, err := a.Open(b.Name())
	must(t, err)
	return a, src, dst, seg, uint64(uintptr(unsafePtr(dst)))
}

// wantErr checks that err is an *Error with status want and a non-empty message containing sub.
func wantErr(t *testing.T, what string, err error, want *Error, sub string) {
	t.Helper()
	var me *Error
	if !errors.As(err, &me) || !errors.Is(err, want) || me.Message == "" || !strings.Contains(me.Message, sub) {
		t.Fatalf("%s: got %#v, want status %v with a message containing %q", what, err, want.Status, sub)
	}
}

// The fast paths (Write, Read, one-request Transfer: scalars only; several requests: a pooled
// array) report failures as before: the library's status and the message of the failing call.
func TestTransferErrors(t *testing.T) {
	a, src, _, seg, remote := pair(t, 8192)
	goMem := make([]byte, 64) // not registered
	wantErr(t, "Write from Go memory", a.Write(goMem, seg, remote, NoTimeout), ErrOutOfRange, "mc_transfer")
	wantErr(t, "Read into Go memory", a.Read(goMem, seg, remote, NoTimeout), ErrOutOfRange, "mc_transfer")
	wantErr(t, "Write past the remote end", a.Write(src[:64], seg, remote+8192-32, NoTimeout), ErrOutOfRange, "mc_transfer")
	wantErr(t, "one-request Transfer", a.Transfer([]Request{{Write, goMem, seg, remote}}, NoTimeout),
		ErrOutOfRange, "mc_transfer")
	wantErr(t, "one-request Transfer, nil segment", a.Transfer([]Request{{Write, src[:8], nil, remote}}, NoTimeout),
		ErrInvalidArg, "request 0: Segment is nil")
	wantErr(t, "Transfer, nil segment", a.Transfer([]Request{{Write, src[:8], seg, remote}, {Write, src[8:16], nil, remote}}, NoTimeout),
		ErrInvalidArg, "request 1: Segment is nil")
	wantErr(t, "empty Transfer", a.Transfer(nil, NoTimeout), ErrInvalidArg, "no requests")
	// The library names the bad request of several.
	reqs := []Request{{Write, src[:8], seg, remote}, {Write, src[8:16], seg, remote + 8}, {Write, goMem, seg, remote + 16}}
	wantErr(t, "Transfer, third request bad", a.Transfer(reqs, NoTimeout), ErrOutOfRange, "request 2")
	// A success right after a failure returns nil (no stale message or status).
	must(t, a.Write(src[:8], seg, remote, NoTimeout))
	must(t, a.Transfer(reqs[:2], NoTimeout))
	batch, err := a.NewBatch(4)
	must(t, err)
	defer batch.Close()
	if _, err := batch.Submit(reqs); !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), "request 2") {
		t.Fatalf("Submit with a bad request: %v", err)
	}
	if batch.Len() != 0 {
		t.Fatalf("Len %d after a refused Submit", batch.Len())
	}
	if _, err := batch.Submit(reqs[:2]); err != nil {
		t.Fatal(err)
	}
	must(t, batch.Wait(within(5*time.Second)))
	a.Close()
	wantErr(t, "Write on a closed engine", a.Write(src[:8], seg, remote, NoTimeout), ErrInvalidArg, "closed")
	wantErr(t, "Transfer on a closed engine", a.Transfer(reqs[:2], NoTimeout), ErrInvalidArg, "closed")
}

// The pooled request arrays are reused with other lengths: a short Transfer after a long one
// sends only its own requests, and arrays too large to keep work as well.
func TestTransferPooledArrays(t *testing.T) {
	const n = 2048 // above maxPooledReqs
	a, src, dst, seg, remote := pair(t, n*8)
	for i := range src {
		src[i] = byte(i*7 + 1)
	}
	mk := func(k int, op Opcode, buf []byte) []Request {
		reqs := make([]Request, k)
		for i := range reqs {
			reqs[i] = Request{op, buf[i*8 : (i+1)*8], seg, remote + uint64(i*8)}
		}
		return reqs
	}
	for _, k := range []int{n, 16, 3, maxPooledReqs, 2, n} {
		clear(dst)
		must(t, a.Transfer(mk(k, Write, src), within(5*time.Second)))
		if !bytes.Equal(dst[:k*8], src[:k*8]) || bytes.ContainsFunc(dst[k*8:], func(r rune) bool { return r != 0 }) {
			t.Fatalf("Transfer of %d requests wrote the wrong bytes", k)
		}
	}
	back := alloc(t, a, n*8)
	must(t, a.Transfer(mk(n, Read, back), within(5*time.Second)))
	if !bytes.Equal(back, dst) {
		t.Fatal("Read back mismatch")
	}
}

// Goroutines (moving between OS threads) mix every transfer path, succeeding and failing; each
// sees its own data and, on failure, the status and message of its own call.
func TestTransferConcurrent(t *testing.T) {
	const workers, size, rounds = 8, 4096, 200
	a, src, _, seg, remote := pair(t, workers*size)
	back := alloc(t, a, workers*size)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := src[w*size : (w+1)*size]
			mine := back[w*size : (w+1)*size]
			rem := remote + uint64(w*size)
			goMem := make([]byte, 8)
			for i := range rounds {
				for j := range part {
					part[j] = byte(w + i + j)
				}
				var err error
				switch i % 4 {
				case 0:
					err = a.Write(part, seg, rem, within(5*time.Second))
				case 1:
					err = a.Transfer([]Request{{Write, part, seg, rem}}, within(5*time.Second))
				case 2:
					err = a.Transfer([]Request{{Write, part[:size/2], seg, rem}, {Write, part[size/2:], seg, rem + size/2}}, within(5*time.Second))
				case 3:
					// Fails: request w%3 of three lies past the end of the peer's buffer.
					reqs := []Request{{Write, part[:8], seg, rem}, {Write, part[8:16], seg, rem + 8}, {Write, part[16:24], seg, rem + 16}}
					reqs[w%3].Remote = remote + workers*size
					err = a.Transfer(reqs, within(5*time.Second))
					var me *Error
					if !errors.As(err, &me) || me.Status != StatusOutOfRange || !strings.Contains(me.Message, fmt.Sprintf("request %d", w%3)) {
						t.Errorf("worker %d: failing Transfer gave %v", w, err)
						return
					}
					err = a.Read(goMem, seg, rem, within(5*time.Second))
					if !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), "mc_transfer") {
						t.Errorf("worker %d: failing Read gave %v", w, err)
						return
					}
					continue
				}
				if err != nil {
					t.Errorf("worker %d round %d: %v", w, i, err)
					return
				}
				if err := a.Read(mine, seg, rem, within(5*time.Second)); err != nil || !bytes.Equal(mine, part) {
					t.Errorf("worker %d round %d: read back: %v", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Write, Read and one-request Transfers allocate nothing on success; several requests reuse a
// pooled array. (The race detector makes sync.Pool drop items on purpose: not checked there.)
func TestTransferAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	a, src, _, seg, remote := pair(t, 4096)
	one := []Request{{Write, src[:8], seg, remote}}
	four := []Request{{Write, src[:8], seg, remote}, {Write, src[8:16], seg, remote + 8},
		{Write, src[16:24], seg, remote + 16}, {Write, src[24:32], seg, remote + 24}}
	for name, f := range map[string]func() error{
		"Write":              func() error { return a.Write(src[:8], seg, remote, NoTimeout) },
		"Read":               func() error { return a.Read(src[:8], seg, remote, NoTimeout) },
		"Transfer 1 request": func() error { return a.Transfer(one, NoTimeout) },
		"Transfer 4":         func() error { return a.Transfer(four, NoTimeout) },
	} {
		var err error
		if n := testing.AllocsPerRun(200, func() {
			if e := f(); e != nil {
				err = e
			}
		}); n != 0 || err != nil {
			t.Errorf("%s: %v allocations per call, err %v", name, n, err)
		}
	}
}

// BenchmarkWrite is bench/bindings' Go row as a go test benchmark (one 8-byte WRITE over shm).
func BenchmarkWrite(b *testing.B) {
	a, bb := newEngineB(b), newEngineB(b)
	src, err := a.Alloc(4096)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bb.Alloc(4096); err != nil {
		b.Fatal(err)
	}
	seg, err := a.Open(bb.Name())
	if err != nil {
		b.Fatal(err)
	}
	bufs, err := seg.Buffers()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := a.Write(src[:8], seg, bufs[0].Addr, NoTimeout); err != nil {
			b.Fatal(err)
		}
	}
}

func newEngineB(b *testing.B) *Engine {
	e, err := NewEngine(map[string]string{"listen": "127.0.0.1:0", "transports": "shm"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// Write with a nil segment panics, as it always did, but holds no lock while it does: the engine
// still works and Close does not block.
func TestWriteNilSegmentLeavesNoLock(t *testing.T) {
	a, src, _, seg, remote := pair(t, 4096)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Write with a nil segment did not panic")
			}
		}()
		a.Write(src[:8], nil, remote, NoTimeout)
	}()
	must(t, a.Write(src[:8], seg, remote, NoTimeout))
	done := make(chan struct{})
	go func() {
		a.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(within(10 * time.Second)):
		t.Fatal("Close blocked after the panic")
	}
}
