package zcnet

// stream holds what a conn has received and not handed out, in stream order: first the
// ring's pending mapped bytes, then the fallback buffer's copied bytes. It knows nothing
// of sockets or of the policy: fills add bytes (book space, then commit), calls take
// them (copy them out, or view them).
//
// A view (Next) is valid until the next read-side call, which calls endView. A view
// into the ring is consumed already, so the pages under it stay mapped until the ring's
// next release, which comes only from a later fill.
type stream struct {
	ring *ring // its own allocation: a cleanup unmaps it when the Conn is dropped
	buf  fallback
	// viewLo and viewHi are the ring offsets of the last view into the ring while it is
	// valid (viewHi == 0: none).
	viewLo, viewHi int
	// bufFirst: the buffer holds the bytes before the ring's pending ones, exactly those
	// the current Next takes (see absorb); otherwise the ring's come first.
	bufFirst bool
}

// buffered is the number of received bytes not consumed yet.
func (s *stream) buffered() int { return s.ring.buffered() + s.buf.buffered() }

// copyTo copies buffered bytes into p, in stream order, and consumes them.
func (s *stream) copyTo(p []byte) int {
	n := 0
	if s.ring.buffered() > 0 {
		n = copy(p, s.ring.pending())
		s.ring.consume(n)
	}
	if n < len(p) && s.buf.buffered() > 0 {
		m := copy(p[n:], s.buf.pending())
		s.buf.consume(m)
		n += m
	}
	return n
}

// contiguous reports whether n bytes starting at the first pending one can lie in the
// ring: nothing is pending in the buffer, and the ring is empty (a mapping then starts a
// new cycle if it must) or has the address space after head.
func (s *stream) contiguous(n int) bool {
	return s.buf.buffered() == 0 && (s.ring.buffered() == 0 || s.ring.head+n <= s.ring.size())
}

// take hands out the next n bytes (n <= buffered) as one slice: a view of the ring when
// they lie there, else of the buffer, after gathering the ring's pending bytes into it.
// It reports whether the view points into the mapping.
func (s *stream) take(n int) ([]byte, bool) {
	if s.bufFirst {
		s.bufFirst = false
	} else if s.ring.buffered() >= n {
		v := s.ring.pending()[:n:n]
		s.viewLo, s.viewHi = s.ring.head, s.ring.head+n
		s.ring.consume(n)
		return v, true
	} else {
		s.gather()
	}
	v := s.buf.pending()[:n:n]
	s.buf.held = true
	s.buf.consume(n)
	return v, false
}

// gather moves the ring's pending bytes to the front of the buffer, so that all pending
// bytes are contiguous there.
func (s *stream) gather() {
	r := s.ring.buffered()
	if r == 0 {
		return
	}
	if s.bufFirst {
		s.absorb(r) // the ring's bytes follow the buffer's
		return
	}
	old := s.buf.pending()
	var f fallback
	sp := f.space(r + len(old))
	copy(sp[copy(sp, s.ring.pending()):], old)
	f.commit(r + len(old))
	s.ring.consume(r)
	s.buf.put()
	s.buf = f
}

// absorb appends up to k of the ring's pending bytes to the buffer: after a fill mapped
// bytes that follow the buffered ones in the stream. It reports whether it left bytes in
// the ring: the buffer then holds the k bytes the caller is about to take, and the ring
// what follows them (take takes from the buffer first).
func (s *stream) absorb(k int) bool {
	r := min(s.ring.buffered(), k)
	if r > 0 {
		copy(s.buf.space(r), s.ring.pending()[:r])
		s.buf.commit(r)
		s.ring.consume(r)
	}
	s.bufFirst = s.ring.buffered() > 0
	return s.bufFirst
}

// endView ends the validity of the last view.
func (s *stream) endView() {
	s.viewLo, s.viewHi = 0, 0
	s.buf.unhold()
}
