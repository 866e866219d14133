//go:build linux

package zcnet

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// sockoptInt reads an integer socket option through c's SyscallConn.
func sockoptInt(t testing.TB, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

// tcpInfo reads TCP_INFO through c's SyscallConn.
func tcpInfo(t testing.TB, c syscall.Conn) *unix.TCPInfo {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return info
}

// TestSyscallConn checks the conn's RawConn: Control sets and reads socket options
// (TCP_USER_TIMEOUT, TCP_INFO), Write writes to the socket (the peer reads it), and Read
// refuses with ErrBuffered while the conn holds bytes, then, once they are consumed,
// reads the rest of the stream from the socket: SHA-256 of the whole stream. File
// refuses and succeeds likewise.
func TestSyscallConn(t *testing.T) {
	const total = 1<<20 + 77
	c, sc := pairWith(t, Options{Mode: ModeCopy}, false)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}

	// Control.
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 4321)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if v := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); v != 4321 {
		t.Errorf("TCP_USER_TIMEOUT %d after setting 4321", v)
	}
	if info := tcpInfo(t, c); info.State != unix.BPF_TCP_ESTABLISHED {
		t.Errorf("TCP_INFO state %d, want established", info.State)
	}

	// Write.
	msg := []byte("written through the RawConn")
	if err := rc.Write(func(fd uintptr) bool {
		n, err := unix.Write(int(fd), msg)
		if err == unix.EAGAIN {
			return false
		}
		serr = err
		msg = msg[max(n, 0):]
		return len(msg) == 0 || err != nil
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	got := make([]byte, len("written through the RawConn"))
	if _, err := io.ReadFull(sc, got); err != nil || string(got) != "written through the RawConn" {
		t.Fatalf("peer read %q, %v", got, err)
	}

	// Read and File while the conn holds bytes.
	sent := sendStream(sc, total, false, false)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	// The first small Read receives straight into its buffer and fills it; the next
	// then receives into the pooled buffer, which holds what the Read did not take.
	held := 0
	for i := 0; i < 2 && held == 0; i++ {
		n, err := c.Read(buf[:10])
		if err != nil {
			t.Fatal(err)
		}
		h.Write(buf[:n])
		c.readMu.Lock()
		held = c.buffered()
		c.readMu.Unlock()
	}
	if held == 0 {
		t.Fatal("the conn holds no bytes after two 10-byte Reads in ModeCopy: the test needs some")
	}
	called := false
	err = rc.Read(func(uintptr) bool { called = true; return true })
	var oe *net.OpError
	if !errors.Is(err, ErrBuffered) || !errors.As(err, &oe) || called {
		t.Fatalf("RawConn.Read with %d bytes held: %v (f called: %v), want a *net.OpError wrapping ErrBuffered", held, err, called)
	}
	if f, err := c.File(); !errors.Is(err, ErrBuffered) || f != nil {
		t.Fatalf("File with %d bytes held: %v, %v; want ErrBuffered", held, f, err)
	}

	// Consume exactly the held bytes, then read the socket directly.
	for held > 0 {
		n, err := c.Read(buf[:held])
		if err != nil {
			t.Fatal(err)
		}
		h.Write(buf[:n])
		held -= n
	}
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for eof := false; !eof; {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return rerr != unix.EAGAIN
		}); err != nil {
			t.Fatal(err)
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
		h.Write(buf[:n])
		eof = n == 0
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if [32]byte(h.Sum(nil)) != patternSum(total) {
		t.Fatal("the stream read by Read then RawConn.Read does not match its sha256")
	}
}

// TestUserTimeout checks that Options.UserTimeout reaches the socket of conns a Listener
// accepts (ListenConfig and NewListener) and a Dialer makes, rounded up to a millisecond,
// and that without it the kernel default (0) stays.
func TestUserTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{{0, 0}, {1234 * time.Millisecond, 1234}, {1500 * time.Microsecond, 2}} {
		o := Options{UserTimeout: tc.d}
		ln := listenLoopback(t, o)
		d := Dialer{Options: o}
		dc, err := d.DialConn("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ac := acceptConn(t, ln)
		if v := sockoptInt(t, dc, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); v != tc.want {
			t.Errorf("UserTimeout %v: dialed conn has TCP_USER_TIMEOUT %d, want %d", tc.d, v, tc.want)
		}
		if v := sockoptInt(t, ac, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); v != tc.want {
			t.Errorf("UserTimeout %v: accepted conn has TCP_USER_TIMEOUT %d, want %d", tc.d, v, tc.want)
		}
		dc.Close()

		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		nl := NewListener(inner, o)
		pc := dialSender(t, inner.Addr().String(), false)
		nc, err := nl.AcceptConn()
		if err != nil {
			t.Fatal(err)
		}
		if v := sockoptInt(t, nc, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); v != tc.want {
			t.Errorf("UserTimeout %v: NewListener's conn has TCP_USER_TIMEOUT %d, want %d", tc.d, v, tc.want)
		}
		nc.Close()
		pc.Close()
		nl.Close()
	}
}

// TestDialerControl checks that the Dialer runs the net.Dialer's own ControlContext (or
// Control) before setting its options, fails when it fails, and that PageAlignedMSS makes
// the server send page-sized segments (its TCP_INFO snd_mss is the page size).
func TestDialerControl(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	addr := inner.Addr().String()
	page := os.Getpagesize()

	var ctlCalls, ctxCalls int
	var d Dialer
	d.Options = Options{PageAlignedMSS: true, UserTimeout: time.Second}
	d.Control = func(network, address string, c syscall.RawConn) error { ctlCalls++; return nil }
	c, err := d.DialConn("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := inner.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if ctlCalls != 1 {
		t.Errorf("the user's Control ran %d times, want 1", ctlCalls)
	}
	if mss := tcpInfo(t, s.(*net.TCPConn)).Snd_mss; int(mss) != page {
		t.Errorf("server's snd_mss %d with PageAlignedMSS, want %d", mss, page)
	}
	if v := sockoptInt(t, c, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); v != 1000 {
		t.Errorf("TCP_USER_TIMEOUT %d, want 1000", v)
	}
	c.Close()
	s.Close()

	// ControlContext takes precedence over Control, as in net.Dialer.
	d.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		ctxCalls++
		return nil
	}
	if c, err = d.DialConn("tcp", addr); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s, err = inner.Accept(); err == nil {
		s.Close()
	}
	if ctlCalls != 1 || ctxCalls != 1 {
		t.Errorf("Control ran %d times, ControlContext %d; want 1 and 1", ctlCalls, ctxCalls)
	}

	// The user's error ends the dial.
	boom := errors.New("refused by the user's control")
	d.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error { return boom }
	if nc, err := d.DialContext(context.Background(), "tcp", addr); !errors.Is(err, boom) || nc != nil {
		t.Errorf("DialContext with a failing ControlContext: %v, %v", nc, err)
	}

	// Without PageAlignedMSS the server's segments are not page-sized.
	var plain Dialer
	if c, err = plain.DialConn("tcp", addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, err = inner.Accept(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if mss := tcpInfo(t, s.(*net.TCPConn)).Snd_mss; int(mss) == page {
		t.Errorf("server's snd_mss is the page size without PageAlignedMSS: the check above proves nothing")
	}
}

// TestDialerDownloadMaps downloads 64 MiB from a server that sends with MSG_ZEROCOPY over
// a conn a Dialer made with PageAlignedMSS in ModeZeroCopy: the client's SYN advertises
// the page-sized MSS, so at least 99% of the stream is mapped; SHA-256 of the stream.
// The Dialer's Stats count the conn's bytes and mapped pages while it is open, and the
// same after Close, with no live entry left.
func TestDialerDownloadMaps(t *testing.T) {
	requireSupported(t)
	const total = 64 << 20
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		tc := c.(*net.TCPConn)
		pat := zcsend.PatternBytes()
		for sent := 0; sent < total; sent += len(pat) {
			if err := zcsend.Write(tc, pat, true); err != nil {
				served <- err
				return
			}
		}
		served <- tc.CloseWrite()
		io.Copy(io.Discard, tc) // until the client closes
	}()
	d := Dialer{Options: Options{Mode: ModeZeroCopy, PageAlignedMSS: true}}
	c, err := d.DialConnContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if n != total || [32]byte(h.Sum(nil)) != patternSum(total) {
		t.Fatalf("downloaded %d bytes, want %d; sha256 match: %v", n, total, [32]byte(h.Sum(nil)) == patternSum(total))
	}
	st := c.Stats()
	if st.MappedShare() < 0.99 {
		t.Errorf("mapped share %.4f < 0.99: %+v", st.MappedShare(), st)
	}
	t.Logf("mapped share %.4f", st.MappedShare())
	if ds := d.Stats(); ds != st {
		t.Errorf("Dialer Stats with the conn open %+v, want the conn's %+v", ds, st)
	}
	c.Close()
	ds := d.Stats()
	if ds.MappedBytes+ds.CopiedBytes != total || ds.MappedBytes != st.MappedBytes || ds.MappedShare() < 0.99 {
		t.Errorf("Dialer Stats after Close count %d bytes, %d mapped; want %d, %d (the conn's)",
			ds.MappedBytes+ds.CopiedBytes, ds.MappedBytes, int64(total), st.MappedBytes)
	}
	if n := d.sums.liveCount(); n != 0 {
		t.Errorf("the Dialer tracks %d live conns after Close, want 0", n)
	}
}

// TestRawReadRacingClose races RawConn.Read and File against Close on conns that hold
// mapped or buffered bytes or none: no data race, no panic, and every call either works
// or fails with ErrBuffered or net.ErrClosed; after Close both fail with net.ErrClosed.
func TestRawReadRacingClose(t *testing.T) {
	rounds := 100
	if testing.Short() {
		rounds = 20
	}
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m == ModeZeroCopy && Supported() == nil
			for i := range rounds {
				c, sc := pairWith(t, Options{Mode: m}, mappable)
				if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, make([]byte, 1+i%3*4096)); err != nil {
					t.Fatal(err)
				}
				rc, err := c.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				errs := make(chan error, 2)
				go func() {
					errs <- rc.Read(func(fd uintptr) bool {
						var b [512]byte
						unix.Read(int(fd), b[:])
						return true
					})
				}()
				go func() {
					f, err := c.File()
					if f != nil {
						f.Close()
					}
					errs <- err
				}()
				c.Close()
				for range 2 {
					if err := <-errs; err != nil && !errors.Is(err, ErrBuffered) && !errors.Is(err, net.ErrClosed) {
						t.Fatalf("round %d: %v", i, err)
					}
				}
				if err := rc.Read(func(uintptr) bool { return true }); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("RawConn.Read after Close: %v, want net.ErrClosed", err)
				}
				if _, err := c.File(); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("File after Close: %v, want net.ErrClosed", err)
				}
				sc.Close()
			}
		})
	}
}

// checkListeningSocket checks that rc's socket is a listening TCP socket.
func checkListeningSocket(t *testing.T, rc syscall.RawConn) {
	t.Helper()
	var typ, acc int
	var err1, err2 error
	if err := rc.Control(func(fd uintptr) {
		typ, err1 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		acc, err2 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	}); err != nil || err1 != nil || err2 != nil {
		t.Fatal(err, err1, err2)
	}
	if typ != unix.SOCK_STREAM || acc != 1 {
		t.Errorf("SO_TYPE %d, SO_ACCEPTCONN %d: not a listening stream socket", typ, acc)
	}
}
