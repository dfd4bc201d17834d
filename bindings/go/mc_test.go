package mc

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func newEngine(t *testing.T) *Engine {
	t.Helper()
	e, err := NewEngine(map[string]string{"listen": "127.0.0.1:0", "workers": "2", "timeout_ms": "3000"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func alloc(t *testing.T, e *Engine, n int) []byte {
	t.Helper()
	b, err := e.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestVersion(t *testing.T) {
	major, minor, patch := Version()
	if major != 0 || VersionString() != fmt.Sprintf("%d.%d.%d", major, minor, patch) {
		t.Fatalf("version %d.%d.%d %q", major, minor, patch, VersionString())
	}
}

func TestErrors(t *testing.T) {
	_, err := NewEngine(map[string]string{"no_such_key": "1"})
	var me *Error
	if !errors.As(err, &me) || me.Status != StatusInvalidArg || !strings.Contains(me.Message, "no_such_key") {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, ErrInvalidArg) || errors.Is(err, ErrNotFound) {
		t.Fatalf("errors.Is wrong for %v", err)
	}
	if !strings.Contains(err.Error(), "invalid argument") {
		t.Fatalf("Error() = %q", err.Error())
	}
	// Every sentinel's status names itself; unknown codes still produce an *Error.
	for _, s := range []*Error{ErrInvalidArg, ErrNoMemory, ErrNotFound, ErrOutOfRange, ErrExists,
		ErrBusy, ErrTimeout, ErrPeerDown, ErrTransport, ErrUnsupported, ErrMetadata, ErrInternal,
		ErrBufferTooSmall, ErrCanceled, ErrDenied} {
		if s.Status.String() == Status(-9999).String() {
			t.Fatalf("%d has no name", s.Status)
		}
	}
	unknown := &Error{Status: -9999, Message: "x"}
	if errors.Is(unknown, ErrInternal) || unknown.Error() == "" {
		t.Fatal("unknown status")
	}

	e := newEngine(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	if _, err := e.Open(addr); !errors.Is(err, ErrPeerDown) {
		t.Fatalf("open of a closed port: %v", err)
	}
	if err := e.Free(make([]byte, 8)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("free of Go memory: %v", err)
	}
	b := alloc(t, e, 8192)
	if err := e.Register(unsafePtr(b[4096:]), 4096, ""); !errors.Is(err, ErrExists) {
		t.Fatalf("overlapping register: %v", err)
	}
	must(t, e.Free(b))
	if err := e.Free(b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("double free: %v", err)
	}
	if _, err := e.NewBatch(0); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("batch 0: %v", err)
	}
}

// Messages are copied in the failing cgo call: many goroutines (moving between OS threads) each
// see their own.
func TestErrorMessagesConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("bad_key_%d", g)
			for range 100 {
				_, err := NewEngine(map[string]string{key: "1"})
				var me *Error
				if !errors.As(err, &me) || !strings.Contains(me.Message, key) {
					t.Errorf("goroutine %d got %v", g, err)
					return
				}
				runtime.Gosched()
			}
		}()
	}
	wg.Wait()
}

func TestLoopback(t *testing.T) {
	a, b := newEngine(t), newEngine(t)
	const n = 1 << 20
	src, dst := alloc(t, a, n), alloc(t, b, n)
	rand.Read(src)
	seg, err := a.Open(b.Name())
	must(t, err)
	info, err := seg.Info()
	must(t, err)
	if info.State != SegmentOK || info.BufferCount != 1 || info.TotalBytes != n || (info.Transport != "tcp" && info.Transport != "shm") {
		t.Fatalf("info %+v", info)
	}
	bufs, err := seg.Buffers()
	must(t, err)
	if len(bufs) != 1 || bufs[0].Addr != uint64(uintptr(unsafePtr(dst))) || bufs[0].Length != n ||
		!strings.HasPrefix(bufs[0].Location, "cpu") {
		t.Fatalf("buffers %+v", bufs)
	}
	remote := bufs[0].Addr
	must(t, a.Write(src, seg, remote, within(5*time.Second)))
	if !bytes.Equal(src, dst) {
		t.Fatal("write mismatch")
	}
	back := alloc(t, a, 4096)
	must(t, a.Read(back, seg, remote+4096, NoTimeout))
	if !bytes.Equal(back, src[4096:8192]) {
		t.Fatal("read mismatch")
	}
	// Go memory is not registered: the library says so.
	if err := a.Write(make([]byte, 64), seg, remote, NoTimeout); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("unregistered local: %v", err)
	}
	if err := a.Write(src, seg, remote+1, NoTimeout); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("remote past the end: %v", err)
	}
	reqs := make([]Request, 16)
	for i := range reqs {
		reqs[i] = Request{Op: Read, Local: src[i*4096 : (i+1)*4096], Segment: seg, Remote: remote + uint64(i)*4096}
	}
	for i := range dst[:65536] {
		dst[i] = byte(i)
	}
	must(t, a.Transfer(reqs, within(5*time.Second)))
	if !bytes.Equal(src[:65536], dst[:65536]) {
		t.Fatal("transfer mismatch")
	}
	st, err := a.Stats()
	must(t, err)
	if st["name"] != a.Name() || st["requests_completed"].(interface{ String() string }).String() == "0" {
		t.Fatalf("stats %v", st)
	}
	must(t, seg.Close())
	if _, err := seg.Info(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("closed segment: %v", err)
	}
}

