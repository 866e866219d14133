package zcnet

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Each read-side call is a loop of two steps: make bytes available (a fill, on the path
// the policy picks), then take them from the stream (copy, view, or hand to a writer).

// Read reads up to len(p) bytes into p. It first returns bytes an earlier call left
// mapped or buffered, then receives more: by recv(2) straight into p, or by mapping whole
// pages and copying them into p, whichever the conn's mode picks. A Read after one whose
// recv filled p receives into a pooled read-ahead instead, which serves the Reads that
// follow: a Read under 64 KiB into 64 KiB, and while the stream streams, a Read under
// 128 KiB into 512 KiB (which a conn then holds until its Reads take it). When p (or the
// read-ahead) is 128 KiB or more and the stream streams, a Read that must wait asks the
// kernel to wake it once that much can be taken (SO_RCVLOWAT), for at most twice the time
// those bytes should take at the stream's measured rate (plus 50 us) and never more than
// 1 ms; the stream's end, an error, Close and the deadline end the wait at once. It
// returns io.EOF at the end of the stream; other errors are *net.OpError.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.startRead(); err != nil {
		return 0, err
	}
	defer c.endRead()
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.expired(); err != nil {
		return 0, err
	}
	for {
		if c.s.buffered() > 0 {
			return c.s.copyTo(p), nil
		}
		if err := c.s.ended(); err != nil {
			return 0, c.opErr("read", err)
		}
		n, err := c.readFill(p)
		if n > 0 || err != nil {
			return n, c.opErr("read", err)
		}
	}
}

// readFill receives more bytes for Read: straight into p (returning n > 0), or into the
// stream (returning 0, nil).
func (c *Conn) readFill(p []byte) (int, error) {
	ch := c.pol.pick(len(p))
	ch.lowat = 1
	// Map what this Read takes, or more while Reads keep draining what was mapped
	// without waiting (twice the last fill, up to maxReadMap): a conn that reads a
	// little and stops pins a little.
	ch.want = max(pages(len(p)), c.readMap)
	ch.lowatMax = len(p)
	dst := p
	if size := c.f.batch.copySize(); len(p) < min(size, batchMin) && c.fullRead && zerocopyRecv {
		// The last recv filled p: more was likely queued, and a pooled buffer takes it
		// in one call for several Reads; on a stream that streams, one batched wait's
		// worth (see batcher.copySize).
		dst, ch.copy, ch.lowatMax = nil, size, size
	}
	res := c.f.fill(ch, dst)
	if ch.mapping {
		c.readMap = 0
		if res.mapped && !res.waited {
			c.readMap = min(2*ch.want, maxReadMap)
		}
	}
	if res.fellBack {
		ch.mapping = false
	}
	if ch.mapping && ch.timed && res.n > 0 {
		// Mapping costs Read a copy out of the pages too.
		t0 := cpuClock(clockThread)
		n := c.s.copyTo(p)
		c.pol.observe(ch, res, time.Duration(cpuClock(clockThread)-t0))
		return n, nil
	}
	c.pol.observe(ch, res, 0)
	switch {
	case ch.mapping:
		return 0, res.err
	case dst == nil:
		c.fullRead = res.n > len(p)
		return 0, res.err
	}
	c.fullRead = len(p) < batchMin && res.n == len(p)
	return res.n, res.err
}

// maxReadMap is the most a Read's mapping fill takes while Reads drain the stream.
const maxReadMap = 1 << 20

