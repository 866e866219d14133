package main

import (
	"runtime"
	"sync/atomic"
	"time"
)

// spinner is a goroutine spinning on its own thread, hence on another CPU than the
// receiver's while both run: a real server always has other threads running, and they
// are what a mapping's TLB shootdowns interrupt. Its CPU time is not the receiver's and
// is subtracted from the measurement.
//
// The subtraction must match what getrusage counts, which lags by up to a scheduler
// tick for a thread that is running. So the spinner is parked (its time fully
// accounted) when the meter starts, measures its own thread's CPU time while it spins,
// and its thread exits (adding its time to the process's) before the meter stops.
type spinner struct {
	run  chan struct{} // closed to start spinning
	stop atomic.Bool
	done chan struct{} // closed when cpu is set
	cpu  float64       // seconds spun
	tid  int
}

// newSpinner starts the spinner's goroutine and returns once it is parked.
func newSpinner() *spinner {
	s := &spinner{run: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan int)
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		ready <- gettid()
		<-s.run
		t0 := threadCPUSelf()
		for !s.stop.Load() {
		}
		s.cpu = threadCPUSelf() - t0
		close(s.done)
	}()
	s.tid = <-ready
	return s
}

// halt stops the spinner, waits for its thread to exit and returns its CPU seconds.
func (s *spinner) halt() float64 {
	s.stop.Store(true)
	<-s.done
	for deadline := time.Now().Add(time.Second); !threadGone(s.tid) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Microsecond)
	}
	return s.cpu
}

// meter measures the wall and CPU time of one transfer, less the spinner's with -busy.
type meter struct {
	spin *spinner
	cpu0 float64
	t0   time.Time
}

func startMeter(busy bool) *meter {
	m := &meter{}
	if busy {
		m.spin = newSpinner()
	}
	m.cpu0 = cpuTime()
	m.t0 = time.Now()
	if m.spin != nil {
		close(m.spin.run)
	}
	return m
}

// stop returns the wall and CPU seconds since startMeter.
func (m *meter) stop() (secs, cpu float64) {
	secs = time.Since(m.t0).Seconds()
	var spun float64
	if m.spin != nil {
		spun = m.spin.halt()
	}
	return secs, cpuTime() - m.cpu0 - spun
}
