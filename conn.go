package zcnet

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// rawConn is the part of syscall.RawConn the read path uses: run f with the socket's fd,
// waiting in the Go netpoller (honouring deadlines and Close) each time f returns false.
type rawConn interface {
	Read(f func(fd uintptr) bool) error
}

// Conn is a TCP connection whose reads take whole pages of the receive queue by mapping
// them (TCP_ZEROCOPY_RECEIVE) into an address range reserved for the conn (its ring), and
// copy what cannot be mapped. It implements net.Conn with the semantics of net.TCPConn:
// deadlines, Close unblocking pending calls, errors as *net.OpError; concurrent calls are
// safe, and reads are served one at a time in stream order.
//
// Read copies into the caller's buffer and never hands out mapped memory. Next and
// WriteTo pass mapped pages on without copying them. The write side is the plain TCP
// socket's.
type Conn struct {
	tc       *net.TCPConn // nil only in tests that drive the read path alone
	rc       rawConn
	sys      *sysCalls
	mode     Mode
	ringSize int
	laddr    net.Addr
	raddr    net.Addr
	onClose  func(*Conn) // set by the Listener that accepted the conn

	readMu sync.Mutex // serializes read-side calls; guards the fields below it
	ring   ring
	buf    fallback
	auto   autoState
	noMap  bool  // mapping is off for good (ModeCopy, unsupported, or a failure)
	eof    bool  // the peer's FIN was read: no byte will follow
	rerr   error // an error to report once the bytes before it are consumed
	qerr   error // an error to report once the kernel's receive queue is drained
	lowat  int   // the SO_RCVLOWAT in force (0 and 1 are the kernel default)
	viewed bool  // a Next view into the ring is outstanding
	cp     copyCall
	mc     mapCall
	copyFn func(fd uintptr) bool // c.copyTry and c.mapTry, bound once: the poller's
	mapFn  func(fd uintptr) bool // callbacks allocate nothing per read

	stateMu sync.Mutex // guards closed and inRead: who releases the ring
	closed  bool
	inRead  bool

	deadline atomic.Int64 // read deadline, UnixNano; 0 = none
	st       *counters    // its own allocation: a Listener may hold it without holding the Conn
}

// NewConn wraps an established TCP connection. The Conn takes it over: use only the Conn
// from then on (reading the TCPConn directly would skip bytes the Conn holds). It fails
// only for invalid opts or a TCPConn whose socket cannot be reached.
func NewConn(c *net.TCPConn, opts Options) (*Conn, error) {
	return newTCPConn(c, opts, defaultSys)
}

// newTCPConn is NewConn over the syscall layer s (the fault-injection seam).
func newTCPConn(c *net.TCPConn, opts Options, s *sysCalls) (*Conn, error) {
	size, err := opts.validate()
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, errors.New("zcnet: NewConn of a nil *net.TCPConn")
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	zc := newConn(rc, s, opts.Mode, size)
	zc.tc = c
	zc.laddr, zc.raddr = c.LocalAddr(), c.RemoteAddr()
	return zc, nil
}

// newConn builds the read side over rc and the syscall layer s.
func newConn(rc rawConn, s *sysCalls, mode Mode, ringSize int) *Conn {
	c := &Conn{rc: rc, sys: s, mode: mode, ringSize: ringSize, st: new(counters)}
	c.copyFn, c.mapFn = c.copyTry, c.mapTry
	if mode == ModeCopy {
		c.disableMap("ModeCopy")
	} else if err := Supported(); s == defaultSys && err != nil {
		c.disableMap(err.Error())
	}
	return c
}

// disableMap turns mapping off for the rest of the conn's life, recording why.
func (c *Conn) disableMap(reason string) {
	c.noMap = true
	if c.st.reason.Load() == nil {
		c.st.reason.Store(&reason)
	}
}

// errNoMap tells a caller of fillMap that mapping was just disabled and nothing was read:
// it should take the copy path.
var errNoMap = errors.New("zcnet: mapping disabled")

// mapFailed disables mapping after op failed with err and returns errNoMap.
func (c *Conn) mapFailed(op string, err error) error {
	c.disableMap(op + ": " + err.Error())
	return errNoMap
}

// Stats returns the conn's counters. It is safe to call at any time, also after Close.
func (c *Conn) Stats() Stats { return c.st.snapshot() }

// Mode returns the receive mode the conn was created with.
func (c *Conn) Mode() Mode { return c.mode }

