package zcnet

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/nettest"
)

// TestBadOptions proves that invalid Options (negative, huge or overflowing RingSize, an
// unknown Mode) are refused by NewConn, ListenConfig.Listen, Dialer.DialContext and a
// Listener's Accept with an error that names the field and the problem, and never
// panic; that non-TCP networks and bad addresses are refused by Listen and DialConn, the
// network named in the error, while Dialer.DialContext passes non-TCP networks through to
// net.Dialer; and that a tiny RingSize is rounded up to a page and
// works.
func TestBadOptions(t *testing.T) {
	ctx := context.Background()
	bad := []struct {
		opts Options
		want []string // what the error must say
	}{
		{Options{RingSize: -1}, []string{"RingSize", "negative RingSize"}},
		{Options{RingSize: math.MinInt}, []string{"RingSize", "negative RingSize"}},
		{Options{RingSize: -1 << (strconv.IntSize - 24)}, []string{"RingSize", "negative RingSize"}}, // -1<<40 with 64-bit ints
		{Options{RingSize: MaxRingSize + 1}, []string{"RingSize", "above the maximum"}},
		{Options{RingSize: math.MaxInt}, []string{"RingSize", "above the maximum"}},
		{Options{Mode: Mode(3)}, []string{"Mode", "invalid Mode"}},
		{Options{Mode: Mode(42)}, []string{"Mode", "invalid Mode"}},
		{Options{Mode: Mode(-1)}, []string{"Mode", "invalid Mode"}},
	}
	says := func(err error, want []string) bool {
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				return false
			}
		}
		return true
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	// drain accepts and closes what a refused dial may have left in inner's queue.
	drain := func() {
		inner.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			nc, err := inner.Accept()
			if err != nil {
				break
			}
			nc.Close()
		}
		inner.(*net.TCPListener).SetDeadline(time.Time{})
	}
	for _, b := range bad {
		peer := dialSender(t, inner.Addr().String(), false)
		nc, err := inner.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if c, err := NewConn(nc.(*net.TCPConn), b.opts); c != nil || !says(err, b.want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("NewConn(%+v) = %v, %v; want an error saying %q", b.opts, c, err, b.want)
		}
		nc.Close()
		peer.Close()

		lc := ListenConfig{Options: b.opts}
		if l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0"); !says(err, b.want) {
			if l != nil {
				l.Close()
			}
			t.Errorf("ListenConfig{%+v}.Listen: %v; want an error saying %q", b.opts, err, b.want)
		}
		d := Dialer{Options: b.opts}
		if dc, err := d.DialContext(ctx, "tcp", inner.Addr().String()); !says(err, b.want) {
			if dc != nil {
				dc.Close()
			}
			t.Errorf("Dialer{%+v}.DialContext: %v; want an error saying %q", b.opts, err, b.want)
		}
		drain() // the dial may have reached the listener before the options were checked

		zl := NewListener(inner, b.opts)
		peer = dialSender(t, inner.Addr().String(), false)
		if ac, err := zl.Accept(); !says(err, b.want) {
			if ac != nil {
				ac.Close()
			}
			t.Errorf("NewListener(%+v).Accept: %v; want an error saying %q", b.opts, err, b.want)
		}
		peer.Close()
		drain()
	}

	if c, err := NewConn(nil, Options{}); err == nil || c != nil {
		t.Errorf("NewConn(nil) = %v, %v; want an error", c, err)
	}
	for _, network := range []string{"udp", "unix", "ip4:tcp", ""} {
		l, err := Listen(network, "127.0.0.1:0")
		if err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", network)
		} else if network != "" && !strings.Contains(err.Error(), network) {
			t.Errorf("Listen(%q): %v does not name the network", network, err)
		}
	}
	var lc ListenConfig
	if l, err := lc.Listen(ctx, "", "127.0.0.1:0"); err == nil {
		l.Close()
		t.Error(`ListenConfig.Listen("") succeeded`)
	}
	var d Dialer
	if c, err := d.DialConnContext(ctx, "udp", "127.0.0.1:9"); err == nil {
		c.Close()
		t.Error(`DialConn("udp") succeeded`)
	} else if !strings.Contains(err.Error(), "udp") {
		t.Errorf(`DialConn("udp"): %v does not name the network`, err)
	}
	// DialContext passes networks other than TCP through to net.Dialer.
	if c, err := d.DialContext(ctx, "udp", "127.0.0.1:9"); err != nil {
		t.Errorf(`DialContext("udp"): %v; net.Dialer dials it`, err)
	} else {
		if _, ok := c.(*net.UDPConn); !ok {
			t.Errorf(`DialContext("udp") returned a %T, want net.Dialer's *net.UDPConn`, c)
		}
		c.Close()
	}
	for _, addr := range []string{"127.0.0.1:notaport", "no-such-host.invalid:x"} {
		if l, err := Listen("tcp", addr); err == nil {
			l.Close()
			t.Errorf("Listen on the bad address %q succeeded", addr)
		}
	}

	// A one-byte ring is a page: Next up to a page works, beyond it is refused.
	c, peer := pairWith(t, Options{RingSize: 1, Mode: ModeZeroCopy}, false)
	sent := sendPattern(peer, int64(pageSize)+1, patternSender{})
	if _, err := c.Next(pageSize + 1); err != ErrTooLarge {
		t.Fatalf("Next(page+1) on a one-page ring: %v", err)
	}
	v, err := c.Next(pageSize)
	if err != nil || len(v) != pageSize || checkPattern(0, v) >= 0 {
		t.Fatalf("Next(page) = %d bytes (pattern ok: %v), %v", len(v), checkPattern(0, v) < 0, err)
	}
	b := make([]byte, 2)
	if n, err := io.ReadFull(c, b[:1]); n != 1 || err != nil || checkPattern(int64(pageSize), b[:1]) >= 0 {
		t.Fatalf("last byte: %d, %v", n, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// TestNettestConn runs golang.org/x/net/nettest.TestConn, the net.Conn conformance suite
// (data integrity, ping-pong, racy reads and writes, past, present and future deadlines,
// Close unblocking pending calls, concurrent methods), in every mode against zcnet conns
// on both ends and against a zcnet conn facing a plain *net.TCPConn, each side first.
func TestNettestConn(t *testing.T) {
	for _, m := range modes {
		opts := Options{Mode: m}
		t.Run(m.String(), func(t *testing.T) {
			t.Run("zcnet-zcnet", func(t *testing.T) {
				nettest.TestConn(t, makePipe(opts, true, true))
			})
			t.Run("zcnet-tcp", func(t *testing.T) {
				nettest.TestConn(t, makePipe(opts, true, false))
			})
			t.Run("tcp-zcnet", func(t *testing.T) {
				nettest.TestConn(t, makePipe(opts, false, true))
			})
		})
	}
}

// makePipe returns a nettest.MakePipe over loopback TCP: c1 is the accepted side and c2
// the dialing side, each a *Conn with opts when its flag is set and a *net.TCPConn
// otherwise.
func makePipe(opts Options, zc1, zc2 bool) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		var ln net.Listener
		if zc1 {
			lc := ListenConfig{Options: opts}
			ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		} else {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			return nil, nil, nil, err
		}
		defer ln.Close()
		type result struct {
			c   net.Conn
			err error
		}
		dialed := make(chan result, 1)
		go func() {
			var c net.Conn
			var err error
			if zc2 {
				d := Dialer{Options: opts}
				c, err = d.Dial("tcp", ln.Addr().String())
			} else {
				c, err = net.Dial("tcp", ln.Addr().String())
			}
			dialed <- result{c, err}
		}()
		c1, err = ln.Accept()
		r := <-dialed
		if err != nil || r.err != nil {
			if c1 != nil {
				c1.Close()
			}
			if r.c != nil {
				r.c.Close()
			}
			if err == nil {
				err = r.err
			}
			return nil, nil, nil, err
		}
		if _, ok := c1.(*Conn); ok != zc1 {
			c1.Close()
			r.c.Close()
			return nil, nil, nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.UnknownNetworkError("wrong conn type")}
		}
		c2 = r.c
		stop = func() {
			c1.Close()
			c2.Close()
		}
		return c1, c2, stop, nil
	}
}

