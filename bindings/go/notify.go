package mc

/*
#include <stdlib.h>
#include <string.h>
#include <mc.h>

static mc_status_t mcgo_nchk(mc_status_t s, char **msg) {
	if (s != MC_OK) *msg = strdup(mc_last_error());
	return s;
}

// One NOTIFY on batch b carrying msg (copied by the library at submit).
static mc_status_t mcgo_notify(mc_batch_t *b, mc_segment_t seg, const void *msg, size_t n, char **err) {
	mc_request_t r = {MC_NOTIFY, 0, (void *)msg, seg, 0, n};
	return mcgo_nchk(mc_batch_submit(b, &r, 1), err);
}

// The oldest notification into buf (MC_NOTIFY_MAX_BYTES): MC_ERR_NOT_FOUND (no message set)
// when none is queued.
static mc_status_t mcgo_notify_recv(mc_engine_t *e, mc_notification_t *info, void *buf, char **err) {
	info->size = sizeof *info;
	mc_status_t s = mc_notify_recv(e, info, buf, MC_NOTIFY_MAX_BYTES);
	if (s == MC_ERR_NOT_FOUND) return s;
	return mcgo_nchk(s, err);
}

static mc_status_t mcgo_event_fd(mc_engine_t *e, int *fd, char **err) {
	return mcgo_nchk(mc_engine_event_fd(e, fd), err);
}
*/
import "C"

import (
	"context"
	"os"
	"syscall"
	"unsafe"
)

// Notify is MC_NOTIFY: a message to the segment's engine, sent once every request submitted to
// the same batch before it ended COMPLETED (see Batch.Notify).
const Notify Opcode = C.MC_NOTIFY

// NotifyMaxBytes is the largest message one NOTIFY carries.
const NotifyMaxBytes = C.MC_NOTIFY_MAX_BYTES

// Notification is one message an engine received (mc_notify_recv).
type Notification struct {
	Peer        string // the sender's engine name
	Incarnation uint64 // the sender's incarnation
	Data        []byte
}

// Notify submits one NOTIFY carrying msg (1..NotifyMaxBytes bytes, copied at submit) to seg and
// returns its index. It is delivered after every request submitted to b before it COMPLETED;
// when one of them failed it ends ErrCanceled, never delivered; a full queue at the peer is
// ErrBusy.
func (b *Batch) Notify(seg *Segment, msg []byte) (int, error) {
	if seg == nil {
		return 0, &Error{Status: StatusInvalidArg, Message: "Notify: Segment is nil"}
	}
	var p unsafe.Pointer
	if len(msg) > 0 {
		p = C.CBytes(msg)
		defer C.free(p)
	}
	h, err := b.lock()
	if err != nil {
		return 0, err
	}
	defer b.s.mu.RUnlock()
	b.s.submitMu.Lock()
	defer b.s.submitMu.Unlock()
	var cmsg *C.char
	if err := mkerr(C.mcgo_notify(h, C.mc_segment_t(seg.Handle), p, C.size_t(len(msg)), &cmsg), cmsg); err != nil {
		return 0, err
	}
	return int(b.s.submitted.Add(1)) - 1, nil
}

// NotifyRecv takes the oldest queued notification; ok is false when none is queued. Never
// blocks.
func (e *Engine) NotifyRecv() (n Notification, ok bool, err error) {
	h, err := e.lock()
	if err != nil {
		return n, false, err
	}
	defer e.s.mu.RUnlock()
	buf := C.malloc(C.MC_NOTIFY_MAX_BYTES)
	defer C.free(buf)
	var info C.mc_notification_t
	var msg *C.char
	s := C.mcgo_notify_recv(h, &info, buf, &msg)
	if s == C.MC_ERR_NOT_FOUND {
		return n, false, nil
	}
	if err := mkerr(s, msg); err != nil {
		return n, false, err
	}
	return Notification{Peer: C.GoString(&info.peer[0]), Incarnation: uint64(info.incarnation),
		Data: C.GoBytes(buf, C.int(info.length))}, true, nil
}

// EventFd is the engine's event fd (owned by the engine: do not close it). It polls readable
// after a notification was queued or a batch's requests all ended; reading 8 bytes drains it.
func (e *Engine) EventFd() (int, error) {
	h, err := e.lock()
	if err != nil {
		return -1, err
	}
	defer e.s.mu.RUnlock()
	var fd C.int
	var msg *C.char
	if err := mkerr(C.mcgo_event_fd(h, &fd, &msg), msg); err != nil {
		return -1, err
	}
	return int(fd), nil
}

// Notifications delivers every notification the engine receives on a channel, in order, until
// ctx is done or the engine is closed; then the channel is closed. A goroutine waits on a
// duplicate of the event fd through Go's poller (no thread held while idle). Use one such
// channel per engine: it takes the notifications it reads from everyone else.
func (e *Engine) Notifications(ctx context.Context) (<-chan Notification, error) {
	fd, err := e.EventFd()
	if err != nil {
		return nil, err
	}
	dup, err := syscall.Dup(fd)
	if err != nil {
		return nil, &Error{Status: StatusInternal, Message: "Notifications: dup: " + err.Error()}
	}
	syscall.CloseOnExec(dup)
	f := os.NewFile(uintptr(dup), "mc-event-fd") // non-blocking: reads park in the poller
	ch := make(chan Notification, 64)
	go func() {
		defer close(ch)
		defer f.Close()
		stop := context.AfterFunc(ctx, func() { f.Close() }) // wakes a parked read
		defer stop()
		var tick [8]byte
		for {
			for {
				n, ok, err := e.NotifyRecv()
				if err != nil || (!ok && ctx.Err() != nil) {
					return
				}
				if !ok {
					break
				}
				select {
				case ch <- n:
				case <-ctx.Done():
					return
				}
			}
			if _, err := f.Read(tick[:]); err != nil {
				return
			}
		}
	}()
	return ch, nil
}
