package zcnet

import (
	"slices"
	"sync/atomic"
	"time"
)

// choice is what one fill is asked to do: the policy picks the path (mapping, timed),
// the read-side call adds how much it needs. The fill follows it; where it cannot (a
// mapping fill with mapping off), it says so in its result (fillResult.fellBack).
type choice struct {
	mapping bool      // map whole pages (else recv(2))
	timed   bool      // the fill is in a probe's window: measure its CPU time
	cause   copyCause // on the copy path: why it copies (causePolicy unless said)
	// retry: the copy is for a while only (a backoff) and a later fill tries mapping
	// again, so WriteTo must not hand the rest of the stream to splice.
	retry bool

	want  int // mapping: map up to want bytes
	span  int // mapping: contiguous room the fill needs in the ring (Next's view)
	goal  int // mapping: keep mapping, waiting in the same call, until goal bytes
	copy  int // copy path into the stream's buffer: at least copy bytes of space
	lowat int // SO_RCVLOWAT while waiting: the bytes the call still misses (Next), else 1
	pipe  int // copy path: splice into this pipe (its write end + 1; 0: none), see pipeReceiver
	// lowatMax is what the call can take at once: a wait of a stream that streams may
	// batch up to it (see batcher); 0: the fill waits for lowat.
	lowatMax int
}

// policy chooses the path of each fill. One is made per conn from its Mode, and only
// the read path's calls use it (under the read lock).
type policy interface {
	// pick chooses the path for a fill of a call that wants size bytes. (What the call
	// does with mapped bytes, such as Read's copy out, is priced in observe.)
	pick(size int) choice
	// observe feeds back what a fill on the path of ch received, and extra, the CPU
	// time the call then spent on the mapped bytes (Read's copy out), when timed.
	observe(ch choice, res fillResult, extra time.Duration)
}

// newPolicy returns the policy of mode for a conn whose ring is ringSize bytes and whose
// counters are st.
func newPolicy(mode Mode, ringSize int, st *counters) policy {
	switch mode {
	case ModeZeroCopy:
		return &zerocopyPolicy{st: st}
	case ModeCopy:
		return copyPolicy{}
	}
	return &autoPolicy{window: max(windowBytes, ringSize)}
}

// copyPolicy never maps.
type copyPolicy struct{}

func (copyPolicy) pick(int) choice                           { return choice{} }
func (copyPolicy) observe(choice, fillResult, time.Duration) {}

// zerocopyPolicy maps, and backs off a stream that maps nothing. Once unmappableFills
// mapping fills in a row mapped nothing (the sender's pages are compound or page cache,
// segments do not carry whole pages, messages are under a page), the conn copies a
// stretch of the stream and then tries one mapping fill again: each try that maps nothing
// doubles the stretch, from backoffFirst up to backoffMax bytes, and a try that maps
// ends the backoff. So a stream that never maps makes one mapping call in backoffMax
// bytes, and one that turns mappable maps again within a stretch. (A stretch counts
// bytes, not fills: a fill's size varies with the call and with batching.) The
// stretch's copies are counted under the cause the mapping calls met (CopiedPageKind,
// CopiedSegment or CopiedTail), each stretch in Stats.MapBackoffs.
type zerocopyPolicy struct {
	st      *counters
	left    int       // bytes left to copy before the next mapping try
	stretch int       // the current stretch in bytes; 0 while the stream maps
	cause   copyCause // why the last mapping fills mapped nothing
}

const (
	backoffFirst = 1 << 20  // bytes of the first backoff (16 fills of 64 KiB)
	backoffMax   = 64 << 20 // the longest backoff, in bytes
)

func (z *zerocopyPolicy) pick(int) choice {
	if z.left > 0 {
		return choice{cause: z.cause, retry: true}
	}
	return choice{mapping: true}
}

func (z *zerocopyPolicy) observe(ch choice, res fillResult, _ time.Duration) {
	switch {
	case res.n <= 0:
	case !ch.mapping:
		if ch.retry {
			z.left -= res.n
		}
	case res.mapped:
		z.stretch = 0
	case res.unmappable:
		z.stretch = min(max(2*z.stretch, backoffFirst), backoffMax)
		z.left, z.cause = z.stretch, res.skip
		z.st.backoffs.Add(1)
	}
}

