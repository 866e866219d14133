//go:build linux

package zcnet

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/zcnet/zcnet/internal/zcsend"
)

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

// pageMSSListen listens on loopback advertising a page-sized MSS, so that a MSG_ZEROCOPY
// sender's payload is mappable.
func pageMSSListen(t testing.TB) net.Listener { return loopbackListen(t, true) }

// pacedSend sends total pattern bytes to addr with a page MSS and MSG_ZEROCOPY, pausing
// after each chunk (so that the receiver empties its queue and waits), and then either
// half-closes and waits for the receiver to close, or resets the connection.
func pacedSend(addr string, total, chunk int, pause time.Duration, reset bool) <-chan error {
	done := make(chan error, 1)
	go func() { done <- pacedSendConn(addr, total, chunk, pause, reset) }()
	return done
}

func pacedSendConn(addr string, total, chunk int, pause time.Duration, reset bool) error {
	o := zcsend.Options{PageMSS: true, ZeroCopy: true}
	c, err := zcsend.Dial(context.Background(), addr, o)
	if err != nil {
		return err
	}
	defer c.Close()
	pat := zcsend.PatternBytes()
	for sent := 0; sent < total; {
		off := sent % zcsend.Period
		p := pat[off : off+min(chunk, total-sent, zcsend.Period-off)]
		if err := zcsend.Write(c, p, true); err != nil {
			return err
		}
		sent += len(p)
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	if reset {
		// Let the bytes reach the receiver's queue before the reset.
		time.Sleep(20 * time.Millisecond)
		return c.SetLinger(0)
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	// Wait for the receiver to close; how the read ends does not matter.
	var b [512]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return nil
		}
	}
}

// acceptSeam accepts one conn from ln and wraps it over the syscall layer s.
func acceptSeam(t testing.TB, ln net.Listener, s *sysCalls, mode Mode) *Conn {
	t.Helper()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newTCPConn(nc.(*net.TCPConn), Options{Mode: mode}, s)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // unblocks the sender if the test fails
	return c
}

