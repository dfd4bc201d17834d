// A Go program outside the mc tree, built only as bindings/go/README.md says: two engines in
// one process, 1 MiB written to the target over loopback and read back, compared byte for byte.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"time"

	mc "github.com/mc-project/mc/bindings/go"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "go consumer: %s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	const n = 1 << 20
	target, err := mc.NewEngine(map[string]string{"listen": "127.0.0.1:0"})
	if err != nil {
		fail("target", err)
	}
	defer target.Close()
	dst, err := target.Alloc(n)
	if err != nil {
		fail("target alloc", err)
	}
	eng, err := mc.NewEngine(map[string]string{"listen": "127.0.0.1:0"})
	if err != nil {
		fail("initiator", err)
	}
	defer eng.Close()
	src, err := eng.Alloc(n)
	if err != nil {
		fail("alloc", err)
	}
	back, err := eng.Alloc(n)
	if err != nil {
		fail("alloc", err)
	}
	rand.New(rand.NewSource(42)).Read(src)
	seg, err := eng.Open(target.Name())
	if err != nil {
		fail("open", err)
	}
	defer seg.Close()
	bufs, err := seg.Buffers()
	if err != nil || len(bufs) != 1 {
		fail("buffers", err)
	}
	if err := eng.Write(src, seg, bufs[0].Addr, mc.DefaultTimeout); err != nil {
		fail("write", err)
	}
	if err := eng.Read(back, seg, bufs[0].Addr, 10*time.Second); err != nil {
		fail("read", err)
	}
	// The error sentinels are named after the C codes (MC_ERR_OUT_OF_RANGE).
	err = eng.Write(src, seg, bufs[0].Addr+1, mc.DefaultTimeout)
	if !errors.Is(err, mc.ErrOutOfRange) {
		fail("write past the end", fmt.Errorf("want ErrOutOfRange, got %v", err))
	}
	wrote, read := bytes.Equal(src, dst), bytes.Equal(src, back)
	fmt.Printf("go consumer: libmc %s, wrote %d bytes match=%v, read back match=%v\n",
		mc.VersionString(), n, wrote, read)
	if !wrote || !read {
		os.Exit(1)
	}
}