// The auto mode. Where mapping pays (bare metal, a NIC that splits headers) it saves a
// copy of every byte; where it does not (page-table updates and TLB shootdowns are dear
// under virtualisation) it costs more than the copy it saves. So the auto mode compares
// the two paths over windows: now and then a conn receives windowBytes on the copy path,
// then windowBytes on the mapping path, pricing each fill in the CPU time its system calls
// took (CLOCK_THREAD_CPUTIME_ID inside the poller's callback, where the goroutine cannot
// be parked) plus, for Read, the copy out of the mapped pages, and compares the medians. A window spans at least one
// ring cycle, so the release of the pages (madvise, which waits for the TLB shootdown it
// sends to every CPU running a thread of the process) is in it. The conn maps from then
// on only when mapping cost clearly less per byte (mapMargin) and mapped nearly all of
// its window. Outside the windows no clock is read.
//
// A probe is due when the process's count of bulk fills reaches a mark; each probe that
// mapping loses doubles the interval to the next, up to exploreMaxInterval fills, so
// that where mapping does not pay the probes cost nothing measurable. A mapping window
// that costs clearLoss times the copy window or more (a busy process on a host where
// page-table work is dear: its other threads' TLB-flush interrupts, which no clock of
// this thread sees, come on top) makes the next probe the rarest at once, and ends as
// soon as the first quarter of its bytes (in at least minEarly fills) shows it: without
// their release, which only adds to the cost, they already cost that much. A conn that
// maps runs the probe again every recheckEvery bulk fills. A fill is bulk by what the stream
// delivers, not by what the call asks for: the call asks for bulkFill bytes or more and
// the conn's recent fills delivered bulkDelivered bytes on average. Other fills copy,
// count nothing and read no clock: there a call's fixed cost dominates and both paths
// are the same copy, and a conn exchanging small messages costs what a net.TCPConn
// costs whatever the size of its Read buffer.
const (
	bulkFill           = 64 << 10 // fills asking for less copy, outside any window
	bulkDelivered      = 32 << 10 // the least average delivery of a bulk stream's fills
	windowBytes        = 4 << 20  // each window's bytes (and at least one ring size)
	exploreInterval    = 64       // process-wide bulk fills before the first probe
	exploreMaxInterval = 1 << 16  // the rarest probe: 4 GiB or more of bulk fills
	recheckEvery       = 1024     // bulk fills of a mapping conn between two probes
	countBatch         = 8        // bulk fills a conn counts before adding them process-wide
	windowSamples      = 128      // fills of a window whose cost is kept (the median of them)
	// mapMargin: a mapping window must cost less than this share of the copy window; the
	// rest pays for what no clock of this thread sees (other CPUs' shootdown interrupts).
	mapMargin = 0.8
	// maxSampleNs bounds a believable fill (ns per byte): a larger one means the
	// goroutine moved to another thread between the two clock reads.
	maxSampleNs = 100
	// minMappedShare: a mapping window that mapped less than this lost.
	minMappedShare = 0.9
	// clearLoss: a mapping window that costs this many times the copy window lost
	// clearly; minEarly: the fewest fills whose median can end a window early.
	clearLoss = 2
	minEarly  = 4
)

// hostAuto is what the auto mode shares process-wide.
var hostAuto struct {
	fills    atomic.Int64 // bulk fills the process copied
	next     atomic.Int64 // the value of fills at which the next probe is due
	interval atomic.Int64 // fills between probes (0: exploreInterval)
}

// autoPolicy is one conn's state in the auto mode.
type autoPolicy struct {
	got    int                    // bytes a fill delivered: a moving average over ~8 fills
	maps   bool                   // the last probe found mapping cheaper: the conn maps
	won    bool                   // the probe under way confirms a winning one
	phase  uint8                  // probeNone, probeCopy or probeMap
	fills  uint32                 // bulk fills: of a mapping conn since its last probe; else all
	window int                    // bytes a window takes: windowBytes, or a ring
	ns     [windowSamples]float32 // the window's fills: ns per byte of each
	k      int                    // fills in ns
	n      int                    // bytes received in the window
	mapped int                    // of which mapped
	copyNs float64                // the copy window's cost, ns per byte
}

// Probe phases.
const (
	probeNone = iota
	probeCopy
	probeMap
)

