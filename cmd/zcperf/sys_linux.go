package main

import (
	"os"

	"github.com/zcnet/zcnet/internal/zcsend"
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
	return zcsend.SetPageMSS(fd)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// gettid is the calling thread's id.
func gettid() int { return unix.Gettid() }

// threadCPUSelf is the calling thread's CPU time so far, in seconds.
func threadCPUSelf() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return float64(ts.Nano()) / 1e9
}

// threadGone reports whether thread tid of this process has exited.
func threadGone(tid int) bool {
	return unix.Tgkill(unix.Getpid(), tid, 0) == unix.ESRCH
}