// Next returns the next n bytes of the stream, waiting until n bytes have arrived (or the
// stream ends, an error occurs or the read deadline passes), like io.ReadFull but without
// a copy where possible. While it waits it sets SO_RCVLOWAT so that the kernel wakes the
// reader once for the bytes still missing (capped by the kernel to half the receive
// buffer; note that Linux grows SO_RCVBUF to fit a large mark, and keeps it grown). Read
// and WriteTo wait with the mark at 1, or, on a stream that streams, at a batched mark
// (at most a quarter of SO_RCVBUF) that a per-conn timer lowers to 1 within at most 1 ms.
//
// Where the n bytes lie contiguously in mapped pages, the slice points into the mapping;
// otherwise they are gathered in a pooled buffer sized to n. A view cannot wrap around
// the end of the ring, so with sizes that vary, a RingSize several times the largest n
// keeps most views in place (Stats.ViewBytes against AssembledBytes shows the split).
// Either way the slice is read-only and valid only until the next read-side call on the
// conn (Read, Next, WriteTo, Close, File, or SyscallConn's Read), and only while the Conn
// is reachable: a Conn that is garbage collected is closed, and liveness is not lexical
// (the Conn may be collected after its last use, while the view is still read). A
// deferred c.Close() in the function that uses the view keeps c reachable and open until
// the function returns; otherwise call runtime.KeepAlive(c) after the last use of the
// view. Writing into a slice that points into the mapping is a fatal fault of the
// process (the mapping is PROT_READ; the runtime cannot recover it as a panic): copy it
// first if it must be modified, or set Options.CopyViews while looking for such a bug.
//
// A view used after its validity (a bug) sees, if it points into the mapping: later
// bytes of its own stream, or a fatal fault (SIGBUS) once the ring has released those
// pages; once the ring is given up (at Close or collection, and by an open conn after a
// read waited long, or on the copy path), zeros while the ring's range waits in the
// process's quarantine of given-up rings, and then, once the range has been unmapped
// (the quarantine keeps at most a quarter of Limits.MaxRings and of MaxRingBytes, and
// gives way to new rings past the limits), a fatal fault, or whatever is mapped at that
// address later, another conn's ring included. A view of the pooled buffer keeps its
// bytes after Close.
//
// At the end of the stream, Next returns the bytes left with io.ErrUnexpectedEOF, or nil
// and io.EOF when none are left; after a reset it returns the bytes left with the error.
// When the deadline passes (or Close interrupts it) it returns nil and the error, and the
// bytes it had gathered stay buffered for the next call. Next(0) returns an empty slice;
// a negative n returns ErrNegativeCount and an n above the ring size ErrTooLarge.
func (c *Conn) Next(n int) ([]byte, error) {
	if err := c.startRead(); err != nil {
		return nil, err
	}
	defer c.endRead()
	switch {
	case n < 0:
		return nil, ErrNegativeCount
	case n > c.ringSize:
		return nil, ErrTooLarge
	case n == 0:
		return []byte{}, nil
	}
	if err := c.expired(); err != nil {
		return nil, err
	}
	for c.s.buffered() < n {
		if err := c.s.ended(); err != nil {
			return c.rest(err)
		}
		ready, err := c.nextFill(n)
		if ready {
			break
		}
		if err != nil && err != io.EOF {
			if c.s.buffered() == 0 || retryable(err) {
				// A deadline or Close: the bytes gathered so far stay buffered for a
				// later call, as nothing is lost by waiting.
				return nil, c.opErr("read", err)
			}
			c.s.failAfter(err)
		}
	}
	return c.view(n), nil
}

// nextFill receives more of the n bytes Next waits for. It reports ready when the
// buffer holds exactly those n bytes and the ring bytes that follow them.
func (c *Conn) nextFill(n int) (ready bool, err error) {
	missing := n - c.s.buffered()
	ch := c.pol.pick(n)
	ch.want, ch.span, ch.goal = pages(missing), pages(missing), missing
	ch.copy, ch.lowat = missing, missing
	gather := ch.mapping && c.f.maps()
	if gather {
		c.s.gatherFor(n)
	}
	res := c.f.fill(ch, nil)
	if gather {
		ready = c.s.gathered(missing)
	}
	if res.fellBack {
		ch.mapping = false
	}
	c.pol.observe(ch, res, 0)
	return ready, res.err
}

// view takes the next n buffered bytes for Next.
func (c *Conn) view(n int) []byte {
	v, mapped := c.s.view(n, !c.copyViews)
	if mapped {
		c.st.viewBytes.Add(uint64(n))
	} else {
		c.st.assembled.Add(uint64(n))
	}
	return v
}

// retryable reports whether err leaves the stream intact (a deadline, or the conn closed
// under the call), as opposed to ending it (a reset).
func retryable(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed)
}

