package cpumeter

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPU is the calling thread's CPU time so far.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func threadID() int { return unix.Gettid() }

// threadStopped reports whether thread tid of this process has exited or is not running
// (state other than R in /proc/self/task/TID/stat): either way the kernel has added its
// time up to now to the process's. A locked goroutine's thread normally exits with the
// goroutine, but the main thread is parked for good instead.
func threadStopped(tid int) bool {
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return unix.Tgkill(unix.Getpid(), tid, 0) == unix.ESRCH
	}
	// "tid (comm) S ...": the state follows the last parenthesis.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'R'
}
