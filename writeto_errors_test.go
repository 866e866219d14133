package zcnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// errTestWriter is the error a failing writer returns.
var errTestWriter = errors.New("test writer failure")

// failingWriter fails every write, or writes one byte short when short is set.
type failingWriter struct{ short bool }

func (w failingWriter) Write(p []byte) (int, error) {
	if w.short {
		return len(p) - 1, nil
	}
	return 0, errTestWriter
}

// writeToCases are the ways a WriteTo ends in error, each set up on a server conn c (a
// *Conn or a *net.TCPConn) and its sender sc.
var writeToCases = []struct {
	name string
	run  func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error)
}{
	{"closed", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		c.Close()
		return c.(io.WriterTo).WriteTo(io.Discard)
	}},
	{"deadline", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		c.SetReadDeadline(time.Now().Add(-time.Second))
		return c.(io.WriterTo).WriteTo(io.Discard)
	}},
	{"deadline-with-bytes-queued", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, sc)
		c.SetReadDeadline(time.Now().Add(-time.Second))
		return c.(io.WriterTo).WriteTo(io.Discard)
	}},
	{"deadline-while-waiting", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		return c.(io.WriterTo).WriteTo(io.Discard)
	}},
	{"reset", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, sc)
		sc.SetLinger(0)
		sc.Close()
		time.Sleep(20 * time.Millisecond) // the reset arrives
		return c.(io.WriterTo).WriteTo(&patternWriter{})
	}},
	{"writer-error", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
			t.Fatal(err)
		}
		return c.(io.WriterTo).WriteTo(failingWriter{})
	}},
	{"short-write", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
			t.Fatal(err)
		}
		n, err := c.(io.WriterTo).WriteTo(failingWriter{short: true})
		return min(n, 1), err // how short depends on how the bytes came in
	}},
	{"close-while-waiting", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		time.AfterFunc(50*time.Millisecond, func() { c.Close() })
		return c.(io.WriterTo).WriteTo(io.Discard)
	}},
	{"pipe-closed", func(t *testing.T, c net.Conn, sc *net.TCPConn, mappable bool) (int64, error) {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pw.Close()
		pr.Close()
		if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
			t.Fatal(err)
		}
		return c.(io.WriterTo).WriteTo(pw)
	}},
}

// errShape describes err as the differential test compares it: its type and Op, and
// those of the error it wraps.
func errShape(err error) string {
	if err == nil {
		return "nil"
	}
	oe, ok := err.(*net.OpError)
	if !ok {
		return fmt.Sprintf("%T", err)
	}
	if in, ok := oe.Err.(*net.OpError); ok {
		return fmt.Sprintf("*net.OpError{%s}(*net.OpError{%s}(%T))", oe.Op, in.Op, in.Err)
	}
	return fmt.Sprintf("*net.OpError{%s}(%T)", oe.Op, oe.Err)
}

// errClasses lists the errors err satisfies errors.Is for, among those a WriteTo meets.
func errClasses(err error) string {
	s := ""
	for _, e := range []error{io.EOF, net.ErrClosed, os.ErrDeadlineExceeded, syscall.ECONNRESET,
		syscall.EPIPE, errTestWriter, io.ErrShortWrite} {
		if errors.Is(err, e) {
			s += "[" + e.Error() + "]"
		}
	}
	return s
}

// netPair returns a *net.TCPConn accepted from a plain listener and its sender (mappable
// or plain); both are closed when the test ends.
func netPair(t *testing.T, mappable bool) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sc := dialSender(t, ln.Addr().String(), mappable)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), sc
}

// TestWriteToErrorsAsNet compares WriteTo's errors with net.TCPConn.WriteTo's, case by
// case, in every mode and with both kinds of sender: the same shape (a *net.OpError with
// Op "writeto" around the read's *net.OpError, or around the writer's error), the same
// classes (errors.Is), Timeout() alike, and the same count of bytes written.
func TestWriteToErrorsAsNet(t *testing.T) {
	for _, tc := range writeToCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range senders {
				nc, nsc := netPair(t, s.mappable)
				wantN, want := tc.run(t, nc, nsc, s.mappable)
				if want == nil {
					t.Fatalf("net.TCPConn's WriteTo returned no error (%d bytes)", wantN)
				}
				for _, m := range modes {
					t.Run(m.String()+"/"+s.name, func(t *testing.T) {
						if m == ModeZeroCopy && s.mappable {
							requireSupported(t)
						}
						c, sc := pairWith(t, Options{Mode: m}, s.mappable)
						n, got := tc.run(t, c, sc, s.mappable)
						t.Logf("net.TCPConn: %d, %v; Conn: %d, %v", wantN, want, n, got)
						if errShape(got) != errShape(want) {
							t.Errorf("error shaped %s, net.TCPConn's %s", errShape(got), errShape(want))
						}
						if errClasses(got) != errClasses(want) {
							t.Errorf("error is %s, net.TCPConn's %s", errClasses(got), errClasses(want))
						}
						if isTimeout(got) != isTimeout(want) {
							t.Errorf("timeout %v, net.TCPConn's %v", isTimeout(got), isTimeout(want))
						}
						if n != wantN {
							t.Errorf("%d bytes written, net.TCPConn %d", n, wantN)
						}
					})
				}
			}
		})
	}
}