// TestCallsAfterClose proves, in every mode, with both kinds of sender and with bytes
// still buffered at Close (mapped or copied, some of them handed out by Next), that every method of a closed
// conn returns an error satisfying errors.Is(err, net.ErrClosed) and never panics: the
// read-side calls and a second Close as a *net.OpError, like net.TCPConn's; and that
// Stats and the addresses stay readable.
func TestCallsAfterClose(t *testing.T) {
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
			t.Fatal(err)
		}
		if err := readPattern(c, 0, 100); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Next(3); len(v) != 3 || err != nil || checkPattern(100, v) >= 0 {
			t.Fatalf("Next(3) = %q, %v", v, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		closedErr := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s after Close: %v, want net.ErrClosed", what, err)
			}
		}
		opErr := func(what string, err error) {
			t.Helper()
			closedErr(what, err)
			if _, ok := err.(*net.OpError); !ok {
				t.Errorf("%s after Close: %v (%T) is not a *net.OpError", what, err, err)
			}
		}
		for _, p := range [][]byte{nil, {}, make([]byte, 10)} {
			n, err := c.Read(p)
			if n != 0 {
				t.Errorf("Read after Close returned %d bytes", n)
			}
			opErr("Read", err)
		}
		for _, n := range []int{-1, 0, 1, 10, math.MaxInt} {
			v, err := c.Next(n)
			if v != nil {
				t.Errorf("Next(%d) after Close returned %q", n, v)
			}
			opErr("Next", err)
		}
		n, err := c.WriteTo(io.Discard)
		if n != 0 {
			t.Errorf("WriteTo after Close wrote %d bytes", n)
		}
		opErr("WriteTo", err)
		opErr("Close", c.Close())
		_, err = c.Write([]byte("x"))
		closedErr("Write", err)
		_, err = c.Write(nil)
		closedErr("Write(nil)", err)
		_, err = c.ReadFrom(strings.NewReader("x"))
		closedErr("ReadFrom", err)
		closedErr("SetDeadline", c.SetDeadline(time.Now()))
		closedErr("SetReadDeadline", c.SetReadDeadline(time.Time{}))
		closedErr("SetWriteDeadline", c.SetWriteDeadline(time.Now()))
		closedErr("CloseRead", c.CloseRead())
		closedErr("CloseWrite", c.CloseWrite())
		closedErr("SetReadBuffer", c.SetReadBuffer(1<<20))
		closedErr("SetWriteBuffer", c.SetWriteBuffer(1<<20))
		closedErr("SetNoDelay", c.SetNoDelay(false))
		closedErr("SetLinger", c.SetLinger(0))
		closedErr("SetKeepAlive", c.SetKeepAlive(true))
		closedErr("SetKeepAlivePeriod", c.SetKeepAlivePeriod(time.Second))
		if c.LocalAddr() == nil || c.RemoteAddr() == nil {
			t.Errorf("addresses after Close: %v, %v", c.LocalAddr(), c.RemoteAddr())
		}
		_ = c.Stats()
	})
}

