package zcnet

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestEOFAfterData checks, in every mode and with both kinds of sender, that a stream
// ended by the peer's FIN is read exactly, ends with io.EOF (never EIO or another
// error), and keeps returning io.EOF; Stats count every byte, and in ModeZeroCopy a
// mappable stream was mapped (at least 98%).
func TestEOFAfterData(t *testing.T) {
	const total = 8<<20 + 123
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		sent := sendStream(sc, total, mappable, false)
		w := &patternWriter{}
		_, err := drainPattern(c, byRead, w, 256<<10, rand.New(rand.NewPCG(2, 0)))
		checkStream(t, w, err, sent, total)
		for range 2 {
			if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
			}
		}
		st := c.Stats()
		if st.MappedBytes+st.CopiedBytes != total {
			t.Errorf("stats count %d received bytes, want %d: %+v", st.MappedBytes+st.CopiedBytes, int64(total), st)
		}
		// The bound leaves room for the few short segments a sender that had to
		// wait for the reader sends (partial writes), which cannot be mapped.
		if m == ModeZeroCopy && mappable && st.MappedShare() < 0.98 {
			t.Errorf("mapped share %.4f < 0.98: %+v", st.MappedShare(), st)
		}
		if m == ModeCopy && st.MappedBytes != 0 {
			t.Errorf("ModeCopy mapped %d bytes", st.MappedBytes)
		}
	})
}

// TestHalfClose has a peer send a stream and shut down its sending side (CloseWrite),
// then wait for a reply: a zcnet conn dialed in the receiver's mode (plain writes), or a
// mappable sender. It proves, in every mode, that Read, Next and WriteTo yield the exact
// stream and then io.EOF (again on the next calls); that meanwhile the conn's ring keeps
// no mapped page resident (a conn kept open after its stream ended pins no socket
// memory), although in ModeZeroCopy the mappable stream went through it; and that both
// conns keep their other direction: the receiver writes a reply, which the half-closed
// side reads, and then io.EOF.
func TestHalfClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const total = 1<<20 + 777
	for _, m := range modes {
		for _, peer := range []string{"zcnet", "mappable"} {
			for kind := range readKinds {
				t.Run(m.String()+"/"+peer+"/"+kind.String(), func(t *testing.T) {
					mappable := peer == "mappable"
					ln := listenLoopback(t, Options{Mode: m, PageAlignedMSS: mappable})
					var p halfCloser
					if mappable {
						p = dialSender(t, ln.Addr().String(), true)
					} else {
						d := Dialer{Options: Options{Mode: m}}
						var zc net.Conn
						var err error
						if zc, err = d.Dial("tcp", ln.Addr().String()); err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { zc.Close() })
						if _, ok := zc.(*Conn); !ok {
							t.Fatalf("Dialer.Dial returned a %T, want a *Conn", zc)
						}
						p = zc.(halfCloser)
					}
					c := acceptConn(t, ln)
					sent := sendPattern(p, total, patternSender{zerocopy: mappable})
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					w := &patternWriter{}
					n, err := drainPattern(c, kind, w, 128<<10, rand.New(rand.NewPCG(uint64(kind), 3)))
					checkStream(t, w, err, sent, total)
					for range 2 {
						if k, err := c.Read(make([]byte, 10)); k != 0 || err != io.EOF {
							t.Fatalf("Read after EOF: %d, %v; want 0, io.EOF", k, err)
						}
					}
					if rss, ok := ringRssKiB(t, socketInode(t, c)); rss != 0 {
						t.Errorf("after EOF the ring keeps %d KiB of mapped pages resident; stats %+v", rss, c.Stats())
					} else if m == ModeZeroCopy && mappable && Supported() == nil && !ok {
						t.Errorf("no ring: the mappable stream was not mapped; stats %+v", c.Stats())
					}
					reply := []byte("received " + strconv.FormatInt(n, 10) + " bytes")
					if _, err := c.Write(reply); err != nil {
						t.Fatalf("write after the peer's half-close: %v", err)
					}
					if err := c.CloseWrite(); err != nil {
						t.Fatal(err)
					}
					p.SetReadDeadline(time.Now().Add(10 * time.Second))
					got, err := io.ReadAll(p)
					if err != nil || string(got) != string(reply) {
						t.Fatalf("peer read %q, %v; want %q", got, err, reply)
					}
				})
			}
		}
	}
}

