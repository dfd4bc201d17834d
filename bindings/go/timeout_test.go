package mc

import (
	"testing"
	"time"
)

// The zero Duration is the default (-1 to C: the engine's own bound), never a poll.
func TestTimeoutMs(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want int
	}{
		{DefaultTimeout, -1}, {NoTimeout, -1}, {-time.Hour, -1},
		{time.Nanosecond, 1}, {time.Millisecond, 1}, {1500 * time.Microsecond, 2},
		{5 * time.Second, 5000}, {1 << 62, 1<<31 - 1},
	}
	for _, c := range cases {
		if got := int(timeoutMs(c.d)); got != c.want {
			t.Errorf("timeoutMs(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

// Wait(DefaultTimeout) waits for a batch that is still running; a poll would return ErrTimeout.
func TestWaitDefaultTimeout(t *testing.T) {
	const n = 32 << 20
	a, src, dst, seg, remote := pair(t, n)
	for i := range src {
		src[i] = byte(i*7 + i>>12)
	}
	batch, err := a.NewBatch(1)
	must(t, err)
	defer batch.Close()
	_, err = batch.Submit([]Request{{Write, src, seg, remote}})
	must(t, err)
	must(t, batch.Wait(DefaultTimeout))
	st, err := batch.Status(0)
	must(t, err)
	if st != (RequestStatus{Completed, StatusOK, n}) {
		t.Fatalf("status after Wait(DefaultTimeout): %+v", st)
	}
	for i := 0; i < n; i += 4093 {
		if dst[i] != src[i] {
			t.Fatalf("byte %d: %d, want %d", i, dst[i], src[i])
		}
	}
}
