//go:build linux

package zcnet

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests of batched wake-ups on real sockets: what wakes a batched wait (the stream's
// end, a reset, Close, the deadline, the bound), a bound racing Close, and the window,
// which a mark must never clamp. The fake kernel covers the rest (TestFakeBatching,
// FuzzReadPath).

// handTimer is a batching timer that fires only when the test says.
type handTimer struct {
	mu sync.Mutex
	f  func()
}

func (h *handTimer) Reset(time.Duration) bool { return true }
func (h *handTimer) Stop() bool               { return true }

// fire runs the batcher's function as its timer would.
func (h *handTimer) fire() {
	h.mu.Lock()
	f := h.f
	h.mu.Unlock()
	if f != nil { // nil until the batcher arms its first bound
		f()
	}
}

// sockInt reads an int socket option of c's socket (through the TCPConn: the Conn's
// SyscallConn would wait for the Read under test).
func sockInt(t testing.TB, c *Conn, level, opt int) int {
	t.Helper()
	return sockoptInt(t, c.tc, level, opt)
}

// batchReady makes c's next bulk Read batch, with a bound that only h ends: see
// batchStart.
func batchReady(t *testing.T, c *Conn) *handTimer {
	t.Helper()
	batchStart(t, c)
	h := &handTimer{}
	b := &c.f.batch
	b.after = func(_ time.Duration, f func()) batchTimer {
		h.mu.Lock()
		h.f = f
		h.mu.Unlock()
		return h
	}
	return h
}

// batchStart makes c's next bulk fill that waits batch: the socket gets a fixed 4 MiB
// receive buffer (so that a mark of up to 1 MiB cannot clamp anything), and the batcher
// takes the stream to stream fast (until it measures otherwise).
func batchStart(t *testing.T, c *Conn) {
	t.Helper()
	if err := c.tc.SetReadBuffer(2 << 20); err != nil {
		t.Fatal(err)
	}
	c.f.batch.streams, c.f.batch.ns = true, 0.01
}

// parkedRead starts Read(512 KiB) on c and returns once it waits under a raised mark;
// the channel yields what the Read returned.
func parkedRead(t *testing.T, c *Conn) <-chan readResult {
	t.Helper()
	done, _ := parkedReadInto(t, c, make([]byte, 512<<10), 1)
	return done
}

// parkedReadInto starts Read(buf) on c and returns once it waits under a mark above
// above, and that mark; the channel yields what the Read returned.
func parkedReadInto(t *testing.T, c *Conn, buf []byte, above int) (<-chan readResult, int) {
	t.Helper()
	done := make(chan readResult, 1)
	go func() {
		n, err := c.Read(buf)
		done <- readResult{buf[:n], err}
	}()
	mark := 0
	for end := time.Now().Add(10 * time.Second); mark <= above; mark = sockInt(t, c, unix.SOL_SOCKET, unix.SO_RCVLOWAT) {
		select {
		case r := <-done:
			t.Fatalf("Read returned %d bytes, %v before it waited under a mark above %d", len(r.p), r.err, above)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("Read did not wait under a mark above %d (SO_RCVLOWAT %d); stats %+v", above, mark, c.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	return done, mark
}

type readResult struct {
	p   []byte
	err error
}

// TestBatchedWaitWakes parks a Read under a mark of 512 KiB whose bound never fires, and
// proves that the stream's end, a reset, Close and the read deadline each end the wait on
// their own, as the kernel wakes a reader for them whatever the mark.
func TestBatchedWaitWakes(t *testing.T) {
	cases := []struct {
		name  string
		do    func(c *Conn, sc *net.TCPConn)
		check func(t *testing.T, r readResult)
	}{
		{"fin", func(_ *Conn, sc *net.TCPConn) { sc.CloseWrite() }, func(t *testing.T, r readResult) {
			if len(r.p) != 0 || r.err != io.EOF {
				t.Fatalf("Read = %d bytes, %v; want io.EOF", len(r.p), r.err)
			}
		}},
		{"reset", func(_ *Conn, sc *net.TCPConn) { sc.SetLinger(0); sc.Close() }, func(t *testing.T, r readResult) {
			checkReset(t, r.err)
		}},
		{"close", func(c *Conn, _ *net.TCPConn) { c.Close() }, func(t *testing.T, r readResult) {
			if !errors.Is(r.err, net.ErrClosed) {
				t.Fatalf("Read = %v, want net.ErrClosed", r.err)
			}
		}},
		{"deadline", func(c *Conn, _ *net.TCPConn) { c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) }, func(t *testing.T, r readResult) {
			checkTimeout(t, r.err)
		}},
	}
	for _, m := range modes {
		for _, tc := range cases {
			t.Run(m.String()+"/"+tc.name, func(t *testing.T) {
				c, sc := pairWith(t, Options{Mode: m}, false)
				batchReady(t, c)
				done := parkedRead(t, c)
				tc.do(c, sc)
				tc.check(t, <-done)
				if st := c.Stats(); st.BatchedWaits != 1 || st.BoundedWaits != 0 {
					t.Fatalf("stats %+v: want one batched wait, none bounded", st)
				}
			})
		}
	}
}

// TestBatchedWaitBound parks a Read under a raised mark, lets the peer send 200 bytes
// and wait, and fires the bound: the Read returns the 200 bytes, the stats count the
// bounded wait, and the next wait does not batch (the stream does not stream).
func TestBatchedWaitBound(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			c, sc := pairWith(t, Options{Mode: m}, false)
			h := batchReady(t, c)
			done := parkedRead(t, c)
			if err := writeStream(sc, 0, 200, false); err != nil {
				t.Fatal(err)
			}
			for sockInt(t, c, unix.SOL_SOCKET, unix.SO_RCVLOWAT) > 1 {
				h.fire() // does nothing until the bound is due
				time.Sleep(100 * time.Microsecond)
			}
			r := <-done
			if r.err != nil || len(r.p) != 200 {
				t.Fatalf("Read = %d bytes, %v; want 200", len(r.p), r.err)
			}
			if err := patternErr(0, r.p); err != nil {
				t.Fatal(err)
			}
			if st := c.Stats(); st.BatchedWaits != 1 || st.BoundedWaits != 1 {
				t.Fatalf("stats %+v: want one batched wait, ended by its bound", st)
			}
			go writeStream(sc, 200, 100, false)
			buf := make([]byte, 512<<10)
			if n, err := c.Read(buf); err != nil || patternErr(200, buf[:n]) != nil {
				t.Fatalf("Read = %d, %v", n, err)
			}
			if st := c.Stats(); st.BatchedWaits != 1 {
				t.Fatalf("stats %+v: a wait batched after a short fill", st)
			}
		})
	}
}

