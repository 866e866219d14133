package zcnet

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a TCP connection whose reads take whole pages of the receive queue by mapping
// them (TCP_ZEROCOPY_RECEIVE) into an address range reserved for the conn (its ring), and
// copy what cannot be mapped. It implements net.Conn with the semantics of net.TCPConn:
// deadlines, Close unblocking pending calls, errors as *net.OpError; concurrent calls are
// safe, and reads are served one at a time in stream order.
//
// Read copies into the caller's buffer and never hands out mapped memory. Next and
// WriteTo pass mapped pages on without copying them. The write side is the plain TCP
// socket's.
//
// A Conn that is dropped without Close is closed when it is garbage collected, as a
// net.TCPConn is: its ring is given up (see Close) and its socket closed.
type Conn struct {
	tc       *net.TCPConn // nil only in tests that drive the read path alone
	ringSize int
	mode     Mode
	laddr    net.Addr
	raddr    net.Addr
	onClose  func(*Conn) // set by the Listener that accepted the conn
	st       *counters   // its own allocation: a Listener may hold it without the Conn

	// Locking. readMu serializes the read-side calls (Read, Next, WriteTo) and guards
	// what they own: s, f and pol. A call holds it throughout, also while it waits in
	// the poller; while it waits, the idle timer may release the ring's consumed pages
	// (the idler hands the ring over, see idler). stateMu guards closed and reading:
	// Close marks the conn closed and frees the read side itself when no read-side call
	// is running; otherwise the running call frees it as it ends (endRead). So the ring
	// is unmapped exactly once, and never under a running call. deadline mirrors the
	// read deadline, so that a call fails at once on a passed deadline even when bytes
	// are buffered, as net.TCPConn's does.
	readMu    sync.Mutex
	s         stream
	f         filler
	pol       policy
	fullRead  bool // the last recv straight into a small Read buffer filled it
	readMap   int  // what the next mapping fill of a Read may take beyond len(p)
	copyViews bool // Options.CopyViews

	stateMu sync.Mutex
	closed  bool
	reading bool

	deadline atomic.Int64 // read deadline, UnixNano; 0 = none

	// inWriteTo is set while a WriteTo holds readMu: other read-side calls, its
	// writer's included, fail instead of waiting for it.
	inWriteTo atomic.Bool
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
	zc.tc, zc.f.conn = c, c
	if zerocopyRecv { // (elsewhere the TCPConn waits: nothing can batch)
		zc.f.batch.ctl = rc.Control
	}
	zc.copyViews = opts.CopyViews
	zc.laddr, zc.raddr = c.LocalAddr(), c.RemoteAddr()
	return zc, nil
}

// newConn builds the read side over rc and the syscall layer s.
func newConn(rc rawConn, s *sysCalls, mode Mode, ringSize int) *Conn {
	c := &Conn{mode: mode, ringSize: ringSize, st: new(counters)}
	c.pol = newPolicy(mode, ringSize, c.st)
	r := &ring{want: ringSize, sys: s, st: c.st}
	c.s = stream{ring: r}
	c.f = filler{rc: rc, sys: s, s: &c.s, st: c.st, copyMode: mode == ModeCopy}
	c.f.tryFn = c.f.try
	c.f.batch.init(nil, s, c.st)
	if mode == ModeCopy {
		c.f.disable("ModeCopy")
	} else if err := Supported(); s == defaultSys && err != nil {
		c.f.disable(err.Error())
	}
	// A dropped conn's ring is given up when the Conn is collected; without that, the
	// mapping would keep the socket open after its descriptor is finalized.
	runtime.AddCleanup(c, (*ring).retireDropped, r)
	return c
}

// Stats returns the conn's counters. It is safe to call at any time, also after Close.
func (c *Conn) Stats() Stats {
	if c == nil || c.st == nil {
		return Stats{}
	}
	return c.st.snapshot()
}

// Mode returns the receive mode the conn was created with.
func (c *Conn) Mode() Mode {
	if c == nil {
		return ModeAuto
	}
	return c.mode
}

// startRead starts a read-side call: it takes the read lock, fails once the conn is
// closed, and ends the validity of the last Next view. A nil error must be paired with
// endRead.
func (c *Conn) startRead() error {
	if c == nil || c.st == nil {
		return c.noSocket("read")
	}
	if !c.readMu.TryLock() {
		if c.inWriteTo.Load() {
			return c.opErr("read", ErrWriteToActive)
		}
		c.readMu.Lock()
	}
	c.stateMu.Lock()
	closed := c.closed
	c.reading = !closed
	c.stateMu.Unlock()
	if closed {
		c.readMu.Unlock()
		return c.opErr("read", net.ErrClosed)
	}
	c.s.endView()
	return nil
}

// endRead finishes a read-side call, freeing the read side if Close came meanwhile.
func (c *Conn) endRead() {
	c.stateMu.Lock()
	c.reading = false
	free := c.closed
	c.stateMu.Unlock()
	if free {
		c.free()
	}
	c.readMu.Unlock()
}

// Close closes the connection. Pending reads and writes are unblocked and return errors
// satisfying errors.Is(err, net.ErrClosed); a running WriteTo returns too (after the
// Write it may be in, which is its writer's to end). As soon as no read-side call is
// running, the ring's mapped pages are freed and its address range goes to a
// process-wide quarantine, reading zeros, before it is unmapped (see Next for what a
// view used after Close sees).
func (c *Conn) Close() error {
	if c == nil || c.st == nil {
		return c.noSocket("close")
	}
	c.stateMu.Lock()
	if c.closed {
		c.stateMu.Unlock()
		if c.tc == nil {
			return c.opErr("close", net.ErrClosed)
		}
		return c.tc.Close()
	}
	c.closed = true
	free := !c.reading
	c.stateMu.Unlock()
	var err error
	if c.tc != nil {
		err = c.tc.Close()
	}
	if free {
		c.free()
	}
	return err
}

// free releases the ring and the fallback buffer and hands the conn's final counters to
// its Listener. It runs once, after Close, when no read-side call is running.
func (c *Conn) free() {
	c.s.free()
	if c.onClose != nil {
		c.onClose(c) // no read is left to count more bytes
	}
}

// expired returns the timeout error when bytes are buffered but the read deadline has
// passed: net.TCPConn fails such a read, although data is there, and so does the conn.
func (c *Conn) expired() error {
	if c.s.buffered() > 0 && c.deadlinePassed() {
		return c.opErr("read", os.ErrDeadlineExceeded)
	}
	return nil
}

// buffered is the number of received bytes not consumed yet. The caller holds readMu.
func (c *Conn) buffered() int { return c.s.buffered() }

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
