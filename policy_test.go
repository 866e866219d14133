package zcnet

import (
	"math/bits"
	"testing"
	"time"
)

// resetHostAuto clears the auto mode's process-wide state for a test and restores it
// after.
func resetHostAuto(t *testing.T) {
	fills, next, iv := hostAuto.fills.Load(), hostAuto.next.Load(), hostAuto.interval.Load()
	hostAuto.fills.Store(0)
	hostAuto.next.Store(0)
	hostAuto.interval.Store(0)
	t.Cleanup(func() {
		hostAuto.fills.Store(fills)
		hostAuto.next.Store(next)
		hostAuto.interval.Store(iv)
	})
}

// runAuto drives a conn's auto policy through fills bulk fills of size bytes, answering
// each mapping fill as mapped (or not) and each copy fill as copied, and returns how
// many fills took the mapping path.
func runAuto(a *autoPolicy, fills, size int, mapsHere bool) int {
	mapping, _ := runAutoGot(a, fills, size, size, mapsHere)
	return mapping
}

// runAutoGot is runAuto for calls that ask for size bytes and fills that deliver got
// bytes; it also returns how many fills were timed.
func runAutoGot(a *autoPolicy, fills, size, got int, mapsHere bool) (mapping, timed int) {
	streak := 0 // mapping fills in a row that mapped nothing, as the filler counts them
	for range fills {
		ch := a.pick(size)
		if ch.timed {
			timed++
		}
		res := fillResult{n: got, cpu: time.Duration(got / 10)}
		if ch.mapping {
			mapping++
			res.mapped = mapsHere
			if streak = min(streak+1, unmappableFills); mapsHere {
				streak = 0
			}
			res.unmappable = streak >= unmappableFills
		}
		a.observe(ch, res, 0)
	}
	return mapping, timed
}

// TestAutoSmallFillsCopy: fills below bulkFill always copy and never count towards a
// probe.
func TestAutoSmallFillsCopy(t *testing.T) {
	resetHostAuto(t)
	a := newPolicy(ModeAuto, DefaultRingSize, new(counters)).(*autoPolicy)
	if n := runAuto(a, 100000, bulkFill-1, true); n != 0 {
		t.Fatalf("%d small fills mapped", n)
	}
	if hostAuto.fills.Load() != 0 {
		t.Fatalf("small fills counted as bulk: %d", hostAuto.fills.Load())
	}
}

// TestAutoSmallDeliveriesCopy: a conn that reads with a large buffer but receives small
// messages (each fill delivers what one message carries) never opens a probe, never
// times a fill and never counts towards the process's probes; once the same conn's
// fills deliver bulk, it takes part in probes again.
func TestAutoSmallDeliveriesCopy(t *testing.T) {
	for _, got := range []int{64, 16 << 10, bulkDelivered - 1} {
		resetHostAuto(t)
		a := newPolicy(ModeAuto, DefaultRingSize, new(counters)).(*autoPolicy)
		mapping, timed := runAutoGot(a, 100000, 512<<10, got, true)
		if mapping != 0 || timed != 0 || hostAuto.fills.Load() != 0 {
			t.Fatalf("fills delivering %d bytes into 512 KiB reads: %d mapped, %d timed, %d counted as bulk",
				got, mapping, timed, hostAuto.fills.Load())
		}
		if _, timed := runAutoGot(a, 100000, 512<<10, 512<<10, true); timed == 0 || hostAuto.fills.Load() == 0 {
			t.Fatalf("after fills of %d bytes, bulk fills: %d timed, %d counted as bulk", got, timed, hostAuto.fills.Load())
		}
	}
}

// TestAutoBacksOff: on a stream that does not map, each probe loses and the interval to
// the next doubles up to exploreMaxInterval, so that over a long stream the mapping path
// takes a vanishing share of the fills.
func TestAutoBacksOff(t *testing.T) {
	resetHostAuto(t)
	const size = 512 << 10
	a := newPolicy(ModeAuto, DefaultRingSize, new(counters)).(*autoPolicy)
	const fills = 1 << 20
	mapping := runAuto(a, fills, size, false)
	if got := interval(); got != exploreMaxInterval {
		t.Fatalf("interval after %d losing fills is %d, want %d", fills, got, exploreMaxInterval)
	}
	share := float64(mapping) / fills
	t.Logf("%d of %d bulk fills took the mapping path (%.4f%%), interval %d", mapping, fills, 100*share, interval())
	if share > 0.001 {
		t.Fatalf("the mapping path took %.4f%% of the fills, want under 0.1%%", 100*share)
	}
	if a.maps {
		t.Fatal("the conn maps although no probe mapped a byte")
	}
}

