package zcnet

import (
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// writeZerocopy writes all of p to c with MSG_ZEROCOPY (c must have SO_ZEROCOPY on),
// reaping completions from the error queue. p must not change until the peer has
// received it.
func writeZerocopy(c *net.TCPConn, p []byte) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for len(p) > 0 {
		var w int
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			for {
				w, serr = unix.SendmsgN(int(fd), p, nil, nil, unix.MSG_ZEROCOPY|unix.MSG_DONTWAIT)
				switch serr {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					drainZerocopy(int(fd))
					return false
				case unix.ENOBUFS:
					// Too many zerocopy sends in flight: reap completions and retry.
					if drainZerocopy(int(fd)) == 0 {
						runtime.Gosched()
					}
					continue
				}
				return true
			}
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		p = p[w:]
	}
	return rc.Control(func(fd uintptr) { drainZerocopy(int(fd)) })
}

// drainZerocopy reads MSG_ZEROCOPY completions from the socket's error queue and returns
// how many it read.
func drainZerocopy(fd int) int {
	var oob [256]byte
	n := 0
	for {
		if _, _, _, _, err := unix.Recvmsg(fd, nil, oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT); err != nil {
			return n
		}
		n++
	}
}

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