// TestBatchBoundRacesClose fires the bound of a parked Read while another goroutine
// closes the conn, many times: the timer's function reaches the socket only through
// RawConn.Control, so it never touches a closed descriptor, and the Read ends with
// net.ErrClosed (run it with -race).
func TestBatchBoundRacesClose(t *testing.T) {
	for i := range 20 {
		c, _ := pairWith(t, Options{Mode: ModeCopy}, false)
		h := batchReady(t, c)
		done := parkedRead(t, c)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); h.fire() }()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 10 * time.Microsecond)
			c.Close()
		}()
		wg.Wait()
		h.fire() // a stale firing after Close
		if r := <-done; !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Read = %d bytes, %v; want net.ErrClosed", len(r.p), r.err)
		}
	}
}

// TestBatchKeepsWindow streams 32 MiB into Reads of 1 MiB that batch, and checks around
// every SO_RCVLOWAT the conn sets that the kernel's window clamp and SO_RCVBUF do not move:
// tcp_set_rcvlowat clamps the window to the mark when the mark needs more buffer than
// SO_RCVBUF, which the batcher's cap (a quarter of SO_RCVBUF) avoids. A mark set the naive
// way on a fresh conn shows the kernel does clamp.
func TestBatchKeepsWindow(t *testing.T) {
	const total = 32 << 20
	ln := loopbackListen(t, false)
	defer ln.Close()
	sys := linuxSys
	var marks, moved int
	sys.setRcvlowat = func(fd, n int) error {
		clamp0, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP)
		buf0, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		err := linuxSys.setRcvlowat(fd, n)
		clamp1, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP)
		buf1, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		if n > 1 {
			marks++
			if clamp1 != clamp0 || buf1 != buf0 {
				moved++
				t.Errorf("SO_RCVLOWAT %d moved the window clamp %d -> %d, SO_RCVBUF %d -> %d", n, clamp0, clamp1, buf0, buf1)
			}
		}
		return err
	}
	// A paced sender, so that the reader waits (also under the race detector: the
	// reader checks a sha256 of the stream, not each byte in Go).
	sent := sendPattern(dialSender(t, ln.Addr().String(), false), total, patternSender{maxWrite: 512 << 10, pause: time.Millisecond})
	c := acceptConn(t, seamListener{ln, Options{Mode: ModeCopy}, &sys})
	buf := make([]byte, 1<<20)
	h := sha256.New()
	var off int64
	for {
		// Whatever this machine's load makes of the measured rate, take the stream to
		// stream fast, with no hold after a bounded wait, so that every wait batches as
		// far as the cap lets it.
		c.f.batch.streams, c.f.batch.ns, c.f.batch.hold = true, 0.01, 0
		n, err := c.Read(buf)
		h.Write(buf[:n])
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := patternSum(total); off != total || string(h.Sum(nil)) != string(want[:]) {
		t.Fatalf("received %d bytes, want %d; sha256 matches: %v", off, total, string(h.Sum(nil)) == string(want[:]))
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.BatchedWaits == 0 || marks == 0 {
		t.Fatalf("no wait batched (%d marks set); stats %+v", marks, st)
	}
	t.Logf("%d marks, %d batched of %d waits, SO_RCVBUF now %d", marks, st.BatchedWaits, st.Waits,
		sockInt(t, c, unix.SOL_SOCKET, unix.SO_RCVBUF))

	// The kernel's rule, on a fresh conn: a mark above what SO_RCVBUF can hold clamps.
	nc := dialSender(t, ln.Addr().String(), false)
	fresh := acceptConn(t, seamListener{ln, Options{Mode: ModeCopy}, nil})
	_ = nc
	clamp0 := sockInt(t, fresh, unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP)
	rc, _ := fresh.tc.SyscallConn()
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, 4<<20) })
	if clamp1 := sockInt(t, fresh, unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP); clamp1 == clamp0 {
		t.Logf("a naive mark of 4 MiB left the window clamp at %d on this kernel", clamp1)
	} else {
		t.Logf("a naive mark of 4 MiB moved the window clamp %d -> %d", clamp0, clamp1)
	}
}