// TestAutoDecides: a probe whose mapping window cost clearly less and mapped nearly
// everything makes the conn map (and resets the interval); one that cost about the same,
// or mapped too little, makes it copy and doubles the interval.
func TestAutoDecides(t *testing.T) {
	cases := []struct {
		name           string
		copyNs, mapNs  float64
		n, mapped      int
		maps           bool
		intervalDouble bool
		intervalMax    bool
	}{
		{"cheaper", 100, 50, 1 << 22, 1 << 22, true, false, false},
		{"at-margin", 100, mapMargin * 100, 1 << 22, 1 << 22, false, true, false},
		{"dearer", 100, 150, 1 << 22, 1 << 22, false, true, false},
		{"cheaper-but-unmapped", 100, 50, 1 << 22, 1 << 20, false, true, false},
		{"clearly-dearer", 100, clearLoss * 100, 1 << 22, 1 << 22, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resetHostAuto(t)
			hostAuto.interval.Store(256)
			a := &autoPolicy{phase: probeMap, copyNs: tc.copyNs, n: tc.n, mapped: tc.mapped, got: 1 << 20}
			a.decide(tc.mapNs)
			if tc.maps {
				// A win starts a confirming probe; a second win maps.
				if a.maps || a.phase != probeCopy {
					t.Fatalf("a first winning probe: maps %v phase %d, want a confirming probe", a.maps, a.phase)
				}
				a.phase, a.n, a.mapped = probeMap, tc.n, tc.mapped
				a.decide(tc.mapNs)
			}
			if a.maps != tc.maps || a.phase != probeNone {
				t.Fatalf("maps %v phase %d, want maps %v", a.maps, a.phase, tc.maps)
			}
			want := int64(exploreInterval)
			switch {
			case tc.intervalDouble:
				want = 512
			case tc.intervalMax:
				want = exploreMaxInterval
			}
			if got := interval(); got != want {
				t.Fatalf("interval %d, want %d", got, want)
			}
			if tc.maps && !a.pick(1<<20).mapping {
				t.Fatal("a conn that won its probe copies")
			}
		})
	}
}

// TestAutoEndsClearLossEarly: a mapping window whose first quarter costs clearLoss
// times the copy window's ends there, lost, and makes the next probe the rarest (the
// interval and the pending probe's mark); one whose first fills cost about the same runs
// its whole window.
func TestAutoEndsClearLossEarly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mapNs   float64 // ns per byte of the mapping fills
		endsAt  int     // the fill after which the probe has ended
		wantMax bool
	}{
		{"clear-loss", 3, windowBytes / 4 / (64 << 10), true},
		{"close", 1.1, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetHostAuto(t)
			hostAuto.interval.Store(256)
			hostAuto.next.Store(1000)
			const n = 64 << 10
			a := &autoPolicy{window: windowBytes, got: 1 << 20}
			a.start()
			a.phase, a.copyNs = probeMap, 1
			ended := -1
			for i := 1; i <= windowBytes/n && ended < 0; i++ {
				ch := a.pick(1 << 20)
				if !ch.mapping || !ch.timed {
					t.Fatalf("fill %d of the mapping window: mapping %v timed %v", i, ch.mapping, ch.timed)
				}
				a.observe(ch, fillResult{n: n, mapped: true, cpu: time.Duration(tc.mapNs * n)}, 0)
				if a.phase == probeNone {
					ended = i
				}
			}
			if tc.endsAt > 0 && ended != tc.endsAt {
				t.Fatalf("the probe ended after fill %d, want %d", ended, tc.endsAt)
			}
			if tc.endsAt < 0 {
				if ended >= 0 {
					t.Fatalf("the probe ended early, after fill %d", ended)
				}
				a.pick(1 << 20) // the window is full: the probe is decided
			}
			if want := map[bool]int64{true: exploreMaxInterval, false: 512}[tc.wantMax]; interval() != want {
				t.Fatalf("interval %d, want %d", interval(), want)
			}
			if got := hostAuto.next.Load() >= exploreMaxInterval; got != tc.wantMax {
				t.Fatalf("next probe due at %d fills; put off to the rarest: %v, want %v", hostAuto.next.Load(), got, tc.wantMax)
			}
			if a.maps {
				t.Fatal("the conn maps after a lost probe")
			}
		})
	}
}

