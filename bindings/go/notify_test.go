package mc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// A WRITE then a NOTIFY in one batch: the notification arrives on the channel with the bytes
// already in place, in submit order, over many rounds.
func TestNotifyChannelOrderAndData(t *testing.T) {
	a, b := newEngine(t), newEngine(t)
	src, dst := alloc(t, a, 1<<20), alloc(t, b, 1<<20)
	seg, err := a.Open(b.Name())
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.Notifications(ctx)
	must(t, err)
	batch, err := a.NewBatch(2)
	must(t, err)
	defer batch.Close()
	for r := 0; r < 20; r++ {
		for i := range src {
			src[i] = byte(r + i)
		}
		_, err := batch.Submit([]Request{{Write, src, seg, uint64(uintptr(unsafePtr(dst)))}})
		must(t, err)
		idx, err := batch.Notify(seg, []byte(fmt.Sprintf("round %d", r)))
		must(t, err)
		if idx != 1 {
			t.Fatalf("Notify index %d, want 1", idx)
		}
		select {
		case n := <-ch:
			if string(n.Data) != fmt.Sprintf("round %d", r) || n.Peer != a.Name() || n.Incarnation == 0 {
				t.Fatalf("round %d: got %+v", r, n)
			}
			if !bytes.Equal(dst, src) {
				t.Fatalf("round %d: the WRITE's bytes were not in place at notification time", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no notification", r)
		}
		must(t, batch.Wait(DefaultTimeout))
		must(t, batch.Reset())
	}
	cancel()
	for range ch { // closed once ctx is done
	}
}

func TestNotifyRecvEventFdAndErrors(t *testing.T) {
	a := newEngine(t)
	b, err := NewEngine(map[string]string{"listen": "127.0.0.1:0", "notify_queue": "1"})
	must(t, err)
	defer b.Close()
	seg, err := a.Open(b.Name())
	must(t, err)
	if _, ok, err := b.NotifyRecv(); ok || err != nil {
		t.Fatalf("empty queue: ok=%v err=%v", ok, err)
	}
	fd, err := b.EventFd()
	must(t, err)
	batch, err := a.NewBatch(4)
	must(t, err)
	defer batch.Close()
	if _, err := batch.Notify(seg, make([]byte, NotifyMaxBytes+1)); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("oversized NOTIFY: %v", err)
	}
	if _, err := batch.Notify(seg, nil); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("empty NOTIFY: %v", err)
	}
	_, err = batch.Notify(seg, []byte("one"))
	must(t, err)
	must(t, batch.Wait(DefaultTimeout))
	var tick [8]byte
	if n, err := syscall.Read(fd, tick[:]); n != 8 || err != nil {
		t.Fatalf("event fd not readable after a notification: %d %v", n, err)
	}
	_, err = batch.Notify(seg, []byte("queue full"))
	must(t, err)
	if err := batch.Wait(DefaultTimeout); !errors.Is(err, ErrBusy) {
		t.Fatalf("full queue: %v", err)
	}
	n, ok, err := b.NotifyRecv()
	must(t, err)
	if !ok || string(n.Data) != "one" || n.Peer != a.Name() {
		t.Fatalf("got %+v ok=%v", n, ok)
	}
}
