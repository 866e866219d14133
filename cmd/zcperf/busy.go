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
type spinner struct {
	stop atomic.Bool
	done chan struct{}
	tid  int
}

func startSpinner() *spinner {
	s := &spinner{done: make(chan struct{})}
	ready := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		ready <- gettid()
		for !s.stop.Load() {
		}
		close(s.done)
	}()
	s.tid = <-ready
	return s
}

// cpu is the spinner thread's CPU time so far, in seconds (0 for no spinner).
func (s *spinner) cpu() float64 {
	if s == nil {
		return 0
	}
	return threadCPU(s.tid)
}

func (s *spinner) halt() {
	s.stop.Store(true)
	<-s.done
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
		m.spin = startSpinner()
	}
	m.cpu0 = cpuTime() - m.spin.cpu()
	m.t0 = time.Now()
	return m
}

// stop returns the wall and CPU seconds since startMeter.
func (m *meter) stop() (secs, cpu float64) {
	secs = time.Since(m.t0).Seconds()
	cpu = cpuTime() - m.spin.cpu() - m.cpu0
	if m.spin != nil {
		m.spin.halt()
	}
	return secs, cpu
}
