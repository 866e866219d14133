package zcnet

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// wantNoSocket fails the test unless err is a *net.OpError wrapping ErrNotInitialized.
func wantNoSocket(t *testing.T, what string, err error) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || !errors.Is(err, ErrNotInitialized) {
		t.Errorf("%s: %v (%T), want a *net.OpError wrapping ErrNotInitialized", what, err, err)
	}
}

// wantNoSocketZero is wantNoSocket for a call that returns v with its error: v must be
// the zero value of its type (a nil interface, not a nil pointer in one).
func wantNoSocketZero[T comparable](t *testing.T, what string, v T, err error) {
	t.Helper()
	wantNoSocket(t, what, err)
	var zero T
	if v != zero {
		t.Errorf("%s returned %#v with its error, want %#v", what, v, zero)
	}
}

// TestZeroConn calls every method on a zero Conn and on a nil *Conn: each returns a
// *net.OpError wrapping ErrNotInitialized (addresses are nil, Stats zero), none panics.
func TestZeroConn(t *testing.T) {
	for _, c := range []*Conn{new(Conn), nil} {
		n, err := c.Read(make([]byte, 10))
		wantNoSocketZero(t, "Read", n, err)
		v, err := c.Next(10)
		wantNoSocket(t, "Next", err)
		if v != nil {
			t.Errorf("Next returned %d bytes with its error", len(v))
		}
		_, err = c.WriteTo(io.Discard)
		wantNoSocket(t, "WriteTo", err)
		wantNoSocket(t, "Close", c.Close())
		if st := c.Stats(); st != (Stats{}) {
			t.Errorf("Stats = %+v, want zero", st)
		}
		_, err = c.Write([]byte("x"))
		wantNoSocket(t, "Write", err)
		_, err = c.ReadFrom(io.LimitReader(zeroReader{}, 10))
		wantNoSocket(t, "ReadFrom", err)
		wantNoSocket(t, "SetDeadline", c.SetDeadline(time.Now()))
		wantNoSocket(t, "SetReadDeadline", c.SetReadDeadline(time.Now()))
		wantNoSocket(t, "SetWriteDeadline", c.SetWriteDeadline(time.Now()))
		wantNoSocket(t, "CloseRead", c.CloseRead())
		wantNoSocket(t, "CloseWrite", c.CloseWrite())
		wantNoSocket(t, "SetReadBuffer", c.SetReadBuffer(1<<20))
		wantNoSocket(t, "SetWriteBuffer", c.SetWriteBuffer(1<<20))
		wantNoSocket(t, "SetNoDelay", c.SetNoDelay(true))
		wantNoSocket(t, "SetLinger", c.SetLinger(0))
		wantNoSocket(t, "SetKeepAlive", c.SetKeepAlive(true))
		wantNoSocket(t, "SetKeepAlivePeriod", c.SetKeepAlivePeriod(time.Second))
		wantNoSocket(t, "SetKeepAliveConfig", c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true}))
		rc, err := c.SyscallConn()
		wantNoSocketZero(t, "SyscallConn", rc, err)
		f, err := c.File()
		wantNoSocketZero(t, "File", f, err)
		_, err = c.MultipathTCP()
		wantNoSocket(t, "MultipathTCP", err)
		if a := c.LocalAddr(); a != nil {
			t.Errorf("LocalAddr = %v, want nil", a)
		}
		if a := c.RemoteAddr(); a != nil {
			t.Errorf("RemoteAddr = %v, want nil", a)
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestZeroListener calls every method on a zero Listener and on NewListener(nil, opts):
// each returns a *net.OpError wrapping ErrNotInitialized (Addr is nil, Stats zero), none
// panics; Accept returns a nil net.Conn.
func TestZeroListener(t *testing.T) {
	for _, l := range []*Listener{new(Listener), NewListener(nil, Options{})} {
		c, err := l.Accept()
		wantNoSocketZero(t, "Accept", c, err) // a nil net.Conn, not a nil *Conn in one
		zc, err := l.AcceptConn()
		wantNoSocketZero(t, "AcceptConn", zc, err)
		wantNoSocket(t, "Close", l.Close())
		wantNoSocket(t, "SetDeadline", l.SetDeadline(time.Now()))
		_, err = l.SyscallConn()
		wantNoSocket(t, "SyscallConn", err)
		_, err = l.File()
		wantNoSocket(t, "File", err)
		if a := l.Addr(); a != nil {
			t.Errorf("Addr = %v, want nil", a)
		}
		if s := l.Stats(); s != (Stats{}) {
			t.Errorf("Stats = %+v, want zero", s)
		}
	}
}

// TestListenerSocket checks Listener.SyscallConn and File on a TCP listener (they reach
// the listening socket), their *net.OpError on an inner listener without them, and
// AcceptConn: a *Conn from a TCP listener, an error (and the conn closed) from a Unix one.
func TestListenerSocket(t *testing.T) {
	ln := listenLoopback(t, Options{})
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	called := false
	if err := rc.Control(func(fd uintptr) { called = true }); err != nil || !called {
		t.Fatalf("Control: %v (f called: %v)", err, called)
	}
	checkListeningSocket(t, rc)
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fc.Addr().String(), ln.Addr().String(); got != want {
		t.Errorf("File's listener at %s, want %s", got, want)
	}
	fc.Close()

	// AcceptConn on a TCP listener.
	done := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			_, err = c.Write([]byte("hello"))
			c.Close()
		}
		done <- err
	}()
	zc, err := ln.AcceptConn()
	if err != nil {
		t.Fatal(err)
	}
	defer zc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(zc); err != nil || string(b) != "hello" {
		t.Errorf("read %q, %v; want hello", b, err)
	}

	// A listener with neither method.
	bare := NewListener(bareListener{ln}, Options{})
	for what, err := range map[string]error{
		"SyscallConn": second(bare.SyscallConn()),
		"File":        second(bare.File()),
	} {
		var oe *net.OpError
		if !errors.As(err, &oe) || !errors.Is(err, errNotTCPListener) {
			t.Errorf("%s on a listener without it: %v, want a *net.OpError", what, err)
		}
	}

	// AcceptConn on a Unix listener.
	path := filepath.Join(t.TempDir(), "sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("no unix sockets here: %v", err)
	}
	zl := NewListener(ul, Options{})
	defer zl.Close()
	closed := make(chan error, 1)
	go func() {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1)) // the listener closes its side
			c.Close()
		}
		closed <- err
	}()
	uc, err := zl.AcceptConn()
	var oe *net.OpError
	if uc != nil || !errors.As(err, &oe) || !errors.Is(err, errNotTCPConn) {
		t.Errorf("AcceptConn on a unix listener: %v, %v; want a *net.OpError", uc, err)
	}
	if err := <-closed; err != io.EOF {
		t.Errorf("the unix peer read %v, want io.EOF (conn closed by AcceptConn)", err)
	}
}