// TestCloseRead checks, in every mode and after some mapped or copied bytes were read,
// that Read, Next and WriteTo after CloseRead report the end of the stream at once (as
// net.TCPConn does) instead of waiting for data.
func TestCloseRead(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m == ModeZeroCopy && Supported() == nil
			c, sc := pairWith(t, Options{Mode: m}, mappable)
			const total = 256 << 10
			if err := writeStream(sc, 0, total, mappable); err != nil {
				t.Fatal(err)
			}
			if err := readPattern(c, 0, total); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseRead(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)                  // the poller takes the shutdown's event first
			c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a hang fails, not stalls
			if n, err := c.Read(make([]byte, total)); n != 0 || err != io.EOF {
				t.Fatalf("Read after CloseRead = %d, %v; want 0, io.EOF", n, err)
			}
			if v, err := c.Next(10); len(v) != 0 || err != io.EOF {
				t.Fatalf("Next after CloseRead = %d bytes, %v; want 0, io.EOF", len(v), err)
			}
			if n, err := c.WriteTo(io.Discard); n != 0 || err != nil {
				t.Fatalf("WriteTo after CloseRead = %d, %v; want 0, nil", n, err)
			}
		})
	}
}

// TestReadDeadline checks, in every mode, that Read, Next and WriteTo fail with a timeout
// error (os.ErrDeadlineExceeded, net.Error.Timeout, *net.OpError) under a deadline in the
// past, also when bytes are already buffered (mapped or copied), and after a deadline in
// the future passes while waiting; and that once the deadline is cleared the stream
// continues exactly where it was.
func TestReadDeadline(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m == ModeZeroCopy && Supported() == nil
			c, sc := pairWith(t, Options{Mode: m}, mappable)
			buf := make([]byte, 1<<20)

			// Past deadline, nothing buffered.
			c.SetReadDeadline(time.Now().Add(-time.Second))
			if n, err := c.Read(buf); n != 0 {
				t.Fatalf("Read read %d bytes under a past deadline", n)
			} else {
				checkTimeout(t, err)
			}
			if _, err := c.Next(1); err == nil {
				t.Fatal("Next succeeded under a past deadline")
			} else {
				checkTimeout(t, err)
			}
			if _, err := c.WriteTo(io.Discard); err == nil {
				t.Fatal("WriteTo succeeded under a past deadline")
			} else {
				checkTimeout(t, err)
			}

			// Future deadline, nothing arrives.
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if n, err := c.Read(buf); n != 0 {
				t.Fatalf("Read read %d bytes, nothing was sent", n)
			} else {
				checkTimeout(t, err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Next(1); err == nil {
				t.Fatal("Next succeeded, nothing was sent")
			} else {
				checkTimeout(t, err)
			}

			// Past deadline with bytes buffered.
			const total = 256 << 10
			c.SetReadDeadline(time.Time{})
			if err := writeStream(sc, 0, total, mappable); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:1]); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(-time.Second))
			for _, f := range []func() error{
				func() error { _, err := c.Read(buf); return err },
				func() error { _, err := c.Next(1); return err },
				func() error { _, err := c.WriteTo(io.Discard); return err },
			} {
				if err := f(); err == nil {
					t.Fatalf("read succeeded under a past deadline with %d bytes buffered", c.buffered())
				} else {
					checkTimeout(t, err)
				}
			}
			c.SetReadDeadline(time.Time{})
			if _, err := io.ReadFull(c, buf[1:total]); err != nil {
				t.Fatal(err)
			}
			if off := checkPattern(0, buf[:total]); off >= 0 {
				t.Fatalf("stream differs at offset %d", off)
			}
			if mappable {
				if st := c.Stats(); st.MappedBytes == 0 {
					t.Errorf("nothing was mapped: %+v", st)
				}
			}
		})
	}
}

