package mc

import (
	"os"
	"strconv"
	"time"
	"unsafe"
)

func unsafePtr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// testSlack is MC_TEST_SLACK (default 1), the factor tests/testutil.h applies to every time limit
// of the C tests: a loaded CI machine or the race detector must never fail a correct build.
var testSlack = func() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("MC_TEST_SLACK")); err == nil && v > 0 {
		return time.Duration(v)
	}
	return 1
}()

// within is a time limit d of a test, times testSlack.
func within(d time.Duration) time.Duration { return d * testSlack }
