//go:build linux

package zcnet

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// acceptAll accepts conns on ln until it is closed and hands them out on the returned
// channel, which is closed when the accept loop ends.
func acceptAll(ln *Listener) <-chan *Conn {
	ch := make(chan *Conn, 64)
	go func() {
		defer close(ch)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- nc.(*Conn)
		}
	}()
	return ch
}

// listenZC listens on 127.0.0.1 with ModeZeroCopy and a page-sized MSS.
func listenZC(t testing.TB) *Listener {
	t.Helper()
	lc := ListenConfig{Options: Options{Mode: ModeZeroCopy, PageAlignedMSS: true}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestCloseRacesReads closes conns 10,000 times while a Read, Next or WriteTo runs on
// them, at random moments: while bytes are being mapped or copied, while the call waits
// for more, or just as it returns. Half the peers send mappable pages, so that Close
// races the ring. It proves that the racing call returns either the exact stream bytes
// or net.ErrClosed (or io.EOF when the stream ended first), that touching a Next view
// while Close runs never faults, that no ring stays mapped and that no goroutine leaks.
// Meant for -race as well as for the plain build; -zcnet.long runs 100,000 rounds.
func TestCloseRacesReads(t *testing.T) {
	rounds, limit := 10000, 60*time.Second
	if *longRuns {
		rounds, limit = 100000, 15*time.Minute
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, ringsBase := mapsCount(t)

	var (
		next     atomic.Int64
		failures atomic.Int64
		closed   [readKinds]atomic.Int64 // calls that ended with net.ErrClosed
		total    atomic.Int64            // stream bytes verified
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	var st Stats
	var stMu sync.Mutex
	for w := range 8 {
		// One listener per worker, so that its next accepted conn is the one it dialed.
		ln := listenZC(t)
		defer ln.Close()
		conns := acceptAll(ln)
		addr := ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				ln.Close()
				for range conns {
				}
				stMu.Lock()
				st.Add(ln.Stats())
				stMu.Unlock()
			}()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for failures.Load() == 0 && time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= rounds {
					return
				}
				mappable := i%2 == 0
				kind := readKind(i / 2 % int(readKinds))
				payload := int64(4096 * (1 + rnd.IntN(16)))
				if !mappable {
					payload += int64(rnd.IntN(4096))
				}
				var cc *net.TCPConn
				var err error
				opts := zcsend.Options{PageMSS: true, ZeroCopy: true}
				if mappable {
					cc, err = zcsend.Dial(context.Background(), addr, opts)
				} else {
					var nc net.Conn
					if nc, err = net.Dial("tcp", addr); err == nil {
						cc = nc.(*net.TCPConn)
					}
				}
				if err != nil {
					fail("round %d: dial: %v", i, err)
					return
				}
				sent := make(chan error, 1)
				if mappable {
					go func() { sent <- zcsend.Send(cc, payload, opts) }()
				} else {
					// Small enough for the socket buffers: the write completes without
					// a reader. The conn stays open, so the reader ends up waiting.
					sent <- sendPlain(cc, payload, rnd)
				}
				c, ok := <-conns
				if !ok {
					fail("round %d: listener closed", i)
					return
				}
				res := make(chan error, 1)
				var got int64
				go func() {
					var err error
					rnd := rand.New(rand.NewPCG(uint64(i), 1))
					switch kind {
					case byNext:
						// Touch every view byte: Close may swap the pages underneath,
						// which must read as zeros, never fault.
						var sum byte
						for err == nil {
							var v []byte
							v, err = c.Next(1 + rnd.IntN(16<<10))
							for _, b := range v {
								sum += b
							}
							got += int64(len(v))
						}
						_ = sum
					default:
						got, err = drainPattern(c, kind, 16<<10, rnd)
					}
					res <- err
				}()
				if d := rnd.IntN(400); d > 0 {
					time.Sleep(time.Duration(d) * time.Microsecond)
				}
				if err := c.Close(); err != nil {
					fail("round %d: Close: %v", i, err)
				}
				err = <-res
				switch {
				case errors.Is(err, net.ErrClosed):
					closed[kind].Add(1)
				case err == nil || err == io.EOF || err == io.ErrUnexpectedEOF:
				default:
					fail("round %d (%v, mappable %v): after %d bytes: %v", i, kind, mappable, got, err)
				}
				if got > payload {
					fail("round %d (%v): got %d bytes of %d", i, kind, got, payload)
				}
				total.Add(got)
				cc.Close()
				if err := <-sent; err != nil && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
					fail("round %d: send: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	done := min(int(next.Load()), rounds)
	if done < rounds && failures.Load() == 0 {
		t.Fatalf("only %d of %d rounds in %v", done, rounds, limit)
	}
	t.Logf("%d rounds; calls ended by Close: Read %d, Next %d, WriteTo %d; %d stream bytes received (%d mapped)",
		done, closed[byRead].Load(), closed[byNext].Load(), closed[byWriteTo].Load(), total.Load(), st.MappedBytes)
	if _, rings := mapsCount(t); rings != ringsBase {
		t.Errorf("%d rings still mapped after every conn was closed", rings-ringsBase)
	}
	if Supported() == nil && st.MappedBytes == 0 {
		t.Errorf("no byte was mapped: the race never involved the ring: %+v", st)
	}
}

// isConnReset reports whether err is a connection reset, a broken pipe or a shutdown of
// a reset conn: what a sender sees when the receiver closes with bytes unread.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ENOTCONN)
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

type callResult struct {
	data []byte
	err  error
}

type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// isTimeout reports whether err is a read deadline expiry as net.TCPConn reports it.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// TestReadDeadlineMovedWhileBlocked changes the read deadline while a Read, Next or
// WriteTo waits for bytes that do not come. It proves that moving the deadline earlier
// wakes the call with a timeout soon after the new deadline, and that extending it keeps
// the call blocked past the old deadline, until bytes arrive (which it then returns
// exactly).
func TestReadDeadlineMovedWhileBlocked(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ln := listenZC(t)
	defer ln.Close()
	conns := acceptAll(ln)
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			// Earlier: from an hour away to 50ms away.
			peer, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			c := <-conns
			defer c.Close()
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
				peer.(*net.TCPConn).CloseWrite() // WriteTo returns at EOF
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

// TestDeadlineFlipsKeepStream receives streams while another goroutine keeps moving the
// read deadline between the near past, the near future and none, so that Read, Next and
// WriteTo time out over and over in every state of the read path: a fast mappable stream
// (timeouts with mapped bytes pending) and a bursty one with pauses (timeouts while
// waiting in the poller). It proves that a timeout never loses, repeats or reorders a
// byte: retrying after each timeout yields the exact stream.
func TestDeadlineFlipsKeepStream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const total = 32 << 20
	ln := listenZC(t)
	defer ln.Close()
	conns := acceptAll(ln)
	for _, bursty := range []bool{false, true} {
		for kind := range readKinds {
			name := kind.String() + "/fast"
			if bursty {
				name = kind.String() + "/bursty"
			}
			t.Run(name, func(t *testing.T) {
				testDeadlineFlips(t, ln.Addr().String(), conns, kind, bursty, total)
			})
		}
	}
}

func testDeadlineFlips(t *testing.T, addr string, conns <-chan *Conn, kind readKind, bursty bool, total int64) {
	var sent <-chan error
	if bursty {
		total /= 8
		ch := make(chan error, 1)
		sent = ch
		peer, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer peer.Close()
			rnd := rand.New(rand.NewPCG(uint64(kind), 11))
			pat := zcsend.PatternBytes()
			var off int64
			for off < total {
				o := int(off % zcsend.Period)
				k := min(int64(1+rnd.IntN(32<<10)), total-off, int64(len(pat)-o))
				n, err := peer.Write(pat[o : o+int(k)])
				off += int64(n)
				if err != nil {
					ch <- err
					return
				}
				time.Sleep(time.Duration(rnd.IntN(300)) * time.Microsecond)
			}
			peer.(*net.TCPConn).CloseWrite()
			_, err := io.Copy(io.Discard, peer)
			ch <- err
		}()
	} else {
		sent = sendMappable(t, addr, total)
	}
	c := <-conns
	// Start with a call under a past deadline, so that at least one times out even when
	// the stream is over before the flipper's first change.
	c.SetReadDeadline(time.Now().Add(-time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("Read under a past deadline: %v, want a timeout", err)
	}
	stop := make(chan struct{})
	flipped := make(chan struct{})
	go func() {
		defer close(flipped)
		rnd := rand.New(rand.NewPCG(uint64(kind), 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			switch rnd.IntN(4) {
			case 0, 1:
				c.SetReadDeadline(time.Now().Add(-time.Millisecond))
			case 2:
				c.SetReadDeadline(time.Now().Add(time.Duration(rnd.IntN(300)) * time.Microsecond))
			default:
				c.SetReadDeadline(time.Time{})
			}
			time.Sleep(time.Duration(rnd.IntN(200)) * time.Microsecond)
		}
	}()
	w := &patternWriter{}
	rnd := rand.New(rand.NewPCG(uint64(kind), 10))
	buf := make([]byte, 256<<10)
	timeouts := 1
	end := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(end) {
		switch kind {
		case byRead:
			var n int
			n, err = c.Read(buf[:1+rnd.IntN(len(buf))])
			w.Write(buf[:n])
		case byNext:
			var v []byte
			v, err = c.Next(1 + rnd.IntN(256<<10))
			w.Write(v)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
		default:
			_, err = c.WriteTo(w)
			if err == nil {
				err = io.EOF
			}
		}
		if w.err != nil {
			break
		}
		if isTimeout(err) {
			timeouts++
			continue
		}
		if err != nil {
			break
		}
	}
	close(stop)
	<-flipped
	c.Close()
	if serr := <-sent; serr != nil {
		t.Errorf("sender: %v", serr)
	}
	st := c.Stats()
	t.Logf("%d bytes exact across %d timeouts; stats %+v", w.off, timeouts, st)
	if w.err != nil {
		t.Fatal(w.err)
	}
	if err != io.EOF || w.off != total {
		t.Fatalf("stream ended after %d of %d bytes with %v", w.off, total, err)
	}
	if timeouts == 0 {
		t.Errorf("no call timed out: the test did not exercise deadlines")
	}
}
