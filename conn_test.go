package zcnet

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"strings"
	"testing"
	"time"
)

// badPair returns a zcnet conn with opts and the plain TCP conn facing it.
func badPair(t *testing.T, opts Options) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		peer.Close()
		t.Fatal(err)
	}
	c, err := NewConn(nc.(*net.TCPConn), opts)
	if err != nil {
		peer.Close()
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		peer.Close()
	})
	return c, peer
}

// TestBadOptions proves that invalid Options (negative, huge or overflowing RingSize, an
// unknown Mode) are refused with a clear error by NewConn, ListenConfig.Listen,
// Dialer.DialContext and a Listener's Accept, and that a tiny RingSize is rounded up to a
// page and works.
func TestBadOptions(t *testing.T) {
	bad := []struct {
		opts Options
		want string
	}{
		{Options{RingSize: -1}, "negative RingSize"},
		{Options{RingSize: math.MinInt}, "negative RingSize"},
		{Options{RingSize: MaxRingSize + 1}, "above the maximum"},
		{Options{RingSize: math.MaxInt}, "above the maximum"},
		{Options{Mode: Mode(3)}, "invalid Mode"},
		{Options{Mode: Mode(-1)}, "invalid Mode"},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, b := range bad {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewConn(nc.(*net.TCPConn), b.opts)
		if c != nil || err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("NewConn(%+v) = %v, %v; want an error saying %q", b.opts, c, err, b.want)
		}
		nc.Close()
		peer.Close()

		lc := ListenConfig{Options: b.opts}
		if l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), b.want) {
			if l != nil {
				l.Close()
			}
			t.Errorf("ListenConfig{%+v}.Listen: %v; want an error saying %q", b.opts, err, b.want)
		}
		d := Dialer{Options: b.opts}
		if dc, err := d.DialContext(context.Background(), "tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), b.want) {
			if dc != nil {
				dc.Close()
			}
			t.Errorf("Dialer{%+v}.DialContext: %v; want an error saying %q", b.opts, err, b.want)
		}
		// The dial may have reached the listener before the options were checked.
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Millisecond))
		if nc, err := ln.Accept(); err == nil {
			nc.Close()
		}
		ln.(*net.TCPListener).SetDeadline(time.Time{})

		zl := NewListener(ln, b.opts)
		peer, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if ac, err := zl.Accept(); err == nil || !strings.Contains(err.Error(), b.want) {
			if ac != nil {
				ac.Close()
			}
			t.Errorf("NewListener(%+v).Accept: %v; want an error saying %q", b.opts, err, b.want)
		}
		peer.Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Millisecond))
		if nc, err := ln.Accept(); err == nil {
			nc.Close()
		}
		ln.(*net.TCPListener).SetDeadline(time.Time{})
	}

	if c, err := NewConn(nil, Options{}); err == nil || c != nil {
		t.Errorf("NewConn(nil) = %v, %v; want an error", c, err)
	}
	for _, network := range []string{"udp", "unix", "ip4:tcp", ""} {
		if l, err := Listen(network, "127.0.0.1:0"); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", network)
		}
	}
	if l, err := Listen("tcp", "127.0.0.1:notaport"); err == nil {
		l.Close()
		t.Errorf("Listen on a bad address succeeded")
	}

	// A one-byte ring is a page: Next up to a page works, beyond it is refused.
	c, peer := badPair(t, Options{RingSize: 1, Mode: ModeZeroCopy})
	msg := make([]byte, pageSize+1)
	for i := range msg {
		msg[i] = byte(i * 13)
	}
	go peer.Write(msg)
	if _, err := c.Next(pageSize + 1); err != ErrTooLarge {
		t.Fatalf("Next(page+1) on a one-page ring: %v", err)
	}
	v, err := c.Next(pageSize)
	if err != nil || string(v) != string(msg[:pageSize]) {
		t.Fatalf("Next(page) = %d bytes, %v", len(v), err)
	}
	b := make([]byte, 2)
	if n, err := io.ReadFull(c, b[:1]); n != 1 || err != nil || b[0] != msg[pageSize] {
		t.Fatalf("last byte: %d, %v", n, err)
	}
}

