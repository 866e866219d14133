package zcnet

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"net"
	"testing"
)

// nextStream reads c to the end with Next of sizes drawn from [1, maxNext], hashing the
// views, and returns the byte count, the SHA-256 and the error that ended the stream
// (nil for io.EOF). A short last view must come with io.ErrUnexpectedEOF.
func nextStream(t *testing.T, c *Conn, rnd *rand.Rand, maxNext int) (int64, [32]byte, error) {
	t.Helper()
	h := sha256.New()
	var got int64
	for {
		n := 1 + rnd.Intn(maxNext)
		v, err := c.Next(n)
		h.Write(v)
		got += int64(len(v))
		switch {
		case err == nil && len(v) != n:
			t.Fatalf("Next(%d) returned %d bytes and no error", n, len(v))
		case err == io.ErrUnexpectedEOF && (len(v) == 0 || len(v) >= n):
			t.Fatalf("Next(%d) returned %d bytes with io.ErrUnexpectedEOF", n, len(v))
		case err == io.EOF && len(v) != 0:
			t.Fatalf("Next(%d) returned %d bytes with io.EOF", n, len(v))
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return got, [32]byte(h.Sum(nil)), nil
		case err != nil:
			return got, [32]byte(h.Sum(nil)), err
		}
	}
}

// TestNextMappedViews receives a mappable stream in ModeZeroCopy with Next of random
// sizes from 1 byte to 1 MiB: the views concatenate to exactly the stream sent (SHA-256),
// nearly all of it was mapped (at least 98%), and views were handed out from the mapped
// pages themselves (Stats.ViewBytes); those that straddle the end of the ring are
// gathered from mapped pages.
func TestNextMappedViews(t *testing.T) {
	requireSupported(t)
	const total = 64<<20 + 4321
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	sent := sendStream(sc, total, true, false)
	got, sum, err := nextStream(t, c, rand.New(rand.NewSource(5)), 1<<20)
	wantStream(t, got, sum, err, sent, total)
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
			got, sum, err := nextStream(t, c, rand.New(rand.NewSource(6)), 256<<10)
			wantStream(t, got, sum, err, sent, total)
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

// TestNextEOF checks Next at the end of the stream, in every mode and with both kinds of
// sender: fewer than n bytes left return exactly those bytes with io.ErrUnexpectedEOF,
// none left return io.EOF (repeatedly), and Next(0) returns an empty slice and no error.
func TestNextEOF(t *testing.T) {
	const total = 3*4096 + 100 // whole pages, then an unaligned tail
	for _, m := range modes {
		for _, s := range senders {
			t.Run(m.String()+"/"+s.name, func(t *testing.T) {
				c, sc := pairWith(t, Options{Mode: m}, s.mappable)
				if err := <-sendStream(sc, total, s.mappable, true); err != nil {
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
	}
}

// TestNextBadCounts checks that Next(-1) returns ErrNegativeCount and Next above the
// ring size ErrTooLarge, consuming nothing, and that Next of exactly the ring size works.
func TestNextBadCounts(t *testing.T) {
	const ring = 64 << 10
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m == ModeZeroCopy && Supported() == nil
			c, sc := pairWith(t, Options{Mode: m, RingSize: ring}, mappable)
			sent := sendStream(sc, 2*ring, mappable, true)
			if _, err := c.Next(-1); !errors.Is(err, ErrNegativeCount) {
				t.Fatalf("Next(-1): %v, want ErrNegativeCount", err)
			}
			if _, err := c.Next(ring + 1); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Next(ring size + 1): %v, want ErrTooLarge", err)
			}
			if _, err := c.Next(int(^uint(0) >> 1)); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Next(MaxInt): %v, want ErrTooLarge", err)
			}
			for i := range 2 {
				v, err := c.Next(ring)
				if err != nil || len(v) != ring {
					t.Fatalf("Next(ring size) = %d bytes, %v", len(v), err)
				}
				if off := checkPattern(int64(i*ring), v); off >= 0 {
					t.Fatalf("stream differs at offset %d", off)
				}
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if v, err := c.Next(1); err != io.EOF {
				t.Fatalf("Next at the end = %d bytes, %v; want io.EOF", len(v), err)
			}
		})
	}
}

// TestNextReadInterleaved mixes Read and Next of random sizes on one stream, in every
// mode and with both kinds of sender: the bytes come out in exact stream order.
func TestNextReadInterleaved(t *testing.T) {
	const total = 16<<20 + 17
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		sent := sendStream(sc, total, mappable, false)
		rnd := rand.New(rand.NewSource(7))
		buf := make([]byte, 1<<20)
		h := sha256.New()
		var got int64
		var reads, nexts int
		for {
			var p []byte
			var err error
			n := 1 + rnd.Intn(1<<(1+rnd.Intn(20)))
			if rnd.Intn(2) == 0 {
				p, err = c.Next(n)
				nexts++
			} else {
				n, err = c.Read(buf[:n])
				p = buf[:n]
				reads++
			}
			if o := checkPattern(got, p); o >= 0 {
				t.Fatalf("stream differs at offset %d (after %d Reads and %d Nexts)", o, reads, nexts)
			}
			h.Write(p)
			got += int64(len(p))
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		if got != total || [32]byte(h.Sum(nil)) != patternSum(total) {
			t.Fatalf("read %d bytes, want %d", got, int64(total))
		}
		if m == ModeZeroCopy && mappable {
			st := c.Stats()
			if st.ViewBytes == 0 || st.MappedShare() < 0.95 {
				t.Errorf("mapped share %.4f, %d bytes passed on as views; want at least 0.95 and some: %+v",
					st.MappedShare(), st.ViewBytes, st)
			}
		}
	})
}

