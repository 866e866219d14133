//go:build linux

package zcnet

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// The receive benchmarks take b.N MiB from a sender running in a separate process (this
// test binary re-executed, see TestMain and zcsend.RunFromEnv), so that the CPU time of the
// benchmark process, measured with getrusage around the transfer, is the receiver's alone.
// They report it as cpu-us/MiB, and zcnet's mapped share as mapped-%. Sub-benchmark names
// are key=value pairs, so that benchstat -col /recv sets the receivers side by side:
//
//	go test -run '^$' -bench . -count 6 | tee bench.txt
//	benchstat -col /recv bench.txt

// benchUnit is the bytes one benchmark iteration receives.
const benchUnit = 1 << 20

// benchSenders are the sender workloads: page-aligned payload (page MSS and MSG_ZEROCOPY,
// mappable on loopback) and plain sends (no page MSS: unaligned payload in compound pages,
// which the kernel cannot map).
var benchSenders = []struct {
	name string
	opts zcsend.Options
}{
	{"aligned", zcsend.Options{PageMSS: true, ZeroCopy: true}},
	{"unaligned", zcsend.Options{}},
}

// benchRecvs are the receivers of BenchmarkRead: net.TCPConn first, then a zcnet Conn in
// each mode.
var benchRecvs = []struct {
	name string
	zc   bool
	mode Mode
}{
	{"net", false, 0},
	{"auto", true, ModeAuto},
	{"zerocopy", true, ModeZeroCopy},
	{"copy", true, ModeCopy},
}

// benchAccept accepts the next conn of ln, as a zcnet Conn (default Options) when zc is
// set and as the plain net.Conn otherwise.
func benchAccept(b *testing.B, ln net.Listener, zc bool) net.Conn {
	b.Helper()
	nc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	if !zc {
		return nc
	}
	c, err := NewConn(nc.(*net.TCPConn), Options{})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// loopbackListen listens on loopback, advertising a page-sized MSS when pageMSS is set.
func loopbackListen(b testing.TB, pageMSS bool) net.Listener {
	b.Helper()
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if !pageMSS {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setMSS(fd, pageSize+12) }); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}

// benchChild starts this test binary as a helper process with env set; its stdout is
// returned when wantStdout is set.
func benchChild(b *testing.B, env string, stdin io.Reader, wantStdout bool) (*exec.Cmd, io.Reader) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env)
	cmd.Stdin, cmd.Stderr = stdin, os.Stderr
	var out io.Reader
	if wantStdout {
		if out, err = cmd.StdoutPipe(); err != nil {
			b.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return cmd, out
}

// benchStream starts a sender process that sends total bytes of the pattern (from stream
// offset 0) with snd's options, and returns the accepted conn and the sender.
func benchStream(b *testing.B, snd zcsend.Options, total int64) (*net.TCPConn, *benchPeer) {
	b.Helper()
	ln := loopbackListen(b, snd.PageMSS)
	defer ln.Close()
	cmd, _ := benchChild(b, zcsend.ProcessEnv+"="+zcsend.EnvValue(ln.Addr().String(), total, snd), nil, false)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
	nc, err := ln.Accept()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		b.Fatal(err)
	}
	tc := nc.(*net.TCPConn)
	return tc, &benchPeer{b: b, cmd: cmd, closers: []io.Closer{tc}}
}

// benchPeer is a sender process and the conns that receive from it.
type benchPeer struct {
	b       *testing.B
	cmd     *exec.Cmd
	closers []io.Closer
	cpu0    time.Duration // the sender's CPU time when the measurement started
	sent    time.Duration // its CPU time over the measurement, once done
	ended   bool
}

// start marks the start of the measurement of the sender's CPU time.
func (p *benchPeer) start() { p.cpu0 = taskCPU(p.cmd.Process.Pid) }