// TestCopyToFileAfterPartialReads checks, in every mode and with both kinds of sender,
// that io.Copy(file, conn) after a few partial Reads writes exactly the rest of the
// stream: the conn's RawConn is not net's (it has no PollFD), so no splice of the
// standard library can bypass the bytes it holds, and the conn's own WriteTo splices
// the rest (Stats.SplicedBytes) once it holds none, where it copies.
func TestCopyToFileAfterPartialReads(t *testing.T) {
	const total = 4<<20 + 555
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		var nc net.Conn = c
		rc, err := nc.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := reflect.TypeOf(rc).MethodByName("PollFD"); ok {
			t.Fatal("the conn's RawConn has a PollFD: the stdlib would splice from its socket")
		}
		f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sent := sendStream(sc, total, mappable, false)
		buf := make([]byte, 10000)
		for _, k := range []int{1, 7, 4096, 10000, 3} {
			n, err := c.Read(buf[:k])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := io.Copy(f, nc); err != nil {
			t.Fatal(err)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		w := &patternWriter{}
		if _, err := io.Copy(w, f); err != nil {
			t.Fatalf("file: %v", err)
		}
		if w.off != total {
			t.Fatalf("file holds %d bytes, want %d", w.off, int64(total))
		}
		st := c.Stats()
		if m == ModeZeroCopy && mappable && st.MappedShare() < 0.98 {
			t.Errorf("mapped share %.4f < 0.98: %+v", st.MappedShare(), st)
		}
		if m == ModeCopy && runtime.GOOS == "linux" && st.SplicedBytes == 0 {
			t.Errorf("ModeCopy's WriteTo to a file did not splice: %+v", st)
		}
	})
}

