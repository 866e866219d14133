package zcnet

import "io"

// stream is the one owner of what a conn has received and not handed out, and of the
// stream's end. Bytes lie in stream order: first the ring's pending mapped bytes, then
// the fallback buffer's copied bytes. It knows nothing of sockets or of the policy.
//
// Fills hand it what they received through two entry points: mapped pages (mapSpace,
// then addMapped) and copied bytes (copySpace, then addCopied). Read, Next and WriteTo
// take from it (copyTo; gatherFor, gathered and view; writeTo). The end (EOF, an error
// after the buffered bytes, an error after the kernel's queue) is recorded here by the
// fills and reported here by ended.
//
// A view (Next) is valid until the next read-side call, which calls endView. A view
// into the ring is consumed already, so the pages under it stay mapped until the ring's
// next release, which comes only from a later fill.
type stream struct {
	ring *ring // its own allocation: a cleanup unmaps it when the Conn is dropped
	buf  fallback
	end  streamEnd
	// viewLo and viewHi are the ring offsets of the last view into the ring while it is
	// valid (viewHi == 0: none).
	viewLo, viewHi int
	// bufFirst: the buffer holds the bytes before the ring's pending ones, exactly those
	// the current Next takes (see absorb); otherwise the ring's come first.
	bufFirst bool
	// assembling: gatherFor gathered the pending bytes in the buffer for a view.
	assembling bool
}

// streamEnd is the end of the stream as the kernel reported it.
type streamEnd struct {
	eof  bool  // the peer's FIN was read: no byte will follow
	rerr error // an error to report once the bytes before it are consumed
	qerr error // an error to report once the kernel's receive queue is drained
}

// buffered is the number of received bytes not consumed yet.
func (s *stream) buffered() int { return s.ring.buffered() + s.buf.buffered() }

// ended returns the error that ends the stream, if one was seen: io.EOF for good, or an
// error once. Callers ask only when nothing is buffered.
func (s *stream) ended() error {
	if s.end.eof {
		return io.EOF
	}
	err := s.end.rerr
	s.end.rerr = nil
	return err
}

// setEOF records the peer's FIN: no byte follows the buffered ones.
func (s *stream) setEOF() { s.end.eof = true }

// failAfter records err to be reported once the buffered bytes are consumed.
func (s *stream) failAfter(err error) { s.end.rerr = err }

// failAfterQueue records err to be reported once the kernel's receive queue is drained.
func (s *stream) failAfterQueue(err error) { s.end.qerr = err }

// errQueued reports whether an error waits for the kernel's receive queue to drain.
func (s *stream) errQueued() bool { return s.end.qerr != nil }

// errPending reports whether an error waits for the buffered bytes to be consumed.
func (s *stream) errPending() bool { return s.end.rerr != nil }

// drained records that the kernel's queue is empty and the socket read its end: the
// error queued behind the bytes is due now, or else the stream ended cleanly.
func (s *stream) drained() {
	if s.end.qerr != nil {
		s.end.rerr, s.end.qerr = s.end.qerr, nil
	} else {
		s.end.eof = true
	}
}

// The entry points of fills.

// mapSpace sets zc up to map up to want bytes into the ring (see ring.prepare).
func (s *stream) mapSpace(zc *zerocopyReceive, want, span int) (int, error) {
	return s.ring.prepare(zc, want, span)
}

// addMapped records that the kernel mapped n of the asked bytes mapSpace set up.
func (s *stream) addMapped(n, asked int) { s.ring.mapped(n, asked) }

// copySpace returns free buffer space of at least min bytes for a copy.
func (s *stream) copySpace(min int) []byte { return s.buf.space(min) }

// addCopied records that n bytes were copied to the start of the last copySpace.
func (s *stream) addCopied(n int) { s.buf.add(n) }

// ringReserved reports whether the ring holds its address range.
func (s *stream) ringReserved() bool { return s.ring.reserved() }

// reserveRing reserves the ring's address range on the socket fd (see ring.reserve).
func (s *stream) reserveRing(fd int) error { return s.ring.reserve(fd) }