func TestOwnSegmentLocal(t *testing.T) {
	e := newEngine(t)
	src, dst := alloc(t, e, 8192), alloc(t, e, 8192)
	copy(src, bytes.Repeat([]byte("x"), 8192))
	seg, err := e.Open(e.Name())
	must(t, err)
	info, _ := seg.Info()
	if info.Transport != "local" {
		t.Fatalf("transport %q", info.Transport)
	}
	must(t, e.Write(src, seg, uint64(uintptr(unsafePtr(dst))), NoTimeout))
	if !bytes.Equal(src, dst) {
		t.Fatal("mismatch")
	}
}

func TestBatch(t *testing.T) {
	a, b := newEngine(t), newEngine(t)
	const n, size = 16, 65536
	src, dst := alloc(t, a, n*size), alloc(t, b, n*size)
	for i := range src {
		src[i] = byte(i / size)
	}
	seg, err := a.Open(b.Name())
	must(t, err)
	remote := uint64(uintptr(unsafePtr(dst)))
	batch, err := a.NewBatch(n)
	must(t, err)
	defer batch.Close()
	var reqs []Request
	for i := range n {
		reqs = append(reqs, Request{Write, src[i*size : (i+1)*size], seg, remote + uint64(i*size)})
	}
	first, err := batch.Submit(reqs[:n/2])
	must(t, err)
	second, err := batch.Submit(reqs[n/2:])
	must(t, err)
	if first != 0 || second != n/2 || batch.Len() != n {
		t.Fatalf("indexes %d %d len %d", first, second, batch.Len())
	}
	must(t, batch.Wait(within(5*time.Second)))
	for i := range n {
		st, err := batch.Status(i)
		must(t, err)
		if st != (RequestStatus{Completed, StatusOK, size}) {
			t.Fatalf("status %d: %+v", i, st)
		}
	}
	if _, err := batch.Status(n); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("status past end: %v", err)
	}
	if _, err := batch.Submit(reqs[:1]); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("over capacity: %v", err)
	}
	if !bytes.Equal(src, dst) {
		t.Fatal("mismatch")
	}
	must(t, batch.Reset())
	if batch.Len() != 0 {
		t.Fatal("len after reset")
	}
	must(t, batch.Close())
	must(t, batch.Close())
	if _, err := batch.Submit(reqs[:1]); err == nil {
		t.Fatal("submit after close")
	}
}