// bareListener hides the inner listener's SyscallConn and File.
type bareListener struct{ inner net.Listener }

func (l bareListener) Accept() (net.Conn, error) { return l.inner.Accept() }
func (l bareListener) Close() error              { return l.inner.Close() }
func (l bareListener) Addr() net.Addr            { return l.inner.Addr() }

func second[T any](_ T, err error) error { return err }

// TestDialerNilConn checks that Dialer.DialContext, Dialer.Dial and Dial return a nil
// net.Conn (not a nil *Conn in an interface) with their error, for a refused connection
// and for invalid options, and that the typed variants return a nil *Conn.
func TestDialerNilConn(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := inner.Addr().String()
	inner.Close()
	ctx := context.Background()
	for _, d := range []*Dialer{{}, {Options: Options{RingSize: -1}}, {Options: Options{UserTimeout: -time.Second}}} {
		var c net.Conn
		c, err = d.DialContext(ctx, "tcp", refused)
		if err == nil || c != nil {
			t.Errorf("Dialer{%+v}.DialContext: %#v, %v; want nil, an error", d.Options, c, err)
		}
		c, err = d.Dial("tcp", refused)
		if err == nil || c != nil {
			t.Errorf("Dialer{%+v}.Dial: %#v, %v; want nil, an error", d.Options, c, err)
		}
		zc, err := d.DialConnContext(ctx, "tcp", refused)
		if err == nil || zc != nil {
			t.Errorf("Dialer{%+v}.DialConnContext: %v, %v; want nil, an error", d.Options, zc, err)
		}
	}
	if c, err := Dial("tcp", refused); err == nil || c != nil {
		t.Errorf("Dial: %#v, %v; want nil, an error", c, err)
	}
	if c, err := DialConn("tcp", refused); err == nil || c != nil {
		t.Errorf("DialConn: %v, %v; want nil, an error", c, err)
	}
}

// TestUserTimeoutValidation checks that a negative Options.UserTimeout, or one above
// MaxUserTimeout, is refused by ListenConfig, Dialer and NewListener, naming the field.
func TestUserTimeoutValidation(t *testing.T) {
	for _, d := range []time.Duration{-1, -time.Hour, MaxUserTimeout + time.Millisecond} {
		o := Options{UserTimeout: d}
		lc := ListenConfig{Options: o}
		if ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
			t.Errorf("Listen with UserTimeout %v succeeded", d)
		} else if !errors.As(err, new(*net.OpError)) || !strings.Contains(err.Error(), "UserTimeout") {
			t.Errorf("Listen with UserTimeout %v: %v", d, err)
		}
		if _, err := (&Dialer{Options: o}).DialConn("tcp", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "UserTimeout") {
			t.Errorf("Dial with UserTimeout %v: %v", d, err)
		}
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewListener(inner, o).Accept(); err == nil || !strings.Contains(err.Error(), "UserTimeout") {
			t.Errorf("NewListener with UserTimeout %v: Accept: %v", d, err)
		}
		inner.Close()
	}
	if _, err := (&Options{UserTimeout: MaxUserTimeout}).validate(); err != nil {
		t.Errorf("UserTimeout = MaxUserTimeout: %v", err)
	}
}