func (a *autoPolicy) pick(size int) choice {
	if size < bulkFill || a.got < bulkDelivered {
		a.phase = probeNone // a small fill breaks a window: start again later
		return choice{}
	}
	switch a.phase {
	case probeCopy:
		if a.n < a.window {
			return choice{timed: true}
		}
		a.copyNs = a.median()
		a.phase, a.k, a.n, a.mapped = probeMap, 0, 0, 0
		return choice{mapping: true, timed: true}
	case probeMap:
		if a.n < a.window {
			return choice{mapping: true, timed: true}
		}
		if a.decide(a.median()); a.phase == probeCopy {
			return choice{timed: true} // the confirming probe
		}
	}
	if a.maps {
		if a.fills++; a.fills >= recheckEvery {
			a.start()
			return choice{timed: true}
		}
		return choice{mapping: true}
	}
	// The process-wide count is shared by every conn: add to it in batches, so that
	// conns on many CPUs do not contend for its cache line at every fill.
	if a.fills++; a.fills%countBatch != 0 {
		return choice{}
	}
	n := hostAuto.fills.Add(countBatch)
	next := hostAuto.next.Load()
	if next == 0 {
		hostAuto.next.CompareAndSwap(0, n+exploreInterval)
	} else if n >= next && hostAuto.next.CompareAndSwap(next, n+interval()) {
		a.start()
		return choice{timed: true}
	}
	return choice{}
}

// start opens a probe with its copy window.
func (a *autoPolicy) start() {
	a.phase, a.k, a.n, a.mapped = probeCopy, 0, 0, 0
	if a.maps {
		a.fills = 0
	}
}

// decide closes a probe whose mapping window cost mapNs per byte. A win is confirmed
// by a second probe at once: a single window can win by chance on a busy machine.
func (a *autoPolicy) decide(mapNs float64) {
	a.phase = probeNone
	if float64(a.mapped) >= minMappedShare*float64(a.n) && mapNs > 0 && mapNs < mapMargin*a.copyNs {
		if a.maps || a.won {
			a.maps, a.won = true, false
			hostAuto.interval.Store(exploreInterval)
			return
		}
		a.won = true
		a.start()
		return
	}
	a.lose(mapNs >= clearLoss*a.copyNs)
}

// lose ends a probe that mapping lost: the conn copies, and probes become twice as rare
// in the process, or as rare as they get when mapping lost clearly.
func (a *autoPolicy) lose(clearly bool) {
	a.phase, a.maps, a.won = probeNone, false, false
	if clearly {
		hostAuto.interval.Store(exploreMaxInterval)
		hostAuto.next.Store(hostAuto.fills.Load() + exploreMaxInterval)
		return
	}
	hostAuto.interval.Store(min(2*interval(), exploreMaxInterval))
}

func (a *autoPolicy) observe(ch choice, res fillResult, extra time.Duration) {
	if res.n > 0 {
		a.got += (res.n - a.got) / 8
	}
	if a.phase == probeNone || !ch.timed || res.n <= 0 {
		return
	}
	if ch.mapping != (a.phase == probeMap) {
		a.phase = probeNone // mapping was refused: this window compares nothing
		return
	}
	if ch.mapping && res.unmappable {
		a.lose(false) // the stream does not map here: the probe ends, lost
		return
	}
	d := res.cpu + extra
	if d <= 0 || float64(d) > maxSampleNs*float64(res.n) {
		return // not a believable measurement: leave this fill out
	}
	if a.k < len(a.ns) {
		a.ns[a.k] = float32(float64(d) / float64(res.n))
		a.k++
	}
	a.n += res.n
	if res.mapped {
		a.mapped += res.n
	}
	if q := a.window / 4; a.phase == probeMap && a.n >= q && a.n-res.n < q && a.k >= minEarly &&
		a.median() >= clearLoss*a.copyNs {
		a.lose(true) // the window's first quarter lost clearly
	}
}

// median is the median cost of the window's fills, ns per byte: the thread's CPU time
// also counts the softirq work of packets that happen to arrive during a fill (other
// conns', or on loopback the sender's), which a mean would let a few fills decide.
func (a *autoPolicy) median() float64 {
	if a.k == 0 {
		return 0
	}
	v := a.ns[:a.k]
	slices.Sort(v)
	return float64(v[a.k/2])
}

// interval is the number of bulk fills between two probes.
func interval() int64 {
	if iv := hostAuto.interval.Load(); iv > 0 {
		return iv
	}
	return exploreInterval
}
