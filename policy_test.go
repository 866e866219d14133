package zcnet

import (
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
	mapping, streak := 0, 0 // streak: mapping fills in a row that mapped nothing, as the filler counts them
	for range fills {
		ch := a.pick(size)
		res := fillResult{n: size, cpu: time.Duration(size / 10)}
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
	return mapping
}

// TestAutoSmallFillsCopy: fills below bulkFill always copy and never count towards a
// probe.
func TestAutoSmallFillsCopy(t *testing.T) {
	resetHostAuto(t)
	a := newPolicy(ModeAuto, DefaultRingSize).(*autoPolicy)
	if n := runAuto(a, 100000, bulkFill-1, true); n != 0 {
		t.Fatalf("%d small fills mapped", n)
	}
	if hostAuto.fills.Load() != 0 {
		t.Fatalf("small fills counted as bulk: %d", hostAuto.fills.Load())
	}
}

// TestAutoBacksOff: on a stream that does not map, each probe loses and the interval to
// the next doubles up to exploreMaxInterval, so that over a long stream the mapping path
// takes a vanishing share of the fills.
func TestAutoBacksOff(t *testing.T) {
	resetHostAuto(t)
	const size = 512 << 10
	a := newPolicy(ModeAuto, DefaultRingSize).(*autoPolicy)
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
	}{
		{"cheaper", 100, 50, 1 << 22, 1 << 22, true, false},
		{"at-margin", 100, mapMargin * 100, 1 << 22, 1 << 22, false, true},
		{"dearer", 100, 150, 1 << 22, 1 << 22, false, true},
		{"cheaper-but-unmapped", 100, 50, 1 << 22, 1 << 20, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resetHostAuto(t)
			hostAuto.interval.Store(256)
			a := &autoPolicy{phase: probeMap, copyNs: tc.copyNs, n: tc.n, mapped: tc.mapped}
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
			if tc.intervalDouble {
				want = 512
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
