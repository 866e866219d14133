package zcnet

import (
	"errors"
	"unsafe"
)

// ring is a conn's reserved VMA: the address range TCP_ZEROCOPY_RECEIVE maps socket pages
// into. The pages in mem[head:tail] are mapped and not yet consumed; pages in
// mem[clean:dirty] may still be mapped (consumed or not) and are dropped either by the
// kernel, which zaps a range before it maps into it, or by release when the conn is about
// to sit idle.
//
// A ring is used by one reader at a time (the Conn's read lock); it is not safe for
// concurrent use.
type ring struct {
	mem   []byte // the reservation; nil until reserve
	head  int    // first unconsumed mapped byte
	tail  int    // end of the mapped bytes; the next mapping starts here
	dirty int    // mem[clean:dirty] may hold mapped pages
	clean int    // mem[:clean] holds none (consumed pages released while bytes are pending)
}

// ptSpan is the address range one page-table page covers (a PMD entry): rings aligned to
// it do not share a page-table lock with other mappings. It is capped so that hosts with
// 64 KiB pages (512 MiB spans) do not reserve absurd padding.
func ptSpan() int {
	s := pageSize * (pageSize / 8)
	if s > 32<<20 {
		s = 32 << 20
	}
	return s
}

// reserve maps size bytes (a multiple of the page size) of address space on the socket fd,
// aligned to the page-table span, and trims the padding so that exactly one VMA remains.
func (r *ring) reserve(s *sysCalls, fd int, size int) error {
	if r.mem != nil {
		return errors.New("zcnet: ring already reserved")
	}
	align := ptSpan()
	if size < align {
		// A ring smaller than the span need only not straddle one.
		align = 1
		for align < size {
			align <<= 1
		}
	}
	if align < pageSize {
		align = pageSize
	}
	pad := align - pageSize
	p, err := s.reserve(fd, uintptr(size+pad))
	if err != nil {
		return err
	}
	base := uintptr(p)
	aligned := (base + uintptr(align-1)) &^ uintptr(align-1)
	if head := aligned - base; head > 0 {
		s.unmap(p, head) // padding only: a failure leaves harmless reserved space
	}
	if tailPad := base + uintptr(size+pad) - (aligned + uintptr(size)); tailPad > 0 {
		s.unmap(unsafe.Add(p, aligned-base+uintptr(size)), tailPad)
	}
	r.mem = unsafe.Slice((*byte)(unsafe.Add(p, aligned-base)), size)
	r.head, r.tail, r.dirty, r.clean = 0, 0, 0, 0
	return nil
}

// reserved reports whether the ring has its VMA.
func (r *ring) reserved() bool { return r.mem != nil }

// size is the ring's length in bytes (0 before reserve).
func (r *ring) size() int { return len(r.mem) }

// buffered is the number of mapped, unconsumed bytes.
func (r *ring) buffered() int { return r.tail - r.head }

// pending returns the mapped, unconsumed bytes. The slice aliases the mapping.
func (r *ring) pending() []byte { return r.mem[r.head:r.tail] }

// consume marks n pending bytes as consumed. When nothing is left the next mapping starts
// again at the beginning of the ring.
func (r *ring) consume(n int) {
	r.head += n
	if r.head == r.tail {
		r.head, r.tail, r.clean = 0, 0, 0
	}
}

// room is the number of bytes that can be mapped after tail.
func (r *ring) room() int { return len(r.mem) - r.tail }

// prepare fills zc to map up to want bytes (rounded down to pages, limited by room) at
// tail, with the TLB-clean hint when the target range is known to hold no pages.
func (r *ring) prepare(zc *zerocopyReceive, want int) {
	if want > r.room() {
		want = r.room()
	}
	want &^= pageSize - 1
	zc.Address = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(r.mem))) + uintptr(r.tail))
	zc.Length = uint32(want)
	if r.tail >= r.dirty {
		zc.Flags |= tcpZerocopyFlagTLBCleanHint
	}
}

// commit records that the kernel mapped n bytes at tail.
func (r *ring) commit(n int) {
	r.tail += n
	if r.tail > r.dirty {
		r.dirty = r.tail
	}
}

// release drops the mapped pages that hold no pending byte, so that a waiting conn pins
// no socket memory beyond the bytes it has not consumed: all of them when nothing is
// pending, else the consumed pages before head and those left after tail by an earlier
// pass. It is a no-op when there are no such pages.
func (r *ring) release(s *sysCalls) error {
	if r.head == r.tail {
		if r.dirty == 0 {
			return nil
		}
		if err := s.dontneed(unsafe.Pointer(&r.mem[0]), uintptr(r.dirty)); err != nil {
			return err
		}
		r.dirty, r.clean = 0, 0
		return nil
	}
	if lo := r.head &^ (pageSize - 1); lo > r.clean {
		if err := s.dontneed(unsafe.Pointer(&r.mem[r.clean]), uintptr(lo-r.clean)); err != nil {
			return err
		}
		r.clean = lo
	}
	if r.dirty > r.tail {
		if err := s.dontneed(unsafe.Pointer(&r.mem[r.tail]), uintptr(r.dirty-r.tail)); err != nil {
			return err
		}
		r.dirty = r.tail
	}
	return nil
}

// unmap releases the VMA. The ring must not be used afterwards except for reserve.
func (r *ring) unmap(s *sysCalls) error {
	if r.mem == nil {
		return nil
	}
	err := s.unmap(unsafe.Pointer(&r.mem[0]), uintptr(len(r.mem)))
	r.mem = nil
	r.head, r.tail, r.dirty, r.clean = 0, 0, 0, 0
	return err
}
