package zcnet

import (
	"net"
	"syscall"
	"time"
)

// setUserTimeoutConn sets TCP_USER_TIMEOUT on an established conn.
func setUserTimeoutConn(tc *net.TCPConn, d time.Duration) error {
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	return controlUserTimeout(rc, d)
}

// controlUserTimeout sets TCP_USER_TIMEOUT on the socket of c, rounding d up to a whole
// millisecond.
func controlUserTimeout(c syscall.RawConn, d time.Duration) error {
	ms := int((d + time.Millisecond - 1) / time.Millisecond)
	var serr error
	if err := c.Control(func(fd uintptr) { serr = setUserTimeout(fd, ms) }); err != nil {
		return err
	}
	return serr
}
