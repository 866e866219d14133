package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// cpuTime is the user plus system CPU time of this process so far, in seconds.
func cpuTime() float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// setPageMSS sets TCP_MAXSEG to one page of payload plus the timestamp option on the
// socket fd, so that a listener advertises it.
func setPageMSS(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, os.Getpagesize()+12)
}
