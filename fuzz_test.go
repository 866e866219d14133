//go:build linux

package zcnet

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeRingPages are the ring sizes (in pages) the fuzz target picks from: small rings
// wrap and fill up often, the default one does not.
var fakeRingPages = []int{1, 2, 3, 4, 8, 16, 64, DefaultRingSize / pageSize}

var fakeZcErrs = []unix.Errno{unix.EINVAL, unix.ENOPROTOOPT, unix.EPERM, unix.ENOMEM}

// errFakeWriter is returned by fakeWriter when it is told to fail.
var errFakeWriter = errors.New("fake writer failure")

// fakeRun is one run of the read path against the fake kernel.
type fakeRun struct {
	t       testing.TB
	src     *fakeSrc
	k       *fakeKernel
	c       *Conn
	ring    int
	off     int    // stream bytes returned so far
	view    []byte // the view the last call returned, if it was Next
	viewOff int    // its stream offset
	ended   bool
}

// closeEarly closes the conn in mid-stream and checks that it fails read-side calls
// with net.ErrClosed, accounts for no byte it did not receive, and that a view handed
// out by the last call before Close can still be read without faulting: a view of the
// mapping reads zeros, a view of the pooled buffer its old bytes.
func (r *fakeRun) closeEarly() {
	r.t.Helper()
	c := r.c
	if err := c.Close(); err != nil {
		r.t.Fatalf("Close: %v", err)
	}
	zeros, same := true, true
	for i, b := range r.view {
		zeros = zeros && b == 0
		same = same && b == fakePat(int64(r.viewOff+i))
	}
	if !zeros && !same {
		r.t.Fatalf("a view of %d bytes read after Close is neither zeros nor its bytes", len(r.view))
	}
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		r.t.Fatalf("Read after Close: %v", err)
	}
	if _, err := c.Next(1); !errors.Is(err, net.ErrClosed) {
		r.t.Fatalf("Next after Close: %v", err)
	}
	if _, err := c.WriteTo(io.Discard); !errors.Is(err, net.ErrClosed) {
		r.t.Fatalf("WriteTo after Close: %v", err)
	}
	st := c.Stats()
	if int(st.MappedBytes) != r.k.mappedBytes || int(st.CopiedBytes) != r.k.recvBytes {
		r.t.Fatalf("stats %+v do not match the kernel's %v", st, r.k)
	}
}

// check verifies that p is the stream at offset off.
func (r *fakeRun) check(op string, p []byte, off int) {
	r.t.Helper()
	for i, b := range p {
		if want := fakePat(int64(off + i)); b != want {
			r.t.Fatalf("%s: stream byte %d is %#x, want %#x (%d bytes returned; %v)", op, off+i, b, want, len(p), r.k)
		}
	}
}

// endErr checks an error that is not a timeout and not nil: it must be the end of the
// stream the fake's peer chose, after every byte was returned.
func (r *fakeRun) endErr(op string, err error) {
	r.t.Helper()
	if r.off != r.k.total {
		r.t.Fatalf("%s: %v after %d of %d bytes (%v)", op, err, r.off, r.k.total, r.k)
	}
	switch {
	case r.k.reset && errors.Is(err, syscall.ECONNRESET):
		var oe *net.OpError
		if !errors.As(err, &oe) {
			r.t.Fatalf("%s: reset error %v (%T) is not a *net.OpError", op, err, err)
		}
	case !r.k.reset && err == io.EOF:
	default:
		r.t.Fatalf("%s: end error %v (%T), peer reset %v (%v)", op, err, err, r.k.reset, r.k)
	}
	r.ended = true
}

