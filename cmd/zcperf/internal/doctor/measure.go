package doctor

// The loopback measurements: the cause runs and the CPU comparison.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// CauseRun is one loopback transfer into a ModeZeroCopy conn, to see what is mapped
// and why the rest is copied.
type CauseRun struct {
	Name           string      `json:"name"`
	Title          string      `json:"title"`
	SenderZeroCopy bool        `json:"sender_msg_zerocopy"`
	PageAlignedMSS bool        `json:"page_aligned_mss"`
	Bytes          int64       `json:"bytes"`
	Verified       bool        `json:"verified"`
	MappedPct      float64     `json:"mapped_pct"`
	MainCause      string      `json:"main_cause"` // the Stats field with most copied bytes, or ""
	Diagnosis      string      `json:"diagnosis"`
	Stats          zcnet.Stats `json:"stats"`
	Error          string      `json:"error,omitempty"`
}

// Names of the cause runs.
const (
	runPlain     = "plain_sender_page_mss"
	runNoMSS     = "zerocopy_sender_no_page_mss"
	runZeroCopy  = "zerocopy_sender_page_mss"
	causeRunSize = 32 << 20
)

// CostRow is one receiver of the CPU comparison.
type CostRow struct {
	Key      string `json:"key"` // net_read, zc_read, zc_next
	Receiver string `json:"receiver"`
	// CPUPerMiB is the median over rounds of the receiving process's CPU (user+sys, the
	// busy goroutine's thread excluded) per MiB received.
	CPUPerMiB float64   `json:"cpu_us_per_mib"`
	Samples   []float64 `json:"cpu_us_per_mib_samples"`
	// Ratio is the median over rounds of CPUPerMiB over net_read's in the same round.
	Ratio     float64      `json:"ratio_to_net"`
	MappedPct float64      `json:"mapped_pct"`
	Stats     *zcnet.Stats `json:"stats,omitempty"`
}

// Cost is the receiver CPU comparison.
type Cost struct {
	Rounds           int       `json:"rounds"`
	BytesPerTransfer int64     `json:"bytes_per_transfer"`
	BusyGoroutine    bool      `json:"busy_goroutine"`
	Receivers        []CostRow `json:"receivers"`
	// MapCopyRead is the median over rounds of the CPU per MiB of zc_read over net_read
	// (mapping and copying out, against copying, with the same wake-ups);
	// MapCopyNext is that of zc_next over the cheaper of copy_next (the same Next calls,
	// copied) and net_read: the cheapest way to get the bytes without mapping.
	MapCopyRead float64 `json:"map_copy_ratio_read"`
	MapCopyNext float64 `json:"map_copy_ratio_next"`
	// The per-round ratios behind the two medians.
	MapCopyReadSamples []float64 `json:"map_copy_ratio_read_samples"`
	MapCopyNextSamples []float64 `json:"map_copy_ratio_next_samples"`
	Error              string    `json:"error,omitempty"`
}

// row returns the row with key k, or nil.
func (c *Cost) row(k string) *CostRow {
	if c == nil {
		return nil
	}
	for i := range c.Receivers {
		if c.Receivers[i].Key == k {
			return &c.Receivers[i]
		}
	}
	return nil
}

// Measurements are the loopback measurements.
type Measurements struct {
	Skipped string     `json:"skipped,omitempty"` // why nothing was measured
	Causes  []CauseRun `json:"causes"`
	Cost    *Cost      `json:"cost,omitempty"`
}

// run returns the cause run named name, or nil.
func (m *Measurements) run(name string) *CauseRun {
	for i := range m.Causes {
		if m.Causes[i].Name == name {
			return &m.Causes[i]
		}
	}
	return nil
}

// sender starts a sender of total bytes of the zcsend pattern to addr and returns a
// function that waits for it to finish (after the receiver has closed).
type sender func(addr string, total int64, o zcsend.Options) (wait func() error, err error)

// goroutineSender sends from a goroutine of this process.
func goroutineSender(addr string, total int64, o zcsend.Options) (func() error, error) {
	done := make(chan error, 1)
	go func() {
		c, err := zcsend.Dial(context.Background(), addr, o)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- zcsend.Send(c, total, o)
	}()
	return func() error { return <-done }, nil
}

// processSender re-executes this binary as the sender (main runs zcsend.RunFromEnv
// first), so that the sender's CPU is not the receiving process's.
func processSender(addr string, total int64, o zcsend.Options) (func() error, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), zcsend.ProcessEnv+"="+zcsend.EnvValue(addr, total, o))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("sender: %w", err)
		}
		return nil
	}, nil
}

// measure runs the loopback measurements: the three cause runs, then, with budget
// left, the CPU comparison.
//
// The cause runs send from a goroutine: they count bytes, not CPU, and a sender's
// pages are the same from a goroutine as from a process. The CPU comparison sends from
// another process, so that getrusage of this one counts the receiver alone.
func measure(h Host, budget time.Duration, rounds int, busy bool, progress func(string)) Measurements {
	var m Measurements
	if h.SupportedError != "" {
		m.Skipped = "zcnet cannot map here: " + h.SupportedError
		return m
	}
	start := time.Now()
	for _, spec := range causeSpecs {
		progress(spec.title)
		m.Causes = append(m.Causes, causeRunOnce(spec.name, spec.title, spec.zerocopy, spec.mss, causeRunSize, goroutineSender))
	}
	if budget > 0 {
		m.Cost = costRun(budget-time.Since(start), rounds, processSender, busy, false, progress)
	}
	return m
}