// callResult is what a read-side call started by blockedCall returned.
type callResult struct {
	data []byte
	err  error
}

// blockedCall starts a read-side call of kind on c in a goroutine; the channel yields its
// error and the bytes it returned.
func blockedCall(c *Conn, kind readKind) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		var r callResult
		switch kind {
		case byRead:
			buf := make([]byte, 64<<10)
			n, err := c.Read(buf)
			r.data, r.err = buf[:n], err
		case byNext:
			v, err := c.Next(4)
			r.data, r.err = append([]byte(nil), v...), err
		default:
			var w bytesWriter
			_, r.err = c.WriteTo(&w)
			r.data = w.b
		}
		ch <- r
	}()
	return ch
}

// bytesWriter keeps what is written to it.
type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// TestReadDeadlineMovedWhileBlocked changes the read deadline while a Read, Next or
// WriteTo waits for bytes that do not come. It proves that moving the deadline earlier
// wakes the call with a timeout soon after the new deadline, and that extending it keeps
// the call blocked past the old deadline, until bytes arrive (which it then returns
// exactly).
func TestReadDeadlineMovedWhileBlocked(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			// Earlier: from an hour away to 50ms away.
			c, peer := pairWith(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true}, false)
			c.SetReadDeadline(time.Now().Add(time.Hour))
			res := blockedCall(c, kind)
			time.Sleep(50 * time.Millisecond)
			select {
			case r := <-res:
				t.Fatalf("returned before the deadline moved: %q, %v", r.data, r.err)
			default:
			}
			moved := time.Now()
			c.SetReadDeadline(moved.Add(50 * time.Millisecond))
			select {
			case r := <-res:
				if !isTimeout(r.err) || len(r.data) != 0 {
					t.Fatalf("after moving the deadline earlier: %q, %v; want a timeout", r.data, r.err)
				}
				if d := time.Since(moved); d < 40*time.Millisecond {
					t.Fatalf("woke %v after the deadline was set 50ms ahead", d)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("moving the deadline earlier did not wake the call within 5s")
			}

			// Later: from 300ms away to an hour away; the call must outlive the old
			// deadline and then return the bytes the peer sends.
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			res = blockedCall(c, kind)
			time.Sleep(20 * time.Millisecond)
			c.SetReadDeadline(time.Now().Add(time.Hour))
			select {
			case r := <-res:
				t.Fatalf("returned although the deadline was extended: %q, %v", r.data, r.err)
			case <-time.After(600 * time.Millisecond):
			}
			want := []byte("late")
			if _, err := peer.Write(want); err != nil {
				t.Fatal(err)
			}
			if kind == byWriteTo {
				peer.CloseWrite() // WriteTo returns at EOF
			}
			select {
			case r := <-res:
				if r.err != nil || string(r.data) != string(want) {
					t.Fatalf("after extending the deadline: %q, %v; want %q", r.data, r.err, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the call did not return the bytes sent")
			}
		})
	}
}

