//go:build linux

package zcnet

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests of how the conn fills itself from the kernel: faults injected into the real
// syscall layer, the reasons the fast path can be missing, and the fake kernel
// (fakekernel_test.go) checked against the kernel's rules and driven by the fuzzer.

// faultSeam is a copy of the real syscall layer in which one operation fails, with err,
// from the moment it is armed.
type faultSeam struct {
	sys   sysCalls
	armed atomic.Bool
	fired atomic.Int64
}

// Operations a faultSeam can fail.
const (
	opMmap       = "mmap"
	opGetsockopt = "getsockopt"
	opMadvise    = "madvise"
	opRcvlowat   = "setsockopt"
)

func newFaultSeam(op string, err error, armed bool) *faultSeam {
	f := &faultSeam{sys: linuxSys}
	f.armed.Store(armed)
	fail := func() bool {
		if f.armed.Load() {
			f.fired.Add(1)
			return true
		}
		return false
	}
	switch op {
	case opMmap:
		f.sys.reserve = func(fd int, length uintptr) (unsafe.Pointer, error) {
			if fail() {
				return nil, err
			}
			return linuxSys.reserve(fd, length)
		}
	case opGetsockopt:
		f.sys.zerocopy = func(fd int, zc *zerocopyReceive) error {
			if fail() {
				return err
			}
			return linuxSys.zerocopy(fd, zc)
		}
	case opMadvise:
		f.sys.dontneed = func(addr unsafe.Pointer, length uintptr) error {
			if fail() {
				return err
			}
			return linuxSys.dontneed(addr, length)
		}
	case opRcvlowat:
		f.sys.setRcvlowat = func(fd int, n int) error {
			if fail() {
				return err
			}
			return linuxSys.setRcvlowat(fd, n)
		}
	default:
		panic("unknown op " + op)
	}
	return f
}

// readArmed reads c to EOF with random read sizes, checking the stream, and calls arm
// once, as soon as the conn has mapped bytes (before any fault is armed). It returns the
// checked stream, the stats at arming time and the error that ended the stream.
func readArmed(c *Conn, arm func()) (*patternWriter, Stats, error) {
	var atArm Stats
	w := &patternWriter{after: func() {
		if arm != nil && c.Stats().MappedBytes > 0 {
			atArm = c.Stats()
			arm()
			arm = nil
		}
	}}
	_, err := drainPattern(c, byRead, w, 256<<10, rand.New(rand.NewPCG(7, 0)))
	return w, atArm, err
}

// faultCase is one fault injected at the syscall seam.
type faultCase struct {
	name    string
	op      string
	err     unix.Errno
	midway  bool   // armed once bytes were mapped, not from the start
	reason  string // what Stats.FallbackReason must contain
	noMap   bool   // nothing can have been mapped
	pausing bool   // the sender pauses, so that the reader waits (and drops pages)
}

var faultCases = []faultCase{
	{name: "mmap-ENOMEM", op: opMmap, err: unix.ENOMEM, reason: "mmap: cannot allocate memory", noMap: true},
	{name: "getsockopt-ENOPROTOOPT-first", op: opGetsockopt, err: unix.ENOPROTOOPT, reason: "getsockopt TCP_ZEROCOPY_RECEIVE: protocol not available", noMap: true},
	{name: "getsockopt-EPERM-first", op: opGetsockopt, err: unix.EPERM, reason: "getsockopt TCP_ZEROCOPY_RECEIVE: operation not permitted", noMap: true},
	{name: "getsockopt-EINVAL-first", op: opGetsockopt, err: unix.EINVAL, reason: "getsockopt TCP_ZEROCOPY_RECEIVE: invalid argument", noMap: true},
	{name: "getsockopt-ENOPROTOOPT-midway", op: opGetsockopt, err: unix.ENOPROTOOPT, midway: true, reason: "getsockopt TCP_ZEROCOPY_RECEIVE: protocol not available"},
	{name: "getsockopt-EPERM-midway", op: opGetsockopt, err: unix.EPERM, midway: true, reason: "getsockopt TCP_ZEROCOPY_RECEIVE: operation not permitted"},
	{name: "getsockopt-EINVAL-midway", op: opGetsockopt, err: unix.EINVAL, midway: true, reason: "getsockopt TCP_ZEROCOPY_RECEIVE: invalid argument"},
	{name: "madvise-EINVAL-midway", op: opMadvise, err: unix.EINVAL, midway: true, reason: "madvise: invalid argument", pausing: true},
	{name: "madvise-ENOMEM-midway", op: opMadvise, err: unix.ENOMEM, midway: true, reason: "madvise: cannot allocate memory", pausing: true},
}

