package zcnet

import (
	"errors"
	"io"
	"syscall"
	"time"
)

// rawConn is the part of syscall.RawConn the read path uses: run f with the socket's fd,
// waiting in the Go netpoller (honouring deadlines and Close) each time f returns false.
type rawConn interface {
	Read(f func(fd uintptr) bool) error
}

// fillReq is one fill: a trip to the kernel for new bytes, on the path the policy chose.
type fillReq struct {
	mapping bool      // map whole pages into the ring (else recv(2))
	dst     []byte    // recv straight into dst; nil: into the stream's buffer
	want    int       // mapping: map up to want bytes; buffer: at least want bytes of space
	span    int       // mapping: contiguous room the call needs in the ring (Next's view)
	goal    int       // mapping: keep mapping, waiting in the same call, until goal bytes
	lowat   int       // SO_RCVLOWAT while waiting (Next's missing bytes; else 1)
	cause   copyCause // why a recv fill copies (causePolicy or causeDisabled)
	timed   bool      // measure the thread CPU time of the try that receives
}

// fillResult is what a fill received.
type fillResult struct {
	n      int           // bytes received: into dst, the ring or the buffer
	mapped bool          // they were mapped (else copied)
	cpu    time.Duration // thread CPU time of the try that received them, when timed
	err    error         // why nothing was received: the end of the stream, an error
	waited bool          // the fill waited in the poller
	// unmappable: the stream has mapped nothing for unmappableFills mapping fills in a
	// row (this one included); skip is why this one mapped nothing.
	unmappable bool
	skip       copyCause
}

// unmappableFills is the number of mapping fills in a row that map nothing after which
// a fill's recv takes all it wants, not only the bytes the kernel reported unmappable.
const unmappableFills = 4

// errNoMap tells the caller of a mapping fill that mapping was just turned off and
// nothing was received: it should fill again on the copy path.
var errNoMap = errors.New("zcnet: mapping disabled")

// filler runs fills for one conn. It owns the stream's end (EOF, or an error to report
// once the bytes before it are consumed), SO_RCVLOWAT and the switch that turns mapping
// off for good. A fill is one rc.Read with try bound once, so that a fill allocates
// nothing; its request and result live here only during that call.
type filler struct {
	rc    rawConn
	conn  io.Reader // where there is no raw socket read (not Linux): the TCPConn
	sys   *sysCalls
	s     *stream
	st    *counters
	idle  idler
	tryFn func(fd uintptr) bool // f.try, bound once

	req fillReq
	res fillResult
	t0  int64 // thread CPU time at the start of a timed try

	end     streamEnd
	noMap   bool // mapping is off for good (ModeCopy, unsupported, or a failure)
	lowat   int  // the SO_RCVLOWAT in force (0 and 1 are the kernel default)
	empties int  // mapping calls in a row that found nothing with bytes queued
	small   bool // fills take less than a page (small requests): recv(2) first
	mss     int  // TCP_INFO rcv_mss when last read; 0: not read yet
	skips   int  // unmappable stretches since rcv_mss was read
	// unmappable counts the mapping fills in a row that mapped nothing, up to
	// unmappableFills.
	unmappable int
	zc         zerocopyReceive
}

// streamEnd is the end of the stream as the kernel reported it.
type streamEnd struct {
	eof  bool  // the peer's FIN was read: no byte will follow
	rerr error // an error to report once the bytes before it are consumed
	qerr error // an error to report once the kernel's receive queue is drained
}

// take returns the error that ends the stream, if one was seen: io.EOF for good, or an
// error once.
func (e *streamEnd) take() error {
	if e.eof {
		return io.EOF
	}
	err := e.rerr
	e.rerr = nil
	return err
}

// disable turns mapping off for the rest of the conn's life, recording why.
func (f *filler) disable(reason string) {
	f.noMap = true
	f.st.setReason(reason)
	f.s.ring.unmapIfEmpty() // a failure here leaves address space reserved until Close
}