// enter marks the start of a read-side call; it fails once the conn is closed. The caller
// holds readMu.
func (c *Conn) enter() error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.inRead = true
	return nil
}

// exit marks the end of a read-side call, releasing the ring if Close came meanwhile.
func (c *Conn) exit() {
	c.stateMu.Lock()
	c.inRead = false
	rel := c.closed
	c.stateMu.Unlock()
	if rel {
		c.release()
	}
}

// begin starts a read-side call (Read, Next, WriteTo): it takes the read lock, fails once
// the conn is closed, and ends the validity of the last Next view. A nil error must be
// paired with end.
func (c *Conn) begin() error {
	c.readMu.Lock()
	if err := c.enter(); err != nil {
		c.readMu.Unlock()
		return c.opErr("read", err)
	}
	c.endView()
	return nil
}

// end finishes a read-side call started by begin.
func (c *Conn) end() {
	c.exit()
	c.readMu.Unlock()
}

// expired returns the timeout error when bytes are buffered but the read deadline has
// passed: net.TCPConn fails such a read, although data is there, and so does the conn.
func (c *Conn) expired() error {
	if c.buffered() > 0 && c.deadlinePassed() {
		return c.opErr("read", os.ErrDeadlineExceeded)
	}
	return nil
}

// endView ends the validity of the last Next view.
func (c *Conn) endView() {
	c.viewed = false
	c.buf.unhold()
}

// buffered is the number of received bytes not consumed yet.
func (c *Conn) buffered() int { return c.ring.buffered() + c.buf.buffered() }

