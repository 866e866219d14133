//go:build linux

package zcnet

import (
	"io"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"
)

// ringRange returns the address range of c's ring (0, 0 when it has none). The caller
// makes no read-side call on c meanwhile.
func ringRange(c *Conn) (lo, hi uintptr) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if !c.s.ring.reserved() {
		return 0, 0
	}
	lo = uintptr(unsafe.Pointer(&c.s.ring.mem[0]))
	return lo, lo + uintptr(c.s.ring.size())
}

// nextMessage returns a conn accepted with opts from a mappable sender that sent one
// message of size bytes, and the view Next returned for it, checked.
func nextMessage(t *testing.T, opts Options, size int) (*Conn, []byte) {
	t.Helper()
	c, sc := pairWith(t, opts, true)
	sent := sendStream(sc, int64(size), true, false)
	v, err := c.Next(size)
	if err != nil {
		t.Fatal(err)
	}
	if err := patternErr(0, v); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	return c, v
}

// TestClosedRangeQuarantined: in every mode (and with CopyViews), a view held past Close
// reads zeros (a view of the mapping) or its own bytes (a copy), never another conn's:
// the closed conn's ring range waits in the quarantine, counted by the limits, and conns
// that map meanwhile get other ranges. Once it leaves the quarantine its share of the
// limits is given back.
func TestClosedRangeQuarantined(t *testing.T) {
	requireSupported(t)
	for _, m := range modes {
		for _, copyViews := range []bool{false, true} {
			name := m.String()
			if copyViews {
				name += "/CopyViews"
			}
			t.Run(name, func(t *testing.T) {
				const size = 256 << 10
				// Start from an empty quarantine: one at its bound (after many conns)
				// evicts its oldest range as this conn's goes in.
				for retired.evictOne() {
				}
				c, v := nextMessage(t, Options{Mode: m, CopyViews: copyViews}, size)
				lo, hi := ringRange(c)
				mapped := c.Stats().ViewBytes > 0
				if m == ModeZeroCopy && !copyViews && (!mapped || lo == 0) {
					t.Fatalf("the view is not of the mapping: %+v", c.Stats())
				}
				rings, ringBytes := budget.rings.Load(), budget.ringBytes.Load()
				c.Close()
				checkView := func(when string) {
					t.Helper()
					if mapped {
						for i, b := range v {
							if b != 0 {
								t.Fatalf("%s: byte %d of a mapped view reads %#x, want zero", when, i, b)
							}
						}
					} else if err := patternErr(0, v); err != nil {
						t.Fatalf("%s: a copied view changed: %v", when, err)
					}
				}
				checkView("after Close")
				if lo == 0 {
					return
				}
				if !inQuarantine(lo) {
					t.Fatal("the closed conn's ring is not in the quarantine")
				}
				if r, b := budget.rings.Load(), budget.ringBytes.Load(); r != rings || b != ringBytes {
					t.Fatalf("the limits count %d rings, %d B after Close, %d, %d before: the quarantine is not counted", r, b, rings, ringBytes)
				}
				// Conns that map meanwhile get other address ranges.
				for range 8 {
					d, _ := nextMessage(t, Options{Mode: ModeZeroCopy}, size)
					dlo, dhi := ringRange(d)
					if dlo == 0 {
						t.Fatalf("a ZeroCopy conn holds no ring: %+v", d.Stats())
					}
					if dlo < hi && lo < dhi && inQuarantine(lo) {
						t.Fatalf("a new ring [%#x, %#x) overlaps the quarantined [%#x, %#x)", dlo, dhi, lo, hi)
					}
					d.Close()
				}
				if !inQuarantine(lo) {
					l := CurrentLimits()
					t.Fatalf("9 rings pushed the range out of the quarantine (limits %+v)", l)
				}
				checkView("with other conns mapping")
				// Its share goes back when it leaves.
				n, _ := retired.held()
				before := budget.ringBytes.Load()
				for inQuarantine(lo) && retired.evictOne() {
				}
				m, _ := retired.held()
				if budget.ringBytes.Load() >= before || n <= m {
					t.Fatalf("leaving the quarantine gave nothing back: %d B of rings, %d before; %d retired, %d before",
						budget.ringBytes.Load(), before, m, n)
				}
			})
		}
	}
}

