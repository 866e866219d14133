//go:build linux

package zcnet

import (
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Deadlines racing the read path: timeouts never lose, repeat or reorder a byte.

// TestDeadlineFlipsKeepStream receives streams while another goroutine keeps moving the
// read deadline between the near past, the near future and none, so that Read, Next and
// WriteTo time out over and over in every state of the read path: a fast mappable stream
// (timeouts with mapped bytes pending) and a bursty one with pauses (timeouts while
// waiting in the poller). It proves that a timeout never loses, repeats or reorders a
// byte: retrying after each timeout yields the exact stream.
func TestDeadlineFlipsKeepStream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const total = 32 << 20
	for _, bursty := range []bool{false, true} {
		for kind := range readKinds {
			name := kind.String() + "/fast"
			if bursty {
				name = kind.String() + "/bursty"
			}
			t.Run(name, func(t *testing.T) {
				testDeadlineFlips(t, kind, bursty, total)
			})
		}
	}
}

// testDeadlineFlips runs one case of TestDeadlineFlipsKeepStream.
func testDeadlineFlips(t *testing.T, kind readKind, bursty bool, total int64) {
	s := patternSender{zerocopy: true}
	if bursty {
		total /= 8
		s = patternSender{maxWrite: 32 << 10, rnd: rand.New(rand.NewPCG(uint64(kind), 11)), pause: 300 * time.Microsecond}
	}
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true}, !bursty)
	sent := sendPattern(sc, total, s)
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
