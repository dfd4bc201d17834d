// The Go row of bench/bindings: one 8-byte WRITE through Engine.Write between two engines in this
// process. usage: bench_go ITERS WARMUP CHUNKS [raw|noop] -> "transport NAME", "ns_per_op X".
// raw and noop time the floors under it instead (raw.go).
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	mc "github.com/mc-project/mc/bindings/go"
)

func must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench_go:", err)
		os.Exit(1)
	}
	return v
}

func main() {
	iters, _ := strconv.Atoi(os.Args[1])
	warmup, _ := strconv.Atoi(os.Args[2])
	chunks, _ := strconv.Atoi(os.Args[3])
	transports := os.Getenv("BENCH_TRANSPORTS")
	if transports == "" {
		transports = "shm"
	}
	if len(os.Args) > 4 {
		runRaw(os.Args[4], transports, iters, warmup, chunks)
		return
	}
	cfg := map[string]string{"listen": "127.0.0.1:0", "transports": transports}
	a := must(mc.NewEngine(cfg))
	b := must(mc.NewEngine(cfg))
	local := must(a.Alloc(4096))
	target := must(b.Alloc(4096))
	for i := 0; i < 8; i++ {
		local[i] = 7
	}
	seg := must(a.Open(b.Name()))
	remote := must(seg.Buffers())[0].Addr
	fmt.Println("transport", must(seg.Info()).Transport)
	src := local[:8]
	for i := 0; i < warmup; i++ {
		must(0, a.Write(src, seg, remote, -1))
	}
	per := make([]float64, chunks)
	n := iters / chunks
	for c := range per {
		t0 := time.Now()
		for i := 0; i < n; i++ {
			must(0, a.Write(src, seg, remote, -1))
		}
		per[c] = float64(time.Since(t0).Nanoseconds()) / float64(n)
	}
	if target[0] != 7 {
		fmt.Fprintln(os.Stderr, "bench_go: data did not arrive")
		os.Exit(1)
	}
	report(per)
	seg.Close()
	a.Close()
	b.Close()
}

func report(per []float64) {
	sort.Float64s(per)
	fmt.Printf("ns_per_op %.1f\n", per[len(per)/2])
}