// TestFaultInjection fails, on a real mappable loopback stream in ModeZeroCopy, each
// kernel operation the fast path needs (mmap of the ring, TCP_ZEROCOPY_RECEIVE at the
// first call and after pages were mapped, MADV_DONTNEED) and proves that the conn then
// falls back to copying with no byte lost or reordered (the whole stream checked),
// says why in Stats.FallbackReason, and stops calling the failed operation.
func TestFaultInjection(t *testing.T) {
	requireSupported(t)
	const total = 8 << 20
	var faults, verified int64
	for _, fc := range faultCases {
		t.Run(fc.name, func(t *testing.T) {
			ln := loopbackListen(t, true)
			defer ln.Close()
			s := patternSender{zerocopy: true}
			if fc.pausing {
				s.pause, s.maxWrite = 2*time.Millisecond, 256<<10
			}
			sent := sendPattern(dialSender(t, ln.Addr().String(), true), total, s)
			seam := newFaultSeam(fc.op, fc.err, !fc.midway)
			c := acceptConn(t, seamListener{ln, Options{Mode: ModeZeroCopy}, &seam.sys})
			var arm func()
			if fc.midway {
				arm = func() { seam.armed.Store(true) }
			}
			w, atArm, err := readArmed(c, arm)
			st := c.Stats()
			c.Close()
			checkStream(t, w, err, sent, total)
			if seam.fired.Load() == 0 {
				t.Fatalf("the fault never fired; stats %+v", st)
			}
			if seam.fired.Load() != 1 {
				t.Errorf("the failed operation was retried: %d failures", seam.fired.Load())
			}
			if !strings.Contains(st.FallbackReason, fc.reason) {
				t.Fatalf("FallbackReason %q, want it to name %q", st.FallbackReason, fc.reason)
			}
			switch {
			case fc.noMap && st.MappedBytes != 0:
				t.Fatalf("mapped %d bytes although the fast path failed at once", st.MappedBytes)
			case fc.midway && atArm.MappedBytes == 0:
				t.Fatalf("fault armed before any byte was mapped")
			}
			if st.MappedBytes+st.CopiedBytes != total {
				t.Fatalf("stats count %d mapped + %d copied bytes, want %d", st.MappedBytes, st.CopiedBytes, total)
			}
			atomic.AddInt64(&faults, seam.fired.Load())
			atomic.AddInt64(&verified, w.off)
			t.Logf("mapped %d before the fault, %d in all; copied %d; reason %q",
				atArm.MappedBytes, st.MappedBytes, st.CopiedBytes, st.FallbackReason)
		})
	}
	t.Logf("%d faults injected, %d bytes verified", faults, verified)
}

// TestFaultRcvlowat fails SO_RCVLOWAT for a Next reader and proves it is not fatal:
// Next still returns the exact stream, and mapping stays on.
func TestFaultRcvlowat(t *testing.T) {
	requireSupported(t)
	const total = 4 << 20
	ln := loopbackListen(t, true)
	defer ln.Close()
	// (Paced slowly enough that the reader waits, and sets SO_RCVLOWAT, even under the
	// race detector, which slows its check of every byte.)
	sent := sendPattern(dialSender(t, ln.Addr().String(), true), total,
		patternSender{zerocopy: true, maxWrite: 256 << 10, pause: 5 * time.Millisecond})
	seam := newFaultSeam(opRcvlowat, unix.EINVAL, true)
	c := acceptConn(t, seamListener{ln, Options{Mode: ModeZeroCopy}, &seam.sys})
	w := &patternWriter{}
	_, err := drainPattern(c, byNext, w, 256<<10, rand.New(rand.NewPCG(8, 0)))
	st := c.Stats()
	c.Close()
	checkStream(t, w, err, sent, total)
	if seam.fired.Load() == 0 || st.FallbackReason != "" || st.MappedBytes == 0 {
		t.Fatalf("setsockopt failures %d, stats %+v", seam.fired.Load(), st)
	}
}

// unsupportedCases are the reasons the fast path may be missing, forced at the seam.
var unsupportedCases = []struct {
	name   string
	op     string
	err    unix.Errno
	reason string
}{
	{"sandbox-mmap-EPERM", opMmap, unix.EPERM, "mmap on a TCP socket refused"},
	{"mmap-ENODEV", opMmap, unix.ENODEV, "mmap on a TCP socket refused"},
	{"old-kernel-ENOPROTOOPT", opGetsockopt, unix.ENOPROTOOPT, "kernel lacks TCP_ZEROCOPY_RECEIVE"},
	{"sandbox-getsockopt-EPERM", opGetsockopt, unix.EPERM, "getsockopt TCP_ZEROCOPY_RECEIVE refused"},
}

