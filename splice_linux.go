//go:build linux

package zcnet

import (
	"os"

	"golang.org/x/sys/unix"
)

// newPipe makes a non-blocking pipe and asks for size bytes of it; it returns its ends
// and the size it has.
func newPipe(size int) (r, w, got int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return 0, 0, 0, err
	}
	got, err = unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size)
	if err != nil {
		got, err = unix.FcntlInt(uintptr(p[1]), unix.F_GETPIPE_SZ, 0)
	}
	if err != nil {
		closePipe(p[0], p[1])
		return 0, 0, 0, err
	}
	return p[0], p[1], got, nil
}

// closePipe closes both ends of a pipe.
func closePipe(r, w int) {
	unix.Close(r)
	unix.Close(w)
}

// appending reports whether f was opened with O_APPEND.
func appending(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	flags := unix.O_APPEND
	rc.Control(func(fd uintptr) {
		if v, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err == nil {
			flags = v
		}
	})
	return flags&unix.O_APPEND != 0
}