// TestListenerDropsConns accepts 50 conns, reads a few bytes on each and drops them
// without Close: the Listener does not keep them reachable (each is garbage collected),
// its set of live counters empties, and its Stats still count every byte received.
func TestListenerDropsConns(t *testing.T) {
	const conns, each = 50, 1000
	ln := listenLoopback(t, Options{})
	var collected atomic.Int64
	clients := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := range conns {
		c := dialSender(t, ln.Addr().String(), false)
		clients = append(clients, c)
		if _, err := c.Write(patternData(int64(i)*each, each)); err != nil {
			t.Fatal(err)
		}
		func() { // the conn is not referenced past this call
			zc, err := ln.AcceptConn()
			if err != nil {
				t.Fatal(err)
			}
			if err := readPattern(zc, int64(i)*each, each); err != nil {
				t.Fatalf("conn %d: %v", i, err)
			}
			runtime.AddCleanup(zc, func(n *atomic.Int64) { n.Add(1) }, &collected)
		}()
	}
	if s := ln.Stats(); s.MappedBytes+s.CopiedBytes != conns*each {
		t.Fatalf("Stats with the conns live count %d bytes, want %d", s.MappedBytes+s.CopiedBytes, conns*each)
	}
	live := ln.sums.liveCount
	for i := 0; i < 100 && (collected.Load() < conns || live() > 0); i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := collected.Load(); n != conns {
		t.Errorf("%d of %d dropped conns were collected", n, conns)
	}
	if n := live(); n != 0 {
		t.Errorf("%d counters still live after the conns were collected", n)
	}
	if s := ln.Stats(); s.MappedBytes+s.CopiedBytes != conns*each {
		t.Errorf("Stats after collection count %d bytes, want %d", s.MappedBytes+s.CopiedBytes, conns*each)
	}
}

// liveCount returns how many conns s tracks that are neither closed nor collected.
func (s *connSums) liveCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// TestListenerForgetsClosedConns checks that Close moves a conn's counters into the
// Listener's sums once, with Stats unchanged, also when the conn is collected later.
func TestListenerForgetsClosedConns(t *testing.T) {
	ln := listenLoopback(t, Options{})
	c := dialSender(t, ln.Addr().String(), false)
	if _, err := c.Write(patternData(0, 4096)); err != nil {
		t.Fatal(err)
	}
	zc, err := ln.AcceptConn()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(zc, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	zc.Close()
	zc.Close()
	zc = nil
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := ln.sums.liveCount(); n != 0 {
		t.Errorf("%d counters live after Close", n)
	}
	if s := ln.Stats(); s.MappedBytes+s.CopiedBytes != 4096 {
		t.Errorf("Stats count %d bytes, want 4096", s.MappedBytes+s.CopiedBytes)
	}
}

// TestStdlibCopiesAfterPartialReads checks, in every mode and with both kinds of sender,
// that the standard library's copies out of a conn that holds bytes stay exact now that
// the conn is a syscall.Conn: io.Copy(file, conn), file.ReadFrom(conn) (which splices
// from a syscall.Conn whose RawConn is net's) and tcpConn.ReadFrom(conn) (which
// sendfiles from any syscall.Conn), after partial Reads; SHA-256 of the whole stream.
func TestStdlibCopiesAfterPartialReads(t *testing.T) {
	const total = 4<<20 + 555
	for _, dst := range []string{"io.Copy(file)", "file.ReadFrom", "tcpConn.ReadFrom"} {
		t.Run(dst, func(t *testing.T) {
			eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
				sent := sendStream(sc, total, mappable, false)
				h := sha256.New()
				buf := make([]byte, 10000)
				for _, k := range []int{1, 7, 4096, 10000, 3} {
					n, err := c.Read(buf[:k])
					if err != nil {
						t.Fatal(err)
					}
					h.Write(buf[:n])
				}
				var rest io.Reader
				switch dst {
				case "io.Copy(file)", "file.ReadFrom":
					f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					if dst == "io.Copy(file)" {
						_, err = io.Copy(f, c)
					} else {
						_, err = f.ReadFrom(c)
					}
					if err != nil {
						t.Fatal(err)
					}
					if _, err := f.Seek(0, io.SeekStart); err != nil {
						t.Fatal(err)
					}
					rest = f
				case "tcpConn.ReadFrom":
					bl, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						t.Fatal(err)
					}
					defer bl.Close()
					out := dialSender(t, bl.Addr().String(), false)
					in, err := bl.Accept()
					if err != nil {
						t.Fatal(err)
					}
					defer in.Close()
					copied := make(chan error, 1)
					go func() {
						_, err := out.ReadFrom(c)
						out.Close()
						copied <- err
					}()
					defer func() {
						if err := <-copied; err != nil {
							t.Error(err)
						}
					}()
					rest = in
				}
				n, err := io.Copy(h, rest)
				if err != nil {
					t.Fatal(err)
				}
				if err := <-sent; err != nil {
					t.Fatal(err)
				}
				if [32]byte(h.Sum(nil)) != patternSum(total) {
					t.Fatalf("copied %d bytes after the partial reads: the stream's sha256 does not match", n)
				}
			})
		})
	}
}
