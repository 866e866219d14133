//go:build linux

package zcnet

import (
	"testing"
	"unsafe"
)

// These tests drive a ring alone over the fake kernel's in-memory syscalls: no socket.

// newFakeRing returns a reserved ring of size bytes over a fake kernel.
func newFakeRing(t *testing.T, size int) (*ring, *fakeKernel) {
	t.Helper()
	k := newFakeKernel(t, &fakeSrc{}, 0, false, fakeFaults{})
	r := &ring{want: size, sys: k.sys(), st: new(counters)}
	if err := r.reserve(fakeFD); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	t.Cleanup(func() {
		r.unmap()
		k.mu.Lock()
		k.closed = true
		k.mu.Unlock()
	})
	return r, k
}

// fakeMap maps n bytes (whole pages) at the ring's tail the way the kernel would: it
// asks the ring for the range, writes the stream's bytes from offset off there, and
// records the mapping. It returns what the ring set up.
func fakeMap(t *testing.T, k *fakeKernel, r *ring, n, span, off int) int {
	t.Helper()
	var zc zerocopyReceive
	asked, err := r.prepare(&zc, n, span)
	if err != nil {
		t.Fatalf("prepare(%d, %d): %v", n, span, err)
	}
	if asked > 0 {
		if zc.Flags&tcpZerocopyFlagTLBCleanHint == 0 {
			t.Fatalf("prepare did not set the TLB-clean hint")
		}
		if got := uintptr(zc.Address) - uintptr(unsafe.Pointer(&r.mem[0])); int(got) != r.tail {
			t.Fatalf("prepare maps at offset %d, want the tail %d", got, r.tail)
		}
		res, p0 := k.findRes(uintptr(zc.Address))
		k.write(res, p0/pageSize, asked/pageSize, func(b []byte) { fillPat(b, off) })
		for i := range asked / pageSize {
			res.pages[p0/pageSize+i] = pgMapped
		}
	}
	r.mapped(asked, asked)
	return asked
}

// TestRingCycle maps a ring full, consumes it, and checks that the next mapping ends the
// cycle with one release of every page and starts again at the beginning.
func TestRingCycle(t *testing.T) {
	size := 8 * pageSize
	r, k := newFakeRing(t, size)
	if r.size() != size || uintptr(unsafe.Pointer(&r.mem[0]))%uintptr(pageSize) != 0 {
		t.Fatalf("reserved %d bytes at %p, want %d page-aligned", r.size(), &r.mem[0], size)
	}
	off := 0
	for off < size {
		off += fakeMap(t, k, r, 3*pageSize, 0, off)
	}
	if off != size || r.buffered() != size || r.room() != 0 {
		t.Fatalf("mapped %d, buffered %d, room %d; want a full ring of %d", off, r.buffered(), r.room(), size)
	}
	if i := checkFakePat(r.pending(), 0); i >= 0 {
		t.Fatalf("mapped byte %d differs from the stream", i)
	}
	// A full ring with pending bytes has no room: nothing is mapped.
	if n := fakeMap(t, k, r, pageSize, 0, off); n != 0 {
		t.Fatalf("mapped %d bytes into a full ring", n)
	}
	r.consume(size)
	dn := k.dnCalls
	n := fakeMap(t, k, r, 2*pageSize, 0, off)
	if n != 2*pageSize || k.dnCalls != dn+1 || r.head != 0 || r.tail != n {
		t.Fatalf("after a cycle: mapped %d, releases %d, head %d, tail %d; want %d mapped at 0 after one release",
			n, k.dnCalls-dn, r.head, r.tail, 2*pageSize)
	}
	if got := r.st.released.Load(); got != uint64(size) {
		t.Fatalf("released %d bytes, want the ring's %d", got, size)
	}
	if i := checkFakePat(r.pending(), off); i >= 0 {
		t.Fatalf("byte %d of the new cycle differs from the stream", i)
	}
}

// TestRingReleaseKeepsPending releases the consumed whole pages before head and keeps
// the page that still holds pending bytes.
func TestRingReleaseKeepsPending(t *testing.T) {
	r, k := newFakeRing(t, 8*pageSize)
	fakeMap(t, k, r, 4*pageSize, 0, 0)
	r.consume(2*pageSize + 10)
	if err := r.release(); err != nil {
		t.Fatal(err)
	}
	if r.lo != 2*pageSize || r.pinned() != 2*pageSize {
		t.Fatalf("after release: lo %d, pinned %d; want %d, %d", r.lo, r.pinned(), 2*pageSize, 2*pageSize)
	}
	if i := checkFakePat(r.pending(), 2*pageSize+10); i >= 0 {
		t.Fatalf("pending byte %d differs from the stream after a release", i)
	}
	// Nothing consumed since: a second release is a no-op.
	dn := k.dnCalls
	if err := r.release(); err != nil || k.dnCalls != dn {
		t.Fatalf("second release: %v, %d madvise calls", err, k.dnCalls-dn)
	}
}

