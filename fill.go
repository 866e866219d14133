package zcnet

import (
	"io"
	"time"
)

// rawConn is the part of syscall.RawConn the read path uses: run f with the socket's fd,
// waiting in the Go netpoller (honouring deadlines and Close) each time f returns false.
type rawConn interface {
	Read(f func(fd uintptr) bool) error
}

// fillResult is what a fill received.
type fillResult struct {
	n      int           // bytes received: into dst, the ring or the buffer
	mapped bool          // they were mapped (else copied)
	cpu    time.Duration // thread CPU time of the try that received them, when timed
	err    error         // why nothing was received: the poller's error, a socket error
	waited bool          // the fill waited in the poller
	// fellBack: the choice asked to map, mapping is off (before the fill, or turned off
	// by a failure in it), and the fill took the copy path instead.
	fellBack bool
	// unmappable: the stream has mapped nothing for unmappableFills mapping fills in a
	// row (this one included); skip is why this one mapped nothing.
	unmappable bool
	// queued is what the kernel reported still queued after the last mapping call of
	// the fill; on the copy path it is asked only when the batcher needs it (asks).
	queued int
	// skip is why this mapping fill mapped nothing (the kernel's skip hint's cause).
	skip copyCause
}

// unmappableFills is the number of mapping fills in a row that map nothing after which
// a fill's recv takes all it wants, not only the bytes the kernel reported unmappable.
const unmappableFills = 4

// receiver is a receive backend: the seam below the policy. A fill runs try in the
// poller's callback with the socket's fd, once per wake-up, until it returns true; try
// hands what it received to the stream (stream.addMapped, stream.addCopied) and records
// it in the fill (filler.received), or sorts out why nothing came (filler.settle), and
// returns false to wait (after filler.wait). A batched wait or an io_uring receive is
// another receiver.
type receiver interface {
	try(f *filler, fd int) bool
}

// filler runs fills for one conn: it owns SO_RCVLOWAT, the switch that turns mapping
// off for good, and the idle timer of a parked reader. A fill is one rc.Read with try
// bound once, so that a fill allocates nothing; its choice and result live here only
// during that call.
type filler struct {
	rc     rawConn
	conn   io.Reader // the TCPConn: where there are no raw socket reads, and for plain fills
	sys    *sysCalls
	s      *stream
	st     *counters
	timer  idler // releases the ring of a reader parked long
	batch  batcher
	tryFn  func(fd uintptr) bool
	mapper zerocopyReceiver
	copier copyReceiver

	ch    choice     // the current fill's: what the caller and the policy asked
	dst   []byte     // the copy path receives straight into dst; nil: into the stream
	cause copyCause  // why the copy path copies (causePolicy or causeDisabled)
	res   fillResult // the current fill's
	t0    int64      // thread CPU time at the start of a timed try
	fd    int        // the socket, during a try

	noMap    bool // mapping is off for good (ModeCopy, unsupported, or a failure)
	copyMode bool // the conn's mode is ModeCopy: copies are the policy's
	lowat    int  // the SO_RCVLOWAT in force (0 and 1 are the kernel default)
}

// disable turns mapping off for the rest of the conn's life, recording why.
func (f *filler) disable(reason string) {
	f.noMap = true
	f.st.setReason(reason)
	f.s.dropEmptyRing() // a failure here leaves address space reserved until Close
}

// maps reports whether a mapping fill would map (mapping is not off for good).
func (f *filler) maps() bool { return !f.noMap }

// fill receives at least one byte, or the end of the stream, on the path ch chose (dst:
// see filler.dst). A mapping fill that cannot map falls back to the copy path itself,
// and says so in its result.
func (f *filler) fill(ch choice, dst []byte) fillResult {
	if !zerocopyRecv || f.plain(ch, dst) {
		return f.fillConn(ch, dst)
	}
	f.ch, f.dst, f.res = ch, dst, fillResult{}
	f.cause = f.copyCause()
	if ch.mapping && f.noMap {
		f.fallBack()
	}
	if !f.ch.mapping {
		// On the copy path (after a probe of the mapping path) an empty ring would
		// only hold consumed pages and arm the idle timer at every wait.
		if err := f.s.dropEmptyRing(); err != nil {
			f.disable("munmap: " + err.Error())
		}
	}
	err := f.rc.Read(f.tryFn)
	if err != nil {
		// rc.Read gave up while the reader was parked: take the ring back. (A try that
		// returned true woke at its start and did not park after.)
		f.unpark()
	}
	res := f.res
	f.batch.filled(min(f.ch.lowatMax, f.room()), res.n, res.queued > 0, res.waited)
	f.dst, f.res = nil, fillResult{}
	f.s.dropEmptyBuf()
	switch {
	case err != nil:
		res.err = err
	case res.err == nil && res.n == 0:
		res.err = f.s.ended()
	}
	if res.err == io.EOF {
		// A conn kept open after its stream pins no socket memory.
		f.release()
	}
	return res
}