// deadlinePassed reports whether the read deadline is set and in the past.
func (c *Conn) deadlinePassed() bool {
	d := c.deadline.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// opErr wraps err as the stdlib does for op; io.EOF and io.ErrUnexpectedEOF stay bare.
func (c *Conn) opErr(op string, err error) error {
	if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
		return err
	}
	if oe, ok := err.(*net.OpError); ok {
		if oe.Op != "raw-read" {
			return err // already wrapped by net.TCPConn
		}
		err = oe.Err
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError("read", errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// Read reads up to len(p) bytes into p. It first returns bytes an earlier call left
// mapped or buffered, then receives more: by mapping whole pages and copying them into p,
// or by recv(2), whichever the conn's mode picks. It returns io.EOF at the end of the
// stream; other errors are *net.OpError.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	defer c.end()
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.expired(); err != nil {
		return 0, err
	}
	for {
		if n := c.copyOut(p); n > 0 {
			return n, nil
		}
		n, err := c.readFill(p)
		if n > 0 || err != nil {
			return n, c.opErr("read", err)
		}
	}
}

// copyOut copies buffered bytes (ring first, then the fallback buffer) into p.
func (c *Conn) copyOut(p []byte) int {
	n := 0
	if c.ring.buffered() > 0 {
		if c.auto.timeOut && c.mode == ModeAuto {
			// Price the copy out of mapped pages for the auto mode (after a timed fill).
			t0 := threadCPU()
			n = copy(p, c.ring.pending())
			c.auto.recordOut(n, time.Duration(threadCPU()-t0))
		} else {
			n = copy(p, c.ring.pending())
		}
		c.ring.consume(n)
	}
	if n < len(p) && c.buf.buffered() > 0 {
		m := copy(p[n:], c.buf.pending())
		c.buf.consume(m)
		n += m
	}
	return n
}

// pendingErr returns the error that ends the stream, if one was seen.
func (c *Conn) pendingErr() error {
	if c.eof {
		c.dropMapped()
		return io.EOF
	}
	if err := c.rerr; err != nil {
		c.rerr = nil
		return err
	}
	return nil
}

// readFill receives more bytes for Read: straight into p (returning n > 0) or into the
// ring or the fallback buffer (returning 0, nil).
func (c *Conn) readFill(p []byte) (int, error) {
	if err := c.pendingErr(); err != nil {
		return 0, err
	}
	direct := len(p) >= copyBufSize || !zerocopyRecv
	// Read copies mapped bytes once more, so mapping can only pay by taking more per call
	// than a recv(2) into p would. A p of half the ring or more leaves no such gain:
	// ModeAuto reads it with recv(2).
	if c.mode != ModeAuto || len(p) < c.ringSize/2 {
		if mapped, err := c.tryMap(direct, bulkFill); mapped {
			return 0, err
		}
	}
	if direct {
		// Straight into p; also where there is no fast path (the platform's
		// net.TCPConn reads), as a buffer would only be held while the read blocks.
		return c.fillCopy(p, 0, 1)
	}
	_, err := c.fillBuf(copyBufSize, 1)
	return 0, err
}

// tryMap fills the ring by mapping when the conn's mode picks mapping for this fill (a
// fill that only explores the mapping path takes at most exploreWant bytes: enough pages
// to price them, not a whole ring that the copy path would have taken more cheaply). It reports
// whether it did; when it did not, or mapping was just turned off, the caller copies.
func (c *Conn) tryMap(userCopy bool, exploreWant int) (bool, error) {
	useMap, explore := c.chooseMap(userCopy)
	if !useMap {
		return false, nil
	}
	want := c.ringSize
	if explore {
		want = exploreWant
	}
	err := c.fillMap(want, 1)
	if err == errNoMap {
		return false, nil
	}
	return true, err
}

// chooseMap decides whether the next fill maps, and whether that fill only explores the
// mapping path for ModeAuto (and should be no larger than a copy fill). userCopy says the
// mapped bytes will be copied once more than copied bytes would be.
func (c *Conn) chooseMap(userCopy bool) (useMap, explore bool) {
	if c.noMap {
		return false, false
	}
	if c.mode == ModeZeroCopy {
		return true, false
	}
	return c.auto.chooseMap(userCopy)
}

// fillBuf receives into the fallback buffer's free space (at least min bytes of it),
// returning the number of bytes received.
func (c *Conn) fillBuf(min, lowat int) (int, error) {
	n, err := c.fillCopy(nil, min, lowat)
	c.buf.commit(n)
	if c.buf.buffered() == 0 {
		c.buf.put()
	}
	return n, err
}

// setLowat sets SO_RCVLOWAT when it differs from the value in force. A failure is not
// fatal for Next (it wakes more often); the value in force is then unknown and the next
// call sets it again, so that a plain read never waits under a stale, higher mark.
func (c *Conn) setLowat(fd int, n int) {
	if n < 1 {
		n = 1
	}
	if c.lowat == n || (c.lowat == 0 && n == 1) {
		return
	}
	if c.sys.setRcvlowat(fd, n) == nil {
		c.lowat = n
	} else {
		c.lowat = -1
	}
}

// idle runs before the reader waits in the poller: mapped pages that hold no pending byte
// are dropped, so a waiting conn pins no socket memory, and an empty fallback buffer goes
// back to the pool, so it holds no buffer either. (Every fill takes its buffer space anew
// after a wait.)
func (c *Conn) idle() {
	c.st.waits.Add(1)
	if c.buf.buffered() == 0 && !c.buf.held {
		c.buf.put()
	}
	c.dropMapped()
}

// dropMapped drops the ring's mapped pages that hold no pending byte: before a wait, and
// once the stream has ended, so that neither a waiting conn nor one kept open after its
// stream pins socket memory.
func (c *Conn) dropMapped() {
	if c.ring.reserved() && !c.noMap {
		if err := c.ring.release(c.sys); err != nil {
			c.disableMap("madvise: " + err.Error())
		}
	}
}

// fillCopy reads into p with recv(2), waiting for data (with SO_RCVLOWAT at lowat). A nil
// p reads into the fallback buffer's free space (at least min bytes), without committing
// what it read: the buffer is taken at each try, so that it can go back to the pool while
// the conn waits. It returns n > 0, or io.EOF, or an error.
func (c *Conn) fillCopy(p []byte, min, lowat int) (int, error) {
	if !zerocopyRecv {
		return c.fillCopyConn(p, min)
	}
	// The state lives in c.cp and the callback is bound once: nothing is allocated, and
	// the frame stays small, as a reader parked in the poller keeps this stack.
	cp := &c.cp
	cp.p, cp.min, cp.lowat, cp.n, cp.err, cp.timed = p, min, lowat, 0, nil, false
	err := c.rc.Read(c.copyFn)
	n, rerr := cp.n, cp.err
	cp.p, cp.err = nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		c.atEnd()
		return 0, c.pendingErr()
	}
	c.st.copied.Add(uint64(n))
	c.st.copyFills.Add(1)
	if c.mode == ModeAuto {
		var d time.Duration
		if cp.timed {
			d = cp.elapsed
		}
		c.auto.record(false, n, d)
	}
	return n, nil
}

// fillCopyConn is fillCopy where there are no raw socket reads: net.TCPConn waits and
// reads.
func (c *Conn) fillCopyConn(p []byte, min int) (int, error) {
	if p == nil {
		p = c.buf.space(min)
	}
	n, err := c.tc.Read(p)
	if err == io.EOF {
		c.eof = true
	}
	c.st.recvCalls.Add(1)
	c.st.copied.Add(uint64(n))
	if n > 0 {
		c.st.copyFills.Add(1)
		err = nil
	}
	return n, err
}

// copyCall is the state of one fillCopy, kept in the Conn for copyTry.
type copyCall struct {
	p          []byte // the destination, or nil for the fallback buffer
	min, lowat int
	n          int           // out: bytes received
	err        error         // out: the recv error
	t0         int64         // thread CPU time at the start of the recv (ModeAuto samples)
	elapsed    time.Duration // thread CPU time of the recv, when timed
	timed      bool
}

// copyTry is one attempt of fillCopy, run by the poller with the socket's fd: it returns
// false to wait for the socket to become readable.
func (c *Conn) copyTry(fd uintptr) bool {
	cp := &c.cp
	c.setLowat(int(fd), cp.lowat)
	dst := cp.p
	if dst == nil {
		dst = c.buf.space(cp.min)
	}
	if cp.timed = c.mode == ModeAuto && c.auto.sample && len(dst) >= bulkFill; cp.timed {
		cp.t0 = threadCPU()
	}
	cp.n, cp.err = c.sys.recv(int(fd), dst)
	if cp.timed {
		cp.elapsed = time.Duration(threadCPU() - cp.t0)
	}
	c.st.recvCalls.Add(1)
	if isEAGAIN(cp.err) {
		c.idle()
		return false
	}
	return true
}

// fillMap receives at least one byte (or the end of the stream) by mapping up to want
// bytes of whole pages at the ring's tail; when the next bytes cannot be mapped
// (recv_skip_hint), it reads those into the fallback buffer instead. It reserves the ring
// at the first fill that finds bytes queued. It returns nil, io.EOF, an error, or errNoMap
// when mapping had to be turned off (nothing was read then).
func (c *Conn) fillMap(want, lowat int) error {
	mc := &c.mc
	*mc = mapCall{want: want, lowat: lowat}
	err := c.rc.Read(c.mapFn)
	n, mapped, ferr := mc.n, mc.mapped, mc.err
	mc.err = nil
	if c.buf.buffered() == 0 {
		c.buf.put()
	}
	switch {
	case err != nil:
		return err
	case ferr != nil:
		return ferr
	case n == 0:
		return c.pendingErr()
	}
	if mapped {
		c.st.mapFills.Add(1)
	} else {
		c.st.copyFills.Add(1)
	}
	if c.mode == ModeAuto {
		c.auto.recordMap(mapped, n, mc.elapsed)
	}
	return nil
}

// mapCall is the state of one fillMap, kept in the Conn for mapTry (see copyCall).
type mapCall struct {
	want, lowat int
	empties     int           // mapping calls in a row that found nothing with bytes queued
	t0          int64         // thread CPU time at the start of the try (ModeAuto samples)
	n           int           // out: bytes received
	mapped      bool          // out: they were mapped (else copied)
	elapsed     time.Duration // out: thread CPU time of the try that received them, if timed
	err         error         // out: the error that ends the fill
	zc          zerocopyReceive
}

// mapTry is one attempt of fillMap, run by the poller with the socket's fd: it returns
// false to wait for the socket to become readable.
func (c *Conn) mapTry(fd uintptr) bool {
	mc := &c.mc
	if c.noMap {
		// idle turned mapping off before the wait (madvise failed): nothing was read
		// in this fill, so the copy path takes over.
		mc.err = errNoMap
		return true
	}
	c.setLowat(int(fd), mc.lowat)
	if !c.ring.reserved() {
		if c.sys.peek != nil {
			// A conn that waits for its first byte holds no VMA.
			if wait, end := c.settle(c.peek(fd)); wait || end {
				return !wait
			}
		}
		if err := c.ring.reserve(c.sys, int(fd), c.ringSize); err != nil {
			mc.err = c.mapFailed("mmap", err)
			return true
		}
	}
	for {
		if c.mode == ModeAuto && c.auto.sample {
			mc.t0 = threadCPU()
		}
		zc := &mc.zc // in the Conn: a local would escape to the heap at every try
		*zc = zerocopyReceive{}
		c.ring.prepare(zc, min(mc.want, c.ring.size()))
		req := int(zc.Length)
		err := c.sys.zerocopy(int(fd), zc)
		c.st.zcCalls.Add(1)
		if err != nil {
			switch {
			case isEINTR(err):
				continue
			case isEAGAIN(err):
				c.idle()
				return false
			case isEIO(err):
				// Nothing queued and the stream is done: recv tells a clean end (0)
				// from a reset (its error).
				return c.recvInto(fd, c.buf.space(pageSize))
			}
			mc.err = c.mapFailed("getsockopt TCP_ZEROCOPY_RECEIVE", err)
			return true
		}
		m := int(zc.Length)
		if m > req || m%pageSize != 0 {
			mc.err = c.mapFailed("getsockopt TCP_ZEROCOPY_RECEIVE",
				errors.New("kernel reported impossible lengths"))
			return true
		}
		c.takeSockErr(zc)
		if zc.RecvSkipHint > 0 {
			c.st.skips.Add(1)
		}
		if m > 0 {
			c.ring.commit(m)
			c.st.mapped.Add(uint64(m))
			mc.received(m, true)
			return true
		}
		if zc.RecvSkipHint > 0 {
			// Ask recv for the unmappable bytes only: asking for more would copy pages
			// that arrived meanwhile and could have been mapped.
			space := c.buf.space(copyBufSize)
			return c.recvInto(fd, space[:min(len(space), int(zc.RecvSkipHint))])
		}
		if c.rerr != nil {
			return true
		}
		// Nothing queued. The mapping call does not report a shutdown (a reset already
		// reported, CloseRead) and the poller will not signal it again: only recv tells
		// an empty queue (EAGAIN: wait) from the end. A peek leaves bytes that arrived
		// since the mapping call queued, to be mapped rather than copied out of their
		// page; a second empty answer with bytes queued copies, so that an odd answer
		// cannot spin here.
		if c.sys.peek == nil || mc.empties > 0 {
			return c.recvInto(fd, c.buf.space(pageSize)[:pageSize-1])
		}
		if wait, end := c.settle(c.peek(fd)); wait || end {
			return !wait
		}
		mc.empties++
	}
}

// received records that a try received n bytes, mapped or copied.
func (mc *mapCall) received(n int, mapped bool) {
	mc.n, mc.mapped = n, mapped
	if mc.t0 != 0 {
		mc.elapsed = time.Duration(threadCPU() - mc.t0)
	}
}

// takeSockErr takes the pending socket error the mapping call handed over (negated, as
// the kernel stores it; the call cleared it in the socket). It is reported after the
// bytes still queued, as recv(2) would.
func (c *Conn) takeSockErr(zc *zerocopyReceive) {
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
		c.qerr = e
	default:
		c.rerr = e
	}
}

