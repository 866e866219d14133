package zcnet

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// Limits bound what all the conns of the process together may take for mapping. A conn
// that would go past one copies instead (Stats.CopiedDisabled counts those bytes and
// FallbackReason names the limit); nothing is lost and nothing fails.
type Limits struct {
	// MaxRings is how many conns may hold a ring at once. Each ring is one memory map
	// of the process, and vm.max_map_count bounds them all: when the Go runtime cannot
	// map memory it needs, the process dies, so rings must leave it room. The default is
	// half the map slots free when the limits are first needed. Rings given up (by
	// closed, collected or long-idle conns) whose address ranges wait in the
	// quarantine (see Conn.Close) count too: the quarantine keeps at most a quarter of
	// MaxRings of them, and unmaps the oldest whenever a new ring would go past a limit.
	MaxRings int
	// MaxRingBytes bounds the address space reserved by all rings, those in the
	// quarantine included (at most a quarter of MaxRingBytes of them); RLIMIT_AS bounds
	// the process's. The default is a quarter of what RLIMIT_AS leaves free, or no bound
	// when there is no RLIMIT_AS.
	MaxRingBytes int64
	// MaxPinnedBytes bounds the bytes held in mapped pages by all conns: received bytes
	// not consumed yet, and consumed pages not released yet (a ring releases them once
	// per cycle, or when its conn waits long). Mapped pages leave the socket's memory
	// accounting, and the memory cgroup's, so this is their bound. The default is 1/16
	// of the memory (the smaller of MemTotal and the cgroup's memory.max), at least
	// 64 MiB.
	MaxPinnedBytes int64
}

// DefaultLimits returns the limits derived from this host and process (see Limits). They
// are derived once, when first needed: at the first mapping, or the first call of
// DefaultLimits, CurrentLimits or SetLimits.
func DefaultLimits() Limits { return defaultLimits() }

// SetLimits sets the process-wide limits for conns that map; a zero field takes its
// default. Conns already past a lowered limit keep what they hold and take no more; the
// quarantine of given-up rings is cut to its new bound at once.
func SetLimits(l Limits) error {
	if l.MaxRings < 0 || l.MaxRingBytes < 0 || l.MaxPinnedBytes < 0 {
		return fmt.Errorf("zcnet: negative limit in %+v", l)
	}
	d := defaultLimits()
	if l.MaxRings == 0 {
		l.MaxRings = d.MaxRings
	}
	if l.MaxRingBytes == 0 {
		l.MaxRingBytes = d.MaxRingBytes
	}
	if l.MaxPinnedBytes == 0 {
		l.MaxPinnedBytes = d.MaxPinnedBytes
	}
	budget.lim.Store(&l)
	budget.userSet.Store(true)
	retired.trim()
	return nil
}

// CurrentLimits returns the limits in force.
func CurrentLimits() Limits { return *budget.limits() }

// defaultLimits is DefaultLimits, read once.
var defaultLimits = sync.OnceValue(hostLimits)

// errNoLimit is what a host reading that failed reports; the limit is then generous.
var errNoLimit = errors.New("zcnet: limit unknown")

// ringBudget is the process-wide account of rings and pinned bytes.
type ringBudget struct {
	lim       atomic.Pointer[Limits]
	rings     atomic.Int64
	ringBytes atomic.Int64
	pinned    atomic.Int64
	userSet   atomic.Bool // SetLimits was called: the limits are the user's
}

var budget ringBudget

func (b *ringBudget) limits() *Limits {
	if l := b.lim.Load(); l != nil {
		return l
	}
	d := defaultLimits()
	b.lim.CompareAndSwap(nil, &d)
	return b.lim.Load()
}

// takeRing accounts for a new ring of size bytes, or reports false when it would exceed
// a limit even after the quarantine of retired rings has been emptied for it.
func (b *ringBudget) takeRing(size int) bool {
	for {
		l := b.limits()
		n := b.rings.Add(1)
		s := b.ringBytes.Add(int64(size))
		if n <= int64(l.MaxRings) && s <= l.MaxRingBytes {
			return true
		}
		b.putRing(size)
		if !retired.evictOne() {
			return false
		}
	}
}

// putRing gives back a ring's share.
func (b *ringBudget) putRing(size int) {
	b.rings.Add(-1)
	b.ringBytes.Add(-int64(size))
}

// reserveFailed runs when the kernel refused a ring below the limits (map slots or
// address space ran out, taken by the rest of the process since the limits were
// derived): unless the user set them, the limits are derived again from what is free
// now, so that rings leave the runtime room.
func (b *ringBudget) reserveFailed() {
	if b.userSet.Load() {
		return
	}
	h := hostLimits()
	l := *b.limits()
	l.MaxRings = min(l.MaxRings, int(b.rings.Load())+h.MaxRings)
	l.MaxRingBytes = min(l.MaxRingBytes, b.ringBytes.Load()+h.MaxRingBytes)
	b.lim.Store(&l)
}

// pin accounts for n more pinned bytes, or reports false when they would exceed the
// limit.
func (b *ringBudget) pin(n int) bool {
	if b.pinned.Add(int64(n)) > b.limits().MaxPinnedBytes {
		b.pinned.Add(-int64(n))
		return false
	}
	return true
}

// unpin gives back n pinned bytes.
func (b *ringBudget) unpin(n int) {
	if n != 0 {
		b.pinned.Add(-int64(n))
	}
}

// clampLimit converts a reading to int64, saturating.
func clampLimit(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}
