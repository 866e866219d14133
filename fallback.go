package zcnet

import "github.com/valyala/bytebufferpool"

// copyBufSize is the size of the pooled buffer a Read smaller than it receives into once
// a recv(2) straight into the caller's buffer has filled it: one recv(2) then serves many
// small Reads.
const copyBufSize = 64 << 10

// minBufSize is the smallest pooled buffer: what a small Next gathers into.
const minBufSize = 4 << 10

// fallback holds bytes received by copying (recv(2)) that the caller has not consumed
// yet: b.B[r:w]. Its buffer comes from bytebufferpool (bufPools) and goes back there as
// soon as it is drained, so an idle conn holds none.
type fallback struct {
	b    *bytebufferpool.ByteBuffer
	r, w int
	held bool // a slice of b was handed out (Next) and must stay valid until the next call
}

// buffered is the number of unconsumed bytes.
func (f *fallback) buffered() int { return f.w - f.r }

// pending returns the unconsumed bytes; the slice aliases the pooled buffer.
func (f *fallback) pending() []byte {
	if f.b == nil {
		return nil
	}
	return f.b.B[f.r:f.w]
}

// bufPools hold the pooled buffers by size class: pool k keeps buffers of minBufSize<<k
// bytes (the last one also larger ones). bytebufferpool calibrates each pool to the sizes
// it is given and drops buffers above them, so one pool per size keeps the large buffers
// Next gathers into as reusable as the small ones.
var bufPools [12]bytebufferpool.Pool

// bufClass is the size class of a buffer of at least n bytes.
func bufClass(n int) int {
	k := 0
	for k < len(bufPools)-1 && minBufSize<<k < n {
		k++
	}
	return k
}

// getBuf returns a pooled buffer of at least n bytes capacity.
func getBuf(n int) *bytebufferpool.ByteBuffer {
	k := bufClass(n)
	b := bufPools[k].Get()
	if want := max(n, minBufSize<<k); cap(b.B) < want {
		b.B = make([]byte, 0, want)
	}
	return b
}

// putBuf returns b to the pool of its size class, with its full capacity as length (the
// pool calibrates on the length of what it is given).
func putBuf(b *bytebufferpool.ByteBuffer) {
	b.B = b.B[:cap(b.B)]
	bufPools[bufClass(cap(b.B))].Put(b)
}

// space returns the free space after the unconsumed bytes, making it at least min bytes:
// by compacting, or by moving to a buffer at least twice as large (so that gathering a
// large view costs linear time); unconsumed bytes are kept.
func (f *fallback) space(min int) []byte {
	if f.b == nil {
		f.b = getBuf(min)
		f.r, f.w = 0, 0
	}
	b := f.b.B[:cap(f.b.B)]
	if len(b)-f.w >= min {
		return b[f.w:]
	}
	n := f.w - f.r
	if f.r > 0 && len(b)-n >= min && !f.held {
		copy(b, b[f.r:f.w])
	} else {
		nb := getBuf(max(n+min, 2*len(b)))
		copy(nb.B[:cap(nb.B)], b[f.r:f.w])
		if !f.held {
			putBuf(f.b)
		} // else the old buffer is left to the garbage collector, not the pool
		f.b, f.held = nb, false
		b = nb.B[:cap(nb.B)]
	}
	f.b.B = b
	f.r, f.w = 0, n
	return b[f.w:]
}

// add records that n bytes were written at the start of the last space.
func (f *fallback) add(n int) { f.w += n }

// consume marks n unconsumed bytes as consumed, returning the buffer to the pool once it
// is drained (unless a view of it is held).
func (f *fallback) consume(n int) {
	f.r += n
	if f.r == f.w && !f.held {
		f.put()
	}
}

// unhold ends the validity of a view handed out from the buffer.
func (f *fallback) unhold() {
	f.held = false
	if f.b != nil && f.r == f.w {
		f.put()
	}
}

// putEmpty returns the buffer to the pool when it holds nothing: before a wait, so that
// a waiting conn holds no buffer.
func (f *fallback) putEmpty() {
	if f.b != nil && f.r == f.w && !f.held {
		f.put()
	}
}

// put returns the buffer to the pool.
func (f *fallback) put() {
	if f.b != nil {
		putBuf(f.b)
	}
	f.b = nil
	f.r, f.w = 0, 0
}

// drop forgets the buffer without returning it to the pool when a view of it may still
// be referenced: used at Close.
func (f *fallback) drop() {
	if !f.held {
		f.put()
		return
	}
	f.b = nil
	f.r, f.w = 0, 0
	f.held = false
}
