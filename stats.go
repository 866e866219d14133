package zcnet

import (
	"sync/atomic"
)

// Stats counts how a conn (or all conns of a Listener) received. Byte counts are of
// stream bytes delivered to the conn, whichever call consumes them later.
type Stats struct {
	// MappedBytes were received by mapping pages (TCP_ZEROCOPY_RECEIVE).
	MappedBytes uint64
	// CopiedBytes were received by copying (recv(2)): unaligned payload, tails under a
	// page, and everything on the copy path.
	CopiedBytes uint64
	// ZerocopyCalls counts TCP_ZEROCOPY_RECEIVE calls; RecvCalls counts recv(2) calls,
	// a Read that reads as net.TCPConn.Read does (see Waits) as one.
	ZerocopyCalls, RecvCalls uint64
	// Skips counts mapping calls that reported bytes the kernel could not map
	// (recv_skip_hint): unaligned payload.
	Skips uint64
	// Waits counts the times a read waited in the poller for data, except the waits of
	// Reads that copy straight into their buffer with no chance to batch (a buffer under
	// 64 KiB, or a conn exchanging small messages), which read as net.TCPConn.Read does,
	// without that count. BatchedWaits counts
	// the waits that asked the kernel to wake the reader only once a buffer's worth was
	// queued (SO_RCVLOWAT, see README), and BoundedWaits those of them that their bound
	// ended before that: the stream sent less than the mark in time.
	Waits, BatchedWaits, BoundedWaits uint64
	// MapFills counts the mapping calls that mapped pages, CopyFills the recv calls that
	// received bytes; in ModeAuto their ratio shows the choice.
	MapFills, CopyFills uint64
	// ViewBytes were handed out by Next or WriteTo straight from mapped pages, with no copy
	// in user space; AssembledBytes had to be gathered into a pooled buffer by Next.
	ViewBytes, AssembledBytes uint64
	// CopiedBytes by cause: the five add up to CopiedBytes.
	//   - CopiedPolicy: the mode chose to copy (ModeCopy, or ModeAuto found copying cheaper
	//     or the conn's reads small); a ModeZeroCopy conn that backs off (MapBackoffs)
	//     counts its copies under the cause its mapping calls met, one of the three below;
	//   - CopiedDisabled: mapping was not available (unsupported host, a failed mapping
	//     call, a process-wide budget reached; FallbackReason says which);
	//   - CopiedSegment: segments do not carry whole pages of payload (TCP_INFO's rcv_mss
	//     is not a multiple of the page size): the partial pages at their ends, or all of
	//     them when a segment is under a page. Set PageAlignedMSS on the listener (or the
	//     dialer), or use NIC header split;
	//   - CopiedTail: with page-sized segments, less than a page was queued (small
	//     messages, the end of a burst);
	//   - CopiedPageKind: page-sized segments the kernel still would not map, because the
	//     sender's pages are compound or page cache (on loopback, a sender without
	//     MSG_ZEROCOPY while net.core.high_order_alloc_disable is 0).
	CopiedPolicy, CopiedDisabled, CopiedTail, CopiedSegment, CopiedPageKind uint64
	// MapBackoffs counts the times a ModeZeroCopy conn stopped mapping for a stretch of
	// the stream (1 MiB, doubling up to 64 MiB) because its mapping calls mapped
	// nothing (the copy causes above say why); it tries again after each stretch, which
	// doubles while the stream keeps mapping nothing, and maps again as soon as a try
	// maps.
	MapBackoffs uint64
	// SplicedBytes were moved by WriteTo from the socket to a file or socket with
	// splice(2), in the kernel: neither mapped nor copied, and not in MappedShare.
	SplicedBytes uint64
	// Releases counts the calls that dropped consumed mapped pages (madvise), and
	// ReleasedBytes the bytes of address space they covered: their ratio shows the batching.
	Releases, ReleasedBytes uint64
	// FallbackReason says why the conn stopped (or never started) mapping, or the first
	// process-wide limit that made it copy; it is empty while mapping was never refused.
	// ModeCopy reads "ModeCopy".
	FallbackReason string
}