// readAllRandom reads c to EOF with random read sizes, hashing the stream, and calls arm
// once, as soon as the conn has mapped bytes (before any fault is armed). It returns the
// bytes read, their SHA-256 and the stats at arming time.
func readAllRandom(t testing.TB, c *Conn, arm func()) (int, [32]byte, Stats) {
	t.Helper()
	h := sha256.New()
	rnd := rand.New(rand.NewSource(7))
	buf := make([]byte, 256<<10)
	var got int
	var atArm Stats
	for {
		n, err := c.Read(buf[:1+rnd.Intn(len(buf))])
		h.Write(buf[:n])
		got += n
		if arm != nil && c.Stats().MappedBytes > 0 {
			atArm = c.Stats()
			arm()
			arm = nil
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", got, err)
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return got, sum, atArm
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
// falls back to copying with no byte lost or reordered (SHA-256 of the whole stream),
// says why in Stats.FallbackReason, and stops calling the failed operation.
func TestFaultInjection(t *testing.T) {
	requireSupported(t)
	const total = 8 << 20
	want := patternSum(total)
	var faults, verified int64
	for _, fc := range faultCases {
		t.Run(fc.name, func(t *testing.T) {
			ln := pageMSSListen(t)
			defer ln.Close()
			pause := time.Duration(0)
			chunk := 1 << 20
			if fc.pausing {
				pause, chunk = 2*time.Millisecond, 256<<10
			}
			sent := pacedSend(ln.Addr().String(), total, chunk, pause, false)
			seam := newFaultSeam(fc.op, fc.err, !fc.midway)
			c := acceptSeam(t, ln, &seam.sys, ModeZeroCopy)
			var arm func()
			if fc.midway {
				arm = func() { seam.armed.Store(true) }
			}
			got, sum, atArm := readAllRandom(t, c, arm)
			st := c.Stats()
			c.Close()
			if err := <-sent; err != nil {
				t.Fatalf("sender: %v", err)
			}
			if got != total || sum != want {
				t.Fatalf("received %d bytes (want %d), sha256 match %v", got, total, sum == want)
			}
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
			atomic.AddInt64(&verified, int64(got))
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
	ln := pageMSSListen(t)
	defer ln.Close()
	sent := pacedSend(ln.Addr().String(), total, 256<<10, time.Millisecond, false)
	seam := newFaultSeam(opRcvlowat, unix.EINVAL, true)
	c := acceptSeam(t, ln, &seam.sys, ModeZeroCopy)
	h := sha256.New()
	got := 0
	for {
		v, err := c.Next(min(256<<10, total-got+1))
		h.Write(v)
		got += len(v)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("Next after %d bytes: %v", got, err)
		}
	}
	st := c.Stats()
	c.Close()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got != total || [32]byte(h.Sum(nil)) != patternSum(total) {
		t.Fatalf("received %d bytes (want %d), sha256 match %v", got, total, [32]byte(h.Sum(nil)) == patternSum(total))
	}
	if seam.fired.Load() == 0 || st.FallbackReason != "" || st.MappedBytes == 0 {
		t.Fatalf("setsockopt failures %d, stats %+v", seam.fired.Load(), st)
	}
}

// TestResetAfterMappedBytes has the peer send a mappable stream and reset the connection
// with bytes still queued. It proves that the conn returns every byte queued before the
// reset, then ECONNRESET as a *net.OpError (the mapping call hands the error over negated
// and clears it), then io.EOF without waiting, as net.TCPConn does.
func TestResetAfterMappedBytes(t *testing.T) {
	requireSupported(t)
	const total = 64<<10 + 1000 // whole pages, then a tail; less than the initial window
	ln := pageMSSListen(t)
	defer ln.Close()
	sent := pacedSend(ln.Addr().String(), total, total, 0, true)
	c := acceptSeam(t, ln, &linuxSys, ModeZeroCopy)
	defer c.Close()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the reset is queued behind the bytes
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	got := 0
	var err error
	for err == nil {
		var n int
		n, err = c.Read(buf)
		h.Write(buf[:n])
		got += n
	}
	if got != total || [32]byte(h.Sum(nil)) != patternSum(total) {
		t.Fatalf("received %d bytes before %v, want %d (sha256 match %v)", got, err, total, [32]byte(h.Sum(nil)) == patternSum(total))
	}
	var oe *net.OpError
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) {
		t.Fatalf("end error %v (%T), want ECONNRESET as *net.OpError", err, err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the reset = %d, %v; want 0, EOF", n, err)
	}
	if st := c.Stats(); st.MappedBytes == 0 {
		t.Fatalf("nothing mapped: %+v", st)
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
				var c *Conn
				var sent <-chan error
				if viaListener {
					zl := NewListener(pageMSSListen(t), Options{Mode: ModeZeroCopy})
					defer zl.Close()
					sent = pacedSend(zl.Addr().String(), total, 1<<20, 0, false)
					nc, err := zl.Accept()
					if err != nil {
						t.Fatal(err)
					}
					c = nc.(*Conn)
				} else {
					ln := pageMSSListen(t)
					defer ln.Close()
					sent = pacedSend(ln.Addr().String(), total, 1<<20, 0, false)
					nc, err := ln.Accept()
					if err != nil {
						t.Fatal(err)
					}
					var cerr error
					if c, cerr = NewConn(nc.(*net.TCPConn), Options{Mode: ModeZeroCopy}); cerr != nil {
						t.Fatal(cerr)
					}
				}
				got, sum, _ := readAllRandom(t, c, nil)
				st := c.Stats()
				c.Close()
				if err := <-sent; err != nil {
					t.Fatal(err)
				}
				if got != total || sum != patternSum(total) {
					t.Fatalf("received %d bytes (want %d), sha256 match %v", got, total, sum == patternSum(total))
				}
				if st.FallbackReason != reason.Error() || st.MappedBytes != 0 || st.ZerocopyCalls != 0 {
					t.Fatalf("stats %+v, want no mapping and reason %q", st, reason)
				}
			}
		})
	}
}

// TestViewAfterClose keeps a Next view that points into the mapped ring past Close and
// reads it: as documented, the memory stays readable and reads zeros, never faults.
func TestViewAfterClose(t *testing.T) {
	requireSupported(t)
	ln := NewListener(pageMSSListen(t), Options{Mode: ModeZeroCopy})
	defer ln.Close()
	const total = 4 << 20
	sent := pacedSend(ln.Addr().String(), total, 1<<20, 0, false)
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*Conn)
	defer func() { c.Close(); <-sent }()
	var v []byte
	for got := 0; got < total && c.Stats().ViewBytes == 0; got += len(v) {
		if v, err = c.Next(64 << 10); err != nil {
			t.Fatal(err)
		}
	}
	if c.Stats().ViewBytes == 0 {
		t.Skip("no view pointed into the mapping")
	}
	c.Close()
	sum := 0
	for _, b := range v {
		sum += int(b)
	}
	if sum != 0 {
		t.Fatalf("a mapped view read after Close has byte sum %d, want zeros", sum)
	}
}
