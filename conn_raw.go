package zcnet

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// ErrBuffered is the Err of the *net.OpError returned by Conn.File and by the Read method
// of Conn.SyscallConn's RawConn while the conn holds received bytes (mapped or buffered)
// that were not consumed: reading the socket directly would skip them.
var ErrBuffered = errors.New("zcnet: conn holds received bytes; reading the socket directly would skip them")

// SyscallConn returns a raw network connection, as net.TCPConn.SyscallConn, with these
// differences, which keep the stream exact:
//
//   - Control runs f with the socket's descriptor, as net's: for socket options
//     (TCP_USER_TIMEOUT, TCP_INFO, ...).
//   - Write is net's: f may write to the socket.
//   - Read waits for any read-side call in progress (Read, Next), then fails with a
//     *net.OpError wrapping ErrBuffered if the conn holds received bytes not consumed
//     yet (when that is, see File), ErrWriteToActive while a WriteTo runs, or
//     net.ErrClosed once the conn is closed; otherwise it runs f as net's Read does,
//     holding off the conn's own reads until it returns. Bytes f reads are not counted
//     in Stats, and an error the conn has already taken from the kernel (a reset
//     reported during a mapping call) is not seen by f. Like a read-side call, it ends
//     the validity of the last Next view, and puts SO_RCVLOWAT back to 1.
//
// The RawConn is not net's own type, on purpose: os.File.ReadFrom splices straight from
// the socket of a syscall.Conn whose RawConn is net's (it asks for its PollFD), which
// would skip the bytes the conn holds. With this one, io.Copy(file, conn) and
// file.ReadFrom(conn) go through WriteTo, and tcpConn.ReadFrom(conn), which tries
// sendfile(2) through any syscall.Conn's Read, falls back to WriteTo when the conn holds
// bytes (or when the kernel refuses sendfile from a socket, as Linux 6.18 does): all
// stay exact.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if c == nil || c.tc == nil {
		return nil, c.noSocket("raw-control")
	}
	rc, err := c.tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &sysConn{c: c, rc: rc}, nil
}

// sysConn is the syscall.RawConn of a Conn (see Conn.SyscallConn). It has no PollFD
// method, so the standard library does not splice from it.
type sysConn struct {
	c  *Conn
	rc syscall.RawConn
}

// Control runs f with the socket's descriptor, as net's RawConn.Control.
func (s *sysConn) Control(f func(fd uintptr)) error { return s.rc.Control(f) }

// Write runs f until it returns true, waiting for the socket to be writable, as net's
// RawConn.Write.
func (s *sysConn) Write(f func(fd uintptr) bool) error { return s.rc.Write(f) }

// Read runs f as net's RawConn.Read, holding the conn's read lock, unless the conn holds
// received bytes: then it fails with ErrBuffered (see Conn.SyscallConn).
func (s *sysConn) Read(f func(fd uintptr) bool) error {
	c := s.c
	if err := c.lockEmpty("raw-read"); err != nil {
		return err
	}
	defer c.endRead()
	return s.rc.Read(f)
}

// lockEmpty starts a call that reads the socket directly: it takes the read lock (and
// keeps Close from releasing the read side meanwhile), and fails, unlocked, when the
// conn is closed or holds received bytes. A nil error must be paired with endRead.
func (c *Conn) lockEmpty(op string) error {
	if err := c.startRead(); err != nil {
		if oe, ok := err.(*net.OpError); ok {
			oe.Op = op
		}
		return err
	}
	if c.buffered() > 0 {
		c.endRead()
		return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: ErrBuffered}
	}
	c.plainLowat()
	return nil
}

// File returns a copy of the socket's file descriptor, as net.TCPConn.File; closing one
// does not close the other. After waiting for any read-side call in progress, it fails
// with a *net.OpError wrapping ErrBuffered when the conn holds received bytes not
// consumed yet (reads from the file would skip them), with ErrWriteToActive while a
// WriteTo runs, and with net.ErrClosed once the conn is closed. Reads from the file take
// bytes straight from the socket: once it is returned, nothing stops them from racing the
// conn's own reads, so read from one of the two only. The file is for socket options, for
// writing, and for handing the socket to another process. Like a read-side call, File
// ends the validity of the last Next view.
//
// The conn reads ahead of its caller, and File (like SyscallConn's Read) then refuses
// where net.TCPConn's would succeed. The conn holds received bytes after a call exactly
// when the kernel handed it more than the call returned:
//   - a Read with len(p) under 128 KiB, after a Read whose recv(2) filled its buffer,
//     receives into a pooled buffer: up to 64 KiB (when len(p) is under that), or up to
//     512 KiB while the stream streams (a Read of 128 KiB or more, or one after a recv
//     that did not fill its buffer, receives straight into p and holds nothing);
//   - a Next(n) that copies receives what is queued, beyond n if more has arrived;
//   - a Read or Next that maps (ModeZeroCopy, and ModeAuto where it chose to map) takes
//     whole pages, and a Read up to 1 MiB while Reads keep draining without waiting;
//     bytes the kernel cannot map are received into the pooled buffer;
//   - WriteTo consumes the stream to its end.
//
// So to hand the socket over after a message, a ModeCopy conn whose Reads use a buffer of
// at least 128 KiB (bufio.Reader's default is 4 KiB: use bufio.NewReaderSize) holds no
// byte that net.TCPConn would not; otherwise check the error and carry on reading: the
// refusal loses nothing.
func (c *Conn) File() (*os.File, error) {
	if c == nil || c.tc == nil {
		return nil, c.noSocket("file")
	}
	if err := c.lockEmpty("file"); err != nil {
		return nil, err
	}
	defer c.endRead()
	return c.tc.File()
}

// MultipathTCP reports whether the connection uses MPTCP, as net.TCPConn.MultipathTCP.
func (c *Conn) MultipathTCP() (bool, error) {
	if c == nil || c.tc == nil {
		return false, c.noSocket("raw-control")
	}
	return c.tc.MultipathTCP()
}

// noSocket is the error of op on a Conn with no socket (a zero value, or nil).
func (c *Conn) noSocket(op string) error {
	e := &net.OpError{Op: op, Net: "tcp", Err: ErrNotInitialized}
	if c != nil {
		e.Source, e.Addr = c.laddr, c.raddr
	}
	return e
}
