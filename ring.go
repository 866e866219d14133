package zcnet

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// ring is a conn's reserved VMA: the address range TCP_ZEROCOPY_RECEIVE maps socket pages
// into. It is used as a log, not a circle: each mapping goes at tail, into pages that hold
// nothing (so the kernel is told, with the TLB-clean hint, that it need not zap them), and
// consumed pages stay mapped until the whole ring has been used. Then one release drops
// them all and mapping starts again at the beginning: one TLB shootdown per ring cycle,
// not one per fill or per wait.
//
//	0 ........ lo ........ head ........ tail ........ size
//	  clean      consumed,    mapped,        clean
//	             still mapped unconsumed
//
// Pages in mem[lo:tail] may be mapped ("pinned": they count against the process-wide
// budget of pinned bytes); pages outside hold nothing. A ring is used by one goroutine at
// a time (the reader, or the idle timer while the reader is parked; see idler).
type ring struct {
	mem  []byte // the reservation; nil until reserve
	lo   int    // first page that may still be mapped
	head int    // first unconsumed mapped byte
	tail int    // end of the mapped bytes; the next mapping starts here
	want int    // the size to reserve
	sys  *sysCalls
	st   *counters // the conn's: releases are counted there
}

// ptSpan is the address range one page-table page covers (a PMD entry): rings aligned to
// it do not share a page-table lock with other mappings. It is capped so that hosts with
// 64 KiB pages (512 MiB spans) do not reserve absurd padding.
func ptSpan() int {
	return min(pageSize*(pageSize/8), 32<<20)
}

// errBudget reports that a process-wide limit (rings, their address space, or pinned
// bytes) refused a reservation or a mapping.
var errBudget = errors.New("process-wide mapping budget reached")

// reserve maps r.want bytes (a multiple of the page size) of address space on the socket
// fd, aligned to the page-table span, and trims the padding so that exactly one VMA
// remains. It fails with errBudget, reserving nothing, when the process's ring limits
// are reached.
func (r *ring) reserve(fd int) error {
	size := r.want
	if r.mem != nil {
		return errors.New("zcnet: ring already reserved")
	}
	if !budget.takeRing(size) {
		return errBudget
	}
	align := ptSpan()
	if size < align {
		// A ring smaller than the span need only not straddle one.
		align = 1
		for align < size {
			align <<= 1
		}
	}
	align = max(align, pageSize)
	pad := align - pageSize
	p, err := r.sys.reserve(fd, uintptr(size+pad))
	if err != nil {
		budget.putRing(size)
		budget.reserveFailed()
		return err
	}
	base := uintptr(p)
	aligned := (base + uintptr(align-1)) &^ uintptr(align-1)
	if head := aligned - base; head > 0 {
		r.sys.unmap(p, head) // padding only: a failure leaves harmless reserved space
	}
	if tailPad := base + uintptr(size+pad) - (aligned + uintptr(size)); tailPad > 0 {
		r.sys.unmap(unsafe.Add(p, aligned-base+uintptr(size)), tailPad)
	}
	r.mem = unsafe.Slice((*byte)(unsafe.Add(p, aligned-base)), size)
	r.lo, r.head, r.tail = 0, 0, 0
	return nil
}

// reserved reports whether the ring has its VMA.
func (r *ring) reserved() bool { return r.mem != nil }

// size is the ring's length in bytes (0 before reserve).
func (r *ring) size() int { return len(r.mem) }

// buffered is the number of mapped, unconsumed bytes.
func (r *ring) buffered() int { return r.tail - r.head }

// pending returns the mapped, unconsumed bytes. The slice aliases the mapping.
func (r *ring) pending() []byte { return r.mem[r.head:r.tail] }

// consume marks n pending bytes as consumed. Their pages stay mapped until released.
func (r *ring) consume(n int) { r.head += n }

// room is the number of bytes that can be mapped after tail.
func (r *ring) room() int { return len(r.mem) - r.tail }

// pinned is the address space of the ring that may hold mapped pages.
func (r *ring) pinned() int { return r.tail - r.lo }

// prepare fills zc to map up to want bytes (rounded down to pages) at tail, into clean
// pages. When the ring has no room for span bytes (want, or more when the caller needs
// that much contiguous room) and nothing is pending, it first ends the cycle: all
// consumed pages are released at once and mapping starts again at 0. It
// returns 0 (and leaves zc alone) when no page can be mapped: pending bytes fill the
// ring, or the process's budget of pinned bytes is spent even after this ring's consumed
// pages were released.
func (r *ring) prepare(zc *zerocopyReceive, want, span int) (int, error) {
	want = min(want, len(r.mem)) &^ (pageSize - 1)
	if r.room() < max(want, span) && r.head == r.tail {
		if err := r.release(); err != nil {
			return 0, err
		}
	}
	want = min(want, r.room()) &^ (pageSize - 1)
	if want > 0 && !budget.pin(want) {
		// Over the budget: give back this ring's consumed pages first.
		if err := r.release(); err != nil {
			return 0, err
		}
		if r.head == r.tail && r.room() < want {
			want = min(want, r.room()) &^ (pageSize - 1)
		}
		if want == 0 || !budget.pin(want) {
			return 0, errBudget
		}
	}
	if want == 0 {
		return 0, nil
	}
	zc.Address = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(r.mem))) + uintptr(r.tail))
	zc.Length = uint32(want)
	zc.Flags |= tcpZerocopyFlagTLBCleanHint // mem[tail:] holds no page
	return want, nil
}

