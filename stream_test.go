//go:build linux

package zcnet

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"testing"
)

// These tests drive a stream alone over the fake kernel's in-memory syscalls: fills are
// played by hand through the stream's two entry points, with no socket and no filler.

// fakeStream is a stream over a reserved fake ring, and the stream offset of the next
// byte a fill hands it.
type fakeStream struct {
	t   *testing.T
	k   *fakeKernel
	s   *stream
	off int
}

func newFakeStream(t *testing.T, ringSize int) *fakeStream {
	r, k := newFakeRing(t, ringSize)
	s := &stream{ring: r}
	t.Cleanup(func() { s.buf.drop() })
	return &fakeStream{t: t, k: k, s: s}
}

// mapped hands the stream n bytes (whole pages) through the mapping entry point.
func (f *fakeStream) mapped(n, span int) {
	f.t.Helper()
	var zc zerocopyReceive
	asked, err := f.s.mapSpace(&zc, n, span)
	if err != nil || asked != n {
		f.t.Fatalf("mapSpace(%d, %d) = %d, %v", n, span, asked, err)
	}
	res, p0 := f.k.findRes(uintptr(zc.Address))
	f.k.write(res, p0/pageSize, n/pageSize, func(b []byte) { fillPat(b, f.off) })
	f.s.addMapped(n, asked)
	f.off += n
}

// copied hands the stream n bytes through the copy entry point.
func (f *fakeStream) copied(n int) {
	sp := f.s.copySpace(n)
	fillPat(sp[:n], f.off)
	f.s.addCopied(n)
	f.off += n
}

// TestStreamCopyToOrder: Read's copy takes mapped and copied bytes in stream order,
// whatever the size of the reads.
func TestStreamCopyToOrder(t *testing.T) {
	f := newFakeStream(t, 16*pageSize)
	f.mapped(2*pageSize, 0)
	f.copied(1000)
	got := make([]byte, 0, f.off)
	p := make([]byte, 777)
	for f.s.buffered() > 0 {
		n := f.s.copyTo(p)
		got = append(got, p[:n]...)
	}
	if len(got) != f.off || checkFakePat(got, 0) >= 0 {
		t.Fatalf("copied out %d bytes, first wrong at %d; want %d of the stream", len(got), checkFakePat(got, 0), f.off)
	}
}

// TestStreamViewInPlace: a view of bytes that lie in the ring points into it.
func TestStreamViewInPlace(t *testing.T) {
	f := newFakeStream(t, 8*pageSize)
	f.mapped(3*pageSize, 0)
	v, mapped := f.s.view(pageSize+10, true)
	if !mapped || len(v) != pageSize+10 || checkFakePat(v, 0) >= 0 {
		t.Fatalf("view: %d bytes, mapped %v, wrong at %d", len(v), mapped, checkFakePat(v, 0))
	}
	if f.s.viewHi != pageSize+10 {
		t.Fatalf("the view's range ends at %d, want %d", f.s.viewHi, pageSize+10)
	}
	f.s.endView()
	v, mapped = f.s.view(100, false) // CopyViews: gathered in the buffer
	if mapped || checkFakePat(v, pageSize+10) >= 0 {
		t.Fatalf("copied view: mapped %v, wrong at %d", mapped, checkFakePat(v, pageSize+10))
	}
}

// TestStreamGatherForView: a view that cannot lie contiguously in the ring is gathered
// in the buffer by the gatherFor/gathered pair around a mapping fill, and the bytes the
// fill mapped beyond the view stay in the ring, after it.
func TestStreamGatherForView(t *testing.T) {
	f := newFakeStream(t, 8*pageSize)
	f.mapped(6*pageSize, 0)
	f.s.copyTo(make([]byte, 5*pageSize)) // one page pending at the end of the ring
	n := 4 * pageSize                    // from offset 5 pages, beyond the ring's end
	f.s.gatherFor(n)
	if f.s.ring.buffered() != 0 || f.s.buf.buffered() != pageSize {
		t.Fatalf("gatherFor left %d bytes in the ring and %d in the buffer", f.s.ring.buffered(), f.s.buf.buffered())
	}
	missing := n - f.s.buffered()
	f.mapped(4*pageSize, pages(missing)) // more than missing: a page follows the view
	if !f.s.gathered(missing) {
		t.Fatal("gathered: the view is not ready")
	}
	v, mapped := f.s.view(n, true)
	if mapped || len(v) != n || checkFakePat(v, 5*pageSize) >= 0 {
		t.Fatalf("view: %d bytes, mapped %v, wrong at %d", len(v), mapped, checkFakePat(v, 5*pageSize))
	}
	f.s.endView()
	rest := make([]byte, f.s.buffered())
	if f.s.copyTo(rest) != pageSize || checkFakePat(rest, 9*pageSize) >= 0 {
		t.Fatalf("after the view: %d bytes, wrong at %d", len(rest), checkFakePat(rest, 9*pageSize))
	}
}

// TestStreamWriteTo writes the buffered bytes in order and counts those from the ring.
func TestStreamWriteTo(t *testing.T) {
	f := newFakeStream(t, 8*pageSize)
	f.mapped(2*pageSize, 0)
	f.copied(300)
	var w bytes.Buffer
	n, mapped, err := f.s.writeTo(&w)
	if err != nil || n != int64(f.off) || mapped != int64(2*pageSize) || checkFakePat(w.Bytes(), 0) >= 0 {
		t.Fatalf("writeTo: %d bytes (%d mapped), %v, wrong at %d", n, mapped, err, checkFakePat(w.Bytes(), 0))
	}
	if f.s.buffered() != 0 {
		t.Fatalf("%d bytes left after writeTo", f.s.buffered())
	}
}

// TestStreamEnd: an error after the buffered bytes is reported once; one queued behind
// the kernel's queue becomes due when the queue drains; EOF stays.
func TestStreamEnd(t *testing.T) {
	var s stream
	s.failAfter(syscall.ECONNRESET)
	if err := s.ended(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("ended: %v, want the reset", err)
	}
	if err := s.ended(); err != nil {
		t.Fatalf("ended again: %v, want nil (reported once)", err)
	}
	s.failAfterQueue(syscall.ECONNRESET)
	if !s.errQueued() || s.ended() != nil {
		t.Fatal("an error behind the queue is due before the queue drained")
	}
	s.drained()
	if s.errQueued() || !errors.Is(s.ended(), syscall.ECONNRESET) {
		t.Fatal("the queued error is not due once the queue drained")
	}
	s.drained()
	if s.ended() != io.EOF || s.ended() != io.EOF {
		t.Fatal("a drained queue without an error is not a lasting EOF")
	}
}

// TestStreamFreeRetiresRing: freeing a stream with a live view into the ring gives the
// ring up: the view reads zeros.
func TestStreamFreeRetiresRing(t *testing.T) {
	f := newFakeStream(t, 8*pageSize)
	f.mapped(2*pageSize, 0)
	v, _ := f.s.view(pageSize, true)
	f.s.free()
	if f.s.ring.reserved() || v[0] != 0 {
		t.Fatalf("free: ring reserved %v, view reads %d", f.s.ring.reserved(), v[0])
	}
}