// SubmitOnStream without a CUDA driver (CI): ErrUnsupported and nothing submitted. Skipped
// where a driver is installed (the GPU tests of the C suite cover it there).
func TestSubmitOnStreamNoCuda(t *testing.T) {
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/lib/libcuda.so.1"} {
		if _, err := os.Stat(p); err == nil {
			t.Skip("a CUDA driver is installed: " + p)
		}
	}
	a, b := newEngine(t), newEngine(t)
	src, dst := alloc(t, a, 4096), alloc(t, b, 4096)
	seg, err := a.Open(b.Name())
	must(t, err)
	batch, err := a.NewBatch(4)
	must(t, err)
	defer batch.Close()
	reqs := []Request{{Write, src, seg, uint64(uintptr(unsafePtr(dst)))}}
	if _, err := batch.SubmitOnStream(reqs, 0); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("SubmitOnStream without CUDA: %v", err)
	}
	if batch.Len() != 0 {
		t.Fatalf("len %d after a refused submit", batch.Len())
	}
	_, err = batch.Submit(reqs)
	must(t, err)
	must(t, batch.Wait(within(5*time.Second)))
}

func TestConcurrent(t *testing.T) {
	a, b := newEngine(t), newEngine(t)
	const workers, size = 8, 1 << 16
	src, dst := alloc(t, a, workers*size), alloc(t, b, workers*size)
	rand.Read(src)
	seg, err := a.Open(b.Name())
	must(t, err)
	remote := uint64(uintptr(unsafePtr(dst)))
	batch, err := a.NewBatch(workers * 10)
	must(t, err)
	defer batch.Close()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := src[w*size : (w+1)*size]
			for i := range 10 {
				var err error
				if i%2 == 0 {
					err = a.Write(part, seg, remote+uint64(w*size), within(5*time.Second))
				} else {
					_, err = batch.Submit([]Request{{Write, part, seg, remote + uint64(w*size)}})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	must(t, batch.Wait(within(10*time.Second)))
	if !bytes.Equal(src, dst) {
		t.Fatal("mismatch")
	}
}

func TestCloseWhileBatchAlive(t *testing.T) {
	a := newEngine(t)
	b := newEngine(t)
	src, dst := alloc(t, a, 4096), alloc(t, b, 4096)
	seg, err := a.Open(b.Name())
	must(t, err)
	batch, err := a.NewBatch(4)
	must(t, err)
	_, err = batch.Submit([]Request{{Write, src, seg, uint64(uintptr(unsafePtr(dst)))}})
	must(t, err)
	must(t, a.Close())
	batch.Wait(NoTimeout) // completed or failed, either is fine
	must(t, batch.Close())
	if _, err := a.Alloc(10); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("alloc after close: %v", err)
	}
	must(t, a.Close())
}

// openFDs is the number of open descriptors of this process.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents)
}