// fill receives at least one byte, or the end of the stream, as req says.
func (f *filler) fill(req fillReq) fillResult {
	if !zerocopyRecv {
		return f.fillConn(req)
	}
	if !req.mapping {
		// On the copy path (after a probe of the mapping path) an empty ring would
		// only hold consumed pages and arm the idle timer at every wait.
		if err := f.s.ring.unmapIfEmpty(); err != nil {
			f.disable("munmap: " + err.Error())
		}
	}
	f.req, f.res = req, fillResult{}
	err := f.rc.Read(f.tryFn)
	if err != nil {
		// rc.Read gave up while the reader was parked: take the ring back. (A try that
		// returned true woke at its start and did not park after.)
		if ierr := f.idle.wake(); ierr != nil {
			f.disable(ierr.Error())
		}
	}
	res := f.res
	f.req.dst, f.res = nil, fillResult{}
	f.s.buf.idle()
	switch {
	case err != nil:
		res.err = err
	case res.err == nil && res.n == 0:
		res.err = f.end.take()
	}
	if res.err == io.EOF {
		// A conn kept open after its stream pins no socket memory.
		f.release()
	}
	return res
}

// try is one attempt of the fill, run by the poller with the socket's fd: it returns
// false to wait for the socket to become readable.
func (f *filler) try(fd uintptr) bool {
	if err := f.idle.wake(); err != nil {
		f.disable(err.Error())
	}
	f.setLowat(int(fd), max(f.req.lowat-f.res.n, 1))
	if f.req.timed && f.res.n == 0 {
		f.t0 = cpuClock(clockThread)
	}
	if !f.req.mapping {
		dst := f.req.dst
		if dst == nil {
			dst = f.s.buf.space(f.req.want)
		}
		return f.recv(int(fd), dst, f.req.cause)
	}
	if f.noMap {
		// Mapping was turned off while the reader waited: the copy path takes over,
		// after what this fill mapped before the wait, if anything.
		if f.res.n == 0 {
			f.res.err = errNoMap
		}
		return true
	}
	return f.tryMap(int(fd))
}