// done closes the conns, waits for the sender to exit, and takes its CPU time since
// start. It may be called more than once.
func (p *benchPeer) done() {
	if p.ended {
		return
	}
	p.ended = true
	for _, c := range slices.Backward(p.closers) {
		c.Close()
	}
	if err := p.cmd.Wait(); err != nil {
		p.b.Errorf("sender: %v", err)
	}
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		p.sent = time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) - p.cpu0
	}
}

// taskCPU is the CPU time of the running process pid so far: the sum over its threads
// of the scheduler's run time (/proc/PID/task/*/schedstat, in ns), 0 if it cannot be
// read. Minus the process's getrusage at exit, it leaves the CPU time it spent since.
func taskCPU(pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range ents {
		data, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := bytes.Fields(data); len(f) > 0 {
			ns, _ := strconv.ParseInt(string(f[0]), 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// benchCPUMetrics reports the receiver's CPU time cpu, the sender's and their sum per
// MiB of n bytes.
func benchCPUMetrics(b *testing.B, n int64, cpu, sent time.Duration) {
	mib := float64(n) / benchUnit
	b.ReportMetric(float64(cpu.Microseconds())/mib, "cpu-us/MiB")
	b.ReportMetric(float64(sent.Microseconds())/mib, "snd-cpu-us/MiB")
	b.ReportMetric(float64((cpu+sent).Microseconds())/mib, "sum-cpu-us/MiB")
}

// benchConn starts a sender of total bytes (benchStream) and returns the reader a
// receiver drains: the accepted TCPConn, or a Conn with mode around it when zc is set
// (then also returned); the sender's done closes them and waits for it.
func benchConn(b *testing.B, snd zcsend.Options, total int64, zc bool, mode Mode) (r io.Reader, c *Conn, p *benchPeer) {
	b.Helper()
	tc, p := benchStream(b, snd, total)
	if !zc {
		return tc, nil, p
	}
	c, err := NewConn(tc, Options{Mode: mode})
	if err != nil {
		p.done()
		b.Fatal(err)
	}
	p.closers = append(p.closers, c)
	return c, c, p
}

// benchReceive receives b.N MiB sent by a separate sender process with snd's options.
// With zc set the accepted conn is wrapped in a Conn with mode. setup runs before the
// timer starts and returns the function that drains the stream (from the Conn when zc is
// set, else from the TCPConn) and returns the bytes it took.
func benchReceive(b *testing.B, snd zcsend.Options, zc bool, mode Mode,
	setup func(r io.Reader, c *Conn) func() (int64, error)) {
	b.StopTimer()
	total := int64(b.N) * benchUnit
	r, c, p := benchConn(b, snd, total, zc, mode)
	defer p.done()
	drain := setup(r, c)
	b.SetBytes(benchUnit)
	b.ResetTimer()
	p.start()
	cpu0 := cpumeter.Process()
	b.StartTimer()
	n, err := drain()
	b.StopTimer()
	cpu := cpumeter.Process() - cpu0
	if err != nil {
		b.Fatal(err)
	}
	if n != total {
		b.Fatalf("received %d bytes, want %d", n, total)
	}
	p.done()
	benchCPUMetrics(b, n, cpu, p.sent)
	if c != nil {
		st := c.Stats()
		b.ReportMetric(100*st.MappedShare(), "mapped-%")
		b.ReportMetric(float64(st.Waits)/float64(n>>20), "waits/MiB")
		b.ReportMetric(float64(st.BatchedWaits)/float64(n>>20), "batched/MiB")
		b.ReportMetric(float64(st.BoundedWaits)/float64(n>>20), "bounded/MiB")
	}
}

// benchReadAll returns a drain function that reads r to EOF in reads of size bytes.
func benchReadAll(r io.Reader, size int) func() (int64, error) {
	buf := make([]byte, size)
	return func() (int64, error) { return zcsend.DrainRead(r, buf, nil) }
}

// BenchmarkRead is the drop-in path: Read into a reused buffer of 4 KiB to 1 MiB,
// from each sender, by net.TCPConn and by a zcnet Conn in each mode.
func BenchmarkRead(b *testing.B) {
	for _, s := range benchSenders {
		for _, size := range []int{4 << 10, 32 << 10, 64 << 10, 512 << 10, 1 << 20} {
			for _, rv := range benchRecvs {
				name := fmt.Sprintf("send=%s/size=%dKiB/recv=%s", s.name, size>>10, rv.name)
				b.Run(name, func(b *testing.B) {
					benchReceive(b, s.opts, rv.zc, rv.mode, func(r io.Reader, _ *Conn) func() (int64, error) {
						return benchReadAll(r, size)
					})
				})
			}
		}
	}
}

// BenchmarkNext takes 1 MiB messages: net.TCPConn with io.ReadFull into a reused 1 MiB
// buffer against zcnet's Next(1 MiB) in ModeAuto and ModeZeroCopy.
func BenchmarkNext(b *testing.B) {
	const msg = 1 << 20
	for _, s := range benchSenders {
		b.Run("send="+s.name+"/recv=net-readfull", func(b *testing.B) {
			benchReceive(b, s.opts, false, 0, func(r io.Reader, _ *Conn) func() (int64, error) {
				f := readFuller{r, make([]byte, msg)}
				return func() (int64, error) { return zcsend.DrainNext(f, msg, nil) }
			})
		})
		for _, mode := range []Mode{ModeAuto, ModeZeroCopy} {
			b.Run("send="+s.name+"/recv=next-"+mode.String(), func(b *testing.B) {
				benchReceive(b, s.opts, true, mode, func(_ io.Reader, c *Conn) func() (int64, error) {
					return func() (int64, error) { return zcsend.DrainNext(c, msg, nil) }
				})
			})
		}
	}
}

// readFuller is the Next of net.TCPConn's message loop: io.ReadFull into a reused buffer.
type readFuller struct {
	r   io.Reader
	buf []byte
}

func (f readFuller) Next(n int) ([]byte, error) {
	k, err := io.ReadFull(f.r, f.buf[:n])
	return f.buf[:k], err
}

// BenchmarkWriteTo drains each sender's stream into io.Discard with WriteTo in each
// mode, against net.TCPConn read into a reused 512 KiB buffer (the chunk the kernel's
// tcp_mmap receiver uses).
func BenchmarkWriteTo(b *testing.B) {
	for _, s := range benchSenders {
		b.Run("send="+s.name+"/recv=net-read512KiB", func(b *testing.B) {
			benchReceive(b, s.opts, false, 0, func(r io.Reader, _ *Conn) func() (int64, error) {
				return benchReadAll(r, 512<<10)
			})
		})
		for _, mode := range []Mode{ModeZeroCopy, ModeAuto, ModeCopy} {
			b.Run("send="+s.name+"/recv=writeto-"+mode.String(), func(b *testing.B) {
				benchReceive(b, s.opts, true, mode, func(_ io.Reader, c *Conn) func() (int64, error) {
					return func() (int64, error) { return c.WriteTo(io.Discard) }
				})
			})
		}
	}
}

// BenchmarkPingPong measures the round trip of a 64-byte message through an echo peer: the
// benchmark side writes 64 bytes and reads the 64 echoed bytes with a net.TCPConn or a
// zcnet Conn (ModeAuto). It reports the median and 99th percentile round trip.
func BenchmarkPingPong(b *testing.B) {
	for _, zc := range []bool{false, true} {
		name := "recv=net"
		if zc {
			name = "recv=zcnet"
		}
		b.Run(name, func(b *testing.B) {
			ln := loopbackListen(b, false)
			defer ln.Close()
			echoed := make(chan error, 1)
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					echoed <- err
					return
				}
				defer c.Close()
				_, err = io.Copy(c, c)
				echoed <- err
			}()
			rw := benchAccept(b, ln, zc)
			rtt := benchRoundTrips(b, rw, 64)
			rw.Close()
			if err := <-echoed; err != nil {
				b.Fatal(err)
			}
			benchReportRTT(b, rtt)
		})
	}
}

// BenchmarkIdleConns measures the resident memory each idle server conn costs: 10,000
// conns accepted from a client process (so that the client side's memory is not counted),
// each after one small read. With reader=blocked each conn also has a goroutine waiting in
// Read with a 4 KiB buffer, as a server has; with reader=none nothing waits. It reports the
// growth of VmRSS per conn.
func BenchmarkIdleConns(b *testing.B) {
	const conns = 10000
	for _, blocked := range []bool{false, true} {
		for _, zc := range []bool{false, true} {
			name := fmt.Sprintf("reader=none/recv=%s", map[bool]string{false: "net", true: "zcnet"}[zc])
			if blocked {
				name = fmt.Sprintf("reader=blocked/recv=%s", map[bool]string{false: "net", true: "zcnet"}[zc])
			}
			b.Run(name, func(b *testing.B) {
				for range b.N {
					rss, heap, stack := benchIdle(b, conns, zc, blocked)
					b.ReportMetric(rss, "rss-B/conn")
					b.ReportMetric(heap, "heap-B/conn")
					b.ReportMetric(stack, "stack-B/conn")
				}
			})
		}
	}
}

// benchIdle accepts n conns from a holding client process and returns the growth of this
// process's RSS, of its in-use heap (which counts memory allocated but not touched yet)
// and of its goroutine stacks per conn once each has done one small read.
func benchIdle(b *testing.B, n int, zc, blocked bool) (rss, heap, stack float64) {
	// The timer keeps running: setting up 10,000 conns takes long enough that the
	// benchmark stays at one iteration.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n)+256 {
		lim.Cur = min(max(lim.Max, uint64(n)+256), lim.Max)
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
		if lim.Cur < uint64(n)+256 {
			b.Skipf("RLIMIT_NOFILE %d too low for %d conns", lim.Cur, n)
		}
	}
	ln := loopbackListen(b, false)
	defer ln.Close()
	before, heapBefore, stackBefore := benchRSS(b)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
	stdin, hold := io.Pipe()
	cmd, out := benchChild(b, zcsend.HoldEnv+"="+ln.Addr().String()+","+strconv.Itoa(n), stdin, true)
	closers := make([]io.Closer, 0, n)
	var wg sync.WaitGroup
	defer func() {
		for _, c := range closers {
			c.Close()
		}
		wg.Wait()
		hold.Close() // the client closes its conns and exits
		cmd.Wait()
	}()
	small := make([]byte, 16)
	for range n {
		r := benchAccept(b, ln, zc)
		closers = append(closers, r)
		if _, err := r.Read(small); err != nil {
			b.Fatal(err)
		}
		if blocked {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4<<10)
				for {
					if _, err := r.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		b.Fatalf("holding client: %q, %v", line, err)
	}
	// Let the readers reach the poller.
	time.Sleep(100 * time.Millisecond)
	after, heapAfter, stackAfter := benchRSS(b)
	return float64(after-before) / float64(n), float64(heapAfter-heapBefore) / float64(n),
		float64(stackAfter-stackBefore) / float64(n)
}

// benchRSS returns this process's resident set size, in-use heap (including stacks) and
// goroutine stacks in bytes after a garbage collection that returns freed memory to the OS.
func benchRSS(b *testing.B) (rss, heap, stack int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap, stack = int64(ms.HeapInuse+ms.StackInuse), int64(ms.StackInuse)
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc/self/status: %v", err)
	}
	for line := range bytes.Lines(st) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(string(bytes.Fields(v)[0]), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10, heap, stack
		}
	}
	b.Skip("no VmRSS in /proc/self/status")
	return 0, 0, 0
}
