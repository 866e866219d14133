//go:build linux

package zcnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// writeZeroCopy writes p to c with MSG_ZEROCOPY (c must have SO_ZEROCOPY on, as
// zcsend.Dial sets it with ZeroCopy), so that on loopback the receiver gets pages it can
// map, and reaps the completions.
func writeZeroCopy(c *net.TCPConn, p []byte) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for len(p) > 0 {
		var n int
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			for range 100000 {
				n, serr = unix.SendmsgN(int(fd), p[:min(len(p), 256<<10)], nil, nil, unix.MSG_ZEROCOPY|unix.MSG_DONTWAIT)
				switch serr {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				case unix.ENOBUFS: // too many sends in flight: reap completions
					if drainCompletions(int(fd)) == 0 {
						time.Sleep(20 * time.Microsecond)
					}
					continue
				}
				return true
			}
			return true
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		p = p[n:]
	}
	rc.Control(func(fd uintptr) { drainCompletions(int(fd)) })
	return nil
}

// drainCompletions reads the MSG_ZEROCOPY completions queued on fd.
func drainCompletions(fd int) int {
	var oob [256]byte
	n := 0
	for ; n < 1<<16; n++ {
		if _, _, _, _, err := unix.Recvmsg(fd, nil, oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT); err != nil {
			break
		}
	}
	return n
}