// rest returns all pending bytes at the end of the stream (or an error) for Next.
func (c *Conn) rest(err error) ([]byte, error) {
	n := c.s.buffered()
	if n == 0 {
		return nil, c.opErr("read", err)
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return c.view(n), c.opErr("read", err)
}

// writeToBatch is the most a WriteTo fill maps: what it hands to the writer at once.
const writeToBatch = 1 << 20

// WriteTo implements io.WriterTo: it writes the stream to w until EOF, handing w the
// mapped pages themselves (no copy in user space) where the conn maps. When the conn
// copies and w is an *os.File, a *net.TCPConn, a *net.UnixConn or a *Conn, the bytes the
// conn holds are written first and the rest moves from socket to w with splice(2), as
// io.Copy from a net.TCPConn does, through a pipe of the call's own (a file opened for
// appending, which splice refuses, is copied into). w must not keep the slices it is
// given, as io.Writer requires. It returns the bytes written and the first error other
// than io.EOF, as net.TCPConn's WriteTo does: a *net.OpError with Op "writeto" wrapping
// the read's *net.OpError or the writer's error. While it runs, other read-side calls on
// the conn fail at once (see ErrWriteToActive); Close ends it.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	n, err := c.writeTo(w)
	return n, c.writeToErr(err)
}

// writeTo is WriteTo with the errors of the read side.
func (c *Conn) writeTo(w io.Writer) (int64, error) {
	if err := c.startRead(); err != nil {
		return 0, err
	}
	defer c.endRead()
	c.inWriteTo.Store(true)
	defer c.inWriteTo.Store(false)
	if err := c.expired(); err != nil {
		return 0, err
	}
	var total int64
	for {
		if c.isClosed() {
			return total, c.opErr("read", net.ErrClosed)
		}
		n, err := c.writeBuffered(w)
		total += n
		if err != nil {
			return total, err
		}
		if err := c.s.ended(); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, c.opErr("read", err)
		}
		ch := c.pol.pick(writeToBatch)
		if !c.s.errQueued() && (!c.f.maps() || (!ch.mapping && !ch.retry)) {
			// (A reset the mapping path took from the socket while bytes were still
			// queued must come after them: splice would end the stream cleanly. A
			// conn that backs off tries mapping again later.)
			if n, ok, err := c.splice(w); ok {
				return total + n, err
			}
		}
		ch.want, ch.copy, ch.lowat = min(writeToBatch, c.ringSize), c.f.batch.copySize(), 1
		ch.lowatMax = writeToBatch
		res := c.f.fill(ch, nil)
		if res.fellBack {
			ch.mapping = false
		}
		c.pol.observe(ch, res, 0)
		if res.err != nil && res.err != io.EOF {
			return total, c.opErr("read", res.err)
		}
	}
}

// writeBuffered writes every buffered byte to w, in stream order.
func (c *Conn) writeBuffered(w io.Writer) (int64, error) {
	if c.copyViews {
		c.s.gather()
	}
	n, mapped, err := c.s.writeTo(w)
	c.st.viewBytes.Add(uint64(mapped))
	return n, err
}

// splice hands the rest of the stream to w with splice(2) when w is a file or a socket
// the standard library splices to, reporting whether it did. The conn holds no byte
// then (writeBuffered ran), so the socket's next byte is the stream's.
func (c *Conn) splice(w io.Writer) (int64, bool, error) {
	if c.tc == nil || !zerocopyRecv {
		return 0, false, nil
	}
	var move func() (int64, error)
	switch d := w.(type) {
	case *os.File:
		if appending(d) {
			return 0, false, nil // splice refuses it: WriteTo copies
		}
		move = func() (int64, error) { return d.ReadFrom(c.tc) }
	case *net.TCPConn:
		move = func() (int64, error) { return d.ReadFrom(c.tc) }
	case *net.UnixConn:
		move = func() (int64, error) { return c.tc.WriteTo(d) }
	case *Conn:
		if d.tc == nil {
			return 0, false, nil
		}
		move = func() (int64, error) { return d.tc.ReadFrom(c.tc) }
	default:
		return 0, false, nil
	}
	if dst, ok := spliceTo(w); ok && c.f.sys.splice != nil {
		if n, ok, err := c.spliceLoop(dst); ok {
			return n, true, err
		}
	}
	n, err := c.f.splice(move, c.plainLowat)
	return n, true, err
}

// plainLowat puts SO_RCVLOWAT back to 1 (a Next may have raised it) before the socket is
// read other than by a fill: splice, SyscallConn's Read.
func (c *Conn) plainLowat() {
	if !c.f.lowatRaised() || c.tc == nil {
		return
	}
	if rc, err := c.tc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { c.f.setLowat(int(fd), 1) })
	}
}

// writeAll writes p to w, turning a short write without error into io.ErrShortWrite.
func writeAll(w io.Writer, p []byte) (int, error) {
	n, err := w.Write(p)
	if n < 0 || n > len(p) {
		n = 0
		if err == nil {
			err = io.ErrShortWrite
		}
	}
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return n, err
}
