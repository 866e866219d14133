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
	copyFn func(fd uintptr) bool // c.copyTry, bound once: the poller's callback allocates nothing per read

	stateMu sync.Mutex // guards closed and inRead: who releases the ring
	closed  bool
	inRead  bool

	deadline atomic.Int64 // read deadline, UnixNano; 0 = none
	st       counters
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
	c := &Conn{rc: rc, sys: s, mode: mode, ringSize: ringSize}
	switch {
	case mode == ModeCopy:
		c.disableMap("ModeCopy")
	case s == defaultSys && Supported() != nil:
		c.disableMap(Supported().Error())
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
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if err := c.enter(); err != nil {
		return 0, c.opErr("read", err)
	}
	defer c.exit()
	c.endView()
	if len(p) == 0 {
		return 0, nil
	}
	if c.buffered() > 0 && c.deadlinePassed() {
		return 0, c.opErr("read", os.ErrDeadlineExceeded)
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
		n = copy(p, c.ring.pending())
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
	direct := len(p) >= copyBufSize
	// Read copies mapped bytes once more, so mapping can only pay by taking more per call
	// than a recv(2) into p would. A p of half the ring or more leaves no such gain:
	// ModeAuto reads it with recv(2).
	if c.mode == ModeAuto && len(p) >= c.ringSize/2 {
		return c.fillCopy(p, 0, 1)
	}
	if useMap, explore := c.chooseMap(direct); useMap {
		want := c.ringSize
		if explore {
			want = max(len(p), copyBufSize)
		}
		err := c.fillMap(want, 1)
		if err != errNoMap {
			return 0, err
		}
	}
	if direct || !zerocopyRecv {
		// Without the fast path the platform's net.TCPConn reads into p: a buffer
		// would only be held while the read blocks.
		return c.fillCopy(p, 0, 1)
	}
	_, err := c.fillBuf(copyBufSize, 1)
	return 0, err
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
	if c.copyFn == nil {
		c.copyFn = c.copyTry
	}
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
			d = time.Since(cp.t0)
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
	n          int   // out: bytes received
	err        error // out: the recv error
	t0         time.Time
	timed      bool // t0 is the start of the recv that received
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
	if cp.timed = c.mode == ModeAuto && len(dst) >= bulkFill; cp.timed {
		cp.t0 = time.Now()
	}
	cp.n, cp.err = c.sys.recv(int(fd), dst)
	c.st.recvCalls.Add(1)
	if isEAGAIN(cp.err) {
		c.idle()
		return false
	}
	return true
}

// fillMap receives at least one byte (or the end of the stream) by mapping up to want
// bytes of whole pages at the ring's tail; when the next bytes cannot be mapped
// (recv_skip_hint), it reads those into the fallback buffer instead. It reserves the ring at its first call. It
// returns nil, io.EOF, an error, or errNoMap when mapping had to be turned off.
func (c *Conn) fillMap(want, lowat int) error {
	var (
		ferr    error
		n       int
		mapped  bool
		elapsed time.Duration
	)
	err := c.rc.Read(func(fd uintptr) bool {
		if c.noMap {
			// idle turned mapping off before the wait (madvise failed): nothing
			// was read in this fill, so the copy path takes over.
			ferr = errNoMap
			return true
		}
		if !c.ring.reserved() && c.sys.peek != nil {
			// Reserve the ring at the first fill that finds bytes queued: a conn that
			// waits for its first byte holds no VMA.
			c.setLowat(int(fd), lowat)
			r, err := c.sys.peek(int(fd))
			c.st.recvCalls.Add(1)
			switch {
			case isEAGAIN(err):
				c.idle()
				return false
			case err != nil:
				ferr = err
				return true
			case r == 0:
				c.atEnd()
				return true
			}
		}
		if !c.ring.reserved() {
			if err := c.ring.reserve(c.sys, int(fd), c.ringSize); err != nil {
				ferr = c.mapFailed("mmap", err)
				return true
			}
		}
		c.setLowat(int(fd), lowat)
		empties := 0
		for {
			t0 := time.Now()
			var zc zerocopyReceive
			if want > c.ring.size() {
				want = c.ring.size()
			}
			c.ring.prepare(&zc, want)
			req := int(zc.Length)
			err := c.sys.zerocopy(int(fd), &zc)
			c.st.zcCalls.Add(1)
			if err != nil {
				switch {
				case isEINTR(err):
					continue
				case isEAGAIN(err):
					c.idle()
					return false
				case isEIO(err):
					// Nothing queued and the stream is done: recv tells a clean end
					// (0) from a reset (its error).
					return c.probe(fd, c.buf.space(pageSize), &n, &ferr)
				}
				ferr = c.mapFailed("getsockopt TCP_ZEROCOPY_RECEIVE", err)
				return true
			}
			m, cp := int(zc.Length), 0
			if m > req || m%pageSize != 0 {
				ferr = c.mapFailed("getsockopt TCP_ZEROCOPY_RECEIVE",
					errors.New("kernel reported impossible lengths"))
				return true
			}
			if m > 0 {
				c.ring.commit(m)
				c.st.mapped.Add(uint64(m))
			}
			if zc.Err != 0 {
				// The call hands over a pending socket error (negated, as the kernel
				// stores it) and clears it, also while bytes are still queued: report
				// it after those bytes, as recv(2) would.
				e := syscall.Errno(-zc.Err)
				if zc.Err > 0 {
					e = syscall.Errno(zc.Err)
				}
				switch {
				case e == syscall.EPIPE:
					// A reset after the peer's FIN (CLOSE_WAIT): recv(2) ends
					// such a stream with EOF, and so does the conn.
				case zc.Inq > 0:
					c.qerr = e
				default:
					c.rerr = e
				}
			}
			if m == 0 && zc.RecvSkipHint > 0 {
				// Ask recv for the unmappable bytes only: asking for more would copy
				// pages that arrived meanwhile and could have been mapped.
				c.st.skips.Add(1)
				space := c.buf.space(copyBufSize)
				k := int(zc.RecvSkipHint)
				if k > len(space) {
					k = len(space)
				}
				r, err := c.sys.recv(int(fd), space[:k])
				c.st.recvCalls.Add(1)
				switch {
				case isEAGAIN(err):
					c.idle()
					return false
				case err != nil:
					ferr = err
					return true
				case r == 0:
					c.atEnd()
					return true
				}
				c.buf.commit(r)
				c.st.copied.Add(uint64(r))
				cp = r
			} else if zc.RecvSkipHint > 0 {
				c.st.skips.Add(1)
			}
			if m+cp > 0 {
				n, mapped, elapsed = m+cp, m > 0, time.Since(t0)
				return true
			}
			if c.rerr != nil {
				return true
			}
			// Nothing queued. The mapping call does not report a shutdown (a reset
			// already reported, CloseRead) and the poller will not signal it again:
			// only recv tells an empty queue (EAGAIN: wait) from the end.
			if c.sys.peek == nil {
				return c.probe(fd, c.buf.space(pageSize)[:pageSize-1], &n, &ferr)
			}
			// Peek rather than read: bytes that arrived since the mapping call stay
			// queued, to be mapped, instead of being copied out of their page.
			r, err := c.sys.peek(int(fd))
			c.st.recvCalls.Add(1)
			switch {
			case isEAGAIN(err):
				c.idle()
				return false
			case err != nil:
				ferr = err
				return true
			case r == 0:
				c.atEnd()
				return true
			}
			// Bytes are queued: map them. Should the mapping call answer nothing
			// again, copy instead, so that an odd answer cannot spin here.
			if empties++; empties > 1 {
				return c.probe(fd, c.buf.space(pageSize)[:pageSize-1], &n, &ferr)
			}
		}
	})
	if c.buf.buffered() == 0 {
		c.buf.put()
	}
	if err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	if n == 0 {
		if c.eof {
			return io.EOF
		}
		return c.pendingErr()
	}
	if mapped {
		c.st.mapFills.Add(1)
	} else {
		c.st.copyFills.Add(1)
	}
	if c.mode == ModeAuto {
		c.auto.recordMap(mapped, n, elapsed)
	}
	return nil
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

// probe reads with recv(2) into p after the mapping call found nothing to map, to tell
// data from the end of the stream from an error. It returns false (wait) on EAGAIN.
func (c *Conn) probe(fd uintptr, p []byte, n *int, ferr *error) bool {
	r, err := c.sys.recv(int(fd), p)
	c.st.recvCalls.Add(1)
	switch {
	case isEAGAIN(err):
		c.idle()
		return false
	case err != nil:
		*ferr = err
	case r == 0:
		c.atEnd()
	default:
		c.buf.commit(r)
		c.st.copied.Add(uint64(r))
		*n = r
	}
	return true
}