// waitPeerAcked waits until the peer has acknowledged every byte written to c (SIOCOUTQ is
// 0), so that a reset sent next cannot discard any of them.
func waitPeerAcked(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for range 5000 {
		var q int
		var qerr error
		rc.Control(func(fd uintptr) { q, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if qerr != nil {
			return qerr
		}
		if q == 0 {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("peer did not acknowledge the stream within 5s")
}

// writePattern writes pattern bytes [off, off+n) to c, with MSG_ZEROCOPY when zc.
func writePattern(c *net.TCPConn, off, n int64, zc bool) error {
	pat := zcsend.PatternBytes()
	for n > 0 {
		o := int(off % zcsend.Period)
		k := min(n, int64(len(pat)-o))
		var err error
		if zc {
			err = writeZeroCopy(c, pat[o:o+int(k)])
		} else {
			_, err = c.Write(pat[o : o+int(k)])
		}
		if err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// dialPeer dials ln as a hostile peer: mappable (page MSS, SO_ZEROCOPY) or ordinary, and
// returns both ends.
func dialPeer(t *testing.T, ln *Listener, conns <-chan *Conn, mappable bool) (*net.TCPConn, *Conn) {
	t.Helper()
	o := zcsend.Options{PageMSS: mappable, ZeroCopy: mappable}
	p, err := zcsend.Dial(context.Background(), ln.Addr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-conns:
		return p, c
	case <-time.After(10 * time.Second):
		t.Fatal("no conn accepted")
	}
	return nil, nil
}

// TestPeerSendsOneByteAtATime is fed by a peer that writes its stream one byte per
// segment (TCP_NODELAY), the worst case for a receiver that maps pages. It proves that
// Read, Next and WriteTo each yield the exact stream.
func TestPeerSendsOneByteAtATime(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const total = 6000
	ln := listenZC(t)
	defer ln.Close()
	conns := acceptAll(ln)
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			p, c := dialPeer(t, ln, conns, false)
			defer c.Close()
			p.SetNoDelay(true)
			sent := make(chan error, 1)
			go func() {
				defer p.Close()
				pat := zcsend.PatternBytes()
				for i := range total {
					if _, err := p.Write(pat[i : i+1]); err != nil {
						sent <- err
						return
					}
				}
				sent <- p.CloseWrite()
			}()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			n, err := drainPattern(c, kind, 4096, rand.New(rand.NewPCG(uint64(kind), 1)))
			if err != nil || n != total {
				t.Fatalf("got %d of %d bytes: %v", n, total, err)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			t.Logf("%d one-byte segments, stream exact; stats %+v", total, c.Stats())
		})
	}
}

// TestPeerResets is fed by a peer that sends a stream, waits until it is acknowledged and
// then resets the conn (SO_LINGER 0), mappable and not, with the receiver reading all
// along or only after the reset arrived (the stream then sits in the receive queue behind
// the reset). It proves that Read, Next and WriteTo yield every byte sent before the
// reset, exactly, and then an error satisfying errors.Is(err, syscall.ECONNRESET), as
// net.TCPConn does.
func TestPeerResets(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln := listenZC(t)
	defer ln.Close()
	conns := acceptAll(ln)
	for _, mappable := range []bool{true, false} {
		for _, late := range []bool{false, true} {
			for kind := range readKinds {
				name := fmt.Sprintf("%v/mappable=%v/late=%v", kind, mappable, late)
				t.Run(name, func(t *testing.T) {
					testPeerReset(t, ln, conns, kind, mappable, late)
				})
			}
		}
	}
}

func testPeerReset(t *testing.T, ln *Listener, conns <-chan *Conn, kind readKind, mappable, late bool) {
	total := int64(3<<20 + 1234)
	if late {
		total = 256<<10 + 1234 // must fit the receive buffer unread
	}
	p, c := dialPeer(t, ln, conns, mappable)
	defer c.Close()
	if late {
		if err := c.SetReadBuffer(4 << 20); err != nil {
			t.Fatal(err)
		}
	}
	reset := make(chan error, 1)
	go func() {
		err := writePattern(p, 0, total, mappable)
		if err == nil {
			err = waitPeerAcked(p)
		}
		p.SetLinger(0)
		p.Close()
		reset <- err
	}()
	if late {
		if err := <-reset; err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the reset is on loopback: it has arrived
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := drainPattern(c, kind, 256<<10, rand.New(rand.NewPCG(uint64(kind), 2)))
	if !late {
		if err := <-reset; err != nil {
			t.Fatal(err)
		}
	}
	st := c.Stats()
	if n != total || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("got %d of %d bytes, then %v; want all, then ECONNRESET; stats %+v", n, total, err, st)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Errorf("error %T is not a *net.OpError", err)
	}
	if mappable && Supported() == nil && st.MappedBytes == 0 {
		t.Errorf("no byte mapped from a mappable peer: %+v", st)
	}
	t.Logf("%d bytes exact, then %v; mapped %d", n, err, st.MappedBytes)
}

// TestPeerNeverSends is fed by a peer that connects and sends nothing. It proves that
// Read, Next and WriteTo block until the read deadline (returning a timeout, not before
// it) and, with no deadline, until Close (returning net.ErrClosed), with nothing read.
func TestPeerNeverSends(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln := listenZC(t)
	defer ln.Close()
	conns := acceptAll(ln)
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			p, c := dialPeer(t, ln, conns, true)
			defer p.Close()
			defer c.Close()
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

// TestPeerHalfCloses is fed by a peer that sends a stream and shuts down its sending side
// (CloseWrite), then waits for a reply. It proves that Read, Next and WriteTo yield the
// exact stream and then io.EOF (again on the next call), that the conn can still write
// back to the peer after the EOF, and that meanwhile its ring keeps no mapped page
// resident (a conn kept open after its stream ended pins no socket memory).
func TestPeerHalfCloses(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln := listenZC(t)
	defer ln.Close()
	conns := acceptAll(ln)
	for _, mappable := range []bool{true, false} {
		for kind := range readKinds {
			t.Run(fmt.Sprintf("%v/mappable=%v", kind, mappable), func(t *testing.T) {
				total := int64(1<<20 + 777)
				p, c := dialPeer(t, ln, conns, mappable)
				defer p.Close()
				defer c.Close()
				sent := make(chan error, 1)
				go func() {
					err := writePattern(p, 0, total, mappable)
					if err == nil {
						err = p.CloseWrite()
					}
					sent <- err
				}()
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				n, err := drainPattern(c, kind, 128<<10, rand.New(rand.NewPCG(uint64(kind), 3)))
				if err != nil || n != total {
					t.Fatalf("got %d of %d bytes: %v", n, total, err)
				}
				if err := <-sent; err != nil {
					t.Fatal(err)
				}
				if k, err := c.Read(make([]byte, 10)); k != 0 || err != io.EOF {
					t.Fatalf("Read after EOF: %d, %v; want 0, io.EOF", k, err)
				}
				if rss, ok := ringRssKiB(t, socketInode(t, c)); rss != 0 {
					t.Errorf("after EOF the ring keeps %d KiB of mapped pages resident; stats %+v", rss, c.Stats())
				} else if mappable && Supported() == nil && !ok {
					t.Errorf("no ring: the mappable stream was not mapped; stats %+v", c.Stats())
				}
				reply := []byte("received " + strconv.FormatInt(n, 10) + " bytes")
				if _, err := c.Write(reply); err != nil {
					t.Fatalf("write after the peer's half-close: %v", err)
				}
				c.CloseWrite()
				p.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(p)
				if err != nil || string(got) != string(reply) {
					t.Fatalf("peer read %q, %v; want %q", got, err, reply)
				}
			})
		}
	}
}

// socketInode returns the inode of c's socket, which names its ring in /proc/self/maps.
func socketInode(t *testing.T, c *Conn) uint64 {
	t.Helper()
	rc, err := c.tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// ringRssKiB returns the resident size of the VMAs mapping the socket with inode ino (a
// conn's ring) from /proc/self/smaps, and whether there is one.
func ringRssKiB(t *testing.T, ino uint64) (int64, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	name := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	var rss int64
	found, in := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[5] == name
			found = found || in
			continue
		}
		if rest, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			k, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			rss += k
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rss, found
}

// TestIdleConnPinsNoMappedPages plays slowloris: a mappable peer sends a burst, the
// server consumes it, and the peer then goes quiet or trickles a byte at a time. It
// measures the resident size of the conn's ring VMA in /proc/self/smaps: while a Next
// view holds mapped bytes it is at least their size (the measurement sees mapped pages),
// and once every mapped byte is consumed and the server waits for more, it is zero: an
// idle conn pins no socket memory however long it stays.
func TestIdleConnPinsNoMappedPages(t *testing.T) {
	requireSupported(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln := listenZC(t)
	defer ln.Close()
	conns := acceptAll(ln)
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			const burst = 1 << 20
			p, c := dialPeer(t, ln, conns, true)
			defer p.Close()
			defer c.Close()
			ino := socketInode(t, c)
			if err := writePattern(p, 0, burst, true); err != nil {
				t.Fatal(err)
			}
			// Positive control: a view of 512 KiB of mapped bytes keeps them resident.
			w := &patternWriter{}
			v, err := c.Next(512 << 10)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(v)
			rss, ok := ringRssKiB(t, ino)
			if !ok {
				t.Fatalf("no ring VMA for socket %d after a mapped Next; stats %+v", ino, c.Stats())
			}
			if c.Stats().MappedBytes >= 512<<10 && rss < 512 {
				t.Fatalf("ring resident %d KiB while a 512 KiB mapped view is held; stats %+v", rss, c.Stats())
			}
			t.Logf("ring resident %d KiB with a 512 KiB view held", rss)

			// Consume the rest, then wait for bytes that come one at a time, slowly.
			// Read and WriteTo consume everything and must then hold no mapped page.
			// Next takes 5000 bytes at a time and ends up waiting for 712 bytes more
			// than the 4288 it holds: only the two pages of those may stay resident.
			const nextSize = 5000
			res := make(chan error, 1)
			go func() {
				var err error
				if kind == byNext {
					for err == nil {
						var v []byte
						v, err = c.Next(nextSize)
						w.Write(v)
					}
					if err == io.ErrUnexpectedEOF {
						err = nil
					}
				} else {
					_, err = drainPatternTo(c, kind, w, 64<<10, rand.New(rand.NewPCG(uint64(kind), 4)))
				}
				res <- err
			}()
			for i := range 4 {
				consumed, maxKiB := int64(burst+i), int64(0)
				if kind == byNext {
					consumed = burst/2 + (burst/2)/nextSize*nextSize
					maxKiB = int64(2 * pageSize >> 10)
				}
				rss := waitRingIdle(t, ino, w, consumed, maxKiB)
				t.Logf("%d bytes sent, %d consumed, waiting: ring resident %d KiB", burst+i, w.done.Load(), rss)
				if rss > maxKiB {
					t.Fatalf("a conn waiting for bytes keeps %d KiB of mapped pages resident (at most %d KiB hold unconsumed bytes); stats %+v", rss, maxKiB, c.Stats())
				}
				if _, err := p.Write([]byte{zcsend.Pattern(int64(burst + i))}); err != nil {
					t.Fatal(err)
				}
			}
			p.CloseWrite()
			if err := <-res; err != nil {
				t.Fatal(err)
			}
			if w.err != nil || w.off != burst+4 {
				t.Fatalf("stream: %d bytes, %v", w.off, w.err)
			}
		})
	}
}

// waitRingIdle waits (up to 5s) until the reader has consumed want bytes and then (up to
// 0.5s) until the ring's resident size is at most maxKiB; it returns that size.
func waitRingIdle(t *testing.T, ino uint64, w *patternWriter, want, maxKiB int64) int64 {
	t.Helper()
	for range 500 {
		if w.done.Load() >= want {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var rss int64
	for range 50 {
		time.Sleep(10 * time.Millisecond)
		rss, _ = ringRssKiB(t, ino)
		if rss <= maxKiB {
			return rss
		}
	}
	return rss
}