// plain reports whether a fill is a plain read(2) into the caller's buffer, which
// fillConn runs through the TCPConn at net.TCPConn.Read's cost: a copy that cannot batch
// (into a buffer under copyBufSize, or on a conn that exchanges small messages, see
// batcher.small), outside a probe's timed window, with no ring to park, the mark known
// to be 1 and no error queued behind the kernel's queue. Its waits are the TCPConn's,
// not counted in Stats.Waits, and its read(2) calls count as one in Stats.RecvCalls.
func (f *filler) plain(ch choice, dst []byte) bool {
	return f.conn != nil && dst != nil && !ch.mapping && !ch.timed && (len(dst) < copyBufSize || f.batch.small) &&
		!f.lowatRaised() && !f.s.ringReserved() && !f.s.errQueued()
}

// fallBack moves the current fill from the mapping path to the copy path: mapping is off.
func (f *filler) fallBack() {
	f.ch.mapping = false
	f.res.fellBack = true
	f.cause = f.copyCause()
	if f.ch.timed {
		f.t0 = cpuClock(clockThread)
	}
}

// copyCause is why a fill on the copy path copies: the policy's cause (its choice to
// copy, or a ModeZeroCopy backoff's), or mapping is not available to this conn.
func (f *filler) copyCause() copyCause {
	if f.noMap && !f.copyMode {
		return causeDisabled
	}
	return f.ch.cause
}

// receiver is the backend of the current fill's path.
func (f *filler) receiver() receiver {
	switch {
	case f.ch.mapping:
		return &f.mapper
	case f.ch.pipe != 0:
		return pipeReceiver{}
	}
	return &f.copier
}

// try is one attempt of the fill, run by the poller with the socket's fd: it returns
// false to wait for the socket to become readable.
func (f *filler) try(fd uintptr) bool {
	f.unpark()
	f.fd = int(fd)
	if f.ch.timed && f.res.n == 0 {
		f.t0 = cpuClock(clockThread)
	}
	if f.ch.mapping && f.noMap {
		// Mapping was turned off while the reader waited: the copy path takes over,
		// after what this fill mapped before the wait, if anything.
		if f.res.n > 0 {
			return true
		}
		f.fallBack()
	}
	return f.receiver().try(f, int(fd))
}

// failMap turns mapping off after op failed with err. With nothing received yet, the
// fill goes on at once on the copy path; else it hands over what it received (the next
// fill copies).
func (f *filler) failMap(fd int, op string, err error) bool {
	f.disable(op + ": " + err.Error())
	if f.res.n > 0 {
		return true
	}
	f.fallBack()
	return f.copier.try(f, fd)
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
		f.s.drained()
	}
	return true
}

// received records that a try received n bytes in all.
func (f *filler) received(n int, mapped bool) {
	f.res.n, f.res.mapped = n, mapped
	f.mapper.empties = 0
	if !mapped && f.batch.asks(n, min(f.ch.lowatMax, f.room()), f.res.waited) && f.sys.inq != nil {
		f.res.queued, _ = f.sys.inq(f.fd) // (a mapping call reports it)
	}
	if f.ch.timed {
		f.res.cpu = time.Duration(cpuClock(clockThread) - f.t0)
	}
}

// wait runs before the reader waits in the poller: it counts the wait, returns an empty
// buffer to the pool, arms the idle timer, which releases the ring's consumed pages (or
// the whole ring) if the wait turns out long, and sets SO_RCVLOWAT: the bytes Next still
// misses, a batched wait's mark (up to choice.lowatMax, whose bound it then arms), or 1.
func (f *filler) wait() {
	f.st.waits.Add(1)
	f.res.waited = true
	f.s.dropEmptyBuf()
	if !f.noMap {
		f.s.parkRing(&f.timer)
	}
	f.setLowat(f.fd, f.batch.park(f.fd, min(f.ch.lowatMax, f.room())-f.res.n, max(f.ch.lowat-f.res.n, 1)))
	f.batch.arm()
}

// room is what the current fill's path can take at once.
func (f *filler) room() int {
	switch {
	case f.ch.mapping:
		return f.ch.want
	case f.dst != nil:
		return len(f.dst)
	}
	return f.ch.copy
}

// unpark runs when the reader runs again after a wait (or gave up waiting): it takes the
// ring back from the idle timer and stops a batched wait's bound.
func (f *filler) unpark() {
	if err := f.timer.wake(); err != nil {
		f.disable(err.Error())
	}
	if fired, lowered := f.batch.wake(); lowered {
		f.lowat = 1 // the bound lowered the mark
	} else if fired {
		f.lowat = -1 // it failed to: the mark in force is unknown (see setLowat)
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

// lowatRaised reports whether SO_RCVLOWAT may be above 1.
func (f *filler) lowatRaised() bool { return f.lowat != 0 && f.lowat != 1 }

// release drops the ring's consumed pages now (see ring.release).
func (f *filler) release() {
	if f.noMap {
		return
	}
	if err := f.s.releaseRing(); err != nil {
		f.disable("madvise: " + err.Error())
	}
}

// ignoringEINTR runs call again while it fails with EINTR: the one retry of the
// syscall layer's calls, none of which retries itself.
func ignoringEINTR(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if !isEINTR(err) {
			return n, err
		}
	}
}
