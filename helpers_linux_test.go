package zcnet

import (
	"net"

	"golang.org/x/sys/unix"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// writeZerocopy writes all of p to c with MSG_ZEROCOPY (c must have SO_ZEROCOPY on).
// p must not change until the peer has received it.
func writeZerocopy(c *net.TCPConn, p []byte) error { return zcsend.Write(c, p, true) }

// unackedBytes returns the bytes written to c that the peer has not acknowledged yet
// (SIOCOUTQ).
func unackedBytes(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var q int
	var qerr error
	if err := rc.Control(func(fd uintptr) { q, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return q, qerr
}
