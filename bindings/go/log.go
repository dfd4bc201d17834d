package mc

/*
#include <mc.h>
*/
import "C"

import (
	"runtime/cgo"
	"sync/atomic"
)

// logFn is the handler SetLogHandler installed (nil: none).
var logFn atomic.Pointer[func(level int, message string)]

//export goMcLog
func goMcLog(level C.int, message *C.char) {
	if fn := logFn.Load(); fn != nil {
		(*fn)(int(level), C.GoString(message))
	}
}

//export goMcSegment
func goMcSegment(segment C.uint64_t, state C.uint32_t, incarnation C.uint64_t, handle C.uintptr_t) {
	slot, ok := cgo.Handle(handle).Value().(*atomic.Pointer[func(SegmentEvent)])
	if !ok {
		return
	}
	if fn := slot.Load(); fn != nil {
		(*fn)(SegmentEvent{Segment: uint64(segment), State: SegmentState(state), Incarnation: uint64(incarnation)})
	}
}