// releaseRing drops the ring's consumed pages now (see ring.release).
func (s *stream) releaseRing() error {
	if !s.ring.reserved() {
		return nil
	}
	return s.ring.release()
}

// dropEmptyRing gives the ring up (to the quarantine, see ring.retire) when it holds no
// pending byte.
func (s *stream) dropEmptyRing() error { return s.ring.retireIfEmpty() }

// parkRing hands the ring to the idle timer d while the reader waits (see idler).
func (s *stream) parkRing(d *idler) { d.park(s.ring) }

// dropEmptyBuf gives an empty buffer back to the pool: before a wait, or after a fill.
func (s *stream) dropEmptyBuf() { s.buf.putEmpty() }

// The callers' side.

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

// writeTo writes every buffered byte to w, in stream order, and consumes what w took.
// It returns the bytes written and, of them, those written straight from the ring.
func (s *stream) writeTo(w io.Writer) (n, mapped int64, err error) {
	if s.ring.buffered() > 0 {
		m, err := writeAll(w, s.ring.pending())
		s.ring.consume(m)
		n, mapped = int64(m), int64(m)
		if err != nil {
			return n, mapped, err
		}
	}
	if s.buf.buffered() > 0 {
		m, err := writeAll(w, s.buf.pending())
		s.buf.consume(m)
		n += int64(m)
		if err != nil {
			return n, mapped, err
		}
	}
	return n, mapped, nil
}

// gatherFor readies the stream for a mapping fill towards a view of n bytes: when they
// cannot lie contiguously in the ring, it gathers the pending bytes in the buffer and
// makes room there for the missing ones (one allocation for the whole view). The missing
// bytes are still taken by mapping: a recv(2) of more than the kernel cannot map would
// split the mappable pages behind them and turn the rest of the stream into copies.
// gathered finishes it after the fill.
func (s *stream) gatherFor(n int) {
	missing := n - s.buffered()
	s.assembling = !s.contiguous(n)
	if s.assembling {
		s.gather()
		s.buf.space(missing)
	}
}

// gathered finishes gatherFor after the fill that received up to missing bytes: it
// reports whether the buffer now holds exactly the bytes the view takes, the ring those
// that follow them (the view is then ready, whatever buffered reports).
func (s *stream) gathered(missing int) bool {
	if !s.assembling {
		return false
	}
	s.assembling = false
	return s.absorb(missing)
}

// contiguous reports whether n bytes starting at the first pending one can lie in the
// ring: nothing is pending in the buffer, and the ring is empty (a mapping then starts a
// new cycle if it must) or has the address space after head.
func (s *stream) contiguous(n int) bool {
	return s.buf.buffered() == 0 && (s.ring.buffered() == 0 || s.ring.head+n <= s.ring.size())
}

// view hands out the next n bytes (n <= buffered) as one slice: a view of the ring when
// they lie there (and inPlace allows it), else of the buffer, after gathering the ring's
// pending bytes into it. It reports whether the view points into the mapping.
func (s *stream) view(n int, inPlace bool) ([]byte, bool) {
	if !inPlace {
		s.gather()
	}
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
	f.add(r + len(old))
	s.ring.consume(r)
	s.buf.put()
	s.buf = f
}

// absorb appends up to k of the ring's pending bytes to the buffer: after a fill mapped
// bytes that follow the buffered ones in the stream. It reports whether it left bytes in
// the ring: the buffer then holds the k bytes the caller is about to take, and the ring
// what follows them (view takes from the buffer first).
func (s *stream) absorb(k int) bool {
	r := min(s.ring.buffered(), k)
	if r > 0 {
		copy(s.buf.space(r), s.ring.pending()[:r])
		s.buf.add(r)
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

// free releases the ring and the buffer at Close. The ring's range goes to the
// quarantine, reading zeros, as a view may still be read (see ring.retire).
func (s *stream) free() {
	s.ring.retire() // a failed munmap leaves harmless address space
	s.buf.drop()
	s.endView()
}
