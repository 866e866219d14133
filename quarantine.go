package zcnet

import (
	"sync"
	"unsafe"
)

// A conn's ring is not given back at once when the conn is closed or collected, or gives
// it up while open: a view it handed out (Next, or a slice WriteTo passed to a writer)
// may still be read by code that keeps it too long, and were the address range given to
// another conn's ring at once, that read would see the other conn's bytes. retire replaces the whole range, in one
// mmap(MAP_FIXED), with an empty private anonymous PROT_READ mapping: the socket's pages
// are freed, and a stale read sees zeros. The range then waits in a process-wide FIFO,
// the quarantine, where it still counts against MaxRings and MaxRingBytes as the ring
// did (it is one memory map, and its address space). It is unmapped, oldest first, when
// the quarantine holds more than a quarter of MaxRings or of MaxRingBytes, or when a new
// ring would go past a limit. Only then can the range be reused: a stale read of it
// faults (SIGSEGV, fatal), or reads whatever is mapped there later.

// retiredRange is one range in the quarantine.
type retiredRange struct {
	addr unsafe.Pointer
	size int
	sys  *sysCalls
}

// quarantine is the FIFO of retired ranges. Their share of the limits is held in
// budget.rings and budget.ringBytes; count and bytes say how much of it is theirs.
type quarantine struct {
	mu    sync.Mutex
	q     []retiredRange
	count int
	bytes int64
	out   uint64 // ranges unmapped so far
}

var retired quarantine

// retire gives up the ring's reservation: into the quarantine when its range can be
// replaced by an empty mapping, else unmapped at once (returning munmap's error). The
// ring is empty afterwards. Every ring that is given up goes this way: when its conn is
// closed or collected, and when an open conn gives it up (after a long wait, or on the
// copy path), as views it handed out before may be kept past their validity too.
func (r *ring) retire() error {
	if r.mem == nil {
		return nil
	}
	p, size := unsafe.Pointer(&r.mem[0]), len(r.mem)
	if r.sys.mapAnon == nil || r.sys.mapAnon(p, uintptr(size)) != nil {
		return r.unmap()
	}
	// The socket's pages are gone: the ring pins nothing now, but its slot and its
	// address space stay taken until the range leaves the quarantine.
	budget.unpin(r.pinned())
	r.mem = nil
	r.lo, r.head, r.tail = 0, 0, 0
	retired.add(retiredRange{addr: p, size: size, sys: r.sys})
	return nil
}

// add puts a range in the quarantine and unmaps the oldest ones past its bound.
func (q *quarantine) add(e retiredRange) {
	q.mu.Lock()
	q.q = append(q.q, e)
	q.count++
	q.bytes += int64(e.size)
	q.trimLocked()
}

// trim unmaps the oldest ranges past the quarantine's bound (after SetLimits).
func (q *quarantine) trim() {
	q.mu.Lock()
	q.trimLocked()
}

// trimLocked unmaps the oldest ranges past the bound; q.mu is held, and unlocked on
// return.
func (q *quarantine) trimLocked() {
	var out []retiredRange
	l := budget.limits()
	for q.count > max(l.MaxRings/4, 1) || q.bytes > l.MaxRingBytes/4 {
		out = append(out, q.popLocked())
	}
	q.mu.Unlock()
	for _, e := range out {
		e.release()
	}
}

// evictOne unmaps the oldest range of the quarantine, giving its share of the limits
// back, and reports whether there was one.
func (q *quarantine) evictOne() bool {
	q.mu.Lock()
	if q.count == 0 {
		q.mu.Unlock()
		return false
	}
	e := q.popLocked()
	q.mu.Unlock()
	e.release()
	return true
}

// popLocked takes the oldest range out of the quarantine. The caller holds q.mu and
// must release the range.
func (q *quarantine) popLocked() retiredRange {
	e := q.q[0]
	q.q[0] = retiredRange{}
	q.q = q.q[1:]
	if len(q.q) == 0 {
		q.q = nil // let the backing array go
	}
	q.count--
	q.bytes -= int64(e.size)
	q.out++
	return e
}

// release unmaps a range taken out of the quarantine and gives its share back.
func (e retiredRange) release() {
	e.sys.unmap(e.addr, uintptr(e.size)) // a failure leaves harmless empty address space
	budget.putRing(e.size)
}

// held returns the number of ranges in the quarantine and their bytes.
func (q *quarantine) held() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count, q.bytes
}

// evictions returns the number of ranges that have left the quarantine.
func (q *quarantine) evictions() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.out
}