// TestPeerNeverSends is fed by a mappable peer that connects and sends nothing. It proves
// that Read, Next and WriteTo block until the read deadline (returning a timeout, not
// before it) and, with no deadline, until Close (returning net.ErrClosed), with nothing
// read.
func TestPeerNeverSends(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			c, _ := pairWith(t, Options{Mode: ModeZeroCopy}, true)
			const wait = 150 * time.Millisecond
			start := time.Now()
			c.SetReadDeadline(start.Add(wait))
			r := <-blockedCall(c, kind)
			if d := time.Since(start); d < wait-10*time.Millisecond || !isTimeout(r.err) || len(r.data) != 0 {
				t.Fatalf("after %v: %q, %v; want a timeout after %v", d, r.data, r.err, wait)
			}
			c.SetReadDeadline(time.Time{})
			res := blockedCall(c, kind)
			select {
			case r := <-res:
				t.Fatalf("returned with no deadline and no bytes: %q, %v", r.data, r.err)
			case <-time.After(200 * time.Millisecond):
			}
			c.Close()
			select {
			case r := <-res:
				if !errors.Is(r.err, net.ErrClosed) || len(r.data) != 0 {
					t.Fatalf("after Close: %q, %v; want net.ErrClosed", r.data, r.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not unblock the call")
			}
		})
	}
}

// resetCase is one way a peer resets a conn after sending: see TestReset.
type resetCase struct {
	name    string
	first   int64 // bytes read before the rest is sent
	queued  int64 // bytes sent after them, still queued at the receiver when the reset comes
	ring    int   // the zcnet conn's RingSize (0: the default)
	rcvbuf  int   // the receiver's SO_RCVBUF (0: the default)
	reading bool  // the receiver reads while the peer sends; the peer resets once all is acknowledged
	fin     bool  // the peer half-closes before the reset: the stream ends with io.EOF
}

var resetCases = []resetCase{
	// Read before the reset, so that the ring is in use; the ring is smaller than what
	// is queued, so several fills follow once the reset is known.
	{name: "queued", first: 64 << 10, queued: 48 << 10, ring: 16 << 10},
	// The whole stream (whole pages, then a tail) waits in the receive queue behind the
	// reset.
	{name: "unread", queued: 256<<10 + 1234, rcvbuf: 4 << 20},
	{name: "reading", queued: 3<<20 + 1234, reading: true},
	// In CLOSE_WAIT the kernel records EPIPE for the reset, and the mapping call hands it
	// over in its err field: it must not surface.
	{name: "after-FIN", queued: 32 << 10, fin: true},
}

