// The floor under the Go row: "raw" times mc_transfer called straight through cgo (engines, memory
// and the request set up in C as bench_c.c does, so the only difference from the C row is the
// cgo transition and the Go loop around it); "noop" times a cgo call of a C function that
// returns 0 (the transition alone; its figure is ns per call, not per transfer).
package main

/*
#cgo pkg-config: mc
#include <stdlib.h>
#include <string.h>
#include <mc.h>

static mc_engine_t *raw_a, *raw_b;
static mc_request_t raw_req;
static _Alignas(4096) char raw_local[4096], raw_target[4096];

static mc_engine_t *raw_engine(const char *transports) {
	mc_config_t *cfg;
	mc_engine_t *e = NULL;
	if (mc_config_create(&cfg) != MC_OK) return NULL;
	if (mc_config_set(cfg, "listen", "127.0.0.1:0") != MC_OK ||
	    mc_config_set(cfg, "transports", transports) != MC_OK || mc_engine_create(cfg, &e) != MC_OK)
		e = NULL;
	mc_config_destroy(cfg);
	return e;
}

// Returns NULL or what failed; *transport gets the segment's transport.
static const char *raw_setup(const char *transports, char *transport, size_t cap) {
	mc_segment_t seg;
	mc_buffer_info_t buf;
	mc_segment_info_t info;
	size_t count;
	if (!(raw_a = raw_engine(transports)) || !(raw_b = raw_engine(transports))) return "engine";
	memset(raw_local, 7, sizeof raw_local);
	if (mc_buffer_register(raw_a, raw_local, sizeof raw_local, NULL) != MC_OK ||
	    mc_buffer_register(raw_b, raw_target, sizeof raw_target, NULL) != MC_OK) return "register";
	if (mc_segment_open(raw_a, mc_engine_name(raw_b), &seg) != MC_OK) return "open";
	if (mc_segment_buffers(raw_a, seg, &buf, 1, &count) != MC_OK) return "buffers";
	memset(&info, 0, sizeof info);
	info.size = sizeof info;
	if (mc_segment_query(raw_a, seg, &info) != MC_OK) return "query";
	strncpy(transport, info.transport, cap - 1);
	mc_request_t r = {MC_WRITE, 0, raw_local, seg, buf.addr, 8};
	raw_req = r;
	return NULL;
}
static mc_status_t raw_transfer(void) { return mc_transfer(raw_a, &raw_req, 1, -1); }
static int raw_arrived(void) { return raw_target[0] == 7; }
static int raw_noop(void) { return 0; }
*/
import "C"

import (
	"fmt"
	"os"
	"time"
	"unsafe"

	mc "github.com/mc-project/mc/bindings/go"
)

// runRaw times the raw or noop floor with the same warm-up and chunks as the Go row.
func runRaw(mode, transports string, iters, warmup, chunks int) {
	per := make([]float64, chunks)
	n := iters / chunks
	if mode == "noop" {
		fmt.Println("transport none")
		for i := 0; i < warmup; i++ {
			C.raw_noop()
		}
		for c := range per {
			t0 := time.Now()
			for i := 0; i < n; i++ {
				C.raw_noop()
			}
			per[c] = float64(time.Since(t0).Nanoseconds()) / float64(n)
		}
		report(per)
		return
	}
	if mode != "raw" {
		fmt.Fprintln(os.Stderr, "bench_go: unknown mode", mode)
		os.Exit(2)
	}
	ct := C.CString(transports)
	var tr [32]C.char
	if what := C.raw_setup(ct, &tr[0], C.size_t(len(tr))); what != nil {
		fmt.Fprintf(os.Stderr, "bench_go raw: %s: %s\n", C.GoString(what), mc.LastError())
		os.Exit(1)
	}
	C.free(unsafe.Pointer(ct))
	fmt.Println("transport", C.GoString(&tr[0]))
	check := func(s C.mc_status_t) {
		if s != C.MC_OK {
			fmt.Fprintln(os.Stderr, "bench_go raw:", mc.Status(s), mc.LastError())
			os.Exit(1)
		}
	}
	for i := 0; i < warmup; i++ {
		check(C.raw_transfer())
	}
	for c := range per {
		t0 := time.Now()
		for i := 0; i < n; i++ {
			check(C.raw_transfer())
		}
		per[c] = float64(time.Since(t0).Nanoseconds()) / float64(n)
	}
	if C.raw_arrived() == 0 {
		fmt.Fprintln(os.Stderr, "bench_go raw: data did not arrive")
		os.Exit(1)
	}
	report(per)
}