// TestSpliceLoop copies a paced stream with io.Copy into a file, a TCP conn and a file
// opened for appending (which splice refuses: WriteTo copies into it), and
// checks the whole stream at the other end; the first two go through the conn's own
// splice loop, whose fills batch their waits (batchStart makes the first one batch).
func TestSpliceLoop(t *testing.T) {
	const total = 24 << 20
	for _, to := range []string{"file", "tcp", "append"} {
		t.Run(to, func(t *testing.T) {
			c, sc := pairWith(t, Options{Mode: ModeCopy}, false)
			sent := sendPattern(sc, total, patternSender{maxWrite: 512 << 10, pause: 300 * time.Microsecond})
			var dst io.Writer
			var check func() error
			switch to {
			case "tcp":
				ln := loopbackListen(t, false)
				defer ln.Close()
				got := make(chan error, 1)
				go func() {
					nc, err := ln.Accept()
					if err == nil {
						defer nc.Close()
						err = readPattern(nc, 0, total)
					}
					got <- err
				}()
				bc, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer bc.Close()
				dst = bc
				check = func() error { bc.(*net.TCPConn).CloseWrite(); return <-got }
			default:
				flag := os.O_RDWR | os.O_CREATE
				if to == "append" {
					flag |= os.O_APPEND
				}
				f, err := os.OpenFile(filepath.Join(t.TempDir(), "sink"), flag, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				dst = f
				check = func() error { return wlCheckFile(f, total) }
			}
			batchStart(t, c)
			n, err := io.Copy(dst, c)
			if err != nil || n != total {
				t.Fatalf("io.Copy = %d, %v; want %d", n, err, total)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if err := check(); err != nil {
				t.Fatal(err)
			}
			st := c.Stats()
			switch {
			case to != "append" && st.SplicedBytes != total:
				t.Fatalf("spliced %d bytes, want %d: %+v", st.SplicedBytes, total, st)
			case to != "append" && st.BatchedWaits == 0:
				t.Fatalf("no wait batched: %+v", st)
			case to == "append" && st.SplicedBytes != 0:
				t.Fatalf("spliced %d bytes into a file opened for appending", st.SplicedBytes)
			}
			t.Logf("%d waits, %d batched, %d bounded", st.Waits, st.BatchedWaits, st.BoundedWaits)
		})
	}
}

// TestSmallReadsBatch: a Read under batchMin after one whose recv filled its buffer, on a
// stream that streams, receives into the pooled read-ahead with a batched wait: the
// socket's SO_RCVLOWAT rises above the Read's own size while it waits, the sender's next
// bytes end the wait, and the Reads that follow are served from the read-ahead. The
// whole stream's sha256 is checked.
func TestSmallReadsBatch(t *testing.T) {
	const rest = 4 << 20
	for _, m := range []Mode{ModeAuto, ModeCopy} {
		for _, size := range []int{16 << 10, 64 << 10, 100 << 10} {
			t.Run(fmt.Sprintf("%v/%dKiB", m, size>>10), func(t *testing.T) {
				c, sc := pairWith(t, Options{Mode: m}, false)
				batchReady(t, c) // (a bound that never fires: the sender ends the wait)
				// (and its FIN: the last write may come after the reader drained the rest)
				if err := c.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				buf := make([]byte, size)
				// One Read that fills buf.
				if err := writeStream(sc, 0, int64(size), false); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Fatal(err)
				}
				h.Write(buf)
				// The next one waits under a raised mark, until the rest comes.
				done, mark := parkedReadInto(t, c, buf, size)
				sent := make(chan error, 1)
				go func() {
					err := writeStream(sc, int64(size), rest, false)
					if cerr := sc.CloseWrite(); err == nil {
						err = cerr
					}
					sent <- err
				}()
				r := <-done
				if r.err != nil {
					t.Fatal(r.err)
				}
				h.Write(r.p)
				got := size + len(r.p)
				for got < size+rest {
					n, err := c.Read(buf)
					if n > len(buf) {
						t.Fatalf("Read returned %d bytes into %d", n, len(buf))
					}
					h.Write(buf[:n])
					if got += n; err != nil {
						t.Fatalf("Read after %d bytes: %v", got, err)
					}
				}
				if err := <-sent; err != nil {
					t.Fatal(err)
				}
				if want := patternSum(int64(size) + rest); string(h.Sum(nil)) != string(want[:]) {
					t.Fatal("the stream's sha256 differs from the pattern's")
				}
				if st := c.Stats(); st.BatchedWaits == 0 || st.BoundedWaits != 0 {
					t.Fatalf("%d waits counted as batched, %d as bounded: %+v", st.BatchedWaits, st.BoundedWaits, st)
				}
				t.Logf("a Read of %d KiB waited under a mark of %d KiB; %+v", size>>10, mark>>10, c.Stats())
			})
		}
	}
}

// TestPlainReadAfterMarkFailure: when lowering SO_RCVLOWAT after a Next fails once, the
// mark in force is unknown, and the next Read that must wait sets it again instead of
// waiting through the TCPConn under the Next's mark: a message shorter than that mark
// still arrives.
func TestPlainReadAfterMarkFailure(t *testing.T) {
	ln := loopbackListen(t, false)
	defer ln.Close()
	sys := linuxSys
	var fail atomic.Bool
	failed := make(chan struct{}, 1)
	sys.setRcvlowat = func(fd, n int) error {
		if fail.CompareAndSwap(true, false) {
			failed <- struct{}{}
			return unix.ENOMEM
		}
		return linuxSys.setRcvlowat(fd, n)
	}
	sc := dialSender(t, ln.Addr().String(), false)
	c := acceptConn(t, seamListener{ln, Options{Mode: ModeCopy}, &sys})
	w := &patternWriter{}
	var off int64
	send := func(n int64) {
		t.Helper()
		if err := writeStream(sc, off, n, false); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	// waiting runs read in a goroutine and returns its result once it has started to
	// wait (the socket's mark is mark, or, with mark 0, the mark's setting failed),
	// after send.
	waiting := func(read func() ([]byte, error), mark int, n int64) readResult {
		t.Helper()
		done := make(chan readResult, 1)
		go func() {
			p, err := read()
			done <- readResult{p, err}
		}()
		if mark == 0 {
			select {
			case <-failed:
			case <-time.After(10 * time.Second):
				t.Fatal("the read did not try to lower the mark")
			}
		}
		for end := time.Now().Add(10 * time.Second); mark != 0 && sockInt(t, c, unix.SOL_SOCKET, unix.SO_RCVLOWAT) != mark; {
			if time.Now().After(end) {
				t.Fatalf("the read did not wait under a mark of %d", mark)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // (the mark is set just before the wait)
		send(n)
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if _, err := w.Write(r.p); err != nil {
			t.Fatal(err)
		}
		return r
	}
	buf := make([]byte, 4<<10)
	read := func() ([]byte, error) {
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return nil, err
		}
		n, err := c.Read(buf)
		return buf[:n], err
	}
	waiting(func() ([]byte, error) { return c.Next(100) }, 100, 100)
	fail.Store(true) // the Read's lowering of the mark to 1 fails: it waits under 100
	if r := waiting(read, 0, 200); len(r.p) != 200 {
		t.Fatalf("Read returned %d bytes, want 200", len(r.p))
	}
	if r := waiting(read, 1, 10); len(r.p) != 10 {
		t.Fatalf("Read returned %d bytes, want 10", len(r.p))
	}
}

// handBatcher is a batcher with no socket: its clock is *clock, its timer h, its
// setsockopt SO_RCVLOWAT lowat, SO_RCVBUF 8 MiB, and its stream taken to stream at
// 0.2 ns per byte.
func handBatcher(clock *time.Duration, h *handTimer, lowat func(fd, n int) error) *batcher {
	return &batcher{
		ctl:    func(f func(fd uintptr)) error { f(3); return nil },
		lowat:  lowat,
		rcvbuf: func(int) (int, error) { return 8 << 20, nil },
		now:    func() time.Duration { return *clock },
		st:     &counters{},
		after: func(_ time.Duration, f func()) batchTimer {
			h.f = f
			return h
		},
		streams: true,
		ns:      0.2,
	}
}

// TestBatchHold drives a batcher by hand: each wait the bound ends holds batching off for
// holdFirst waits that would batch, four times as many after the next, and each batched
// wait the kernel ends with its mark's bytes shortens the next hold by one.
func TestBatchHold(t *testing.T) {
	const want = 512 << 10
	clock := time.Duration(1)
	h := &handTimer{}
	b := handBatcher(&clock, h, func(fd, n int) error { return nil })
	// fill runs one fill that waits: it reports whether it batched. A batched one is
	// ended by its bound when bounded (and gets a quarter of its mark), else by the
	// kernel with the mark's bytes. A plain one takes all it asked: the stream streams.
	fill := func(bounded bool) bool {
		mark := b.park(3, want, 1)
		clock += 100 * time.Microsecond // the wait
		if mark == 1 {
			b.filled(want, want, false, true)
			return false
		}
		b.arm()
		n := mark
		if bounded {
			clock = time.Duration(b.due.Load())
			h.fire()
			n = mark / 4
		}
		if fired, lowered := b.wake(); fired != bounded || lowered != bounded {
			t.Fatalf("wake reports the bound fired: %v (and lowered the mark: %v), want %v", fired, lowered, bounded)
		}
		b.filled(want, n, false, true)
		if bounded {
			b.filled(want, want, false, true) // the next burst streams again
		}
		return true
	}
	// held counts the fills held off after a bounded wait, until one batches again.
	held := func() int {
		if !fill(true) {
			t.Fatal("the stream did not batch")
		}
		n := 0
		for !fill(false) {
			if n++; n > 2*holdMax {
				t.Fatalf("batching never resumed: %+v", b)
			}
		}
		return n
	}
	if n := held(); n != holdFirst {
		t.Fatalf("%d fills held after a first bounded wait, want %d", n, holdFirst)
	}
	// (The fill that ended the hold batched and the kernel ended it: one fill off.)
	if n, want := held(), 4*(holdFirst-1); n != want {
		t.Fatalf("%d fills held after a second bounded wait, want %d", n, want)
	}
	for range 9 {
		if !fill(false) {
			t.Fatal("a stream that batches was held off")
		}
	}
	if n, want := held(), 4*(4*(holdFirst-1)-10); n != want {
		t.Fatalf("%d fills held after ten full batched waits and a bound, want %d", n, want)
	}
	for range 20 {
		held()
	}
	if b.holdLen != holdMax-1 { // (less the full batched wait that ended the last hold)
		t.Fatalf("the hold grew to %d fills, want %d", b.holdLen, holdMax-1)
	}
	st := b.st
	if st.bounded.Load() == 0 || st.batched.Load() <= st.bounded.Load() {
		t.Fatalf("%d batched and %d bounded waits counted", st.batched.Load(), st.bounded.Load())
	}
}

// TestBatchFireFails: a bound whose lowering of the mark fails reports so, so that the
// reader takes the mark in force as unknown (and sets it again before its next wait).
func TestBatchFireFails(t *testing.T) {
	clock := time.Duration(1)
	h := &handTimer{}
	b := handBatcher(&clock, h, func(fd, n int) error { return unix.ENOMEM })
	if mark := b.park(3, 512<<10, 1); mark <= 1 {
		t.Fatalf("park returned mark %d, want a batched one", mark)
	}
	b.arm()
	clock = time.Duration(b.due.Load())
	h.fire()
	if fired, lowered := b.wake(); !fired || lowered {
		t.Fatalf("wake after a firing whose setsockopt failed: fired %v, lowered %v; want true, false", fired, lowered)
	}
}