// TestBadCounts proves that Next and Read reject or accept odd sizes as documented, in
// every mode, without disturbing the stream: Next(0) is an empty non-nil slice,
// negative counts are ErrNegativeCount, counts above the ring ErrTooLarge, and Read of
// an empty or nil buffer returns 0, nil (before data, with data buffered, and at EOF),
// as net.TCPConn's does.
func TestBadCounts(t *testing.T) {
	for _, mode := range []Mode{ModeAuto, ModeZeroCopy, ModeCopy} {
		t.Run(mode.String(), func(t *testing.T) {
			c, peer := badPair(t, Options{Mode: mode, RingSize: 64 << 10})
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for _, p := range [][]byte{nil, {}} {
				if n, err := c.Read(p); n != 0 || err != nil {
					t.Fatalf("Read(%v) with nothing sent = %d, %v", p, n, err)
				}
			}
			if v, err := c.Next(0); v == nil || len(v) != 0 || err != nil {
				t.Fatalf("Next(0) = %v, %v", v, err)
			}
			for _, n := range []int{-1, math.MinInt} {
				if v, err := c.Next(n); v != nil || err != ErrNegativeCount {
					t.Fatalf("Next(%d) = %v, %v", n, v, err)
				}
			}
			for _, n := range []int{64<<10 + 1, math.MaxInt} {
				if v, err := c.Next(n); v != nil || err != ErrTooLarge {
					t.Fatalf("Next(%d) = %d bytes, %v", n, len(v), err)
				}
			}
			if _, err := peer.Write([]byte("hello, world")); err != nil {
				t.Fatal(err)
			}
			v, err := c.Next(5)
			if string(v) != "hello" || err != nil {
				t.Fatalf("Next(5) = %q, %v", v, err)
			}
			// Odd calls between real reads leave the stream alone.
			if n, err := c.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) with bytes buffered = %d, %v", n, err)
			}
			c.Next(-1)
			c.Next(math.MaxInt)
			if v, err := c.Next(0); len(v) != 0 || err != nil {
				t.Fatalf("Next(0) with bytes buffered = %q, %v", v, err)
			}
			peer.Close()
			rest, err := io.ReadAll(c)
			if string(rest) != ", world" || err != nil {
				t.Fatalf("rest = %q, %v", rest, err)
			}
			if n, err := c.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) at EOF = %d, %v", n, err)
			}
			if v, err := c.Next(0); len(v) != 0 || err != nil {
				t.Fatalf("Next(0) at EOF = %q, %v", v, err)
			}
			if v, err := c.Next(1); v != nil || err != io.EOF {
				t.Fatalf("Next(1) at EOF = %q, %v", v, err)
			}
			if n, err := c.WriteTo(io.Discard); n != 0 || err != nil {
				t.Fatalf("WriteTo at EOF = %d, %v", n, err)
			}
			if n, err := c.Write(nil); n != 0 || err != nil {
				t.Fatalf("Write(nil) = %d, %v", n, err)
			}
		})
	}
}

// TestCallsAfterClose proves that every method of a closed conn returns an error
// satisfying errors.Is(err, net.ErrClosed) (read side as *net.OpError, like
// net.TCPConn's) and never panics, also with bytes still buffered at Close, and that
// Stats and the addresses stay readable.
func TestCallsAfterClose(t *testing.T) {
	for _, mode := range []Mode{ModeAuto, ModeZeroCopy, ModeCopy} {
		t.Run(mode.String(), func(t *testing.T) {
			c, peer := badPair(t, Options{Mode: mode})
			if _, err := peer.Write([]byte("buffered bytes")); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Next(3); string(v) != "buf" || err != nil {
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
			readSide := func(what string, err error) {
				t.Helper()
				closedErr(what, err)
				var oe *net.OpError
				if !errors.As(err, &oe) {
					t.Errorf("%s after Close: %v (%T) is not a *net.OpError", what, err, err)
				}
			}
			for _, p := range [][]byte{nil, {}, make([]byte, 10)} {
				n, err := c.Read(p)
				if n != 0 {
					t.Errorf("Read after Close returned %d bytes", n)
				}
				readSide("Read", err)
			}
			for _, n := range []int{-1, 0, 1, math.MaxInt} {
				v, err := c.Next(n)
				if v != nil {
					t.Errorf("Next(%d) after Close returned %q", n, v)
				}
				readSide("Next", err)
			}
			n, err := c.WriteTo(io.Discard)
			if n != 0 {
				t.Errorf("WriteTo after Close wrote %d bytes", n)
			}
			readSide("WriteTo", err)
			_, err = c.Write([]byte("x"))
			closedErr("Write", err)
			_, err = c.Write(nil)
			closedErr("Write(nil)", err)
			_, err = c.ReadFrom(strings.NewReader("x"))
			closedErr("ReadFrom", err)
			closedErr("Close", c.Close())
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
}