// peek is a one-byte MSG_PEEK recv(2): 1 when bytes are queued, 0 at the end.
func (c *Conn) peek(fd uintptr) (int, error) {
	c.st.recvCalls.Add(1)
	return c.sys.peek(int(fd))
}

// recvInto reads with recv(2) into p, the fallback buffer's free space, for mapTry: it
// returns false to wait (EAGAIN), or true with the bytes received, the end of the stream
// or an error recorded.
func (c *Conn) recvInto(fd uintptr, p []byte) bool {
	r, err := c.sys.recv(int(fd), p)
	c.st.recvCalls.Add(1)
	if wait, end := c.settle(r, err); wait || end {
		return !wait
	}
	c.buf.commit(r)
	c.st.copied.Add(uint64(r))
	c.mc.received(r, false)
	return true
}

// settle sorts the result of a recv(2) or peek in mapTry: wait (EAGAIN; the conn is made
// idle), end (an error, recorded in the fill, or the end of the stream), or neither
// (r > 0 bytes).
func (c *Conn) settle(r int, err error) (wait, end bool) {
	switch {
	case isEAGAIN(err):
		c.idle()
		return true, false
	case err != nil:
		c.mc.err = err
		return false, true
	case r == 0:
		c.atEnd()
		return false, true
	}
	return false, false
}

// atEnd records that recv(2) returned 0 with nothing queued: the end of the stream, or the
// point at which to report an error the mapping call took from the socket earlier.
func (c *Conn) atEnd() {
	if c.qerr != nil {
		c.rerr, c.qerr = c.qerr, nil
		return
	}
	c.eof = true
	c.dropMapped()
}