// TestSpliceUnmapsEmptyRing: a WriteTo that splices (to a pipe) holds no ring while it
// waits, as a copy fill does; in mapping modes the idle release gets there too. Every
// byte arrives.
func TestSpliceUnmapsEmptyRing(t *testing.T) {
	requireSupported(t)
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		// A ring as a probe of the mapping path leaves it: reserved, empty.
		rc, err := c.tc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var rerr error
		c.readMu.Lock()
		rc.Control(func(fd uintptr) { rerr = c.s.ring.reserve(int(fd)) })
		c.readMu.Unlock()
		if rerr != nil {
			t.Fatal(rerr)
		}
		ino := socketInode(t, c)
		if _, ok := ringRssKiB(t, ino); !ok {
			t.Fatal("no ring in the maps after reserving one")
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		w := &patternWriter{}
		copied := make(chan error, 1)
		go func() { _, err := io.Copy(w, pr); copied <- err }()
		done := make(chan error, 1)
		go func() { _, err := c.WriteTo(pw); pw.Close(); done <- err }()
		const half = 256 << 10
		if err := writeStream(sc, 0, half, mappable); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for w.done.Load() < half {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d bytes came through", w.done.Load(), half)
			}
			time.Sleep(time.Millisecond)
		}
		for {
			if _, ok := ringRssKiB(t, ino); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("WriteTo waits with the ring still mapped: %+v", c.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := writeStream(sc, half, half, mappable); err != nil {
			t.Fatal(err)
		}
		sc.CloseWrite()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := <-copied; err != nil || w.err != nil || w.off != 2*half {
			t.Fatalf("the pipe got %d bytes: %v, %v", w.off, err, w.err)
		}
		st := c.Stats()
		t.Logf("spliced %d of %d bytes", st.SplicedBytes, 2*half)
		if m == ModeCopy && st.SplicedBytes == 0 {
			t.Fatalf("ModeCopy did not splice: %+v", st)
		}
	})
}

// TestQuarantineBound: the quarantine holds at most a quarter of MaxRings, cut at once
// when SetLimits lowers it, and new rings still get their room, evicting given-up ones.
func TestQuarantineBound(t *testing.T) {
	requireSupported(t)
	saved := CurrentLimits()
	defer SetLimits(saved)
	const size = 64 << 10
	mapOne := func() *Conn {
		c, _ := nextMessage(t, Options{Mode: ModeZeroCopy}, size)
		if lo, _ := ringRange(c); lo == 0 {
			t.Fatalf("a ZeroCopy conn holds no ring: %+v", c.Stats())
		}
		return c
	}
	for range 12 {
		mapOne().Close()
	}
	if n, _ := retired.held(); n < 12 {
		t.Fatalf("%d rings in the quarantine after 12 closed, want 12 or more", n)
	}
	live := budget.rings.Load() - int64(must(retired.held()))
	if err := SetLimits(Limits{MaxRings: int(live) + 16}); err != nil {
		t.Fatal(err)
	}
	bound := (int(live) + 16) / 4
	if n, _ := retired.held(); n > bound {
		t.Fatalf("%d rings in the quarantine after SetLimits, bound %d", n, bound)
	}
	// Conns keep mapping at the limit: the quarantine gives way.
	var cs []*Conn
	for range 16 {
		c := mapOne()
		cs = append(cs, c)
		if r := budget.rings.Load(); r > live+16 {
			t.Fatalf("%d rings counted, limit %d", r, live+16)
		}
	}
	if n, _ := retired.held(); n != 0 {
		t.Fatalf("%d rings left in the quarantine with every ring taken by a live conn", n)
	}
	for _, c := range cs {
		c.Close()
	}
}

// must returns the first of two results.
func must[T, U any](v T, _ U) T { return v }