// runZerocopy drives a ModeZeroCopy policy through fills, answering as the filler does
// on a stream that maps (or not): a mapping fill that maps nothing after
// unmappableFills-1 such fills in a row reports the stream unmappable, with cause. It
// returns the fills that took the mapping path, and the index of the first one that
// mapped (-1 if none).
func runZerocopy(z *zerocopyPolicy, fills int, mapsHere bool, cause copyCause, streak *int) (mapping, first int) {
	first = -1
	for i := range fills {
		ch := z.pick(512 << 10)
		res := fillResult{n: zcFill}
		if ch.mapping {
			mapping++
			if mapsHere {
				*streak, res.mapped = 0, true
				if first < 0 {
					first = i
				}
			} else {
				*streak = min(*streak+1, unmappableFills)
				res.unmappable, res.skip = *streak >= unmappableFills, cause
			}
		} else if ch.cause != cause {
			panic("a backoff's copy fill carries the wrong cause")
		}
		z.observe(ch, res, 0)
	}
	return mapping, first
}

// zcFill is the bytes of each fill runZerocopy answers with.
const zcFill = 64 << 10

// TestZerocopyBacksOff: a ModeZeroCopy conn on a stream that maps nothing makes a
// vanishing share of mapping calls, copies under the cause its mapping calls met, and
// counts its backoffs; once the stream maps again, it maps within one stretch, and from
// then on every fill.
func TestZerocopyBacksOff(t *testing.T) {
	st := new(counters)
	z := newPolicy(ModeZeroCopy, DefaultRingSize, st).(*zerocopyPolicy)
	const fills = 1 << 17
	streak := 0
	mapping, _ := runZerocopy(z, fills, false, causePageKind, &streak)
	// The stretches double from backoffFirst to backoffMax bytes: one try each, then one
	// try every backoffMax bytes.
	const most = backoffMax / zcFill // the longest stretch, in fills
	want := unmappableFills + bits.Len(backoffMax/backoffFirst) + fills/most
	t.Logf("%d of %d fills took the mapping path (at most %d expected), %d backoffs", mapping, fills, want, st.backoffs.Load())
	if mapping > want {
		t.Fatalf("%d of %d fills on an unmappable stream took the mapping path, want at most %d", mapping, fills, want)
	}
	if b := st.backoffs.Load(); b == 0 || b > uint64(mapping) {
		t.Fatalf("%d backoffs for %d mapping fills", b, mapping)
	}
	mapping, first := runZerocopy(z, 4*most, true, causePageKind, &streak)
	if first < 0 || first > most {
		t.Fatalf("the first mapping fill on a stream that maps again came after %d fills, want at most %d", first, most)
	}
	if mapping != 4*most-first {
		t.Fatalf("after mapping resumed, %d of %d fills mapped", mapping, 4*most-first)
	}
}

// TestZerocopyBackoffBytes: a backoff's stretch counts the bytes its copy fills
// received, whatever their sizes: fills that got nothing (a deadline, Close) and fills
// larger than the rest of the stretch count as what they got, and the next fill after
// the stretch tries mapping.
func TestZerocopyBackoffBytes(t *testing.T) {
	st := new(counters)
	z := newPolicy(ModeZeroCopy, DefaultRingSize, st).(*zerocopyPolicy)
	z.observe(choice{mapping: true}, fillResult{n: 4096, unmappable: true, skip: causeSegment}, 0)
	if z.left != backoffFirst || st.backoffs.Load() != 1 {
		t.Fatalf("after an unmappable try: %d bytes left to copy, %d backoffs; want %d, 1", z.left, st.backoffs.Load(), backoffFirst)
	}
	got := 0
	for _, n := range []int{512 << 10, 0, 16 << 10, -1, 64 << 10, 300 << 10, 512 << 10} {
		ch := z.pick(512 << 10)
		if ch.mapping {
			t.Fatalf("a mapping try after %d of the stretch's %d bytes", got, backoffFirst)
		}
		if !ch.retry || ch.cause != causeSegment {
			t.Fatalf("a backoff's copy: retry %v, cause %v", ch.retry, ch.cause)
		}
		z.observe(ch, fillResult{n: n}, 0)
		if got += max(n, 0); got >= backoffFirst {
			break
		}
	}
	if ch := z.pick(512 << 10); !ch.mapping {
		t.Fatalf("no mapping try after %d copied bytes of a stretch of %d", got, backoffFirst)
	}
	// The try maps nothing again: the next stretch is twice as long; one that maps ends it.
	z.observe(choice{mapping: true}, fillResult{n: 4096, unmappable: true, skip: causeSegment}, 0)
	if z.left != 2*backoffFirst {
		t.Fatalf("after a second unmappable try: %d bytes left, want %d", z.left, 2*backoffFirst)
	}
	z.left = 0
	z.observe(choice{mapping: true}, fillResult{n: 4096, mapped: true}, 0)
	if z.stretch != 0 || !z.pick(1<<20).mapping {
		t.Fatalf("a try that mapped left a stretch of %d", z.stretch)
	}
}