// Add adds o's counters to s, to sum the Stats of several conns; s keeps its
// FallbackReason unless it has none.
func (s *Stats) Add(o Stats) {
	s.MappedBytes += o.MappedBytes
	s.CopiedBytes += o.CopiedBytes
	s.ZerocopyCalls += o.ZerocopyCalls
	s.RecvCalls += o.RecvCalls
	s.Skips += o.Skips
	s.Waits += o.Waits
	s.BatchedWaits += o.BatchedWaits
	s.BoundedWaits += o.BoundedWaits
	s.MapFills += o.MapFills
	s.CopyFills += o.CopyFills
	s.ViewBytes += o.ViewBytes
	s.AssembledBytes += o.AssembledBytes
	s.CopiedPolicy += o.CopiedPolicy
	s.CopiedDisabled += o.CopiedDisabled
	s.CopiedTail += o.CopiedTail
	s.CopiedSegment += o.CopiedSegment
	s.CopiedPageKind += o.CopiedPageKind
	s.MapBackoffs += o.MapBackoffs
	s.SplicedBytes += o.SplicedBytes
	s.Releases += o.Releases
	s.ReleasedBytes += o.ReleasedBytes
	if s.FallbackReason == "" {
		s.FallbackReason = o.FallbackReason
	}
}

// MappedShare is MappedBytes over all received bytes (0 when nothing was received).
func (s Stats) MappedShare() float64 {
	t := s.MappedBytes + s.CopiedBytes
	if t == 0 {
		return 0
	}
	return float64(s.MappedBytes) / float64(t)
}

// counters are a conn's live Stats, written by its reader and read by anyone.
type counters struct {
	mapped, copied, zcCalls, recvCalls, skips, waits atomic.Uint64
	mapFills, copyFills, viewBytes, assembled        atomic.Uint64
	copyCause                                        [numCauses]atomic.Uint64
	releases, released, spliced, backoffs            atomic.Uint64
	batched, bounded                                 atomic.Uint64
	reason                                           atomic.Pointer[string]
}

func (c *counters) snapshot() Stats {
	s := Stats{
		MappedBytes:    c.mapped.Load(),
		CopiedBytes:    c.copied.Load(),
		ZerocopyCalls:  c.zcCalls.Load(),
		RecvCalls:      c.recvCalls.Load(),
		Skips:          c.skips.Load(),
		Waits:          c.waits.Load(),
		BatchedWaits:   c.batched.Load(),
		BoundedWaits:   c.bounded.Load(),
		MapFills:       c.mapFills.Load(),
		CopyFills:      c.copyFills.Load(),
		ViewBytes:      c.viewBytes.Load(),
		AssembledBytes: c.assembled.Load(),
		CopiedPolicy:   c.copyCause[causePolicy].Load(),
		CopiedDisabled: c.copyCause[causeDisabled].Load(),
		CopiedTail:     c.copyCause[causeTail].Load(),
		CopiedSegment:  c.copyCause[causeSegment].Load(),
		CopiedPageKind: c.copyCause[causePageKind].Load(),
		MapBackoffs:    c.backoffs.Load(),
		SplicedBytes:   c.spliced.Load(),
		Releases:       c.releases.Load(),
		ReleasedBytes:  c.released.Load(),
	}
	if r := c.reason.Load(); r != nil {
		s.FallbackReason = *r
	}
	return s
}

// setReason records why mapping was refused, unless a reason is recorded already.
func (c *counters) setReason(r string) { c.reason.CompareAndSwap(nil, &r) }

// copyCause says why copied bytes were not mapped (see Stats.CopiedPolicy and the rest).
type copyCause int

const (
	causePolicy copyCause = iota
	causeDisabled
	causeTail
	causeSegment
	causePageKind
	numCauses
)
