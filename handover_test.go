//go:build linux

package zcnet

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

// handOver tries File and then SyscallConn's Read on c (a *Conn or a *net.TCPConn) and,
// when File worked, reads the next n stream bytes (at off) from the file; it returns
// File's error and the raw Read's.
func handOver(t *testing.T, c net.Conn, off, n int64) (ferr, rerr error) {
	t.Helper()
	f, ferr := c.(interface{ File() (*os.File, error) }).File()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rerr = rc.Read(func(uintptr) bool { return true })
	if ferr == nil {
		defer f.Close()
		if err := readPattern(f, off, n); err != nil {
			t.Fatalf("reading the handed-over socket: %v", err)
		}
	}
	return ferr, rerr
}

// checkRefusal checks that err is the documented refusal of op: a *net.OpError with Op
// op wrapping ErrBuffered.
func checkRefusal(t *testing.T, op string, err error) {
	t.Helper()
	var oe *net.OpError
	if !errors.Is(err, ErrBuffered) || !errors.As(err, &oe) || oe.Op != op {
		t.Fatalf("%s: %v, want a *net.OpError %q wrapping ErrBuffered", op, err, op)
	}
}

// TestHandOverAtBoundary shows when File and SyscallConn's Read work at a message
// boundary, in every mode, against net.TCPConn: where the Reads took exactly the messages
// queued, the conn holds nothing and both work as net.TCPConn's (the next message is then
// read from the file); after two small Reads of a message followed by a pipelined one,
// the second Read has read ahead, the conn holds the next message and both refuse with
// ErrBuffered, as documented, where net.TCPConn's work; nothing is lost: the conn then
// reads the next message itself.
func TestHandOverAtBoundary(t *testing.T) {
	const a, b = 100, 100 // message sizes
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		nc, nsc := netPair(t, mappable)
		for _, conn := range []struct {
			c  net.Conn
			sc *net.TCPConn
		}{{nc, nsc}, {c, sc}} {
			// One message, read whole; the next arrives after.
			if err := writeStream(conn.sc, 0, a, mappable); err != nil {
				t.Fatal(err)
			}
			if err := readPattern(conn.c, 0, a); err != nil {
				t.Fatal(err)
			}
			if err := writeStream(conn.sc, a, b, mappable); err != nil {
				t.Fatal(err)
			}
			waitAcked(t, conn.sc)
			ferr, rerr := handOver(t, conn.c, a, b)
			if ferr != nil || rerr != nil {
				t.Fatalf("%T at a boundary with nothing read ahead: File %v, SyscallConn's Read %v", conn.c, ferr, rerr)
			}
			// A message read in two small Reads, with the next one pipelined.
			off := int64(a + b)
			if err := writeStream(conn.sc, off, a+b, mappable); err != nil {
				t.Fatal(err)
			}
			waitAcked(t, conn.sc)
			for _, n := range []int64{10, a - 10} {
				if err := readPattern(io.LimitReader(conn.c, n), off, n); err != nil {
					t.Fatal(err)
				}
				off += n
			}
			ferr, rerr = handOver(t, conn.c, off, b)
			if conn.c == nc {
				if ferr != nil || rerr != nil {
					t.Fatalf("net.TCPConn after two small Reads: File %v, SyscallConn's Read %v", ferr, rerr)
				}
				continue
			}
			if c.buffered() != b {
				t.Fatalf("the conn holds %d bytes after two small Reads, want the next message's %d", c.buffered(), b)
			}
			checkRefusal(t, "file", ferr)
			checkRefusal(t, "raw-read", rerr)
			if err := readPattern(io.LimitReader(c, b), off, b); err != nil {
				t.Fatalf("after the refusal: %v", err)
			}
		}
	})
}

// TestHandOverLargeReads: a ModeCopy conn read with buffers of 128 KiB never reads
// ahead, so File works after each Read, as net.TCPConn's; with 4 KiB Reads the same
// stream is read ahead and File refuses (as documented).
func TestHandOverLargeReads(t *testing.T) {
	for _, size := range []int{batchMin, 4 << 10} {
		c, sc := pairWith(t, Options{Mode: ModeCopy}, false)
		const msg = 64 << 10
		if err := writeStream(sc, 0, msg+100, false); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, sc)
		buf := make([]byte, size)
		var off int64
		for off < msg {
			n, err := c.Read(buf[:min(len(buf), int(msg-off))])
			if err != nil {
				t.Fatal(err)
			}
			if err := patternErr(off, buf[:n]); err != nil {
				t.Fatal(err)
			}
			off += int64(n)
		}
		ferr, rerr := handOver(t, c, off, 100)
		t.Logf("Reads of %d B: File %v, SyscallConn's Read %v", size, ferr, rerr)
		if size >= batchMin {
			if ferr != nil || rerr != nil {
				t.Fatalf("after Reads of %d B, File: %v, SyscallConn's Read: %v", size, ferr, rerr)
			}
			continue
		}
		checkRefusal(t, "file", ferr)
		checkRefusal(t, "raw-read", rerr)
	}
}

// TestHandOverAfterSmallRead: on a stream that streams, a Read of 128 KiB or more after a
// small one that filled its buffer still receives straight into p, so the conn holds
// nothing after it and File works, as documented (a smaller Read would read ahead).
func TestHandOverAfterSmallRead(t *testing.T) {
	c, sc := pairWith(t, Options{Mode: ModeCopy}, false)
	const small, large, next = 4 << 10, batchMin, 100
	batchStart(t, c) // the stream streams: a small Read would read ahead 512 KiB
	if err := writeStream(sc, 0, small+large+next, false); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, sc)
	buf := make([]byte, large)
	var off int64
	for _, n := range []int64{small, large} {
		for end := off + n; off < end; {
			m, err := c.Read(buf[:end-off])
			if err != nil {
				t.Fatal(err)
			}
			if err := patternErr(off, buf[:m]); err != nil {
				t.Fatal(err)
			}
			off += int64(m)
		}
	}
	if ferr, rerr := handOver(t, c, off, next); ferr != nil || rerr != nil {
		t.Fatalf("after a Read of %d bytes, File: %v, SyscallConn's Read: %v", large, ferr, rerr)
	}
}