// TestBadCounts proves that Next and Read reject or accept odd sizes as documented, in
// every mode and with both kinds of sender, without disturbing the stream: Next(0)
// is an empty non-nil slice, negative counts are ErrNegativeCount, counts above the ring
// ErrTooLarge, all consuming nothing, Next of exactly the ring size works, and Read of an
// empty or nil buffer returns 0, nil (before data, with data buffered, and at EOF), as
// net.TCPConn's does.
func TestBadCounts(t *testing.T) {
	const ring = 64 << 10
	eachPairWith(t, Options{RingSize: ring}, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for _, p := range [][]byte{nil, {}} {
			if n, err := c.Read(p); n != 0 || err != nil {
				t.Fatalf("Read(%v) with nothing sent = %d, %v", p, n, err)
			}
		}
		// odd makes the calls that must fail and consume nothing.
		odd := func(when string) {
			t.Helper()
			if v, err := c.Next(0); v == nil || len(v) != 0 || err != nil {
				t.Fatalf("Next(0) %s = %v, %v", when, v, err)
			}
			for _, n := range []int{-1, math.MinInt} {
				if v, err := c.Next(n); v != nil || err != ErrNegativeCount {
					t.Fatalf("Next(%d) %s = %v, %v", n, when, v, err)
				}
			}
			for _, n := range []int{ring + 1, math.MaxInt} {
				if v, err := c.Next(n); v != nil || err != ErrTooLarge {
					t.Fatalf("Next(%d) %s = %d bytes, %v", n, when, len(v), err)
				}
			}
		}
		odd("with nothing sent")
		const total = 2*ring + 12
		sent := sendStream(sc, total, mappable, true)
		v, err := c.Next(5)
		if len(v) != 5 || err != nil || checkPattern(0, v) >= 0 {
			t.Fatalf("Next(5) = %q, %v", v, err)
		}
		// Odd calls between real reads leave the stream alone.
		if n, err := c.Read(nil); n != 0 || err != nil {
			t.Fatalf("Read(nil) with bytes buffered = %d, %v", n, err)
		}
		odd("with bytes buffered")
		for i := range int64(2) {
			v, err := c.Next(ring)
			if err != nil || len(v) != ring {
				t.Fatalf("Next(ring size) = %d bytes, %v", len(v), err)
			}
			if off := checkPattern(5+i*ring, v); off >= 0 {
				t.Fatalf("stream differs at offset %d", off)
			}
		}
		rest, err := io.ReadAll(c)
		if len(rest) != 7 || err != nil || checkPattern(5+2*ring, rest) >= 0 {
			t.Fatalf("rest = %q, %v", rest, err)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
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

// TestNextEOF checks Next at the end of the stream, in every mode and with both kinds of
// sender: fewer than n bytes left return exactly those bytes with io.ErrUnexpectedEOF,
// none left return io.EOF (repeatedly), and Next(0) returns an empty slice and no error.
func TestNextEOF(t *testing.T) {
	const total = 3*4096 + 100 // whole pages, then an unaligned tail
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		if err := <-sendStream(sc, total, mappable, true); err != nil {
			t.Fatal(err)
		}
		v, err := c.Next(10)
		if err != nil || len(v) != 10 || checkPattern(0, v) >= 0 {
			t.Fatalf("Next(10) = %d bytes, %v; want the first 10 bytes of the stream", len(v), err)
		}
		if v, err := c.Next(0); err != nil || v == nil || len(v) != 0 {
			t.Fatalf("Next(0) = %v, %v; want an empty slice, nil", v, err)
		}
		v, err = c.Next(1 << 20)
		if err != io.ErrUnexpectedEOF || len(v) != total-10 || checkPattern(10, v) >= 0 {
			t.Fatalf("Next(1 MiB) = %d bytes (pattern ok: %v), %v; want the %d bytes left, io.ErrUnexpectedEOF",
				len(v), checkPattern(10, v) < 0, err, total-10)
		}
		for range 2 {
			if v, err := c.Next(1); err != io.EOF || len(v) != 0 {
				t.Fatalf("Next(1) at the end = %d bytes, %v; want none, io.EOF", len(v), err)
			}
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("Read at the end = %d, %v; want 0, io.EOF", n, err)
		}
	})
}

// TestNextReadInterleaved mixes Read and Next of random sizes on one stream, in every
// mode and with both kinds of sender: the bytes come out in exact stream order.
func TestNextReadInterleaved(t *testing.T) {
	const total = 16<<20 + 17
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		sent := sendStream(sc, total, mappable, false)
		rnd := rand.New(rand.NewPCG(7, 0))
		buf := make([]byte, 1<<20)
		w := &patternWriter{}
		var reads, nexts int
		for {
			var p []byte
			var err error
			n := 1 + rnd.IntN(1<<(1+rnd.IntN(20)))
			if rnd.IntN(2) == 0 {
				p, err = c.Next(n)
				nexts++
			} else {
				n, err = c.Read(buf[:n])
				p = buf[:n]
				reads++
			}
			if _, werr := w.Write(p); werr != nil {
				t.Fatalf("after %d Reads and %d Nexts: %v", reads, nexts, werr)
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		checkStream(t, w, nil, sent, total)
		if m == ModeZeroCopy && mappable {
			st := c.Stats()
			if st.ViewBytes == 0 || st.MappedShare() < 0.95 {
				t.Errorf("mapped share %.4f, %d bytes passed on as views; want at least 0.95 and some: %+v",
					st.MappedShare(), st.ViewBytes, st)
			}
		}
	})
}

// TestWriteToAfterNext checks in every mode that WriteTo continues exactly where Read
// and Next left the stream, and returns a nil error at its end.
func TestWriteToAfterNext(t *testing.T) {
	const total = 4<<20 + 3
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		sent := sendStream(sc, total, mappable, false)
		w := &patternWriter{}
		buf := make([]byte, 5000)
		n, err := io.ReadFull(c, buf[:1234])
		if err != nil {
			t.Fatal(err)
		}
		w.Write(buf[:n])
		v, err := c.Next(8192 + 5)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(v)
		k, err := c.WriteTo(w)
		if err == nil && k != w.off-int64(n+len(v)) {
			err = fmt.Errorf("WriteTo returned %d, wrote %d", k, w.off-int64(n+len(v)))
		}
		checkStream(t, w, err, sent, total)
	})
}

// TestCopyViews: with Options.CopyViews a ModeZeroCopy conn still maps, but Next and
// WriteTo hand out copies: writing into every view is allowed (a mapped view would be a
// fatal fault), and the stream stays exact.
func TestCopyViews(t *testing.T) {
	requireSupported(t)
	const total = 16<<20 + 333
	for _, kind := range []readKind{byNext, byWriteTo} {
		t.Run(kind.String(), func(t *testing.T) {
			c, s := pairWith(t, Options{Mode: ModeZeroCopy, CopyViews: true}, true)
			sent := sendStream(s, total, true, false)
			w := &patternWriter{}
			var err error
			if kind == byNext {
				for err == nil {
					var v []byte
					v, err = c.Next(100 << 10)
					w.Write(v)
					for i := range v {
						v[i] = 0 // a copy: writable, and the conn does not read it again
					}
				}
				if err == io.ErrUnexpectedEOF || err == io.EOF {
					err = nil
				}
			} else {
				_, err = c.WriteTo(scribbler{w})
			}
			checkStream(t, w, err, sent, total)
			st := c.Stats()
			if st.MappedBytes == 0 || st.ViewBytes != 0 {
				t.Fatalf("want pages mapped and no view into them: %+v", st)
			}
		})
	}
}