// tryMap is try on the mapping path.
func (f *filler) tryMap(fd int) bool {
	r := f.s.ring
	if f.small {
		// Fills take less than a page (small requests): a recv of up to a page takes
		// such a request in one call, where a mapping call would find nothing to map
		// first. Once a recv fills a page, more may be queued: the next fill maps. A
		// page that it splits costs one page of copy.
		space := f.s.buf.space(1)
		ok := f.recv(fd, space[:min(len(space), pageSize)], causeTail)
		f.small = !ok || f.res.n < pageSize
		return ok
	}
	if !r.reserved() {
		if f.sys.peek != nil {
			// A conn that waits for its first byte holds no VMA.
			if n, err := f.peek(fd); n <= 0 {
				return f.settle(n, err)
			}
		}
		if err := r.reserve(fd); err != nil {
			if err == errBudget {
				return f.recvBudget(fd, err)
			}
			f.res.err = f.fail("mmap", err)
			return true
		}
	}
	for {
		zc := &f.zc // in the filler: a local would escape to the heap at every try
		*zc = zerocopyReceive{}
		req, err := r.prepare(zc, f.req.want-f.res.n, f.req.span-f.res.n)
		if err != nil && f.res.n > 0 {
			return true // what was mapped first; the next fill meets the error
		}
		if err != nil {
			if err == errBudget {
				return f.recvBudget(fd, err)
			}
			f.res.err = f.fail("madvise", err)
			return true
		}
		if req == 0 {
			if f.res.n > 0 {
				return true
			}
			// Pending bytes fill the ring: only the copy path can take more.
			return f.recv(fd, f.s.buf.space(copyBufSize), causeDisabled)
		}
		err = f.sys.zerocopy(fd, zc)
		f.st.zcCalls.Add(1)
		if err != nil {
			r.commit(0, req)
			switch {
			case isEINTR(err):
				continue
			case isEAGAIN(err):
				f.wait()
				return false
			case f.res.n > 0:
				// Hand over what was mapped first; an end or an error comes with the
				// next fill (a failure turns mapping off now).
				if !isEIO(err) {
					f.fail("getsockopt TCP_ZEROCOPY_RECEIVE", err)
				}
				return true
			case isEIO(err):
				// Nothing queued and the stream is done: recv tells a clean end (0)
				// from a reset (its error).
				return f.recv(fd, f.s.buf.space(pageSize), causeTail)
			}
			f.res.err = f.fail("getsockopt TCP_ZEROCOPY_RECEIVE", err)
			return true
		}
		m := int(zc.Length)
		if m > req || m%pageSize != 0 {
			r.commit(0, req)
			err := f.fail("getsockopt TCP_ZEROCOPY_RECEIVE",
				errors.New("kernel reported impossible lengths"))
			if f.res.n == 0 {
				f.res.err = err
			}
			return true
		}
		r.commit(m, req)
		f.takeSockErr(zc)
		if zc.RecvSkipHint > 0 {
			f.st.skips.Add(1)
		}
		if m > 0 {
			f.unmappable = 0
			f.st.mapped.Add(uint64(m))
			f.st.mapFills.Add(1)
			f.received(f.res.n+m, true)
			if f.res.n >= f.req.goal || zc.RecvSkipHint > 0 || zc.Err != 0 || f.end.qerr != nil {
				return true
			}
			if zc.Inq == 0 {
				// The rest of the goal has not arrived: wait for it in this call,
				// without another mapping call and peek to find the queue empty.
				// SO_RCVLOWAT asks for what is still missing, no more.
				f.setLowat(fd, f.req.lowat-f.res.n)
				f.wait()
				return false
			}
			continue
		}
		if f.res.n > 0 {
			return true
		}
		if hint := int(zc.RecvSkipHint); hint > 0 {
			// Ask recv for the unmappable bytes only: asking for more would copy pages
			// that arrived meanwhile and could have been mapped. Once several fills in
			// a row mapped nothing, the stream is taken to be unmappable for this fill:
			// recv takes what the call wants in one go.
			if f.unmappable < unmappableFills {
				f.unmappable++
			} else {
				hint = max(hint, f.req.want)
			}
			f.res.unmappable = f.unmappable >= unmappableFills
			f.res.skip = f.skipCause(fd, int(zc.Inq))
			space := f.s.buf.space(min(hint, copyBufSize))
			ok := f.recv(fd, space[:min(len(space), hint)], f.res.skip)
			f.small = ok && f.res.n > 0 && f.res.n < pageSize && int(zc.Inq) < pageSize
			return ok
		}
		if f.end.rerr != nil {
			return true
		}
		// Nothing queued. The mapping call does not report a shutdown (a reset already
		// reported, CloseRead) and the poller will not signal it again: only recv tells
		// an empty queue (EAGAIN: wait) from the end. A peek leaves bytes that arrived
		// since the mapping call queued, to be mapped rather than copied out of their
		// page; a second empty answer with bytes queued copies, so that an odd answer
		// cannot spin here.
		if f.sys.peek == nil || f.empties > 0 {
			return f.recv(fd, f.s.buf.space(pageSize)[:pageSize-1], causeTail)
		}
		n, err := f.peek(fd)
		if n <= 0 {
			return f.settle(n, err)
		}
		f.empties++
	}
}

// recvBudget copies for a mapping fill that a process-wide limit refused.
func (f *filler) recvBudget(fd int, err error) bool {
	f.st.setReason(err.Error())
	return f.recv(fd, f.s.buf.space(copyBufSize), causeDisabled)
}

// fail turns mapping off after op failed with err, and returns errNoMap.
func (f *filler) fail(op string, err error) error {
	f.disable(op + ": " + err.Error())
	return errNoMap
}

// skipCause says why the kernel could not map the next bytes: segments that do not carry
// whole pages (the bytes at their ends, whatever is queued), fewer than a page queued, or
// pages it does not map (compound or page cache). rcv_mss is read again after 64
// unmappable stretches, as the peer may change.
func (f *filler) skipCause(fd, inq int) copyCause {
	if f.sys.rcvMSS != nil && (f.mss == 0 || f.skips >= 64) {
		if mss, err := f.sys.rcvMSS(fd); err == nil {
			f.mss, f.skips = mss, 0
		}
	}
	f.skips++
	switch {
	case f.mss != 0 && f.mss%pageSize != 0:
		return causeSegment
	case inq < pageSize:
		return causeTail
	}
	return causePageKind
}

