package zcnet

import (
	"errors"
	"syscall"
)

// zerocopyReceiver is the receive backend that maps whole pages of the receive queue
// into the stream's ring with TCP_ZEROCOPY_RECEIVE, and copies (recv(2) into the
// stream's buffer) only the bytes the kernel cannot map.
type zerocopyReceiver struct {
	zc      zerocopyReceive // here: a local would escape to the heap at every try
	empties int             // mapping calls in a row that found nothing with bytes queued
	small   bool            // fills take less than a page (small requests): recv(2) first
	mss     int             // TCP_INFO rcv_mss when last read; 0: not read yet
	skips   int             // unmappable stretches since rcv_mss was read
	// unmappable counts the mapping fills in a row that mapped nothing, up to
	// unmappableFills.
	unmappable int
}

// try maps what the fill wants, waiting in the same call until its goal.
func (m *zerocopyReceiver) try(f *filler, fd int) bool {
	if m.small {
		return m.trySmall(f, fd)
	}
	if !f.s.ringReserved() {
		if done, ok := m.reserve(f, fd); done {
			return ok
		}
	}
	for {
		zc := &m.zc
		*zc = zerocopyReceive{}
		asked, err := f.s.mapSpace(zc, f.ch.want-f.res.n, f.ch.span-f.res.n)
		switch {
		case err != nil && f.res.n > 0:
			return true // what was mapped first; the next fill meets the error
		case err == errBudget:
			return m.recvBudget(f, fd, err)
		case err != nil:
			return f.failMap(fd, "madvise", err)
		case asked == 0 && f.res.n > 0:
			return true
		case asked == 0:
			// Pending bytes fill the ring: only the copy path can take more.
			return f.read(fd, f.s.copySpace(copyBufSize), false, causeDisabled)
		}
		if err := m.call(f, fd); err != nil {
			f.s.addMapped(0, asked)
			return m.callFailed(f, fd, err)
		}
		n := int(zc.Length)
		if n > asked || n%pageSize != 0 {
			f.s.addMapped(0, asked)
			return f.failMap(fd, "getsockopt TCP_ZEROCOPY_RECEIVE",
				errors.New("kernel reported impossible lengths"))
		}
		f.s.addMapped(n, asked)
		m.takeSockErr(f, zc)
		f.res.queued = int(zc.Inq)
		if zc.RecvSkipHint > 0 {
			f.st.skips.Add(1)
		}
		var done, ok bool
		switch {
		case n > 0:
			done, ok = m.gotPages(f, fd, n)
		case f.res.n > 0:
			return true
		case zc.RecvSkipHint > 0:
			return m.recvSkipped(f, fd)
		case f.s.errPending():
			return true
		default:
			done, ok = m.empty(f, fd)
		}
		if done {
			return ok
		}
	}
}

// call is the mapping call, retried on EINTR with the request it was given.
func (m *zerocopyReceiver) call(f *filler, fd int) error {
	req := m.zc
	_, err := ignoringEINTR(func() (int, error) {
		m.zc = req
		f.st.zcCalls.Add(1)
		return 0, f.sys.zerocopy(fd, &m.zc)
	})
	return err
}

// trySmall serves fills that take less than a page (small requests): a recv of up to
// a page takes such a request in one call, where a mapping call would find nothing to
// map first. Once a recv fills a page, more may be queued: the next fill maps. A page
// that it splits costs one page of copy.
func (m *zerocopyReceiver) trySmall(f *filler, fd int) bool {
	space := f.s.copySpace(1)
	ok := f.read(fd, space[:min(len(space), pageSize)], false, causeTail)
	m.small = !ok || f.res.n < pageSize
	return ok
}

// reserve reserves the ring before the first mapping. A conn that waits for its first
// byte holds no VMA: a peek waits for it first. It reports done when the try ends here,
// with try's answer.
func (m *zerocopyReceiver) reserve(f *filler, fd int) (done, ok bool) {
	if f.sys.peek != nil {
		if n, err := f.peek(fd); n <= 0 {
			return true, f.settle(n, err)
		}
	}
	if err := f.s.reserveRing(fd); err != nil {
		if err == errBudget {
			return true, m.recvBudget(f, fd, err)
		}
		return true, f.failMap(fd, "mmap", err)
	}
	return false, false
}

// recvBudget copies for a mapping fill that a process-wide limit refused.
func (m *zerocopyReceiver) recvBudget(f *filler, fd int, err error) bool {
	f.st.setReason(err.Error())
	return f.read(fd, f.s.copySpace(copyBufSize), false, causeDisabled)
}