// causeSpecs are the cause runs: a, b and c of the report.
var causeSpecs = []struct {
	name, title   string
	zerocopy, mss bool
}{
	{runPlain, "a. ordinary sender (plain write), PageAlignedMSS listener", false, true},
	{runNoMSS, "b. MSG_ZEROCOPY sender, listener without PageAlignedMSS", true, false},
	{runZeroCopy, "c. MSG_ZEROCOPY sender, PageAlignedMSS listener", true, true},
}

// causeRunOnce sends total bytes with send (MSG_ZEROCOPY as zerocopy says) to a
// ModeZeroCopy listener (with PageAlignedMSS as mss says), reads them with Read(512 KiB),
// checks every byte against the pattern and reports what was mapped and why the rest was
// copied.
func causeRunOnce(name, title string, zerocopy, mss bool, total int64, send sender) CauseRun {
	r := CauseRun{Name: name, Title: title, SenderZeroCopy: zerocopy, PageAlignedMSS: mss}
	err := func() error {
		lc := zcnet.ListenConfig{Options: zcnet.Options{Mode: zcnet.ModeZeroCopy, PageAlignedMSS: mss}}
		ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		wait, err := send(ln.Addr().String(), total, zcsend.Options{ZeroCopy: zerocopy})
		if err != nil {
			return err
		}
		ln.SetDeadline(time.Now().Add(30 * time.Second))
		nc, err := ln.Accept()
		if err != nil {
			return errors.Join(err, wait())
		}
		zc, ok := nc.(*zcnet.Conn)
		if !ok {
			nc.Close()
			return errors.Join(fmt.Errorf("accepted a %T, not a *zcnet.Conn", nc), wait())
		}
		zc.SetReadDeadline(time.Now().Add(2 * time.Minute))
		var v zcsend.Verifier
		n, err := zcsend.DrainRead(zc, make([]byte, 512<<10), &v)
		r.Stats = zc.Stats()
		zc.Close()
		if werr := wait(); err == nil {
			err = werr
		}
		r.Bytes = n
		switch {
		case err != nil:
		case n != total:
			err = fmt.Errorf("received %d bytes, want %d", n, total)
		case v.Err() != nil:
			err = v.Err()
		default:
			r.Verified = true
		}
		return err
	}()
	if err != nil {
		r.Error = err.Error()
	}
	r.MappedPct = 100 * r.Stats.MappedShare()
	r.MainCause = mainCause(r.Stats)
	r.Diagnosis = diagnose(r)
	return r
}

// costReceivers are the receivers of the CPU comparison, in this order (costRun
// indexes them): net.TCPConn Read is the base; ModeCopy Next is the control for
// ModeZeroCopy Next, the same calls and wake-ups without mapping.
var costReceivers = []struct{ key, name string }{
	{"net_read", "net.TCPConn Read 512 KiB"},
	{"zc_read", "zcnet ModeZeroCopy Read 512 KiB"},
	{"zc_next", "zcnet ModeZeroCopy Next 512 KiB"},
	{"copy_next", "zcnet ModeCopy Next 512 KiB"},
}

// costRun measures the receiving process's CPU per MiB for each of costReceivers,
// alternating them over rounds, from a MSG_ZEROCOPY sender to a PageAlignedMSS listener,
// in about budget. With busy, a goroutine spins in this process during each transfer (a
// server always has other threads running, and they receive the TLB-flush interrupts
// that releasing mapped pages sends); its thread's CPU is not the receiver's. With verify, every byte is checked (which costs CPU:
// for tests).
func costRun(budget time.Duration, rounds int, send sender, busy, verify bool, progress func(string)) *Cost {
	c := &Cost{Rounds: rounds}
	if busy && runtime.GOMAXPROCS(0) >= 2 {
		c.BusyGoroutine = true
	}
	for _, r := range costReceivers {
		c.Receivers = append(c.Receivers, CostRow{Key: r.key, Receiver: r.name})
	}
	err := func() error {
		lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = zcsend.SetPageMSS(fd) }); err != nil {
				return err
			}
			return serr
		}}
		l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		ln := l.(*net.TCPListener) // a "tcp" listener is one
		if err := c.warmUp(ln, budget, send, verify, progress); err != nil {
			return err
		}
		n := len(costReceivers)
		ratios := make([][]float64, n)
		sums := make([]zcnet.Stats, n)
		for round := range rounds {
			for k := range n {
				i := (k + round) % n
				r := costReceivers[i]
				progress(fmt.Sprintf("round %d/%d %s", round+1, rounds, r.name))
				s, err := costTransfer(ln, r.key, c.BytesPerTransfer, send, c.BusyGoroutine, verify)
				if err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
				mib := float64(c.BytesPerTransfer) / (1 << 20)
				c.Receivers[i].Samples = append(c.Receivers[i].Samples, s.cpu*1e6/mib)
				if s.stats != nil {
					sums[i].Add(*s.stats)
				}
			}
			for i := range n {
				ratios[i] = append(ratios[i], c.Receivers[i].Samples[round]/c.Receivers[0].Samples[round])
			}
			copyNext := min(c.Receivers[3].Samples[round], c.Receivers[0].Samples[round])
			c.MapCopyNextSamples = append(c.MapCopyNextSamples, c.Receivers[2].Samples[round]/copyNext)
		}
		c.summarize(ratios, sums)
		return nil
	}()
	if err != nil {
		c.Error = err.Error()
	}
	return c
}

