package zcnet

import (
	"math"
	"sync/atomic"
	"time"
)

// callKind is the read-side call a fill serves.
type callKind uint8

const (
	callRead    callKind = iota // Read: mapped bytes are copied once more, into p
	callNext                    // Next: the caller gets a view
	callWriteTo                 // WriteTo: the writer gets the mapped pages
)

// choice is a policy's answer for one fill.
type choice struct {
	mapping bool // map whole pages (else recv(2))
	timed   bool // price the fill in thread CPU time and report it to observe
	explore bool // the path is tried, not preferred: its whole cost is measured
}

// policy chooses the path of each fill. One is made per conn from its Mode, and only
// the read path's calls use it (under the read lock).
type policy interface {
	// pick chooses the path for a fill of a call of kind that wants size bytes.
	pick(kind callKind, size int) choice
	// observe feeds back a timed fill: what it received, and extra, the CPU time the
	// call spent after it on the mapped bytes (the copy out for Read, the release of the
	// pages after an exploration).
	observe(ch choice, res fillResult, extra time.Duration)
}

// newPolicy returns the policy of mode.
func newPolicy(mode Mode) policy {
	switch mode {
	case ModeZeroCopy:
		return zerocopyPolicy{}
	case ModeCopy:
		return copyPolicy{}
	}
	return &autoPolicy{}
}

// copyPolicy never maps.
type copyPolicy struct{}

func (copyPolicy) pick(callKind, int) choice                 { return choice{} }
func (copyPolicy) observe(choice, fillResult, time.Duration) {}

// zerocopyPolicy always maps.
type zerocopyPolicy struct{}

func (zerocopyPolicy) pick(callKind, int) choice                 { return choice{mapping: true} }
func (zerocopyPolicy) observe(choice, fillResult, time.Duration) {}

// The auto mode's cost model. A bulk fill costs about a fixed amount of CPU per byte on
// each path. The copy path is recv(2). The mapping path is TCP_ZEROCOPY_RECEIVE, plus
// the release of the pages once consumed (madvise, and the TLB shootdown it sends to
// every CPU running a thread of the process), plus for Read the copy out of the mapped
// pages. The conn copies unless a measured exploration of the mapping path, its whole
// cost counted, comes out clearly cheaper; explorations are rare and become rarer each
// time one loses (the interval doubles, process-wide, up to exploreMaxInterval bulk
// fills), so that where mapping does not pay the auto mode costs what copying costs.
//
// Fills are priced in the CPU time of the thread that makes their system calls
// (CLOCK_THREAD_CPUTIME_ID): wall time would count preemption and waits. Reading that
// clock is itself a system call, so only every sampleEvery-th bulk copy fill is timed.
// Fills below bulkFill bytes always copy and are never timed: there a call's fixed cost
// dominates and both paths cost the same copy.
const (
	bulkFill           = 64 << 10  // smaller fills copy, untimed
	exploreWant        = 256 << 10 // what an exploring mapping fill takes at most
	sampleEvery        = 64        // bulk copy fills between two timed ones
	mapSampleEvery     = 8         // mapping fills between two timed ones
	recheckEvery       = 64        // mapping fills between two timed copy fills
	exploreInterval    = 64        // process-wide bulk fills before the first exploration
	exploreMaxInterval = 1 << 16   // the rarest exploration: 4 GiB or more of bulk fills
	// mapMargin: mapping must cost less than this share of copying to be chosen. It
	// also costs other CPUs TLB-flush interrupts, which no clock of this thread sees.
	mapMargin = 0.75
	// maxSampleNs bounds a believable sample (ns per byte): a larger one means the
	// goroutine moved to another thread between the two clock reads.
	maxSampleNs = 100
	ewmaWeight  = 0.25 // weight of a new sample
)

// hostAuto is what the auto mode learned process-wide.
var hostAuto struct {
	fills    atomic.Int64  // bulk fills the process copied
	next     atomic.Int64  // the value of fills at which the next exploration is due
	interval atomic.Int64  // fills between explorations (0: exploreInterval)
	copyNs   atomic.Uint64 // float64 bits: ns per byte of a recv(2) fill; 0 unknown
	mapNs    atomic.Uint64 // float64 bits: ns per byte of the whole mapping path
}

// autoPolicy is one conn's state in the auto mode.
type autoPolicy struct {
	maps          bool   // an exploration won on this conn: it maps
	fills         uint32 // bulk fills of this conn
	copyNs, mapNs float64
}

func (a *autoPolicy) pick(kind callKind, size int) choice {
	if size < bulkFill {
		return choice{}
	}
	a.fills++
	if a.maps {
		if a.fills%recheckEvery == 0 {
			return choice{timed: true, explore: true} // keep the copy price current
		}
		return choice{mapping: true, timed: a.fills%mapSampleEvery == 0}
	}
	timed := a.fills%sampleEvery == 1
	n := hostAuto.fills.Add(1)
	next := hostAuto.next.Load()
	if next == 0 {
		hostAuto.next.CompareAndSwap(0, n+exploreInterval)
		return choice{timed: timed}
	}
	if n >= next && loadCost(&hostAuto.copyNs) > 0 && hostAuto.next.CompareAndSwap(next, n+interval()) {
		return choice{mapping: true, timed: true, explore: true}
	}
	return choice{timed: timed}
}

func (a *autoPolicy) observe(ch choice, res fillResult, extra time.Duration) {
	if !ch.timed {
		return
	}
	if ch.mapping && !res.mapped {
		if res.err == nil {
			a.lose() // the stream does not map here: the mapping call was spent for nothing
		}
		return
	}
	if res.n < pageSize || res.cpu <= 0 {
		return
	}
	s := float64(res.cpu+extra) / float64(res.n)
	if s > maxSampleNs {
		return
	}
	if !ch.mapping {
		a.copyNs = ewma(a.copyNs, s)
		updateCost(&hostAuto.copyNs, s)
		return
	}
	a.mapNs = ewma(a.mapNs, s)
	updateCost(&hostAuto.mapNs, s)
	c := a.copyNs
	if c == 0 {
		c = loadCost(&hostAuto.copyNs)
	}
	switch {
	case c == 0:
	case a.mapNs < mapMargin*c:
		a.maps = true
		hostAuto.interval.Store(exploreInterval)
	default:
		a.lose()
	}
}

// lose records that mapping lost on this conn: it copies, and explorations become
// twice as rare in the process.
func (a *autoPolicy) lose() {
	a.maps = false
	a.mapNs = 0
	iv := interval()
	hostAuto.interval.CompareAndSwap(hostAuto.interval.Load(), min(2*iv, exploreMaxInterval))
}

// interval is the number of bulk fills between two explorations.
func interval() int64 {
	if iv := hostAuto.interval.Load(); iv > 0 {
		return iv
	}
	return exploreInterval
}

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

func ewma(v, s float64) float64 {
	if v == 0 {
		return s
	}
	return v + ewmaWeight*(s-v)
}
