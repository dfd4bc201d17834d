// Command transfer moves data to a target in another process and reads it back.
//
//	build/bin/mc_bench target --listen 127.0.0.1:0 --size 64M   # prints "segment: NAME"
//	go run ./examples/transfer NAME
package main

import (
	"bytes"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	mc "github.com/mc-project/mc/bindings/go"
)

func main() {
	mib := flag.Int("mib", 16, "MiB to move")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: transfer [-mib N] SEGMENT_NAME")
		os.Exit(2)
	}
	eng, err := mc.NewEngine(map[string]string{"listen": "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()
	seg, err := eng.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	defer seg.Close()
	bufs, err := seg.Buffers()
	if err != nil || len(bufs) == 0 {
		log.Fatalf("no buffers: %v", err)
	}
	n := min(uint64(*mib)<<20, bufs[0].Length)
	src, err := eng.Alloc(int(n))
	if err != nil {
		log.Fatal(err)
	}
	dst, err := eng.Alloc(int(n))
	if err != nil {
		log.Fatal(err)
	}
	rand.Read(src)
	t := time.Now()
	if err := eng.Write(src, seg, bufs[0].Addr, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	tw := time.Since(t)
	t = time.Now()
	if err := eng.Read(dst, seg, bufs[0].Addr, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	tr := time.Since(t)
	info, _ := seg.Info()
	ok := bytes.Equal(src, dst)
	fmt.Printf("%s: wrote %d bytes in %v (%.2f GB/s), read back in %v (%.2f GB/s): match=%v\n",
		info.Transport, n, tw, float64(n)/tw.Seconds()/1e9, tr, float64(n)/tr.Seconds()/1e9, ok)
	if !ok {
		os.Exit(1)
	}
}