// TestRingSpan: a mapping that needs more contiguous room than the tail leaves starts a
// new cycle when nothing is pending.
func TestRingSpan(t *testing.T) {
	r, k := newFakeRing(t, 8*pageSize)
	fakeMap(t, k, r, 6*pageSize, 0, 0)
	r.consume(6 * pageSize)
	if n := fakeMap(t, k, r, pageSize, 4*pageSize, 6*pageSize); n != pageSize || r.tail != pageSize {
		t.Fatalf("mapped %d at tail %d, want one page at the start of a new cycle", n, r.tail)
	}
}

// TestRingRetire: a retired ring's whole range is replaced by an empty mapping (a view
// reads zeros), its pinned pages are given back, and it stays counted by the limits
// while it waits in the quarantine; evicted, it is unmapped and its share given back.
func TestRingRetire(t *testing.T) {
	r, k := newFakeRing(t, 8*pageSize)
	fakeMap(t, k, r, 4*pageSize, 0, 0)
	view := r.mem[pageSize+100 : 3*pageSize-5]
	addr := uintptr(unsafe.Pointer(&r.mem[0]))
	res, base := k.findRes(addr)
	size := r.size()
	rings, ringBytes, pinned := budget.rings.Load(), budget.ringBytes.Load(), budget.pinned.Load()
	if err := r.retire(); err != nil || r.reserved() {
		t.Fatalf("retire: %v, ring reserved %v", err, r.reserved())
	}
	for i, b := range view {
		if b != 0 {
			t.Fatalf("view byte %d reads %d after retire, want 0", i, b)
		}
	}
	for i := base / pageSize; i < (base+size)/pageSize; i++ {
		if st := res.pages[i]; st != pgAnon {
			t.Fatalf("page %d is in state %d after retire, want anonymous", i, st)
		}
	}
	if budget.rings.Load() != rings || budget.ringBytes.Load() != ringBytes {
		t.Fatal("a retired ring is not counted by the limits")
	}
	if got := pinned - budget.pinned.Load(); got != 4*int64(pageSize) {
		t.Fatalf("retire gave back %d pinned bytes, want %d", got, 4*pageSize)
	}
	// Evict it (and the older ranges before it): the shares of all go back.
	n0, b0 := retired.held()
	for inQuarantine(addr) {
		if !retired.evictOne() {
			t.Fatal("the range is in the quarantine but none could be evicted")
		}
	}
	if st := res.pages[base/pageSize]; st != pgUnmapped {
		t.Fatalf("an evicted range's page is in state %d, want unmapped", st)
	}
	n1, b1 := retired.held()
	if budget.rings.Load() != rings-int64(n0-n1) || budget.ringBytes.Load() != ringBytes-(b0-b1) {
		t.Fatal("the evicted ranges' share of the limits was not given back")
	}
}

// TestRingRetireWithoutMapAnon: a ring that cannot be replaced by an empty mapping is
// unmapped at once.
func TestRingRetireWithoutMapAnon(t *testing.T) {
	r, k := newFakeRing(t, 4*pageSize)
	fakeMap(t, k, r, 2*pageSize, 0, 0)
	res, _ := k.findRes(uintptr(unsafe.Pointer(&r.mem[0])))
	r.sys.mapAnon = nil
	n, _ := retired.held()
	if err := r.retire(); err != nil {
		t.Fatal(err)
	}
	for i, st := range res.pages {
		if st != pgUnmapped {
			t.Fatalf("page %d is in state %d after retire, want unmapped", i, st)
		}
	}
	if m, _ := retired.held(); m > n {
		t.Fatal("a ring that was unmapped went to the quarantine")
	}
}

// inQuarantine reports whether the range starting at lo waits in the quarantine.
func inQuarantine(lo uintptr) bool {
	retired.mu.Lock()
	defer retired.mu.Unlock()
	for _, e := range retired.q {
		if uintptr(e.addr) == lo {
			return true
		}
	}
	return false
}

// checkFakePat returns the index of the first byte of b that is not the fake stream's
// byte at offset off+i, or -1.
func checkFakePat(b []byte, off int) int {
	for i, c := range b {
		if c != fakePat(int64(off+i)) {
			return i
		}
	}
	return -1
}