// warmUp runs each receiver once on a short stream, and sizes the measured transfers
// from their times to fit c.Rounds rounds in the budget: per transfer, the sender's
// start-up plus the size at the drain rate.
func (c *Cost) warmUp(ln *net.TCPListener, budget time.Duration, send sender, verify bool, progress func(string)) error {
	start := time.Now()
	const warm = 16 << 20
	var drain, overhead time.Duration
	for _, r := range costReceivers {
		progress("warm-up " + r.name)
		t0 := time.Now()
		s, err := costTransfer(ln, r.key, warm, send, c.BusyGoroutine, verify)
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		drain += s.wall
		overhead += time.Since(t0) - s.wall
	}
	n := len(costReceivers)
	perTransfer := (budget-time.Since(start))/time.Duration(n*c.Rounds) - overhead/time.Duration(n)
	// Long transfers drain slower than the short warm-ups (the caches are cold, the
	// host's other work gets its turn): plan on 70% of the warm-up rate.
	rate := 0.7 * float64(n*warm) / max(drain.Seconds(), 1e-6)
	size := int64(rate*perTransfer.Seconds()) &^ (1<<20 - 1)
	c.BytesPerTransfer = min(max(size, 8<<20), 2<<30)
	return nil
}

// summarize sets the medians from the samples, the per-round ratios to net_read and the
// Stats summed over the rounds, one of each per receiver.
func (c *Cost) summarize(ratios [][]float64, sums []zcnet.Stats) {
	c.MapCopyReadSamples = ratios[1]
	c.MapCopyRead = cpumeter.Median(c.MapCopyReadSamples)
	c.MapCopyNext = cpumeter.Median(c.MapCopyNextSamples)
	for i := range c.Receivers {
		row := &c.Receivers[i]
		row.CPUPerMiB = cpumeter.Median(row.Samples)
		row.Ratio = cpumeter.Median(ratios[i])
		if row.Key != "net_read" {
			st := sums[i]
			row.Stats = &st
			row.MappedPct = 100 * st.MappedShare()
		}
	}
}

// costSample is one transfer of the CPU comparison.
type costSample struct {
	wall  time.Duration // from the accept to the end of the stream
	cpu   float64       // the receiving process's CPU seconds, the spinner's excluded
	stats *zcnet.Stats
}

// costTransfer receives one stream of size bytes from send on ln with the receiver
// key and measures it.
//
// With busy a spinner runs in this process meanwhile (cpumeter), its CPU not counted.
func costTransfer(ln *net.TCPListener, key string, size int64, send sender, busy bool, verify bool) (costSample, error) {
	var s costSample
	wait, err := send(ln.Addr().String(), size, zcsend.Options{ZeroCopy: true})
	if err != nil {
		return s, err
	}
	ln.SetDeadline(time.Now().Add(30 * time.Second))
	nc, err := ln.AcceptTCP()
	if err != nil {
		return s, errors.Join(err, wait())
	}
	nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var zc *zcnet.Conn
	if key != "net_read" {
		mode := zcnet.ModeZeroCopy
		if key == "copy_next" {
			mode = zcnet.ModeCopy
		}
		if zc, err = zcnet.NewConn(nc, zcnet.Options{Mode: mode}); err != nil {
			nc.Close()
			return s, errors.Join(err, wait())
		}
	}
	var v *zcsend.Verifier
	var w io.Writer // v, or nil (not a nil *zcsend.Verifier) to check nothing
	if verify {
		v = new(zcsend.Verifier)
		w = v
	}
	m := cpumeter.Start(busy)
	var n int64
	switch key {
	case "net_read":
		n, err = zcsend.DrainRead(nc, make([]byte, 512<<10), w)
	case "zc_read":
		n, err = zcsend.DrainRead(zc, make([]byte, 512<<10), w)
	default:
		n, err = zcsend.DrainNext(zc, 512<<10, w)
	}
	r := m.Stop()
	s.wall, s.cpu = r.Wall, r.CPU.Seconds()
	if zc != nil {
		st := zc.Stats()
		s.stats = &st
		zc.Close()
	}
	nc.Close()
	if werr := wait(); err == nil {
		err = werr
	}
	switch {
	case err != nil:
	case n != size:
		err = fmt.Errorf("received %d bytes, want %d", n, size)
	case v != nil && v.Err() != nil:
		err = v.Err()
	}
	return s, err
}