// TestProbeSupportReasons forces each reason the fast path can be unavailable through the
// seam and proves that probeSupport, which Supported caches, names it and wraps the errno;
// with the real layer it succeeds on this machine.
func TestProbeSupportReasons(t *testing.T) {
	if err := probeSupport(&linuxSys); err != Supported() {
		t.Fatalf("probeSupport(linuxSys) = %v, Supported() = %v", err, Supported())
	}
	for _, uc := range unsupportedCases {
		t.Run(uc.name, func(t *testing.T) {
			seam := newFaultSeam(uc.op, uc.err, true)
			err := probeSupport(&seam.sys)
			if err == nil || !strings.Contains(err.Error(), uc.reason) || !errors.Is(err, uc.err) {
				t.Fatalf("probeSupport = %v, want %q wrapping %v", err, uc.reason, uc.err)
			}
		})
	}
}

// TestUnsupportedConnCopies makes Supported report each unavailable reason and proves
// that conns made then (by NewConn and by a Listener) say why in Stats.FallbackReason,
// never touch the fast path, and receive a mappable stream exactly by copying.
func TestUnsupportedConnCopies(t *testing.T) {
	old := supported
	defer func() { supported = old }()
	for _, uc := range unsupportedCases {
		t.Run(uc.name, func(t *testing.T) {
			seam := newFaultSeam(uc.op, uc.err, true)
			reason := probeSupport(&seam.sys)
			supported = func() error { return reason }
			if err := Supported(); err != reason {
				t.Fatalf("Supported() = %v, want %v", err, reason)
			}
			const total = 2 << 20
			for _, viaListener := range []bool{false, true} {
				inner := loopbackListen(t, true)
				var ln net.Listener = seamListener{Listener: inner, opts: Options{Mode: ModeZeroCopy}} // NewConn's conns
				if viaListener {
					ln = NewListener(inner, Options{Mode: ModeZeroCopy})
				}
				defer ln.Close()
				sent := sendPattern(dialSender(t, ln.Addr().String(), true), total, patternSender{zerocopy: true})
				c := acceptConn(t, ln)
				w, _, err := readArmed(c, nil)
				st := c.Stats()
				c.Close()
				checkStream(t, w, err, sent, total)
				if st.FallbackReason != reason.Error() || st.MappedBytes != 0 || st.ZerocopyCalls != 0 {
					t.Fatalf("stats %+v, want no mapping and reason %q", st, reason)
				}
			}
		})
	}
}

