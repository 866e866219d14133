package zcnet

import (
	"errors"
	"io"
	"net"
	"os"
)

// Next returns the next n bytes of the stream, waiting until n bytes have arrived (or the
// stream ends, an error occurs or the read deadline passes), like io.ReadFull but without
// a copy where possible. While it waits it sets SO_RCVLOWAT so that the kernel wakes the
// reader once for the bytes still missing (capped by the kernel to half the receive
// buffer; note that Linux grows SO_RCVBUF to fit a large mark, and keeps it grown). Read
// and WriteTo put the mark back to 1 before they wait.
//
// Where the n bytes lie contiguously in mapped pages, the slice points into the mapping;
// otherwise they are gathered in a pooled buffer. A view cannot wrap around the end of
// the ring, so with sizes that vary, a RingSize several times the largest n keeps most
// views in place (Stats.ViewBytes against AssembledBytes shows the split). Either way the slice is read-only and
// valid only until the next read-side call on the conn (Read, Next, WriteTo, Close):
// after that its memory is reused or unmapped. Writing into a slice that points into the
// mapping faults (the mapping is PROT_READ): copy it first if it must be modified.
//
// At the end of the stream, Next returns the bytes left with io.ErrUnexpectedEOF, or nil
// and io.EOF when none are left; after a reset it returns the bytes left with the error.
// When the deadline passes (or Close interrupts it) it returns nil and the error, and the
// bytes it had gathered stay buffered for the next call. Next(0) returns an empty slice; a negative n returns
// ErrNegativeCount and an n above the ring size ErrTooLarge.
func (c *Conn) Next(n int) ([]byte, error) {
	if err := c.begin(); err != nil {
		return nil, err
	}
	defer c.end()
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
	for {
		rl, bl := c.ring.buffered(), c.buf.buffered()
		if bl == 0 && rl >= n {
			v := c.ring.pending()[:n:n]
			c.ring.consume(n)
			c.viewed = true
			c.st.viewBytes.Add(uint64(n))
			return v, nil
		}
		if rl == 0 && bl >= n {
			return c.bufView(n), nil
		}
		if rl+bl >= n {
			// Mapped bytes, then copied ones (an unmappable stretch followed the
			// pages), hold the n bytes: gather them instead of waiting for more.
			c.unmapPending()
			return c.bufView(n), nil
		}
		if err := c.pendingErr(); err != nil {
			return c.rest(err)
		}
		var err error
		useMap, _ := c.chooseMap(false)
		if useMap && bl == 0 && (rl == 0 || c.ring.head+n <= c.ring.size()) {
			// Extend the mapped bytes in place: whole pages for what is missing.
			want := (n - rl + pageSize - 1) &^ (pageSize - 1)
			err = c.fillMap(want, n-rl)
			if err == errNoMap {
				continue
			}
		} else if useMap {
			// The n bytes cannot lie contiguously in the ring: gather them in the
			// buffer, but still take the missing ones by mapping. A recv(2) of more
			// than the kernel cannot map would split the mappable pages behind them
			// and turn the rest of the stream into copies.
			if rl > 0 {
				c.unmapPending()
				continue
			}
			need := n - bl
			err = c.fillMap((need+pageSize-1)&^(pageSize-1), need)
			if err == errNoMap {
				continue
			}
			if k := min(c.ring.buffered(), need); k > 0 {
				// The mapped bytes follow the buffered ones: append what is missing.
				copy(c.buf.space(k), c.ring.pending()[:k])
				c.buf.commit(k)
				c.ring.consume(k)
				if c.ring.buffered() > 0 {
					return c.bufView(n), nil // the buffer holds exactly n bytes
				}
			}
		} else {
			if rl > 0 {
				c.unmapPending()
			}
			need := n - c.buf.buffered()
			_, err = c.fillBuf(need, need)
		}
		if err != nil && err != io.EOF {
			if c.buffered() == 0 || retryable(err) {
				// A deadline or Close: the bytes gathered so far stay buffered for a
				// later call, as nothing is lost by waiting.
				return nil, c.opErr("read", err)
			}
			c.rerr = err
		}
	}
}

// retryable reports whether err leaves the stream intact (a deadline, or the conn closed
// under the call), as opposed to ending it (a reset).
func retryable(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed)
}

// bufView hands out the next n bytes of the fallback buffer (which holds all pending
// bytes), keeping the buffer alive until the next read-side call.
func (c *Conn) bufView(n int) []byte {
	v := c.buf.pending()[:n:n]
	c.buf.held = true
	c.buf.consume(n)
	c.st.assembled.Add(uint64(n))
	return v
}

// unmapPending moves the ring's pending bytes to the front of the fallback buffer, so
// that all pending bytes are contiguous there.
func (c *Conn) unmapPending() {
	r := c.ring.pending()
	old := c.buf.pending()
	var f fallback
	sp := f.space(len(r) + len(old) + copyBufSize)
	copy(sp[copy(sp, r):], old)
	f.commit(len(r) + len(old))
	c.ring.consume(len(r))
	c.buf.put()
	c.buf = f
}

// rest returns all pending bytes at the end of the stream (or an error) for Next.
func (c *Conn) rest(err error) ([]byte, error) {
	if c.buffered() == 0 {
		return nil, c.opErr("read", err)
	}
	if c.ring.buffered() > 0 {
		c.unmapPending()
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return c.bufView(c.buf.buffered()), c.opErr("read", err)
}

// WriteTo implements io.WriterTo: it writes the stream to w until EOF, handing w the
// mapped pages themselves (no copy in user space) where the conn maps. w must not keep
// the slices it is given, as io.Writer requires. It returns the bytes written and the
// first error other than io.EOF.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	defer c.end()
	if err := c.expired(); err != nil {
		return 0, err
	}
	var total int64
	for {
		if c.ring.buffered() > 0 {
			n, err := writeAll(w, c.ring.pending())
			c.ring.consume(n)
			c.st.viewBytes.Add(uint64(n))
			total += int64(n)
			if err != nil {
				return total, err
			}
		}
		if c.buf.buffered() > 0 {
			n, err := writeAll(w, c.buf.pending())
			c.buf.consume(n)
			total += int64(n)
			if err != nil {
				return total, err
			}
		}
		if err := c.pendingErr(); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, c.opErr("read", err)
		}
		// Everything buffered was written: a fill that fails leaves nothing behind.
		mapped, err := c.tryMap(false, bulkFill)
		if !mapped {
			_, err = c.fillBuf(copyBufSize, 1)
		}
		if err != nil && err != io.EOF {
			return total, c.opErr("read", err)
		}
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