// TestWriteToMapped drains a mappable stream with io.Copy into a hashing writer in
// ModeZeroCopy: io.Copy uses WriteTo, the bytes are exactly the stream sent, and nearly
// all of them were mapped and passed on from the mapped pages (Stats.ViewBytes,
// MappedShare at least 0.99).
func TestWriteToMapped(t *testing.T) {
	requireSupported(t)
	const total = 128<<20 + 1
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	sent := sendStream(sc, total, true, false)
	h := sha256.New()
	w := struct{ io.Writer }{h}
	n, err := io.Copy(w, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if n != total || [32]byte(h.Sum(nil)) != patternSum(total) {
		t.Fatalf("copied %d bytes, want %d; sha256 match: %v", n, int64(total), [32]byte(h.Sum(nil)) == patternSum(total))
	}
	st := c.Stats()
	t.Logf("stats: %+v, mapped share %.4f", st, st.MappedShare())
	if st.MappedShare() < 0.99 {
		t.Errorf("mapped share %.4f < 0.99: %+v", st.MappedShare(), st)
	}
	if float64(st.ViewBytes) < 0.99*total {
		t.Errorf("%d of %d bytes passed on from mapped pages, want at least 99%%: %+v", st.ViewBytes, int64(total), st)
	}
}

// TestWriteToAfterNext checks in every mode that WriteTo continues exactly where Read
// and Next left the stream, and returns a nil error at its end.
func TestWriteToAfterNext(t *testing.T) {
	const total = 4<<20 + 3
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		sent := sendStream(sc, total, mappable, false)
		h := sha256.New()
		buf := make([]byte, 5000)
		n, err := io.ReadFull(c, buf[:1234])
		if err != nil {
			t.Fatal(err)
		}
		h.Write(buf[:n])
		v, err := c.Next(8192 + 5)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(v)
		k, err := c.WriteTo(struct{ io.Writer }{h})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		got := int64(n+len(v)) + k
		if got != total || [32]byte(h.Sum(nil)) != patternSum(total) {
			t.Fatalf("got %d bytes, want %d; sha256 match: %v", got, int64(total), [32]byte(h.Sum(nil)) == patternSum(total))
		}
	})
}