func isDeadlineErr(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// fakeWriter checks what WriteTo hands it, and fails after limit bytes if limit >= 0.
type fakeWriter struct {
	r     *fakeRun
	off   int
	limit int
}

func (w *fakeWriter) Write(p []byte) (int, error) {
	if w.limit >= 0 && len(p) > w.limit {
		n := w.limit
		w.r.check("WriteTo", p[:n], w.off)
		w.off += n
		w.limit = 0
		return n, errFakeWriter
	}
	w.r.check("WriteTo", p, w.off)
	w.off += len(p)
	if w.limit > 0 {
		w.limit -= len(p)
	}
	return len(p), nil
}

// step runs one API call chosen by the input and checks its result.
func (r *fakeRun) step(buf []byte, drain bool) {
	r.t.Helper()
	c, src := r.c, r.src
	r.view = nil // every read-side call ends the validity of the last view
	op := src.byte() % 8
	if drain || src.exhausted() {
		op = 0 // drain with reads once the input is used up
	}
	switch op {
	case 0, 1, 2, 3: // Read
		var size int
		switch src.byte() % 4 {
		case 0:
			size = len(buf)
		case 1:
			size = src.intn(64) // includes 0
		case 2:
			size = 1 + src.intn(2*pageSize)
		case 3:
			size = 1 + src.intn(len(buf))
		}
		if drain || (src.exhausted() && size == 0) {
			size = len(buf)
		}
		r.k.inCall = "Read"
		n, err := c.Read(buf[:size])
		if n < 0 || n > size {
			r.t.Fatalf("Read(%d) = %d", size, n)
		}
		r.check("Read", buf[:n], r.off)
		r.off += n
		switch {
		case err == nil:
			if n == 0 && size > 0 {
				r.t.Fatalf("Read(%d) = 0, nil", size)
			}
		case n > 0:
			r.t.Fatalf("Read(%d) = %d, %v: bytes with an error", size, n, err)
		case isDeadlineErr(err):
		default:
			r.endErr("Read", err)
		}
	case 4, 5: // Next
		var n int
		switch src.byte() % 8 {
		case 0:
			n = -1
		case 1:
			n = r.ring + 1
		case 2:
			n = 0
		case 3:
			n = r.ring
		default:
			n = 1 + src.intn(min(r.ring, 5*pageSize))
		}
		r.k.inCall = "Next"
		v, err := c.Next(n)
		switch {
		case n < 0:
			if err != ErrNegativeCount || v != nil {
				r.t.Fatalf("Next(%d) = %d bytes, %v", n, len(v), err)
			}
			return
		case n > r.ring:
			if err != ErrTooLarge || v != nil {
				r.t.Fatalf("Next(%d) = %d bytes, %v", n, len(v), err)
			}
			return
		}
		if len(v) > n {
			r.t.Fatalf("Next(%d) returned %d bytes", n, len(v))
		}
		r.check("Next", v, r.off)
		r.view, r.viewOff = v, r.off
		r.off += len(v)
		switch {
		case err == nil:
			if len(v) != n || v == nil {
				r.t.Fatalf("Next(%d) = %d bytes, nil", n, len(v))
			}
		case isDeadlineErr(err):
		case err == io.ErrUnexpectedEOF:
			if len(v) == 0 || len(v) >= n || r.k.reset || r.off != r.k.total {
				r.t.Fatalf("Next(%d) = %d bytes, %v at offset %d (%v)", n, len(v), err, r.off, r.k)
			}
			r.ended = true
		default:
			if len(v) > 0 && !errors.Is(err, syscall.ECONNRESET) {
				r.t.Fatalf("Next(%d) = %d bytes, %v", n, len(v), err)
			}
			r.endErr("Next", err)
		}
	case 6, 7: // WriteTo
		w := &fakeWriter{r: r, off: r.off, limit: -1}
		if src.byte()%2 == 1 {
			w.limit = src.intn(8 * pageSize)
		}
		r.k.inCall = "WriteTo"
		n, err := c.WriteTo(w)
		if int(n) != w.off-r.off {
			r.t.Fatalf("WriteTo = %d, writer got %d", n, w.off-r.off)
		}
		r.off = w.off
		switch {
		case err == nil:
			r.endErr("WriteTo", io.EOF)
		case err == errFakeWriter, isDeadlineErr(err):
		default:
			r.endErr("WriteTo", err)
		}
	}
}

// runFake drives one conn over the fake kernel with the API calls, kernel answers,
// faults and ring size that data selects, and checks that the stream comes out exact.
func runFake(t testing.TB, data []byte) *fakeRun {
	src := &fakeSrc{b: data}
	mode := Mode(src.byte() % 3)
	rb := src.byte()
	ringPages := fakeRingPages[rb%uint8(len(fakeRingPages))]
	ring := ringPages * pageSize
	total := src.intn(32) * src.intn(8*pageSize) // up to 1 MiB, often short
	if src.exhausted() {
		total = min(total, 256<<10)
	}
	reset := src.byte()%4 == 3
	var f fakeFaults
	closeAt := -1
	switch fb := src.byte(); {
	case fb >= 0xc0:
		f.kind = int(fb & 7)
		f.zcAt = 1 + int(src.byte()%16)
		f.zcErr = fakeZcErrs[src.byte()%uint8(len(fakeZcErrs))]
		f.dnAt = 1 + int(src.byte()%8)
	case fb >= 0x80:
		closeAt = int(src.byte() % 64) // Close in mid-stream, before that call
	}
	k := newFakeKernel(t, src, total, reset, f)
	r := &fakeRun{t: t, src: src, k: k, ring: ring}
	sys := k.sys()
	if rb >= 0x80 {
		sys.peek = nil // a layer without MSG_PEEK: the read path reads instead
	}
	r.c = newConn(k, sys, mode, ring)
	defer k.finish()
	buf := make([]byte, 2*ring+pageSize)
	for steps := 0; !r.ended; steps++ {
		if steps > 1_000_000 {
			t.Fatalf("no end after %d calls (%v)", steps, k)
		}
		if steps == closeAt {
			r.closeEarly()
			return r
		}
		r.step(buf, steps > 4000) // bound the time one input takes
	}
	c := r.c
	// After the end, a Read returns io.EOF, as net.TCPConn does after a FIN or a reset.
	k.inCall = "Read"
	if n, err := c.Read(buf[:1]); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end = %d, %v (%v)", n, err, k)
	}
	st := c.Stats()
	if int(st.MappedBytes) != k.mappedBytes || int(st.CopiedBytes) != k.recvBytes || k.read != total {
		t.Fatalf("stats %+v do not match the kernel's %v", st, k)
	}
	if k.hintConflicts != 0 {
		t.Fatalf("%d mapping calls claimed a clean target range that held mapped pages", k.hintConflicts)
	}
	if mode == ModeCopy && (k.reserves != 0 || k.zcCalls != 0) {
		t.Fatalf("ModeCopy conn reserved %d rings, made %d mapping calls", k.reserves, k.zcCalls)
	}
	for _, inj := range k.injected {
		what, _, _ := strings.Cut(inj, " ")
		if !strings.Contains(st.FallbackReason, what) {
			t.Fatalf("fault %q injected, FallbackReason %q", inj, st.FallbackReason)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.Read(buf[:1]); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	return r
}

// FuzzReadPath drives the conn's read path (ring, fallback buffer, Read, Next, WriteTo,
// every Mode) over a fake kernel whose every answer comes from the fuzz input: arrivals,
// mappable and unmappable stretches, skip hints, EIO at the end, resets reported in the
// struct's err field or by recv, EINTR, deadlines, and failing mmap, getsockopt and
// madvise. It proves that whatever the kernel and the caller do, the conn returns every
// byte of the stream once and in order, ends with the right error, counts what it
// received, never waits on a socket that will not wake it, and unmaps its ring at Close.
func FuzzReadPath(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runFake(t, data)
	})
}

// fuzzSeeds are hand-made inputs covering each mode, end and fault.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for mode := range byte(3) {
		for _, ring := range []byte{0, 3, 7} {
			for _, end := range []byte{0, 3} {
				// header: mode, ring, total (2x2 bytes), end, faults
				seeds = append(seeds, []byte{mode, ring, 40, 0, 0x80, 0x10, end, 0})
			}
		}
		for _, fault := range []byte{0xc1, 0xc2, 0xc4} {
			for zcAt := range byte(4) {
				seeds = append(seeds, []byte{mode, 7, 60, 0, 0x10, 0x20, 0, fault, zcAt, zcAt, zcAt,
					5, 5, 3, 200, 6, 0, 1, 2, 3, 4, 5, 6, 7})
			}
		}
		// Close in mid-stream after a few calls.
		seeds = append(seeds, []byte{mode, 7, 60, 0, 0x10, 0x20, 0, 0x80, 3,
			0, 0, 4, 4, 0, 0x40, 4, 4, 0, 0x40})
	}
	return seeds
}