// recv reads into p with recv(2) and records what came: it returns false to wait
// (EAGAIN), or true with bytes received, the end of the stream or an error recorded.
func (f *filler) recv(fd int, p []byte, cause copyCause) bool {
	n, err := f.sys.recv(fd, p)
	for isEINTR(err) {
		n, err = f.sys.recv(fd, p)
	}
	f.st.recvCalls.Add(1)
	if n <= 0 || err != nil {
		return f.settle(n, err)
	}
	f.copiedIn(n, f.req.dst == nil, cause)
	f.received(n, false)
	return true
}

// copiedIn records n bytes received by copying, committing them to the buffer when
// they went there.
func (f *filler) copiedIn(n int, intoBuf bool, cause copyCause) {
	if intoBuf {
		f.s.buf.commit(n)
	}
	f.st.copied.Add(uint64(n))
	f.st.copyCause[cause].Add(uint64(n))
	f.st.copyFills.Add(1)
}

// peek is a one-byte MSG_PEEK recv(2): 1 when bytes are queued, 0 at the end.
func (f *filler) peek(fd int) (int, error) {
	n, err := f.sys.peek(fd)
	for isEINTR(err) {
		n, err = f.sys.peek(fd)
	}
	f.st.recvCalls.Add(1)
	return n, err
}

// settle sorts a recv(2) or peek that returned no byte: EAGAIN waits (false); an error
// ends the fill with it; 0 is the end of the stream (or the point at which to report an
// error the mapping call took from the socket earlier).
func (f *filler) settle(n int, err error) bool {
	switch {
	case isEAGAIN(err):
		f.wait()
		return false
	case err != nil:
		f.res.err = err
	case n == 0:
		if f.end.qerr != nil {
			f.end.rerr, f.end.qerr = f.end.qerr, nil
		} else {
			f.end.eof = true
		}
	}
	return true
}

// received records that a try received n bytes.
func (f *filler) received(n int, mapped bool) {
	f.res.n, f.res.mapped = n, mapped
	f.empties = 0
	if f.req.timed {
		f.res.cpu = time.Duration(cpuClock(clockThread) - f.t0)
	}
}

// wait runs before the reader waits in the poller: it counts the wait, returns an empty
// buffer to the pool, and arms the idle timer, which releases the ring's consumed pages
// (or the whole ring) if the wait turns out long.
func (f *filler) wait() {
	f.st.waits.Add(1)
	f.res.waited = true
	f.s.buf.idle()
	if !f.noMap {
		f.idle.park(f.s.ring)
	}
}

// takeSockErr takes the pending socket error the mapping call handed over (negated, as
// the kernel stores it; the call cleared it in the socket). It is reported after the
// bytes still queued, as recv(2) would.
func (f *filler) takeSockErr(zc *zerocopyReceive) {
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
		f.end.qerr = e
	default:
		f.end.rerr = e
	}
}

// setLowat sets SO_RCVLOWAT when it differs from the value in force. A failure is not
// fatal for Next (it wakes more often); the value in force is then unknown and the next
// call sets it again, so that a plain read never waits under a stale, higher mark.
func (f *filler) setLowat(fd int, n int) {
	n = max(n, 1)
	if f.lowat == n || (f.lowat == 0 && n == 1) {
		return
	}
	if f.sys.setRcvlowat(fd, n) == nil {
		f.lowat = n
	} else {
		f.lowat = -1
	}
}

// release drops the ring's consumed pages now (see ring.release).
func (f *filler) release() {
	if f.s.ring.reserved() && !f.noMap {
		if err := f.s.ring.release(); err != nil {
			f.disable("madvise: " + err.Error())
		}
	}
}

// fillConn is fill where there are no raw socket reads: the TCPConn waits and reads.
func (f *filler) fillConn(req fillReq) fillResult {
	p := req.dst
	if p == nil {
		p = f.s.buf.space(max(req.want, 1))
	}
	n, err := f.conn.Read(p)
	f.st.recvCalls.Add(1)
	if n > 0 {
		f.copiedIn(n, req.dst == nil, req.cause)
		err = nil
	}
	f.s.buf.idle()
	if err == io.EOF {
		f.end.eof = true
	}
	return fillResult{n: n, err: err}
}
