//go:build linux

package zcsend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SetPageMSS sets TCP_MAXSEG to PageMSS on the socket fd: a listener then advertises it,
// and a sender sends segments of one page of payload.
func SetPageMSS(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, PageMSS())
}

// Dial connects to addr with the socket options o asks for.
func Dial(ctx context.Context, addr string, o Options) (*net.TCPConn, error) {
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if o.PageMSS {
				serr = SetPageMSS(fd)
			}
			if serr == nil && o.ZeroCopy {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Send writes total bytes of the pattern to c (starting at stream offset 0), then
// half-closes it and waits for the peer to close. With ZeroCopy the conn must have been
// dialed with ZeroCopy.
func Send(c *net.TCPConn, total int64, o Options) error {
	if Period%o.chunk() != 0 {
		return fmt.Errorf("zcsend: chunk %d does not divide %d", o.chunk(), Period)
	}
	chunk := o.chunk()
	for sent := int64(0); sent < total; {
		off := int(sent % Period)
		n := int(min(int64(chunk-off%chunk), total-sent))
		if err := Write(c, patternBuf[off:off+n], o.ZeroCopy); err != nil {
			return err
		}
		sent += int64(n)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	// Wait for the receiver to close, reaping zerocopy completions meanwhile.
	buf := make([]byte, 4096)
	for {
		if o.ZeroCopy {
			rc.Control(func(fd uintptr) { drainErrQueue(int(fd)) })
		}
		if _, err := c.Read(buf); err != nil {
			return nil // EOF or reset: the receiver is done either way
		}
	}
}

// WaitClose waits, after c's CloseWrite, until the peer closes c, reading and dropping
// what it sends. With zerocopy it reaps MSG_ZEROCOPY completions meanwhile: completions
// that arrive after the last send wake the poller with EPOLLERR alone, which Go reports
// as a read error ("not pollable") until another event comes; it then reaps and reads
// again. It returns nil at EOF or a reset, else the read error.
func WaitClose(c *net.TCPConn, zerocopy bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		if zerocopy {
			rc.Control(func(fd uintptr) { drainErrQueue(int(fd)) })
		}
		_, err := c.Read(buf)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			return nil
		case zerocopy && notPollable(err):
			time.Sleep(time.Millisecond)
		default:
			return err
		}
	}
}

// notPollable reports whether err is internal/poll.ErrNotPollable (not exported), which
// net's conns return while the poller reports EPOLLERR alone.
func notPollable(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Err != nil && oe.Err.Error() == "not pollable"
}

// Write writes all of p to c, with MSG_ZEROCOPY when zerocopy is set (c must then have
// been dialed with ZeroCopy, and p must not change until the peer has received it),
// reaping zerocopy completions from the error queue as it goes.
func Write(c *net.TCPConn, p []byte, zerocopy bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	flags := unix.MSG_DONTWAIT
	if zerocopy {
		flags |= unix.MSG_ZEROCOPY
	}
	for len(p) > 0 {
		var w int
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			for {
				w, serr = unix.SendmsgN(int(fd), p, nil, nil, flags)
				switch serr {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					if zerocopy {
						drainErrQueue(int(fd))
					}
					return false
				case unix.ENOBUFS:
					// Too many zerocopy sends outstanding: reap completions.
					if drainErrQueue(int(fd)) == 0 {
						time.Sleep(20 * time.Microsecond)
					}
					continue
				}
				return true
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("zcsend: send: %w", serr)
		}
		p = p[w:]
	}
	if zerocopy {
		return rc.Control(func(fd uintptr) { drainErrQueue(int(fd)) })
	}
	return nil
}

// drainErrQueue reads MSG_ZEROCOPY completions from the socket's error queue and returns
// how many notifications it read.
func drainErrQueue(fd int) int {
	var oob [256]byte
	n := 0
	for {
		_, _, _, _, err := unix.Recvmsg(fd, nil, oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			return n
		}
		n++
	}
}