// TestFakeKernelRules checks the fake against the rules of tcp_zerocopy_receive it
// mirrors, so that the fuzzer's oracle rests on the kernel's behaviour: nothing queued
// answers 0 bytes (EIO once the peer is done), less than a page is all skip hint, whole
// mappable pages are mapped with no hint when all requested pages mapped, a linear head
// makes the hint cover the rest of its skb, a pending error comes back negated in the
// struct and is cleared, and inq reads 1 after a FIN.
func TestFakeKernelRules(t *testing.T) {
	k := newFakeKernel(t, &fakeSrc{}, 0, false, fakeFaults{})
	p, err := k.reserveFn(fakeFD, uintptr(8*pageSize))
	if err != nil {
		t.Fatal(err)
	}
	queue := func(b fakeSkb) {
		b.start = k.sent
		k.queue = append(k.queue, b)
		k.sent += b.len()
	}
	pages := func(n int) []fakeFrag {
		f := make([]fakeFrag, n)
		for i := range f {
			f[i] = fakeFrag{pageSize, true}
		}
		return f
	}
	call := func(length int) (zerocopyReceive, error) {
		zc := zerocopyReceive{Address: uint64(uintptr(p)), Length: uint32(length)}
		err := k.zerocopyFn(fakeFD, &zc)
		return zc, err
	}
	if zc, err := call(8 * pageSize); err != nil || zc.Length != 0 || zc.RecvSkipHint != 0 || zc.Inq != 0 {
		t.Fatalf("empty queue: %+v, %v", zc, err)
	}
	queue(fakeSkb{head: 100})
	if zc, err := call(8 * pageSize); err != nil || zc.Length != 0 || zc.RecvSkipHint != 100 {
		t.Fatalf("100 linear bytes: %+v, %v", zc, err)
	}
	k.consume(100)
	queue(fakeSkb{frags: pages(3)})
	queue(fakeSkb{head: 10, frags: pages(2)})
	zc, err := call(3 * pageSize)
	if err != nil || zc.Length != uint32(3*pageSize) || zc.RecvSkipHint != 0 || zc.Inq != uint32(2*pageSize+10) {
		t.Fatalf("3 mappable pages: %+v, %v", zc, err)
	}
	mem := unsafe.Slice((*byte)(p), 3*pageSize)
	for i, b := range mem {
		if b != fakePat(int64(100+i)) {
			t.Fatalf("mapped byte %d is %#x, want %#x", i, b, fakePat(int64(100+i)))
		}
	}
	if zc, err := call(8 * pageSize); err != nil || zc.Length != 0 || zc.RecvSkipHint != uint32(2*pageSize+10) {
		t.Fatalf("linear head before pages: %+v, %v", zc, err)
	}
	k.consume(10)
	k.sockErr = unix.ECONNRESET
	zc, err = call(8 * pageSize)
	if err != nil || zc.Length != uint32(2*pageSize) || zc.Err != -int32(unix.ECONNRESET) {
		t.Fatalf("pages with a pending reset: %+v, %v", zc, err)
	}
	if zc, err := call(8 * pageSize); err != nil || zc.Err != 0 {
		t.Fatalf("reset reported twice: %+v, %v", zc, err)
	}
	k.fin, k.shut = true, true
	if _, err := call(8 * pageSize); err != unix.EIO {
		t.Fatalf("empty queue after FIN: %v, want EIO", err)
	}
	queue(fakeSkb{head: 5})
	if zc, err := call(8 * pageSize); err != nil || zc.RecvSkipHint != 5 || zc.Inq != 5 {
		t.Fatalf("5 bytes before FIN: %+v, %v", zc, err)
	}
	k.consume(5)
	queue(fakeSkb{frags: pages(1)})
	if zc, err := call(pageSize); err != nil || zc.Length != uint32(pageSize) || zc.Inq != 1 {
		t.Fatalf("last page before FIN: %+v, %v", zc, err)
	}
	if err := k.unmapFn(p, uintptr(8*pageSize)); err != nil {
		t.Fatal(err)
	}
	k.finish()
}

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
	r.k.gone = true
	r.staleFire("after Close")
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

// staleFire runs the batching timer's function outside any wait, as a timer stopped too
// late (or racing Close) does: it must not touch the socket.
func (r *fakeRun) staleFire(when string) {
	r.t.Helper()
	k := r.k
	if k.timer == nil {
		return
	}
	lowats, lowat := k.lowats, k.lowat
	k.timer.f()
	if k.lowats != lowats || k.lowat != lowat {
		r.t.Fatalf("a stale bound %s set SO_RCVLOWAT (%d -> %d)", when, lowat, k.lowat)
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
	if src.rare(16) {
		r.staleFire("between calls")
	}
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
		case isTimeout(err):
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
		case isTimeout(err):
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
		case errors.Is(err, errFakeWriter), isTimeout(err):
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
	k.batchOn(r.c)
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
	if st.BoundedWaits != uint64(k.fires) || st.BatchedWaits < st.BoundedWaits {
		t.Fatalf("stats count %d batched and %d bounded waits, the fake ended %d", st.BatchedWaits, st.BoundedWaits, k.fires)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	k.gone = true
	r.staleFire("after Close")
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

// TestFakeBatching runs the fake on generated inputs and checks that batched waits
// happen in every mode, that some are ended by their bound (a wake that never comes),
// and that the stream stays exact (runFake checks it, and the counts, for each).
func TestFakeBatching(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 0))
	var batched, bounded [3]uint64
	for i := 0; i < 150; i++ {
		data := make([]byte, 2048)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		data[0] = byte(i % 3)         // mode
		data[1] = 7                   // the default ring
		data[2], data[3] = 0xff, 0x7f // a long stream
		data[4], data[5] = 0xff, 0x7f
		data[7] = 0 // no fault, no early Close
		for j := 10; j < len(data); j += 3 {
			data[j] = 0 // mostly Reads
		}
		r := runFake(t, data)
		st := r.c.Stats()
		batched[i%3] += st.BatchedWaits
		bounded[i%3] += st.BoundedWaits
	}
	for m := range 3 {
		if batched[m] == 0 || bounded[m] == 0 {
			t.Errorf("%v: %d batched waits, %d ended by their bound", Mode(m), batched[m], bounded[m])
		}
	}
	t.Logf("batched %v, bounded %v", batched, bounded)
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
