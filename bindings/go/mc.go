// Package mc binds libmc, the mc transfer engine, through its C ABI (include/mc.h).
//
// An Engine registers memory (Alloc) and opens peers' segments by name (Open); Transfer, Write,
// Read and Batch move bytes with one-sided READs and WRITEs. Failed calls return *Error with the
// library's status and message; errors.Is(err, mc.ErrPeerDown) and the like test the status.
//
// cgo forbids C keeping Go pointers, so only C memory is registered: Alloc returns a []byte
// backed by memory the engine allocated with mmap. It stays valid until Free or Close.
//
// Every type is safe for concurrent use; Close waits for calls in flight on the same object.
// Close releases C resources; a runtime cleanup is a backstop for objects never closed (it
// destroys handles but never unmaps Alloc'd memory, which a slice may still reference).
package mc

/*
#cgo pkg-config: mc
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <mc.h>

// Every helper calls one mc_* function and, on failure, copies mc_last_error() into *msg
// (malloc'd; the Go side frees it) in the same cgo call, on the same thread.
static inline mc_status_t mcgo_chk(mc_status_t s, char **msg) {
	if (s != MC_OK) *msg = strdup(mc_last_error());
	return s;
}

static mc_status_t mcgo_engine_new(char **keys, char **vals, size_t n, mc_engine_t **out,
                                   char **msg) {
	mc_config_t *cfg = NULL;
	mc_status_t s = mc_config_create(&cfg);
	if (s != MC_OK) return mcgo_chk(s, msg);
	for (size_t i = 0; i < n; i++) {
		s = mc_config_set(cfg, keys[i], vals[i]);
		if (s != MC_OK) {
			mcgo_chk(s, msg);
			mc_config_destroy(cfg);
			return s;
		}
	}
	s = mcgo_chk(mc_engine_create(cfg, out), msg);
	mc_config_destroy(cfg);
	return s;
}

static void *mcgo_mmap(size_t n) {
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

// Maps n bytes and registers them; unmaps them again when registration fails.
static mc_status_t mcgo_alloc(mc_engine_t *e, size_t n, const char *location, void **out,
                              char **msg) {
	void *p = mcgo_mmap(n);
	if (!p) {
		*msg = strdup("Alloc: mmap failed");
		return MC_ERR_NO_MEMORY;
	}
	mc_status_t s = mc_buffer_register(e, p, n, location);
	if (s != MC_OK) {
		mcgo_chk(s, msg);
		munmap(p, n);
		return s;
	}
	*out = p;
	return MC_OK;
}

// Unregisters and unmaps (unmaps only when unregistering worked).
static mc_status_t mcgo_free(mc_engine_t *e, uintptr_t p, size_t n, char **msg) {
	mc_status_t s = mcgo_chk(mc_buffer_unregister(e, (void *)p), msg);
	if (s == MC_OK) munmap((void *)p, n);
	return s;
}

static void mcgo_munmap(uintptr_t p, size_t n) { munmap((void *)p, n); }

static mc_status_t mcgo_register(mc_engine_t *e, uintptr_t p, size_t n, const char *loc, char **msg) {
	return mcgo_chk(mc_buffer_register(e, (void *)p, n, loc), msg);
}
static mc_status_t mcgo_unregister(mc_engine_t *e, uintptr_t p, char **msg) {
	return mcgo_chk(mc_buffer_unregister(e, (void *)p), msg);
}
// Builds the mc_buffer_desc_t array in C memory from Go's pointer-free arrays.
static mc_status_t mcgo_register_batch(mc_engine_t *e, const uintptr_t *addrs, const uint64_t *lens,
                                       char *const *locs, size_t n, char **msg) {
	mc_buffer_desc_t *d = malloc((n ? n : 1) * sizeof *d);
	if (!d) { *msg = strdup("RegisterBatch: out of memory"); return MC_ERR_NO_MEMORY; }
	for (size_t i = 0; i < n; i++) {
		d[i].addr = (void *)addrs[i];
		d[i].length = lens[i];
		d[i].location = locs[i];
	}
	mc_status_t s = mcgo_chk(mc_buffer_register_batch(e, d, n), msg);
	free(d);
	return s;
}
static mc_status_t mcgo_unregister_batch(mc_engine_t *e, const uintptr_t *addrs, size_t n, char **msg) {
	void **a = malloc((n ? n : 1) * sizeof *a);
	if (!a) { *msg = strdup("UnregisterBatch: out of memory"); return MC_ERR_NO_MEMORY; }
	for (size_t i = 0; i < n; i++) a[i] = (void *)addrs[i];
	mc_status_t s = mcgo_chk(mc_buffer_unregister_batch(e, (void *const *)a, n), msg);
	free(a);
	return s;
}
static mc_status_t mcgo_set_access(mc_engine_t *e, uintptr_t p, uint32_t access, char **msg) {
	return mcgo_chk(mc_buffer_set_access(e, (void *)p, access), msg);
}

// Fills *out with a malloc'd JSON text.
static mc_status_t mcgo_stats(mc_engine_t *e, char **out, char **msg) {
	size_t cap = 4096, needed = 0;
	for (;;) {
		char *buf = malloc(cap);
		if (!buf) { *msg = strdup("Stats: out of memory"); return MC_ERR_NO_MEMORY; }
		mc_status_t s = mc_engine_stats_json(e, buf, cap, &needed);
		if (s == MC_OK) { *out = buf; return MC_OK; }
		free(buf);
		if (s != MC_ERR_BUFFER_TOO_SMALL) return mcgo_chk(s, msg);
		cap = needed > cap ? needed : cap * 2;
	}
}

static mc_status_t mcgo_segment_open(mc_engine_t *e, const char *name, mc_segment_t *out, char **msg) {
	return mcgo_chk(mc_segment_open(e, name, out), msg);
}
static mc_status_t mcgo_segment_close(mc_engine_t *e, mc_segment_t s, char **msg) {
	return mcgo_chk(mc_segment_close(e, s), msg);
}
static mc_status_t mcgo_segment_query(mc_engine_t *e, mc_segment_t s, mc_segment_info_t *info, char **msg) {
	info->size = sizeof *info;
	return mcgo_chk(mc_segment_query(e, s, info), msg);
}
// Fills *out with a malloc'd array of *count buffers (NULL when there are none).
static mc_status_t mcgo_segment_buffers(mc_engine_t *e, mc_segment_t seg, mc_buffer_info_t **out,
                                        size_t *count, char **msg) {
	size_t cap = 16;
	for (;;) {
		mc_buffer_info_t *arr = malloc(cap * sizeof *arr);
		if (!arr) { *msg = strdup("Buffers: out of memory"); return MC_ERR_NO_MEMORY; }
		mc_status_t s = mc_segment_buffers(e, seg, arr, cap, count);
		if (s == MC_OK) { *out = arr; return MC_OK; }
		free(arr);
		if (s != MC_ERR_BUFFER_TOO_SMALL) return mcgo_chk(s, msg);
		cap = *count > cap ? *count : cap * 2;
	}
}

// The transfer helpers (on every small transfer's path) return the status and, on failure only,
// the malloc'd copy of mc_last_error() by value instead of through a char ** out-parameter:
// the Go side then passes no pointer into Go memory for the message (no heap allocation for it,
// no cgocheck of it) and makes exactly one cgo call per transfer, failing or not.
typedef struct {
	mc_status_t status;
	char *msg;
} mcgo_res;
static inline mcgo_res mcgo_res_of(mc_status_t s) {
	mcgo_res r = {s, NULL};
	if (s != MC_OK) r.msg = strdup(mc_last_error());
	return r;
}

// The engine comes as an integer: a C pointer argument costs a runtime cgocheck per call.
// reqs is a Go array of cRequest (mc_request_t's layout, no Go pointers); mc_transfer and
// mc_batch_submit copy what they need before they return and keep no pointer to it.
static mcgo_res mcgo_transfer(uintptr_t e, const void *reqs, size_t n, int timeout) {
	return mcgo_res_of(mc_transfer((mc_engine_t *)e, (const mc_request_t *)reqs, n, timeout));
}
// One request built on the C stack from scalars: Write, Read and one-request Transfers.
static mcgo_res mcgo_transfer1(uintptr_t e, uint32_t op, uintptr_t local, mc_segment_t seg,
                               uint64_t remote, uint64_t len, int timeout) {
	mc_request_t r = {op, 0, (void *)local, seg, remote, len};
	return mcgo_res_of(mc_transfer((mc_engine_t *)e, &r, 1, timeout));
}

static mc_status_t mcgo_batch_create(mc_engine_t *e, size_t cap, mc_batch_t **out, char **msg) {
	return mcgo_chk(mc_batch_create(e, cap, out), msg);
}
static mcgo_res mcgo_batch_submit(mc_batch_t *b, const void *reqs, size_t n) {
	return mcgo_res_of(mc_batch_submit(b, (const mc_request_t *)reqs, n));
}
static mcgo_res mcgo_batch_submit_on_stream(mc_batch_t *b, const void *reqs, size_t n, uintptr_t stream) {
	return mcgo_res_of(mc_batch_submit_on_stream(b, (const mc_request_t *)reqs, n, (void *)stream));
}
static mcgo_res mcgo_batch_wait(mc_batch_t *b, int timeout) {
	return mcgo_res_of(mc_batch_wait(b, timeout));
}
static mc_status_t mcgo_batch_status(mc_batch_t *b, size_t i, mc_request_status_t *out, char **msg) {
	return mcgo_chk(mc_batch_status(b, i, out), msg);
}
static mc_status_t mcgo_batch_reset(mc_batch_t *b, char **msg) {
	return mcgo_chk(mc_batch_reset(b), msg);
}
static mc_status_t mcgo_batch_destroy(mc_batch_t *b, char **msg) {
	return mcgo_chk(mc_batch_destroy(b), msg);
}
// The cleanup backstop: waits for pending requests, then frees.
static void mcgo_batch_finalize(mc_batch_t *b) {
	if (mc_batch_destroy(b) == MC_ERR_BUSY) {
		mc_batch_wait(b, -1);
		mc_batch_destroy(b);
	}
}

static mc_status_t mcgo_heap_create(uint64_t cap, mc_heap_t **out, char **msg) {
	return mcgo_chk(mc_heap_create(cap, out), msg);
}
static mc_status_t mcgo_heap_alloc(mc_heap_t *h, uint64_t size, uint64_t align, uint64_t *out, char **msg) {
	return mcgo_chk(mc_heap_alloc(h, size, align, out), msg);
}
static mc_status_t mcgo_heap_free(mc_heap_t *h, uint64_t off, char **msg) {
	return mcgo_chk(mc_heap_free(h, off), msg);
}
static mc_status_t mcgo_heap_stats(mc_heap_t *h, mc_heap_stats_t *out, char **msg) {
	out->size = sizeof *out;
	return mcgo_chk(mc_heap_stats(h, out), msg);
}

static mc_status_t mcgo_batch_cancel(mc_batch_t *b, char **msg) {
	return mcgo_chk(mc_batch_cancel(b), msg);
}

// Segment callback: goMcSegment is exported from log.go; user carries a cgo.Handle.
extern void goMcSegment(uint64_t segment, uint32_t state, uint64_t incarnation, uintptr_t handle);
static void mcgo_segment_trampoline(mc_segment_t s, uint32_t state, uint64_t inc, void *user) {
	goMcSegment(s, state, inc, (uintptr_t)user);
}
static mc_status_t mcgo_set_segment_callback(mc_engine_t *e, int on, uintptr_t handle, char **msg) {
	return mcgo_chk(mc_engine_set_segment_callback(e, on ? mcgo_segment_trampoline : NULL,
	                                               (void *)handle), msg);
}

// Logging: goMcLog is exported from log.go.
extern void goMcLog(int level, char *message);
static void mcgo_log_trampoline(int level, const char *message, void *user) {
	(void)user;
	goMcLog(level, (char *)message);
}
static void mcgo_log_set(int on) { mc_log_set_handler(on ? mcgo_log_trampoline : NULL, NULL); }
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// ----------------------------------------------------------------------------- version, errors

// Version returns the loaded library's version as major, minor, patch.
func Version() (major, minor, patch int) {
	v := uint32(C.mc_version())
	return int(v >> 16), int(v>>8) & 0xff, int(v) & 0xff
}

// VersionString returns the loaded library's version text, e.g. "0.1.0".
func VersionString() string { return C.GoString(C.mc_version_string()) }

// checkVersion fails when the loaded library's major version is not the headers' one.
func checkVersion() error {
	if major, _, _ := Version(); major != int(C.MC_VERSION_MAJOR) {
		return &Error{Status: StatusInternal, Message: fmt.Sprintf(
			"libmc %s is loaded; this package was built for %d.x", VersionString(),
			int(C.MC_VERSION_MAJOR))}
	}
	return nil
}

// Status is an mc_status_t: 0 or a negative MC_ERR_* code.
type Status int32

// The statuses of include/mc.h.
const (
	StatusOK             Status = C.MC_OK
	StatusInvalidArg     Status = C.MC_ERR_INVALID_ARG
	StatusNoMemory       Status = C.MC_ERR_NO_MEMORY
	StatusNotFound       Status = C.MC_ERR_NOT_FOUND
	StatusOutOfRange     Status = C.MC_ERR_OUT_OF_RANGE
	StatusExists         Status = C.MC_ERR_EXISTS
	StatusBusy           Status = C.MC_ERR_BUSY
	StatusTimeout        Status = C.MC_ERR_TIMEOUT
	StatusPeerDown       Status = C.MC_ERR_PEER_DOWN
	StatusTransport      Status = C.MC_ERR_TRANSPORT
	StatusUnsupported    Status = C.MC_ERR_UNSUPPORTED
	StatusMetadata       Status = C.MC_ERR_METADATA
	StatusInternal       Status = C.MC_ERR_INTERNAL
	StatusBufferTooSmall Status = C.MC_ERR_BUFFER_TOO_SMALL
	StatusCanceled       Status = C.MC_ERR_CANCELED
	StatusDenied         Status = C.MC_ERR_DENIED
)

// String is the library's name for the status (mc_status_str).
func (s Status) String() string { return C.GoString(C.mc_status_str(C.mc_status_t(s))) }

// Error is a failed mc call: the status and the message of mc_last_error().
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "mc: " + e.Status.String()
	}
	return fmt.Sprintf("mc: %s (%s)", e.Message, e.Status.String())
}

// Is reports whether target is an *Error with the same status (messages are not compared), so
// errors.Is(err, mc.ErrTimeout) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Sentinels for errors.Is, one per status.
var (
	ErrInvalidArg     = &Error{Status: StatusInvalidArg}
	ErrNoMemory       = &Error{Status: StatusNoMemory}
	ErrNotFound       = &Error{Status: StatusNotFound}
	ErrOutOfRange     = &Error{Status: StatusOutOfRange}
	ErrExists         = &Error{Status: StatusExists}
	ErrBusy           = &Error{Status: StatusBusy}
	ErrTimeout        = &Error{Status: StatusTimeout}
	ErrPeerDown       = &Error{Status: StatusPeerDown}
	ErrTransport      = &Error{Status: StatusTransport}
	ErrUnsupported    = &Error{Status: StatusUnsupported}
	ErrMetadata       = &Error{Status: StatusMetadata}
	ErrInternal       = &Error{Status: StatusInternal}
	ErrBufferTooSmall = &Error{Status: StatusBufferTooSmall}
	ErrCanceled       = &Error{Status: StatusCanceled}
	ErrDenied         = &Error{Status: StatusDenied}
)

// LastError returns this OS thread's mc_last_error() text. The bindings never need it (every
// error already carries its message); it is here for completeness.
func LastError() string { return C.GoString(C.mc_last_error()) }

// mkerr turns a helper's status and malloc'd message into an error (nil for MC_OK).
func mkerr(s C.mc_status_t, msg *C.char) error {
	if s == C.MC_OK {
		return nil
	}
	m := ""
	if msg != nil {
		m = C.GoString(msg)
		C.free(unsafe.Pointer(msg))
	}
	return &Error{Status: Status(s), Message: m}
}

func closedErr(what string) error {
	return &Error{Status: StatusInvalidArg, Message: "the " + what + " is closed"}
}

// timeoutMs converts a Duration to the C timeout. Zero (DefaultTimeout) and negative values
// give -1, the engine's own bound; a positive value is rounded up to whole milliseconds.
func timeoutMs(d time.Duration) C.int {
	if d <= 0 {
		return -1
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > 1<<31-1 {
		ms = 1<<31 - 1
	}
	return C.int(ms)
}

// DefaultTimeout is the zero Duration every blocking call takes as its default: no wall-clock
// limit of the call's own, and every request still ends within the engine's timeout_ms of no
// progress (so a call never hangs). A positive timeout is a wall-clock limit on top.
const DefaultTimeout time.Duration = 0

// NoTimeout is DefaultTimeout under its older name (a negative Duration also means the default).
const NoTimeout time.Duration = -1

// ----------------------------------------------------------------------------- engine

// Engine is an mc engine. Its methods are safe for concurrent use.
type Engine struct {
	s *engineState
}

type engineState struct {
	mu      sync.RWMutex // RLock around calls, Lock for Close
	h       *C.mc_engine_t
	name    string
	allocMu sync.Mutex
	allocs  map[uintptr]uintptr // Alloc'd address -> length

	segFn     atomic.Pointer[func(SegmentEvent)] // the segment callback
	segHandle cgo.Handle                         // refers to segFn; deleted after destroy
}

// NewEngine creates an engine from config keys (name, metadata, listen, transports, workers,
// slice_size, tcp_connections, rdma_*, timeout_ms, heartbeat_ms, peer_timeout_ms, log_level,
// auth_token; see include/mc.h); nil or empty uses the defaults. Engines with different
// auth_tokens (or one without) refuse each other with ErrDenied.
func NewEngine(config map[string]string) (*Engine, error) {
	if err := checkVersion(); err != nil {
		return nil, err
	}
	n := len(config)
	var keys, vals **C.char
	if n > 0 {
		size := C.size_t(n) * C.size_t(unsafe.Sizeof((*C.char)(nil)))
		keys = (**C.char)(C.malloc(size))
		vals = (**C.char)(C.malloc(size))
		ks := unsafe.Slice(keys, n)
		vs := unsafe.Slice(vals, n)
		i := 0
		for k, v := range config {
			ks[i], vs[i] = C.CString(k), C.CString(v)
			i++
		}
		defer func() {
			for i := range n {
				C.free(unsafe.Pointer(ks[i]))
				C.free(unsafe.Pointer(vs[i]))
			}
			C.free(unsafe.Pointer(keys))
			C.free(unsafe.Pointer(vals))
		}()
	}
	var h *C.mc_engine_t
	var msg *C.char
	if err := mkerr(C.mcgo_engine_new(keys, vals, C.size_t(n), &h, &msg), msg); err != nil {
		return nil, err
	}
	s := &engineState{h: h, name: C.GoString(C.mc_engine_name(h)), allocs: map[uintptr]uintptr{}}
	e := &Engine{s: s}
	runtime.AddCleanup(e, func(s *engineState) { s.destroy(false) }, s)
	return e, nil
}

// destroy destroys the engine; with unmap it also unmaps Alloc'd memory.
func (s *engineState) destroy(unmap bool) {
	// Waits for calls in flight, then marks the engine closed so that new calls (a segment
	// callback calling back in included) fail at once instead of waiting on destroy.
	s.mu.Lock()
	h := s.h
	s.h = nil
	s.mu.Unlock()
	if h == nil {
		return
	}
	C.mc_engine_destroy(h)
	if s.segHandle != 0 {
		s.segHandle.Delete() // no callback runs after destroy
		s.segHandle = 0
	}
	if unmap {
		s.allocMu.Lock()
		for p, n := range s.allocs {
			C.mcgo_munmap(C.uintptr_t(p), C.size_t(n))
		}
		clear(s.allocs)
		s.allocMu.Unlock()
	}
}

// Close destroys the engine: pending requests of its batches fail, open segments close, and
// memory from Alloc is unmapped (slices from Alloc must not be used afterwards). Idempotent.
func (e *Engine) Close() error {
	e.s.destroy(true)
	return nil
}

// Name is the name peers open this engine's segment by ("HOST:PORT" in p2p mode).
func (e *Engine) Name() string { return e.s.name }

// lock takes the read lock and returns the handle, or an error when closed; unlock with
// e.s.mu.RUnlock().
func (e *Engine) lock() (*C.mc_engine_t, error) {
	e.s.mu.RLock()
	if e.s.h == nil {
		e.s.mu.RUnlock()
		return nil, closedErr("engine")
	}
	return e.s.h, nil
}

func cstrOrNil(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

// Alloc maps n bytes of page-aligned, zeroed C memory, registers it with location "" (detect)
// and returns it as a slice. It stays valid until Free or Close.
func (e *Engine) Alloc(n int) ([]byte, error) { return e.AllocAt(n, "") }

// AllocAt is Alloc with a location ("cpu", "cpu:N"; "" detects).
func (e *Engine) AllocAt(n int, location string) ([]byte, error) {
	if n <= 0 {
		return nil, &Error{Status: StatusInvalidArg, Message: fmt.Sprintf("Alloc: length must be > 0, not %d", n)}
	}
	h, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer e.s.mu.RUnlock()
	loc := cstrOrNil(location)
	defer C.free(unsafe.Pointer(loc))
	var p unsafe.Pointer
	var msg *C.char
	if err := mkerr(C.mcgo_alloc(h, C.size_t(n), loc, &p, &msg), msg); err != nil {
		return nil, err
	}
	e.s.allocMu.Lock()
	e.s.allocs[uintptr(p)] = uintptr(n)
	e.s.allocMu.Unlock()
	return unsafe.Slice((*byte)(p), n), nil
}

// Free unregisters and unmaps a slice returned by Alloc (pass the whole slice or any slice
// starting at its first byte). ErrBusy while requests use it; ErrNotFound for other memory.
func (e *Engine) Free(b []byte) error {
	if len(b) == 0 {
		return &Error{Status: StatusInvalidArg, Message: "Free: empty slice"}
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	h, err := e.lock()
	if err != nil {
		return err
	}
	defer e.s.mu.RUnlock()
	e.s.allocMu.Lock() // claimed while it goes, so that two Frees cannot both unmap
	n, ok := e.s.allocs[p]
	delete(e.s.allocs, p)
	e.s.allocMu.Unlock()
	if !ok {
		return &Error{Status: StatusNotFound, Message: "Free: not a slice returned by Alloc (or freed already)"}
	}
	var msg *C.char
	if err := mkerr(C.mcgo_free(h, C.uintptr_t(p), C.size_t(n), &msg), msg); err != nil {
		e.s.allocMu.Lock()
		e.s.allocs[p] = n
		e.s.allocMu.Unlock()
		return err
	}
	return nil
}

// Register registers memory that Go does not manage (C memory, a mapping made elsewhere) of
// length n at p. location "" detects. The caller keeps it valid until Unregister or Close.
func (e *Engine) Register(p unsafe.Pointer, n int, location string) error {
	h, err := e.lock()
	if err != nil {
		return err
	}
	defer e.s.mu.RUnlock()
	loc := cstrOrNil(location)
	defer C.free(unsafe.Pointer(loc))
	var msg *C.char
	return mkerr(C.mcgo_register(h, C.uintptr_t(uintptr(p)), C.size_t(n), loc, &msg), msg)
}

// Unregister unregisters memory registered with Register.
func (e *Engine) Unregister(p unsafe.Pointer) error {
	h, err := e.lock()
	if err != nil {
		return err
	}
	defer e.s.mu.RUnlock()
	var msg *C.char
	return mkerr(C.mcgo_unregister(h, C.uintptr_t(uintptr(p)), &msg), msg)
}

// BufferDesc is one buffer for RegisterBatch: memory Go does not manage, of Len bytes at Ptr;
// Location "" detects.
type BufferDesc struct {
	Ptr      unsafe.Pointer
	Len      int
	Location string
}

// RegisterBatch registers several buffers at once (mc_buffer_register_batch): all or nothing
// (an overlap among them or with registered memory is ErrExists, its message naming the index,
// and nothing is registered), and the segment's descriptor is published once. As with
// Register, the caller keeps the memory valid until it is unregistered or the engine closed.
func (e *Engine) RegisterBatch(bufs []BufferDesc) error {
	n := len(bufs)
	if n == 0 {
		return nil
	}
	addrs := make([]C.uintptr_t, n)
	lens := make([]C.uint64_t, n)
	locs := make([]*C.char, n)
	for i, b := range bufs {
		if b.Len < 0 {
			return &Error{Status: StatusInvalidArg, Message: fmt.Sprintf("RegisterBatch: buffer %d has length %d", i, b.Len)}
		}
		addrs[i] = C.uintptr_t(uintptr(b.Ptr))
		lens[i] = C.uint64_t(b.Len)
		locs[i] = cstrOrNil(b.Location)
	}
	defer func() {
		for _, l := range locs {
			C.free(unsafe.Pointer(l))
		}
	}()
	h, err := e.lock()
	if err != nil {
		return err
	}
	defer e.s.mu.RUnlock()
	var msg *C.char
	return mkerr(C.mcgo_register_batch(h, &addrs[0], &lens[0], &locs[0], C.size_t(n), &msg), msg)
}

// UnregisterBatch unregisters several buffers registered with Register or RegisterBatch at once
// (mc_buffer_unregister_batch), all or nothing: ErrNotFound for an unknown one, ErrBusy while
// requests use one, and nothing is unregistered.
func (e *Engine) UnregisterBatch(ptrs []unsafe.Pointer) error {
	n := len(ptrs)
	if n == 0 {
		return nil
	}
	addrs := make([]C.uintptr_t, n)
	for i, p := range ptrs {
		addrs[i] = C.uintptr_t(uintptr(p))
	}
	h, err := e.lock()
	if err != nil {
		return err
	}
	defer e.s.mu.RUnlock()
	var msg *C.char
	return mkerr(C.mcgo_unregister_batch(h, &addrs[0], C.size_t(n), &msg), msg)
}

// Access is what peers may do with a registered buffer (MC_ACCESS_* bits), for SetAccess.
type Access uint32

const (
	AccessNone      Access = 0
	AccessRead      Access = C.MC_ACCESS_READ
	AccessWrite     Access = C.MC_ACCESS_WRITE
	AccessReadWrite Access = AccessRead | AccessWrite // the default of every registered buffer
)

// SetAccess sets what peers may do with the registered buffer that starts at p (for a slice
// from Alloc: unsafe.Pointer(unsafe.SliceData(b))), mc_buffer_set_access. A forbidden peer
// request fails with ErrDenied and writes nothing; this engine's own requests are not
// affected. Taking rights away returns once no peer request admitted under the old ones still
// runs. Unknown bits: ErrInvalidArg; p not the start of a registered buffer: ErrNotFound.
func (e *Engine) SetAccess(p unsafe.Pointer, access Access) error {
	h, err := e.lock()
	if err != nil {
		return err
	}
	defer e.s.mu.RUnlock()
	var msg *C.char
	return mkerr(C.mcgo_set_access(h, C.uintptr_t(uintptr(p)), C.uint32_t(access), &msg), msg)
}

// StatsJSON returns the engine's counters as JSON text (mc_engine_stats_json).
func (e *Engine) StatsJSON() (string, error) {
	h, err := e.lock()
	if err != nil {
		return "", err
	}
	defer e.s.mu.RUnlock()
	var out, msg *C.char
	if err := mkerr(C.mcgo_stats(h, &out, &msg), msg); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(out))
	return C.GoString(out), nil
}

// Stats returns the engine's counters decoded from JSON (numbers as json.Number).
func (e *Engine) Stats() (map[string]any, error) {
	text, err := e.StatsJSON()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(text))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, &Error{Status: StatusInternal, Message: "Stats: bad JSON from libmc: " + err.Error()}
	}
	return m, nil
}

// ----------------------------------------------------------------------------- segments

// SegmentState is mc_segment_state_t.
type SegmentState uint32

const (
	SegmentOK          SegmentState = C.MC_SEGMENT_OK
	SegmentUnreachable SegmentState = C.MC_SEGMENT_UNREACHABLE
)

// SegmentInfo is mc_segment_info_t.
type SegmentInfo struct {
	State       SegmentState
	BufferCount uint32
	Incarnation uint64
	TotalBytes  uint64
	Transport   string
	Rejoins     uint64 // times the peer came back with a new incarnation
	// StateChangedMs is CLOCK_MONOTONIC milliseconds of the last state change.
	StateChangedMs uint64
}

// SegmentEvent is what the segment callback receives.
type SegmentEvent struct {
	Segment     uint64 // Segment.Handle
	State       SegmentState
	Incarnation uint64
}

// SetSegmentCallback calls fn on every state change or rejoin of an open segment, on an
// engine thread (keep it short); nil clears it.
func (e *Engine) SetSegmentCallback(fn func(SegmentEvent)) error {
	e.s.mu.Lock() // exclusive: the handle is created once
	defer e.s.mu.Unlock()
	if e.s.h == nil {
		return closedErr("engine")
	}
	var msg *C.char
	if fn == nil {
		if err := mkerr(C.mcgo_set_segment_callback(e.s.h, 0, 0, &msg), msg); err != nil {
			return err
		}
		e.s.segFn.Store(nil)
		return nil
	}
	e.s.segFn.Store(&fn)
	if e.s.segHandle == 0 {
		e.s.segHandle = cgo.NewHandle(&e.s.segFn)
	}
	return mkerr(C.mcgo_set_segment_callback(e.s.h, 1, C.uintptr_t(e.s.segHandle), &msg), msg)
}

// BufferInfo is one of a peer's published buffers (Addr is the peer's address: Request.Remote).
type BufferInfo struct {
	Addr     uint64
	Length   uint64
	Location string
}

// Segment is an open handle to a peer's (or this engine's own) published buffers.
type Segment struct {
	e      *Engine
	Name   string
	Handle uint64
}

// Open opens the segment published under name ("HOST:PORT" in p2p mode); blocks at most the
// engine's timeout_ms.
func (e *Engine) Open(name string) (*Segment, error) {
	h, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer e.s.mu.RUnlock()
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var seg C.mc_segment_t
	var msg *C.char
	if err := mkerr(C.mcgo_segment_open(h, cname, &seg, &msg), msg); err != nil {
		return nil, err
	}
	return &Segment{e: e, Name: name, Handle: uint64(seg)}, nil
}

// Info queries the segment (mc_segment_query).
func (s *Segment) Info() (SegmentInfo, error) {
	h, err := s.e.lock()
	if err != nil {
		return SegmentInfo{}, err
	}
	defer s.e.s.mu.RUnlock()
	var info C.mc_segment_info_t
	var msg *C.char
	if err := mkerr(C.mcgo_segment_query(h, C.mc_segment_t(s.Handle), &info, &msg), msg); err != nil {
		return SegmentInfo{}, err
	}
	return SegmentInfo{
		State: SegmentState(info.state), BufferCount: uint32(info.buffer_count),
		Incarnation: uint64(info.incarnation), TotalBytes: uint64(info.total_bytes),
		Transport: C.GoString(&info.transport[0]), Rejoins: uint64(info.rejoins),
		StateChangedMs: uint64(info.state_changed_ms),
	}, nil
}

// Buffers returns the peer's buffers as last known (mc_segment_buffers).
func (s *Segment) Buffers() ([]BufferInfo, error) {
	h, err := s.e.lock()
	if err != nil {
		return nil, err
	}
	defer s.e.s.mu.RUnlock()
	var arr *C.mc_buffer_info_t
	var count C.size_t
	var msg *C.char
	if err := mkerr(C.mcgo_segment_buffers(h, C.mc_segment_t(s.Handle), &arr, &count, &msg), msg); err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(arr))
	out := make([]BufferInfo, int(count))
	for i, b := range unsafe.Slice(arr, int(count)) {
		out[i] = BufferInfo{Addr: uint64(b.addr), Length: uint64(b.length), Location: C.GoString(&b.location[0])}
	}
	return out, nil
}

// Close closes the handle; requests already submitted still run.
func (s *Segment) Close() error {
	h, err := s.e.lock()
	if err != nil {
		return err
	}
	defer s.e.s.mu.RUnlock()
	var msg *C.char
	return mkerr(C.mcgo_segment_close(h, C.mc_segment_t(s.Handle), &msg), msg)
}

// ----------------------------------------------------------------------------- requests

// Opcode is mc_opcode_t.
type Opcode uint32

const (
	Read  Opcode = C.MC_READ
	Write Opcode = C.MC_WRITE
)

// Request is one one-sided transfer. Local must lie in registered memory (from Alloc or
// Register); its length is the request's length. Remote is the peer's address.
type Request struct {
	Op      Opcode
	Local   []byte
	Segment *Segment
	Remote  uint64
}

// cRequest mirrors mc_request_t with the local pointer as an integer, so that a Go slice of
// them holds no Go pointers (checked against the C layout in the tests).
type cRequest struct {
	opcode  uint32
	flags   uint32
	local   uintptr
	segment uint64
	remote  uint64
	length  uint64
}

// reqBufs recycles the cRequest arrays of multi-request Transfers and Submits (a one-request
// Transfer needs none: it goes through mcgo_transfer1). Arrays above maxPooledReqs requests are
// left to the garbage collector rather than kept.
var reqBufs = sync.Pool{New: func() any { return new([]cRequest) }}

const maxPooledReqs = 1024

// toC converts reqs into a pooled array; hand it back with putReqs once the C call returned.
func toC(reqs []Request) (*[]cRequest, error) {
	for i, r := range reqs {
		if r.Segment == nil {
			return nil, &Error{Status: StatusInvalidArg, Message: fmt.Sprintf("request %d: Segment is nil", i)}
		}
	}
	bp := reqBufs.Get().(*[]cRequest)
	if cap(*bp) < len(reqs) {
		*bp = make([]cRequest, len(reqs))
	}
	out := (*bp)[:len(reqs)]
	for i, r := range reqs {
		out[i] = cRequest{opcode: uint32(r.Op), local: uintptr(unsafe.Pointer(unsafe.SliceData(r.Local))),
			segment: r.Segment.Handle, remote: r.Remote, length: uint64(len(r.Local))}
	}
	*bp = out
	return bp, nil
}

func putReqs(bp *[]cRequest) {
	if cap(*bp) <= maxPooledReqs {
		reqBufs.Put(bp)
	}
}

// resErr turns a transfer helper's result into an error (nil for MC_OK); small enough to be
// inlined, so that the success path costs a comparison.
func resErr(r C.mcgo_res) error {
	if r.status == C.MC_OK {
		return nil
	}
	return mkerr(r.status, r.msg)
}

// Transfer submits the requests on an internal batch and waits (timeout: DefaultTimeout or a
// wall-clock limit): nil when all completed, the first failure's error, or ErrTimeout (the rest is canceled).
func (e *Engine) Transfer(reqs []Request, timeout time.Duration) error {
	if len(reqs) == 0 {
		return &Error{Status: StatusInvalidArg, Message: "Transfer: no requests"}
	}
	if len(reqs) == 1 {
		r := &reqs[0]
		if r.Segment == nil {
			return &Error{Status: StatusInvalidArg, Message: "request 0: Segment is nil"}
		}
		return e.one(r.Op, r.Local, r.Segment, r.Remote, timeout)
	}
	bp, err := toC(reqs)
	if err != nil {
		return err
	}
	defer putReqs(bp)
	h, err := e.lock()
	if err != nil {
		return err
	}
	res := C.mcgo_transfer(handleInt(h), unsafe.Pointer(unsafe.SliceData(*bp)), C.size_t(len(*bp)), timeoutMs(timeout))
	e.s.mu.RUnlock()
	runtime.KeepAlive(reqs)
	return resErr(res)
}

// handleInt passes an engine handle to the transfer helpers as an integer (no cgocheck).
func handleInt(h *C.mc_engine_t) C.uintptr_t { return C.uintptr_t(uintptr(unsafe.Pointer(h))) }

// one is the path of Write, Read and one-request Transfers: no allocation on success, one cgo
// call with scalar arguments only.
func (e *Engine) one(op Opcode, local []byte, seg *Segment, remote uint64, timeout time.Duration) error {
	segment := C.mc_segment_t(seg.Handle) // a nil seg panics here, before the lock is taken
	s := e.s
	s.mu.RLock() // e.lock() by hand, without defer: a little less on the hot path
	h := s.h
	if h == nil {
		s.mu.RUnlock()
		return closedErr("engine")
	}
	res := C.mcgo_transfer1(handleInt(h), C.uint32_t(op), C.uintptr_t(uintptr(unsafe.Pointer(unsafe.SliceData(local)))),
		segment, C.uint64_t(remote), C.uint64_t(len(local)), timeoutMs(timeout))
	s.mu.RUnlock()
	runtime.KeepAlive(local)
	return resErr(res)
}

// Write copies local (registered) to the peer's address remote and waits.
func (e *Engine) Write(local []byte, seg *Segment, remote uint64, timeout time.Duration) error {
	return e.one(Write, local, seg, remote, timeout)
}

// Read copies [remote, remote+len(local)) of the segment into local (registered) and waits.
func (e *Engine) Read(local []byte, seg *Segment, remote uint64, timeout time.Duration) error {
	return e.one(Read, local, seg, remote, timeout)
}

// ----------------------------------------------------------------------------- batches

// RequestState is mc_request_state_t.
type RequestState uint32

const (
	Pending   RequestState = C.MC_REQUEST_PENDING
	Completed RequestState = C.MC_REQUEST_COMPLETED
	Failed    RequestState = C.MC_REQUEST_FAILED
)

func (s RequestState) String() string {
	switch s {
	case Pending:
		return "pending"
	case Completed:
		return "completed"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("RequestState(%d)", uint32(s))
}

// RequestStatus is mc_request_status_t.
type RequestStatus struct {
	State RequestState
	Error Status // StatusOK unless Failed
	Bytes uint64
}

// Batch is a set of up to Capacity requests submitted in one or more calls and waited on
// together. It may outlive its engine (its pending requests fail then).
type Batch struct {
	s *batchState
}

type batchState struct {
	mu        sync.RWMutex // RLock for submit/wait/status, Lock for reset/close
	submitMu  sync.Mutex   // orders submits so that Submit's first index is right
	h         *C.mc_batch_t
	submitted atomic.Int64
	capacity  int
}

// NewBatch creates a batch for up to capacity (1..16777216) requests.
func (e *Engine) NewBatch(capacity int) (*Batch, error) {
	h, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer e.s.mu.RUnlock()
	var bh *C.mc_batch_t
	var msg *C.char
	if capacity < 0 {
		capacity = 0 // the library reports it
	}
	if err := mkerr(C.mcgo_batch_create(h, C.size_t(capacity), &bh, &msg), msg); err != nil {
		return nil, err
	}
	s := &batchState{h: bh, capacity: capacity}
	b := &Batch{s: s}
	runtime.AddCleanup(b, func(s *batchState) {
		if s.h != nil {
			C.mcgo_batch_finalize(s.h)
		}
	}, s)
	return b, nil
}

// Capacity is the most requests the batch holds.
func (b *Batch) Capacity() int { return b.s.capacity }

// Len is the number of requests submitted since creation or Reset.
func (b *Batch) Len() int {
	b.s.mu.RLock()
	defer b.s.mu.RUnlock()
	return int(b.s.submitted.Load())
}

func (b *Batch) lock() (*C.mc_batch_t, error) {
	b.s.mu.RLock()
	if b.s.h == nil {
		b.s.mu.RUnlock()
		return nil, closedErr("batch")
	}
	return b.s.h, nil
}

// Submit validates and starts the requests (none starts if any is bad) and returns the index of
// the first. The memory they use must stay registered until they end.
func (b *Batch) Submit(reqs []Request) (int, error) {
	return b.submit("Submit", reqs, func(h *C.mc_batch_t, p unsafe.Pointer, n C.size_t) C.mcgo_res {
		return C.mcgo_batch_submit(h, p, n)
	})
}

// SubmitOnStream is Submit ordered on a CUDA stream (mc_batch_submit_on_stream): stream is a
// CUstream / cudaStream_t handle (0: the legacy default stream of the calling thread's current
// context; lock the goroutine to its OS thread for that, as CUDA contexts are per thread). The
// requests start after the work queued on the stream before the call, and work queued after
// waits on the GPU for them to end; this goroutine never waits for the GPU. Without a CUDA
// driver: StatusUnsupported, nothing submitted. The stream must stay alive until they ended.
func (b *Batch) SubmitOnStream(reqs []Request, stream uintptr) (int, error) {
	return b.submit("SubmitOnStream", reqs, func(h *C.mc_batch_t, p unsafe.Pointer, n C.size_t) C.mcgo_res {
		return C.mcgo_batch_submit_on_stream(h, p, n, C.uintptr_t(stream))
	})
}

// submit is Submit and SubmitOnStream: call starts the requests in C.
func (b *Batch) submit(what string, reqs []Request, call func(*C.mc_batch_t, unsafe.Pointer, C.size_t) C.mcgo_res) (int, error) {
	if len(reqs) == 0 {
		return 0, &Error{Status: StatusInvalidArg, Message: what + ": no requests"}
	}
	bp, err := toC(reqs)
	if err != nil {
		return 0, err
	}
	defer putReqs(bp)
	n := len(*bp)
	h, err := b.lock()
	if err != nil {
		return 0, err
	}
	defer b.s.mu.RUnlock()
	b.s.submitMu.Lock() // the first index must match the library's numbering
	defer b.s.submitMu.Unlock()
	if err := resErr(call(h, unsafe.Pointer(unsafe.SliceData(*bp)), C.size_t(n))); err != nil {
		return 0, err
	}
	return int(b.s.submitted.Add(int64(n))) - n, nil
}

// Wait waits until every submitted request ended (timeout: DefaultTimeout or a wall-clock limit;
// Status polls without waiting): nil when all completed, the first failed request's error, or
// ErrTimeout.
func (b *Batch) Wait(timeout time.Duration) error {
	h, err := b.lock()
	if err != nil {
		return err
	}
	defer b.s.mu.RUnlock()
	return resErr(C.mcgo_batch_wait(h, timeoutMs(timeout)))
}

// Status returns the state of request index.
func (b *Batch) Status(index int) (RequestStatus, error) {
	h, err := b.lock()
	if err != nil {
		return RequestStatus{}, err
	}
	defer b.s.mu.RUnlock()
	if index < 0 {
		return RequestStatus{}, &Error{Status: StatusInvalidArg, Message: fmt.Sprintf("Status: index %d < 0", index)}
	}
	var st C.mc_request_status_t
	var msg *C.char
	if err := mkerr(C.mcgo_batch_status(h, C.size_t(index), &st, &msg), msg); err != nil {
		return RequestStatus{}, err
	}
	return RequestStatus{State: RequestState(st.state), Error: Status(st.error), Bytes: uint64(st.bytes)}, nil
}

// Cancel cancels every pending request (each ends Failed with StatusCanceled) and returns once
// none of them can touch memory any more.
func (b *Batch) Cancel() error {
	h, err := b.lock()
	if err != nil {
		return err
	}
	defer b.s.mu.RUnlock()
	var msg *C.char
	return mkerr(C.mcgo_batch_cancel(h, &msg), msg)
}

// Reset forgets every request (ErrBusy while some are pending).
func (b *Batch) Reset() error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.s.h == nil {
		return closedErr("batch")
	}
	var msg *C.char
	if err := mkerr(C.mcgo_batch_reset(b.s.h, &msg), msg); err != nil {
		return err
	}
	b.s.submitted.Store(0)
	return nil
}

// Close frees the batch; ErrBusy (and nothing freed) while requests are pending. Idempotent.
func (b *Batch) Close() error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.s.h == nil {
		return nil
	}
	var msg *C.char
	if err := mkerr(C.mcgo_batch_destroy(b.s.h, &msg), msg); err != nil {
		return err
	}
	b.s.h = nil
	return nil
}

// ----------------------------------------------------------------------------- heap

// HeapStats is mc_heap_stats_t.
type HeapStats struct {
	Capacity, Used, Free, LargestFree, Allocations uint64
}

// Heap is an offset allocator over [0, capacity). Safe for concurrent use.
type Heap struct {
	s *heapState
}

type heapState struct {
	mu sync.RWMutex
	h  *C.mc_heap_t
}

// NewHeap creates a heap of capacity (> 0) bytes.
func NewHeap(capacity uint64) (*Heap, error) {
	if err := checkVersion(); err != nil {
		return nil, err
	}
	var h *C.mc_heap_t
	var msg *C.char
	if err := mkerr(C.mcgo_heap_create(C.uint64_t(capacity), &h, &msg), msg); err != nil {
		return nil, err
	}
	s := &heapState{h: h}
	hp := &Heap{s: s}
	runtime.AddCleanup(hp, func(s *heapState) {
		if s.h != nil {
			C.mc_heap_destroy(s.h)
		}
	}, s)
	return hp, nil
}

func (hp *Heap) lock() (*C.mc_heap_t, error) {
	hp.s.mu.RLock()
	if hp.s.h == nil {
		hp.s.mu.RUnlock()
		return nil, closedErr("heap")
	}
	return hp.s.h, nil
}

// Alloc returns the offset of size bytes aligned to align (ErrNoMemory when there is no room).
func (hp *Heap) Alloc(size, align uint64) (uint64, error) {
	h, err := hp.lock()
	if err != nil {
		return 0, err
	}
	defer hp.s.mu.RUnlock()
	var off C.uint64_t
	var msg *C.char
	if err := mkerr(C.mcgo_heap_alloc(h, C.uint64_t(size), C.uint64_t(align), &off, &msg), msg); err != nil {
		return 0, err
	}
	return uint64(off), nil
}

// Free frees the allocation at offset (ErrNotFound if none starts there).
func (hp *Heap) Free(offset uint64) error {
	h, err := hp.lock()
	if err != nil {
		return err
	}
	defer hp.s.mu.RUnlock()
	var msg *C.char
	return mkerr(C.mcgo_heap_free(h, C.uint64_t(offset), &msg), msg)
}

// Stats returns the heap's counters.
func (hp *Heap) Stats() (HeapStats, error) {
	h, err := hp.lock()
	if err != nil {
		return HeapStats{}, err
	}
	defer hp.s.mu.RUnlock()
	var st C.mc_heap_stats_t
	var msg *C.char
	if err := mkerr(C.mcgo_heap_stats(h, &st, &msg), msg); err != nil {
		return HeapStats{}, err
	}
	return HeapStats{Capacity: uint64(st.capacity), Used: uint64(st.used), Free: uint64(st.free),
		LargestFree: uint64(st.largest_free), Allocations: uint64(st.allocations)}, nil
}

// Close frees the heap. Idempotent.
func (hp *Heap) Close() error {
	hp.s.mu.Lock()
	defer hp.s.mu.Unlock()
	if hp.s.h != nil {
		C.mc_heap_destroy(hp.s.h)
		hp.s.h = nil
	}
	return nil
}

// ----------------------------------------------------------------------------- logging

// Log levels (MC_LOG_*).
const (
	LogError = C.MC_LOG_ERROR
	LogWarn  = C.MC_LOG_WARN
	LogInfo  = C.MC_LOG_INFO
	LogDebug = C.MC_LOG_DEBUG
)

// SetLogLevel sets the process-wide log level (LogError..LogDebug).
func SetLogLevel(level int) { C.mc_log_set_level(C.int(level)) }

// SetLogHandler sends every log line to fn, called from mc threads; nil restores stderr.
func SetLogHandler(fn func(level int, message string)) {
	if fn == nil {
		C.mcgo_log_set(0)
		logFn.Store(nil)
		return
	}
	logFn.Store(&fn)
	C.mcgo_log_set(1)
}

// cRequest must have mc_request_t's layout: these constants overflow (a compile error) if not.
const (
	_ = uint(unsafe.Sizeof(cRequest{}) - C.sizeof_mc_request_t)
	_ = uint(C.sizeof_mc_request_t - unsafe.Sizeof(cRequest{}))
	_ = uint(unsafe.Offsetof(cRequest{}.local) - unsafe.Offsetof(C.mc_request_t{}.local))
	_ = uint(unsafe.Offsetof(C.mc_request_t{}.local) - unsafe.Offsetof(cRequest{}.local))
	_ = uint(unsafe.Offsetof(cRequest{}.segment) - unsafe.Offsetof(C.mc_request_t{}.segment))
	_ = uint(unsafe.Offsetof(C.mc_request_t{}.segment) - unsafe.Offsetof(cRequest{}.segment))
	_ = uint(unsafe.Offsetof(cRequest{}.length) - unsafe.Offsetof(C.mc_request_t{}.length))
	_ = uint(unsafe.Offsetof(C.mc_request_t{}.length) - unsafe.Offsetof(cRequest{}.length))
)