// mapped records that the kernel mapped n of the want bytes prepare pinned at tail.
func (r *ring) mapped(n, want int) {
	r.tail += n
	budget.unpin(want - n)
}

// release drops the mapped pages that hold no pending byte, in one call: all of them
// when nothing is pending (the ring then starts a new cycle at 0), else the consumed
// whole pages before head. It is a no-op when there are none.
func (r *ring) release() error {
	end := r.head &^ (pageSize - 1)
	if r.head == r.tail {
		end = r.tail
	}
	if end > r.lo {
		if err := r.sys.dontneed(unsafe.Pointer(&r.mem[r.lo]), uintptr(end-r.lo)); err != nil {
			return err
		}
		budget.unpin(end - r.lo)
		r.st.releases.Add(1)
		r.st.released.Add(uint64(end - r.lo))
		r.lo = end
	}
	if r.head == r.tail {
		r.lo, r.head, r.tail = 0, 0, 0
	}
	return nil
}

// unmap releases the VMA (and with it every mapped page). The ring must not be used
// afterwards except for reserve.
func (r *ring) unmap() error {
	if r.mem == nil {
		return nil
	}
	err := r.sys.unmap(unsafe.Pointer(&r.mem[0]), uintptr(len(r.mem)))
	r.forget()
	return err
}

// idleDelay is how long a reader must wait in the poller before its ring's consumed pages
// are released (and the ring unmapped when it holds no pending byte): a conn that waits
// that long pins no mapped page and, once its bytes are consumed, holds no ring.
const idleDelay = 100 * time.Millisecond

// idler releases a parked reader's ring when the wait turns out long. The reader and the
// timer hand the ring over through state: the reader parks (idleParked) before it waits
// and takes the ring back (wake) whenever it runs again; the timer acts only on a parked
// ring (idleActing, then idleDone), and the reader that finds it acting waits for it.
type idler struct {
	state atomic.Int32
	t     *time.Timer
	r     *ring
	err   error // a failed release or unmap, named by its call, handed to the reader
}

const (
	idleRunning = iota
	idleParked
	idleActing
	idleDone
)

// park arms the timer before the reader waits, when r holds a reservation.
func (d *idler) park(r *ring) {
	if !r.reserved() {
		return
	}
	d.r = r
	d.state.Store(idleParked)
	if d.t == nil {
		d.t = time.AfterFunc(idleDelay, d.fire)
	} else {
		d.t.Reset(idleDelay)
	}
}

// wake takes the ring back for the reader and returns the error a release met, if the
// timer acted.
func (d *idler) wake() error {
	switch d.state.Load() {
	case idleRunning:
		return nil
	case idleParked:
		if d.state.CompareAndSwap(idleParked, idleRunning) {
			d.t.Stop()
			return nil
		}
	}
	for d.state.Load() != idleDone {
		runtime.Gosched()
	}
	err := d.err
	d.err = nil
	d.state.Store(idleRunning)
	return err
}

// fire runs in the timer's goroutine: it releases the parked reader's consumed pages,
// or gives the ring up (to the quarantine) when nothing in it is pending.
func (d *idler) fire() {
	if !d.state.CompareAndSwap(idleParked, idleActing) {
		return
	}
	if d.r.buffered() == 0 {
		if err := d.r.retire(); err != nil {
			d.err = fmt.Errorf("munmap: %w", err)
		}
	} else if err := d.r.release(); err != nil {
		d.err = fmt.Errorf("madvise: %w", err)
	}
	d.state.Store(idleDone)
}

// retireIfEmpty gives the ring up (to the quarantine) when it holds no pending byte.
func (r *ring) retireIfEmpty() error {
	if r.reserved() && r.head == r.tail {
		return r.retire()
	}
	return nil
}

// forget gives the ring's share of the budget back and empties it.
func (r *ring) forget() {
	budget.unpin(r.pinned())
	budget.putRing(len(r.mem))
	r.mem = nil
	r.lo, r.head, r.tail = 0, 0, 0
}

// pages rounds n up to whole pages.
func pages(n int) int { return (n + pageSize - 1) &^ (pageSize - 1) }

// retireDropped is the cleanup of a Conn collected without Close. The ring goes to the
// quarantine: a view may outlive the Conn's last use.
func (r *ring) retireDropped() { r.retire() }
