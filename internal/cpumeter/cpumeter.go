// Package cpumeter measures the CPU time a piece of work costs the process, for zcnet's
// benchmarks, cmd/zcperf and its doctor: the process's CPU clock (getrusage, user plus
// system), a spinner that keeps another CPU busy meanwhile (a real server always has
// other threads running, and a mapping's TLB shootdowns interrupt them), and a Meter that
// reads the process's CPU around the work, less the spinner's.
//
// getrusage(RUSAGE_SELF) counts a thread of the process other than the caller only up to
// its last scheduler tick while that thread runs, so a reading taken while the spinner
// spins misses up to a tick of it. A Meter therefore reads the process's CPU only while
// the spinner is not running: it is parked when the Meter starts, and its thread has
// exited or stopped (the kernel has then added all its time to the process's) when the
// Meter stops. The spinner reads its own thread's CPU clock, which is exact, and that is
// what the Meter subtracts.
package cpumeter

import (
	"runtime"
	"slices"
	"sync/atomic"
	"time"
)

// Process returns the CPU time (user plus system) this process has used so far. It is 0
// where it cannot be read (outside Linux).
func Process() time.Duration { return processCPU() }

// Spinner is a goroutine spinning on an OS thread of its own, hence on another CPU than
// the measured work's while both run. Its thread exits when it stops (or, if it is the
// process's main thread, parks for good).
type Spinner struct {
	run  chan struct{} // closed by Start
	stop atomic.Bool
	done chan struct{} // closed when cpu is set
	cpu  time.Duration // the thread's CPU time from Start to Stop
	tid  int
}

// NewSpinner starts the spinner's goroutine and returns once it is parked, waiting for
// Start.
func NewSpinner() *Spinner {
	s := &Spinner{run: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan int)
	go func() {
		// Never unlocked: the thread exits with the goroutine, and its CPU time is then
		// fully in the process's.
		runtime.LockOSThread()
		ready <- threadID()
		<-s.run
		t0 := threadCPU()
		for !s.stop.Load() {
		}
		s.cpu = threadCPU() - t0
		close(s.done)
	}()
	s.tid = <-ready
	return s
}

// Start lets the spinner spin. It must be called once, before Stop.
func (s *Spinner) Start() { close(s.run) }

// Stop stops the spinner, waits (at most a second) until its thread has exited or stopped
// running, and returns the CPU time the thread spent from Start to Stop.
func (s *Spinner) Stop() time.Duration {
	s.stop.Store(true)
	<-s.done
	for deadline := time.Now().Add(time.Second); !threadStopped(s.tid) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Microsecond)
	}
	return s.cpu
}

// Meter measures the wall and CPU time of one piece of work, with or without a spinner.
type Meter struct {
	spin *Spinner
	cpu0 time.Duration
	t0   time.Time
}

// Reading is what a Meter measured.
type Reading struct {
	Wall time.Duration
	// CPU is the process's CPU time, the spinner's thread excluded.
	CPU time.Duration
	// Spun is the spinner's CPU time (0 without one).
	Spun time.Duration
}

// Start starts a Meter; with busy, a spinner spins until Stop.
func Start(busy bool) *Meter {
	m := &Meter{}
	if busy {
		m.spin = NewSpinner()
	}
	m.cpu0 = Process()
	m.t0 = time.Now()
	if m.spin != nil {
		m.spin.Start()
	}
	return m
}

// Stop ends the measurement (and stops the spinner) and returns it.
func (m *Meter) Stop() Reading {
	r := Reading{Wall: time.Since(m.t0)}
	if m.spin != nil {
		r.Spun = m.spin.Stop()
	}
	r.CPU = Process() - m.cpu0 - r.Spun
	return r
}

// Median returns the median of xs (the mean of the middle two for an even count), 0 for
// none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