// callFailed sorts a mapping call's error.
func (m *zerocopyReceiver) callFailed(f *filler, fd int, err error) bool {
	const op = "getsockopt TCP_ZEROCOPY_RECEIVE"
	switch {
	case isEAGAIN(err):
		f.wait()
		return false
	case f.res.n > 0:
		// Hand over what was mapped first; an end or an error comes with the next
		// fill (a failure turns mapping off now).
		if !isEIO(err) {
			f.disable(op + ": " + err.Error())
		}
		return true
	case isEIO(err):
		// Nothing queued and the stream is done: recv tells a clean end (0) from a
		// reset (its error).
		return f.read(fd, f.s.copySpace(pageSize), false, causeTail)
	}
	return f.failMap(fd, op, err)
}

// gotPages records n freshly mapped bytes, and reports done when the try ends: the
// goal is reached or the stream's next bytes need more than a mapping call, or the
// rest of the goal has not arrived (then it waits).
func (m *zerocopyReceiver) gotPages(f *filler, fd, n int) (done, ok bool) {
	zc := &m.zc
	m.unmappable = 0
	f.st.mapped.Add(uint64(n))
	f.st.mapFills.Add(1)
	f.received(f.res.n+n, true)
	if f.res.n >= f.ch.goal || zc.RecvSkipHint > 0 || zc.Err != 0 || f.s.errQueued() {
		return true, true
	}
	if zc.Inq == 0 {
		// Wait for the rest in this call, without another mapping call and peek to
		// find the queue empty. SO_RCVLOWAT asks for what is still missing, no more
		// (see wait).
		f.wait()
		return true, false
	}
	return false, false
}

// recvSkipped copies the bytes the kernel reported unmappable. It asks recv for those
// only: asking for more would copy pages that arrived meanwhile and could have been
// mapped. Once several fills in a row mapped nothing, the stream is taken to be
// unmappable for this fill: recv takes what the fill wants in one go.
func (m *zerocopyReceiver) recvSkipped(f *filler, fd int) bool {
	hint, inq := int(m.zc.RecvSkipHint), int(m.zc.Inq)
	if m.unmappable < unmappableFills {
		m.unmappable++
	} else {
		hint = max(hint, f.ch.want)
	}
	f.res.unmappable = m.unmappable >= unmappableFills
	space := f.s.copySpace(min(hint, copyBufSize))
	f.res.skip = m.skipCause(f, fd, inq)
	ok := f.read(fd, space[:min(len(space), hint)], false, f.res.skip)
	m.small = ok && f.res.n > 0 && f.res.n < pageSize && inq < pageSize
	return ok
}

// empty handles a mapping call that found nothing queued. The call does not report a
// shutdown (a reset already reported, CloseRead) and the poller will not signal it
// again: only recv tells an empty queue (EAGAIN: wait) from the end. A peek leaves bytes
// that arrived since the mapping call queued, to be mapped rather than copied out of
// their page; a second empty answer with bytes queued copies, so that an odd answer
// cannot spin here. It reports done when the try ends.
func (m *zerocopyReceiver) empty(f *filler, fd int) (done, ok bool) {
	if f.sys.peek == nil || m.empties > 0 {
		return true, f.read(fd, f.s.copySpace(pageSize)[:pageSize-1], false, causeTail)
	}
	n, err := f.peek(fd)
	if n <= 0 {
		return true, f.settle(n, err)
	}
	m.empties++
	return false, false
}

// skipCause says why the kernel could not map the next bytes: segments that do not carry
// whole pages (the bytes at their ends, whatever is queued), fewer than a page queued, or
// pages it does not map (compound or page cache). rcv_mss is read again after 64
// unmappable stretches, as the peer may change.
func (m *zerocopyReceiver) skipCause(f *filler, fd, inq int) copyCause {
	if f.sys.rcvMSS != nil && (m.mss == 0 || m.skips >= 64) {
		if mss, err := f.sys.rcvMSS(fd); err == nil {
			m.mss, m.skips = mss, 0
		}
	}
	m.skips++
	switch {
	case m.mss != 0 && m.mss%pageSize != 0:
		return causeSegment
	case inq < pageSize:
		return causeTail
	}
	return causePageKind
}

// takeSockErr takes the pending socket error the mapping call handed over (negated, as
// the kernel stores it; the call cleared it in the socket). It is reported after the
// bytes still queued, as recv(2) would.
func (m *zerocopyReceiver) takeSockErr(f *filler, zc *zerocopyReceive) {
	if zc.Err == 0 {
		return
	}
	e := syscall.Errno(-zc.Err)
	if zc.Err > 0 {
		e = syscall.Errno(zc.Err)
	}
	switch {
	case e == syscall.EPIPE:
		// A reset after the peer's FIN (CLOSE_WAIT): recv(2) ends such a stream with
		// EOF, and so does the conn.
	case zc.Inq > 0:
		f.s.failAfterQueue(e)
	default:
		f.s.failAfter(e)
	}
}
