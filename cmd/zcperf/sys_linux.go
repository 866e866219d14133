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

// threadCPU is the CPU time of thread tid of this process so far, in seconds: its
// CLOCK_THREAD_CPUTIME_ID, read through the clock id Linux gives every thread
// (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)).
func threadCPU(tid int) float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(int32(^tid<<3|6), &ts); err != nil {
		return 0
	}
	return float64(ts.Nano()) / 1e9
}