// scribbler passes p on to w, then writes over it, as a writer that reuses its input
// might.
type scribbler struct{ w io.Writer }

func (s scribbler) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	clear(p)
	return n, err
}

// TestNextWaitsForTheRest: a Next whose first fill maps part of the view and finds the
// queue empty waits for the rest with SO_RCVLOWAT at what is missing, and is woken when
// the peer sends it (and nothing more).
func TestNextWaitsForTheRest(t *testing.T) {
	requireSupported(t)
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	if err := writeStream(sc, 0, int64(2*pageSize), true); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, sc)
	sent := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		sent <- writeStream(sc, int64(2*pageSize), int64(6*pageSize), true) // then the peer waits
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	v, err := c.Next(8 * pageSize)
	if err != nil {
		t.Fatalf("Next with every byte of the view sent: %v; stats %+v", err, c.Stats())
	}
	if off := checkPattern(0, v); off >= 0 || len(v) != 8*pageSize {
		t.Fatalf("Next returned %d bytes, off the pattern at %d", len(v), off)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.ViewBytes == 0 {
		t.Fatalf("the view was not mapped: %+v", st)
	}
}

// TestWriteToSpliceAfterNext: a Next leaves SO_RCVLOWAT at its count; a WriteTo that then
// splices forwards a small message the peer sends, without waiting for that count.
func TestWriteToSpliceAfterNext(t *testing.T) {
	c, sc := pairWith(t, Options{Mode: ModeCopy}, false)
	if err := writeStream(sc, 0, 64<<10, false); err != nil {
		t.Fatal(err)
	}
	v, err := c.Next(64 << 10)
	if err != nil || checkPattern(0, v) >= 0 {
		t.Fatalf("Next: %d bytes, %v", len(v), err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	done := make(chan error, 1)
	go func() { _, err := c.WriteTo(pw); pw.Close(); done <- err }()
	time.Sleep(100 * time.Millisecond) // WriteTo waits in the poller for the socket
	if err := writeStream(sc, 64<<10, 1000, false); err != nil {
		t.Fatal(err)
	}
	pr.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1000)
	if _, err := io.ReadFull(pr, b); err != nil {
		t.Fatalf("WriteTo did not pass on the 1000 bytes the peer sent: %v", err)
	}
	if off := checkPattern(64<<10, b); off >= 0 {
		t.Fatalf("byte %d off the pattern", off)
	}
	sc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.SplicedBytes != 1000 {
		t.Fatalf("WriteTo spliced %d bytes, want 1000: %+v", st.SplicedBytes, st)
	}
}

// TestWriteToKeepsQueuedReset: a reset that a mapping call took while bytes were still
// queued is reported by a WriteTo after those bytes, also when WriteTo would splice.
func TestWriteToKeepsQueuedReset(t *testing.T) {
	requireSupported(t)
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	if err := writeStream(sc, 0, int64(4*pageSize+100), true); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, sc)
	sc.SetLinger(0)
	sc.Close() // a reset behind the queued bytes
	time.Sleep(50 * time.Millisecond)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	v, err := c.Next(pageSize)
	if err != nil || checkPattern(0, v) >= 0 {
		t.Fatalf("Next: %d bytes, %v", len(v), err)
	}
	if !c.s.errQueued() {
		t.Skip("the mapping call did not take the reset with bytes queued this time")
	}
	c.pol = copyPolicy{} // the copy path, as ModeAuto's may be: WriteTo would splice
	f, err := os.Create(filepath.Join(t.TempDir(), "rest"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := c.WriteTo(f)
	checkReset(t, err)
	if n != int64(3*pageSize+100) {
		t.Fatalf("WriteTo wrote %d bytes before the reset, want %d", n, 3*pageSize+100)
	}
}

// TestPeerSendsOneByteAtATime is fed by a peer that writes its stream one byte per
// segment (TCP_NODELAY), the worst case for a receiver that maps pages. It proves that
// Read, Next and WriteTo each yield the exact stream.
func TestPeerSendsOneByteAtATime(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const total = 6000
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			c, p := pairWith(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true}, false)
			p.SetNoDelay(true)
			sent := sendPattern(p, total, patternSender{maxWrite: 1})
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			w := &patternWriter{}
			_, err := drainPattern(c, kind, w, 4096, rand.New(rand.NewPCG(uint64(kind), 1)))
			checkStream(t, w, err, sent, total)
			t.Logf("%d one-byte segments, stream exact; stats %+v", total, c.Stats())
		})
	}
}
