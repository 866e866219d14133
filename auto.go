package zcnet

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// The auto mode's cost model. Receiving a bulk fill costs about a fixed amount per byte on
// each path: the mapping path (TCP_ZEROCOPY_RECEIVE, plus recv(2) of what could not be
// mapped) and the copy path (recv(2)). Read must also copy mapped bytes into the caller's
// buffer, which costs memcpy per byte; Next and WriteTo do not. Each conn keeps its own
// estimates of both paths, seeded from the process-wide ones, and picks the cheaper path;
// every exploreEvery-th bulk fill it takes the other path to keep that estimate current.
//
// A fill is priced in the CPU time of the thread that makes its system calls
// (CLOCK_THREAD_CPUTIME_ID), not in wall time: a recv(2) that is preempted or waits for
// the socket lock would otherwise look dearer than it is. Reading that clock is itself a
// system call, so only every sampleEvery-th bulk fill is timed, and every exploration.
// Nothing is timed for fills below bulkFill bytes: there the fixed cost of a call
// dominates and both paths are the same copy.

const (
	bulkFill     = 64 << 10 // fills this large are timed and count as a bulk stream
	exploreEvery = 64       // bulk fills between two tries of the path not chosen
	sampleEvery  = 8        // bulk fills between two timed ones
	ewmaWeight   = 0.25     // weight of a new sample
)

// hostCost holds process-wide estimates in ns per byte (float64 bits; 0 = unknown).
var hostCost struct {
	mapNs, copyNs atomic.Uint64
}

// memcpyNs is the process's calibration of memcpy, in ns per byte, used for the copy out
// of mapped pages until a conn has timed one (autoState.outNs).
var memcpyNs = sync.OnceValue(func() float64 {
	// Calibrate memcpy from a buffer larger than the L2 cache, best of a few runs.
	const n = 1 << 20
	src, dst := make([]byte, n), make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	best := math.Inf(1)
	for range 5 {
		t := time.Now()
		copy(dst, src)
		if d := float64(time.Since(t)) / n; d > 0 && d < best {
			best = d
		}
	}
	if math.IsInf(best, 1) {
		best = 0.05
	}
	return best
})

func loadCost(a *atomic.Uint64) float64 { return math.Float64frombits(a.Load()) }

func updateCost(a *atomic.Uint64, sample float64) {
	for {
		old := a.Load()
		v := ewma(math.Float64frombits(old), sample)
		if a.CompareAndSwap(old, math.Float64bits(v)) {
			return
		}
	}
}

// autoState is one conn's cost estimates and choice.
type autoState struct {
	mapNs, copyNs float64 // ns per byte; 0 = not measured on this conn yet
	bulk          bool    // the last fill was a bulk fill: mapping can pay
	unmappable    bool    // the last fill on the mapping path mapped nothing
	fills         uint32  // bulk fills since the last exploration
	sample        bool    // time the next fill
	outNs         float64 // ns per byte of Read's copy out of mapped pages; 0 = not timed yet
	timeOut       bool    // time Read's next copy out of mapped pages
}

// chooseMap reports whether the next fill should map, and whether it only explores the
// mapping path (the copy path is preferred), in which case the fill should take no more
// than a copy fill would. userCopy is true when mapped bytes must then be copied into the
// caller's buffer (Read) and false for views (Next, WriteTo) or when the copy path would
// copy them once more anyway (a Read smaller than the pooled buffer).
func (a *autoState) chooseMap(userCopy bool) (useMap, explore bool) {
	if !a.bulk {
		return false, false
	}
	m, c := a.mapNs, a.copyNs
	if m == 0 {
		m = loadCost(&hostCost.mapNs)
	}
	if c == 0 {
		c = loadCost(&hostCost.copyNs)
	}
	if m == 0 || c == 0 { // a path never measured in this process: try it
		a.sample = true
		return m == 0, m == 0
	}
	if userCopy {
		// The copy out of freshly mapped pages costs more than a warm memcpy (a TLB
		// miss per page): use what this conn measured once it has.
		if a.outNs > 0 {
			m += a.outNs
		} else {
			m += memcpyNs()
		}
	}
	// After a mapping fill that mapped nothing (an unaligned stream), only the periodic
	// exploration tries the mapping path again, however the estimates compare.
	preferMap := m < c && !a.unmappable
	a.fills++
	a.sample = a.fills%sampleEvery == 0
	if a.fills >= exploreEvery {
		a.fills = 0
		a.sample = true
		return !preferMap, !preferMap
	}
	return preferMap, false
}

// record feeds the outcome of a fill: n bytes in d of CPU time (0: not timed) on the
// mapping or copy path.
func (a *autoState) record(mapped bool, n int, d time.Duration) {
	a.bulk = n >= bulkFill
	if !a.bulk || d <= 0 {
		return
	}
	s := float64(d) / float64(n)
	if s > maxSampleNs {
		return // the thread was switched under the measurement
	}
	if mapped {
		a.timeOut = true
		a.mapNs = ewma(a.mapNs, s)
		updateCost(&hostCost.mapNs, s)
	} else {
		a.copyNs = ewma(a.copyNs, s)
		updateCost(&hostCost.copyNs, s)
	}
}

// recordMap feeds the outcome of a fill on the mapping path: n bytes in d, of which some
// were mapped when mapped is set. A fill that mapped nothing (the stream is unaligned
// there: the bytes were read with recv(2) after a mapping call) is counted against this
// conn's mapping estimate whatever its size, as the mapping call was spent for nothing;
// it does not change the process-wide estimate, which prices pages that do map. Such a
// sample counts at most four times the copy estimate, so that the conn turns back to
// mapping within a few explorations once the stream is aligned again; until an
// exploration maps, the conn copies.
func (a *autoState) recordMap(mapped bool, n int, d time.Duration) {
	a.unmappable = !mapped
	if mapped || d <= 0 || n <= 0 {
		a.record(true, n, d)
		return
	}
	s := float64(d) / float64(n)
	c := a.copyNs
	if c == 0 {
		c = loadCost(&hostCost.copyNs)
	}
	if c > 0 {
		s = min(s, 4*c)
	}
	a.mapNs = ewma(a.mapNs, s)
}

// recordOut feeds a timed copy of n mapped bytes out to a Read's buffer.
func (a *autoState) recordOut(n int, d time.Duration) {
	a.timeOut = false
	if n <= 0 || d <= 0 {
		return
	}
	if s := float64(d) / float64(n); s <= maxSampleNs {
		a.outNs = ewma(a.outNs, s)
	}
}

// maxSampleNs bounds a believable sample (ns per byte): a larger one means the goroutine
// moved to another thread between the two clock reads.
const maxSampleNs = 100

func ewma(v, s float64) float64 {
	if v == 0 {
		return s
	}
	return v + ewmaWeight*(s-v)
}
