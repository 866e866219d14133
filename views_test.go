package zcnet

import (
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// TestFastPathIntegrity receives a 256 MiB mappable stream with random read sizes (1 byte
// to 1 MiB) in ModeZeroCopy and checks that at least 99% of it was mapped, that the
// bytes are exactly the ones sent, and that the listener's Stats sum the conn's.
func TestFastPathIntegrity(t *testing.T) {
	requireSupported(t)
	const total = 256 << 20
	ln := listenLoopback(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true})
	sent := sendPattern(dialSender(t, ln.Addr().String(), true), total, patternSender{zerocopy: true})
	c := acceptConn(t, ln)
	w := &patternWriter{}
	_, err := drainPattern(c, byRead, w, 1<<20, rand.New(rand.NewPCG(1, 0)))
	c.Close()
	checkStream(t, w, err, sent, total)
	st := c.Stats()
	t.Logf("stats: %+v, mapped share %.4f", st, st.MappedShare())
	if st.MappedShare() < 0.99 {
		t.Fatalf("mapped share %.4f < 0.99: %+v", st.MappedShare(), st)
	}
	if ls := ln.Stats(); ls.MappedBytes != st.MappedBytes {
		t.Fatalf("listener stats %+v do not sum the conn's %+v", ls, st)
	}
}

// TestNextMappedViews receives a mappable stream in ModeZeroCopy with Next of random
// sizes from 1 byte to 1 MiB: the views concatenate to exactly the stream sent, nearly
// all of it was mapped (at least 98%), and views were handed out from the mapped pages
// themselves (Stats.ViewBytes); those that straddle the end of the ring are gathered
// from mapped pages.
func TestNextMappedViews(t *testing.T) {
	requireSupported(t)
	const total = 64<<20 + 4321
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	sent := sendStream(sc, total, true, false)
	w := &patternWriter{}
	_, err := drainPattern(c, byNext, w, 1<<20, rand.New(rand.NewPCG(5, 0)))
	checkStream(t, w, err, sent, total)
	st := c.Stats()
	t.Logf("stats: %+v, mapped share %.4f", st, st.MappedShare())
	if st.ViewBytes == 0 {
		t.Errorf("no view came from mapped pages: %+v", st)
	}
	if st.ViewBytes+st.AssembledBytes != total {
		t.Errorf("views count %d bytes, want %d: %+v", st.ViewBytes+st.AssembledBytes, int64(total), st)
	}
	// A sender slowed by a slow reader leaves a few short segments (partial writes),
	// which the kernel cannot map: the bound leaves room for them.
	if st.MappedShare() < 0.98 {
		t.Errorf("mapped share %.4f < 0.98: %+v", st.MappedShare(), st)
	}
}

// TestNextAssembled receives a stream the kernel cannot map (plain writes) with Next in
// every mode: the views are gathered in the pooled buffer (Stats.AssembledBytes) and
// concatenate to exactly the stream sent.
func TestNextAssembled(t *testing.T) {
	const total = 8<<20 + 99
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			c, sc := pairWith(t, Options{Mode: m}, false)
			sent := sendStream(sc, total, false, false)
			w := &patternWriter{}
			_, err := drainPattern(c, byNext, w, 256<<10, rand.New(rand.NewPCG(6, 0)))
			checkStream(t, w, err, sent, total)
			st := c.Stats()
			if st.AssembledBytes == 0 {
				t.Errorf("no view was assembled: %+v", st)
			}
			if st.ViewBytes+st.AssembledBytes != total {
				t.Errorf("views count %d bytes, want %d: %+v", st.ViewBytes+st.AssembledBytes, int64(total), st)
			}
		})
	}
}

// TestWriteToMapped drains a mappable stream with io.Copy into a checking writer in
// ModeZeroCopy: io.Copy uses WriteTo, the bytes are exactly the stream sent, and nearly
// all of them were mapped and passed on from the mapped pages (Stats.ViewBytes,
// MappedShare at least 0.99).
func TestWriteToMapped(t *testing.T) {
	requireSupported(t)
	const total = 128<<20 + 1
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	sent := sendStream(sc, total, true, false)
	w := &patternWriter{}
	n, err := io.Copy(struct{ io.Writer }{w}, c)
	if err == nil && n != w.off {
		t.Errorf("io.Copy returned %d, wrote %d", n, w.off)
	}
	checkStream(t, w, err, sent, total)
	st := c.Stats()
	t.Logf("stats: %+v, mapped share %.4f", st, st.MappedShare())
	if st.MappedShare() < 0.99 {
		t.Errorf("mapped share %.4f < 0.99: %+v", st.MappedShare(), st)
	}
	if float64(st.ViewBytes) < 0.99*total {
		t.Errorf("%d of %d bytes passed on from mapped pages, want at least 99%%: %+v", st.ViewBytes, int64(total), st)
	}
}

// TestViewAfterClose keeps a Next view that points into the mapped ring past Close and
// reads it: as documented, the memory stays readable and reads zeros, never faults.
func TestViewAfterClose(t *testing.T) {
	requireSupported(t)
	const total = 4 << 20
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	sent := sendStream(sc, total, true, true)
	defer func() { c.Close(); <-sent }()
	var v []byte
	var err error
	for got := 0; got < total && c.Stats().ViewBytes == 0; got += len(v) {
		if v, err = c.Next(64 << 10); err != nil {
			t.Fatal(err)
		}
	}
	if c.Stats().ViewBytes == 0 {
		t.Skip("no view pointed into the mapping")
	}
	c.Close()
	sum := 0
	for _, b := range v {
		sum += int(b)
	}
	if sum != 0 {
		t.Fatalf("a mapped view read after Close has byte sum %d, want zeros", sum)
	}
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
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			const burst = 1 << 20
			c, p := pairWith(t, Options{Mode: ModeZeroCopy}, true)
			ino := socketInode(t, c)
			if err := writeStream(p, 0, burst, true); err != nil {
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
					_, err = drainPattern(c, kind, w, 64<<10, rand.New(rand.NewPCG(uint64(kind), 4)))
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
