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

// TestRingTeardownKeepsView: at teardown the pages under a view stay readable (zeros)
// until the function handed to keep unmaps them; the rest of the ring is unmapped.
func TestRingTeardownKeepsView(t *testing.T) {
	r, k := newFakeRing(t, 8*pageSize)
	fakeMap(t, k, r, 4*pageSize, 0, 0)
	lo, hi := pageSize+100, 3*pageSize-5
	view := r.mem[lo:hi]
	r0 := &r.mem[0]
	var unmap func()
	r.teardown(lo, hi, func(f func()) { unmap = f })
	if unmap == nil || r.reserved() {
		t.Fatalf("teardown kept no view (%v) or left the ring reserved (%v)", unmap == nil, r.reserved())
	}
	for i, b := range view {
		if b != 0 {
			t.Fatalf("view byte %d reads %d after teardown, want 0", i, b)
		}
	}
	res, base := k.findRes(uintptr(unsafe.Pointer(r0)))
	p0 := base + lo
	for i, st := range res.pages {
		want := pgUnmapped
		if i >= p0/pageSize && i < (base+pages(hi))/pageSize {
			want = pgAnon
		}
		if st != want {
			t.Fatalf("page %d is in state %d, want %d", i, st, want)
		}
	}
	unmap()
	if st := res.pages[p0/pageSize]; st != pgUnmapped {
		t.Fatalf("the view's page is in state %d after its unmap, want unmapped", st)
	}
}

// TestRingTeardownWithoutView unmaps everything.
func TestRingTeardownWithoutView(t *testing.T) {
	r, k := newFakeRing(t, 4*pageSize)
	fakeMap(t, k, r, 2*pageSize, 0, 0)
	res, _ := k.findRes(uintptr(unsafe.Pointer(&r.mem[0])))
	r.teardown(0, 0, func(func()) { t.Fatal("teardown kept a view that was not there") })
	for i, st := range res.pages {
		if st != pgUnmapped {
			t.Fatalf("page %d is in state %d after teardown, want unmapped", i, st)
		}
	}
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
