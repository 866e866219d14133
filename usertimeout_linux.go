//go:build linux

package zcnet

import (
	"os"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT, in milliseconds, on a socket.
func setUserTimeout(fd uintptr, ms int) error {
	return os.NewSyscallError("setsockopt", unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms))
}