// TestReset has the peer reset the connection (SO_LINGER 0 and Close) in each of
// resetCases, in every mode, with both kinds of sender and with Read, Next and WriteTo as
// the reader. As with net.TCPConn (checked as a control), the reader gets every byte sent
// before the reset in order and then an error satisfying errors.Is(err,
// syscall.ECONNRESET), a *net.OpError, never io.EOF or EIO; the next Read returns
// io.EOF at once. A peer that half-closed before the reset ends the stream with io.EOF
// instead. With a mappable sender in ModeZeroCopy the kernel reports the reset in the
// TCP_ZEROCOPY_RECEIVE result while bytes are still queued, and bytes were mapped.
func TestReset(t *testing.T) {
	for _, rc := range resetCases {
		for _, m := range append([]Mode{-1}, modes...) {
			name, kinds := "net.TCPConn", []readKind{byRead}
			if m >= 0 {
				name, kinds = m.String(), []readKind{byRead, byNext, byWriteTo}
			}
			for _, s := range senders {
				for _, kind := range kinds {
					t.Run(rc.name+"/"+name+"/"+s.name+"/"+kind.String(), func(t *testing.T) {
						testReset(t, rc, m, s.mappable, kind)
					})
				}
			}
		}
	}
}

// testReset runs one case of TestReset; m < 0 selects a plain net.TCPConn reader.
func testReset(t *testing.T, rc resetCase, m Mode, mappable bool, kind readKind) {
	if runtime.GOOS != "linux" {
		t.Skip("waiting for the peer's acknowledgements needs Linux (SIOCOUTQ)")
	}
	var r interface {
		io.Reader
		SetReadDeadline(time.Time) error
		SetReadBuffer(int) error
	}
	var sc *net.TCPConn
	var zc *Conn
	if m < 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		sc = dialSender(t, ln.Addr().String(), mappable)
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r = c.(*net.TCPConn)
	} else {
		if m == ModeZeroCopy && mappable {
			requireSupported(t)
		}
		zc, sc = pairWith(t, Options{Mode: m, RingSize: rc.ring}, mappable)
		r = zc
	}
	if rc.rcvbuf > 0 {
		if err := r.SetReadBuffer(rc.rcvbuf); err != nil {
			t.Fatal(err)
		}
	}
	total := rc.first + rc.queued
	if err := writeStream(sc, 0, rc.first, mappable); err != nil {
		t.Fatal(err)
	}
	if err := readPattern(r, 0, rc.first); err != nil {
		t.Fatal(err)
	}
	reset := func() error {
		if err := writeStream(sc, rc.first, rc.queued, mappable); err != nil {
			return err
		}
		if err := waitAckedErr(sc); err != nil {
			return err
		}
		if rc.fin {
			if err := sc.CloseWrite(); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond) // the FIN reaches the receiver first
		}
		if err := sc.SetLinger(0); err != nil {
			return err
		}
		return sc.Close()
	}
	var sent <-chan error
	if rc.reading {
		ch := make(chan error, 1)
		go func() { ch <- reset() }()
		sent = ch
	} else {
		if err := reset(); err != nil {
			t.Fatal(err)
		}
		// Let the poller take the reset's readiness event before the reads: the
		// reader must not depend on seeing it again.
		time.Sleep(20 * time.Millisecond)
	}
	r.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang fails, not stalls
	maxReq := 256 << 10
	if rc.ring > 0 {
		maxReq = rc.ring / 2 // Next of at most the ring size
	}
	w := &patternWriter{off: rc.first}
	n, err := drainPattern(r, kind, w, maxReq, rand.New(rand.NewPCG(uint64(kind), 2)))
	if sent != nil {
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	if n != total {
		t.Errorf("got %d bytes before %v, want %d", n, err, total)
	}
	if rc.fin {
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v, want io.EOF", n, total, err)
		}
	} else {
		checkReset(t, err)
	}
	// As with net.TCPConn, the reset is reported once; the stream then ends.
	if k, err := r.Read(make([]byte, 10)); k != 0 || err != io.EOF {
		t.Errorf("Read after the end = %d, %v; want 0, io.EOF", k, err)
	}
	if zc != nil {
		st := zc.Stats()
		t.Logf("stats: %+v", st)
		if m == ModeZeroCopy && mappable && st.MappedBytes == 0 {
			t.Errorf("nothing was mapped: %+v", st)
		}
	}
}
