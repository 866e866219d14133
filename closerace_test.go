//go:build linux

package zcnet

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Close racing the read path: every read-side call, in every state, closed under it.

// closeRound is one round of TestCloseRacesReads: a reader of kind takes the first total
// pattern bytes from c while c is closed.
type closeRound struct {
	kind      readKind
	total     int64         // pattern bytes the peer sent or sends
	ended     bool          // the peer half-closes after them: the reader may see the end first
	exactNext bool          // Next asks for no more than is left, then for one byte more
	waitAll   bool          // Close once the reader has every byte and waits in the poller
	delay     time.Duration // otherwise, Close after this long
}

// raceClose runs round r on c: it starts the reader, closes c, and returns the bytes the
// reader got, whether it ended with net.ErrClosed, and an error unless the reader got
// at most the bytes sent, in order (Read and WriteTo check them; Next views are only
// touched, since Close may swap their pages underneath, which must read as zeros,
// never fault), and then net.ErrClosed (or the end of the stream when the peer ended
// it).
func raceClose(c *Conn, r closeRound, rnd *rand.Rand) (got int64, closed bool, err error) {
	res := make(chan error, 1)
	w := &patternWriter{}
	var nextOff atomic.Int64
	go func() {
		var err error
		switch r.kind {
		case byNext:
			var off int64
			var sum byte
			for err == nil {
				n := 1 + rnd.IntN(16<<10)
				if r.exactNext {
					n = int(max(1, min(int64(n), r.total-off)))
				}
				var v []byte
				v, err = c.Next(n)
				for _, b := range v {
					sum += b // touch the view: it may be unmapped meanwhile
				}
				off += int64(len(v))
				nextOff.Store(off)
			}
			_ = sum
		default:
			_, err = drainPattern(c, r.kind, w, 16<<10, rnd)
			if err == nil {
				err = io.EOF
			}
		}
		res <- err
	}()
	progress := func() int64 {
		if r.kind == byNext {
			return nextOff.Load()
		}
		return w.done.Load()
	}
	if r.waitAll {
		for progress() < r.total {
			time.Sleep(20 * time.Microsecond)
		}
	} else if r.delay > 0 {
		time.Sleep(r.delay)
	}
	if cerr := c.Close(); cerr != nil {
		err = fmt.Errorf("Close: %w", cerr)
	}
	rerr := <-res
	got = progress()
	switch {
	case errors.Is(rerr, net.ErrClosed):
		closed = true
	case r.ended && (rerr == io.EOF || rerr == io.ErrUnexpectedEOF):
	default:
		err = fmt.Errorf("%v after %d of %d bytes: %v", r.kind, got, r.total, rerr)
	}
	if got > r.total {
		err = fmt.Errorf("%v got %d bytes of %d", r.kind, got, r.total)
	}
	return got, closed, err
}

// TestCloseRacesReads closes conns while a Read, Next or WriteTo runs on them, at varied
// moments: while bytes are being mapped or copied, just as the call returns, or once the
// reader has taken every byte sent and waits in the poller. It proves that the racing
// call returns the exact stream bytes it gets and then net.ErrClosed (or io.EOF when the
// stream ended first), that touching a Next view while Close runs never faults, that no
// ring stays mapped and that no goroutine leaks.
//
// serial/MODE runs 200 rounds (80 under the race detector) one after the other in each
// mode, the peer leaving its conn open, a third of them closing once the reader waits;
// parallel runs 10,000 rounds on 8 workers in ModeZeroCopy, half the peers sending
// mappable pages (so that Close races the ring) and half plain ones, and closes at a
// random moment. Meant for -race as well as for the plain build; -zcnet.long runs
// 100,000 parallel rounds.
func TestCloseRacesReads(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, m := range modes {
		t.Run("serial/"+m.String(), func(t *testing.T) { testCloseSerial(t, m) })
	}
	t.Run("parallel", testCloseParallel)
}

// testCloseSerial runs the serial rounds of TestCloseRacesReads in mode m.
func testCloseSerial(t *testing.T, m Mode) {
	rounds := 200
	if raceEnabled {
		rounds = 80
	}
	mappable := m == ModeZeroCopy && Supported() == nil
	ln := listenLoopback(t, Options{Mode: m, PageAlignedMSS: mappable})
	rnd := rand.New(rand.NewPCG(4, 0))
	for i := range rounds {
		sc := dialSender(t, ln.Addr().String(), mappable)
		c := acceptConn(t, ln)
		// Written before anything reads: keep it well inside the initial receive buffer
		// (the truesize of 4 KiB segments is more than 4 KiB each), or the write blocks.
		r := closeRound{
			kind:      readKind(i / 3 % int(readKinds)),
			total:     rnd.Int64N(64 << 10),
			exactNext: true,
			waitAll:   i%3 == 0,
			delay:     time.Duration(rnd.IntN(3)*50) * time.Microsecond,
		}
		if err := writeStream(sc, 0, r.total, mappable); err != nil {
			t.Fatal(err)
		}
		_, closed, err := raceClose(c, r, rand.New(rand.NewPCG(uint64(i), 4)))
		sc.Close()
		if err == nil && !closed {
			err = errors.New("the call did not end with net.ErrClosed")
		}
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
}

// testCloseParallel runs the parallel rounds of TestCloseRacesReads.
func testCloseParallel(t *testing.T) {
	rounds, limit := 10000, 60*time.Second
	if *longRuns {
		rounds, limit = 100000, 15*time.Minute
	}
	_, ringsBase := mapsCount(t)

	var (
		next     atomic.Int64
		failures atomic.Int64
		closed   [readKinds]atomic.Int64 // calls that ended with net.ErrClosed
		total    atomic.Int64            // stream bytes received
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
		ln := listenLoopback(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true})
		addr := ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				ln.Close()
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
				r := closeRound{
					kind:  readKind(i / 2 % int(readKinds)),
					total: int64(4096 * (1 + rnd.IntN(16))),
					ended: mappable,
				}
				if !mappable {
					r.total += int64(rnd.IntN(4096))
				}
				cc, err := dialPattern(addr, mappable)
				if err != nil {
					fail("round %d: dial: %v", i, err)
					return
				}
				var sent <-chan error
				if mappable {
					sent = sendPattern(cc, r.total, patternSender{zerocopy: true})
				} else {
					// Small enough for the socket buffers: the write completes without
					// a reader. The conn stays open, so the reader ends up waiting.
					s := patternSender{maxWrite: 256 << 10, rnd: rnd, keepOpen: true}
					sent = sendPattern(cc, r.total, s)
					if err := <-sent; err != nil {
						fail("round %d: send: %v", i, err)
						return
					}
				}
				nc, err := ln.Accept()
				if err != nil {
					fail("round %d: accept: %v", i, err)
					return
				}
				r.delay = time.Duration(rnd.IntN(400)) * time.Microsecond
				got, isClosed, err := raceClose(nc.(*Conn), r, rand.New(rand.NewPCG(uint64(i), 1)))
				if err != nil {
					fail("round %d (mappable %v): %v", i, mappable, err)
				}
				if isClosed {
					closed[r.kind].Add(1)
				}
				total.Add(got)
				cc.Close()
				if mappable {
					if err := <-sent; err != nil && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
						fail("round %d: send: %v", i, err)
					}
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
