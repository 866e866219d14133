//go:build linux

package cpumeter

import (
	"runtime"
	"testing"
	"time"
)

// burn keeps the calling goroutine's CPU busy for about d of its thread's CPU time.
func burn(d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for t0 := threadCPU(); threadCPU()-t0 < d; {
	}
}

func TestMeterCountsTheWork(t *testing.T) {
	m := Start(false)
	burn(30 * time.Millisecond)
	r := m.Stop()
	if r.Spun != 0 {
		t.Errorf("spun %v without a spinner", r.Spun)
	}
	if r.CPU < 30*time.Millisecond || r.Wall < 30*time.Millisecond {
		t.Errorf("30ms of CPU measured as %v CPU in %v", r.CPU, r.Wall)
	}
}

// The spinner's time is all in the process's when the Meter reads it, whatever the
// length of the measurement: short ones are where a reading taken while it spins lagged
// by up to a scheduler tick and came out negative.
func TestMeterSubtractsTheSpinner(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("the spinner needs a second CPU")
	}
	var spun time.Duration
	var cpu, wall []float64
	for i := range 20 {
		m := Start(true)
		time.Sleep(time.Duration(1+i%5) * time.Millisecond)
		r := m.Stop()
		spun += r.Spun
		cpu, wall = append(cpu, float64(r.CPU)), append(wall, float64(r.Wall))
		// The spinner's time is taken out whole, never more than the process counted
		// (with a clock tick of slack: the two are read from different clocks).
		if r.CPU < -time.Millisecond {
			t.Errorf("run %d: %v of CPU besides the spinner's %v, in %v", i, r.CPU, r.Spun, r.Wall)
		}
	}
	if spun == 0 {
		t.Error("the spinner never spun")
	}
	// The waiting goroutine and the runtime use a little CPU; on a loaded machine other
	// threads of the process may run too, so only the typical run is bounded.
	if c, w := Median(cpu), Median(wall); c > w {
		t.Errorf("median CPU besides the spinner %v, more than the median wall time %v", time.Duration(c), time.Duration(w))
	}
}

func TestSpinnerThreadStops(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("the spinner needs a second CPU")
	}
	s := NewSpinner()
	s.Start()
	time.Sleep(5 * time.Millisecond)
	running := !threadStopped(s.tid)
	if d := s.Stop(); d <= 0 {
		t.Errorf("spun %v", d)
	}
	if !running {
		t.Error("the spinning thread is not running")
	}
	if !threadStopped(s.tid) {
		t.Error("the spinner's thread still runs after Stop")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		xs := append([]float64(nil), c.xs...)
		if got := Median(xs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.want)
		}
		for i := range xs {
			if xs[i] != c.xs[i] {
				t.Fatalf("Median reordered its argument: %v", xs)
			}
		}
	}
}