// TestCleanupBackstop drops engines (each with a batch and a heap) without Close: the runtime
// cleanup must destroy them, so their listening ports refuse connections and the descriptors
// they held are given back.
func TestCleanupBackstop(t *testing.T) {
	before := openFDs(t)
	var names []string
	func() {
		for range 20 {
			e, err := NewEngine(map[string]string{"listen": "127.0.0.1:0"})
			must(t, err)
			_, err = e.NewBatch(4)
			must(t, err)
			_, err = NewHeap(1 << 20)
			must(t, err)
			names = append(names, e.Name())
		}
	}()
	if n := openFDs(t); n < before+20 {
		t.Fatalf("20 engines hold %d descriptors more than none: the check below would prove nothing", n-before)
	}
	listening := func() []string {
		var open []string
		for _, name := range names {
			if c, err := net.DialTimeout("tcp", name, time.Second); err == nil {
				c.Close()
				open = append(open, name)
			}
		}
		return open
	}
	deadline := time.Now().Add(within(10 * time.Second))
	for {
		runtime.GC()
		open := listening()
		fds := openFDs(t)
		if len(open) == 0 && fds <= before+2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("engines never closed are not cleaned up: %d still listen (%v), %d descriptors more than before",
				len(open), open, fds-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHeap(t *testing.T) {
	h, err := NewHeap(1 << 30)
	must(t, err)
	defer h.Close()
	off, err := h.Alloc(4096, 64)
	must(t, err)
	if off%64 != 0 {
		t.Fatal("alignment")
	}
	st, err := h.Stats()
	must(t, err)
	if st.Capacity != 1<<30 || st.Allocations != 1 || st.Used < 4096 || st.Free != st.Capacity-st.Used {
		t.Fatalf("stats %+v", st)
	}
	must(t, h.Free(off))
	if err := h.Free(off); !errors.Is(err, ErrNotFound) {
		t.Fatalf("double free: %v", err)
	}
	if _, err := h.Alloc(2<<30, 1); !errors.Is(err, ErrNoMemory) {
		t.Fatalf("too big: %v", err)
	}
	if _, err := NewHeap(0); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("heap 0: %v", err)
	}
	must(t, h.Close())
	if _, err := h.Alloc(1, 1); err == nil {
		t.Fatal("alloc after close")
	}
}

func TestLogHandler(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	SetLogHandler(func(level int, msg string) {
		mu.Lock()
		lines = append(lines, msg)
		mu.Unlock()
	})
	SetLogLevel(LogDebug)
	e, err := NewEngine(map[string]string{"listen": "127.0.0.1:0", "log_level": "debug"})
	must(t, err)
	alloc(t, e, 4096)
	e.Close()
	SetLogLevel(LogWarn)
	SetLogHandler(nil)
	mu.Lock()
	defer mu.Unlock()
	if len(lines) == 0 {
		t.Fatal("no log lines at debug level")
	}
}

// A target in another process: mc_bench target when built, else the Go example's target mode.
func TestTwoProcess(t *testing.T) {
	root, _ := filepath.Abs("../..")
	build := os.Getenv("MC_BUILD_DIR")
	if build == "" {
		build = filepath.Join(root, "build")
	}
	var cmd *exec.Cmd
	if bench := filepath.Join(build, "bin", "mc_bench"); fileExists(bench) {
		cmd = exec.Command(bench, "target", "--listen", "127.0.0.1:0", "--size", "64M")
	} else {
		cmd = exec.Command(os.Args[0], "-test.run=^TestHelperTarget$")
		cmd.Env = append(os.Environ(), "MC_GO_HELPER_TARGET=1")
	}
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := readLine(out)
	must(t, err)
	name, ok := strings.CutPrefix(line, "segment: ")
	if !ok {
		t.Fatalf("target printed %q", line)
	}
	e := newEngine(t)
	seg, err := e.Open(strings.TrimSpace(name))
	must(t, err)
	bufs, err := seg.Buffers()
	must(t, err)
	const n = 16 << 20
	if len(bufs) == 0 || bufs[0].Length < n {
		t.Fatalf("buffers %+v", bufs)
	}
	src, dst := alloc(t, e, n), alloc(t, e, n)
	rand.Read(src)
	must(t, e.Write(src, seg, bufs[0].Addr, within(10*time.Second)))
	must(t, e.Read(dst, seg, bufs[0].Addr, within(10*time.Second)))
	if !bytes.Equal(src, dst) {
		t.Fatal("mismatch")
	}
}

// TestHelperTarget is the fallback target process for TestTwoProcess.
func TestHelperTarget(t *testing.T) {
	if os.Getenv("MC_GO_HELPER_TARGET") != "1" {
		t.Skip("helper process")
	}
	e, err := NewEngine(map[string]string{"listen": "127.0.0.1:0"})
	must(t, err)
	alloc(t, e, 64<<20)
	fmt.Printf("segment: %s\n", e.Name())
	os.Stdout.Sync()
	select {}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readLine(r interface{ Read([]byte) (int, error) }) (string, error) {
	var sb strings.Builder
	b := make([]byte, 1)
	for {
		n, err := r.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return sb.String(), nil
			}
			sb.WriteByte(b[0])
		}
		if err != nil {
			return sb.String(), err
		}
	}
}
