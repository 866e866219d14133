//go:build linux

package zcnet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// The workload benchmarks receive the way servers do, rather than with a lone reader:
//
//   - BenchmarkReadBusy: Read (and Next) while another thread of the process keeps a CPU
//     busy, so that unmapping pays the cross-CPU TLB flushes a real server pays;
//   - BenchmarkFileSink: io.Copy(file, conn) into a file on tmpfs (an upload to disk);
//   - BenchmarkProxy: io.Copy(backend, conn) to another TCP conn (a reverse proxy);
//   - BenchmarkHTTPSmall: net/http keep-alive requests with small bodies.
//
// As in bench_test.go, the peer that sends is this test binary re-executed as a separate
// process, b.N counts MiB (or requests), CPU is getrusage(RUSAGE_SELF) user+system time
// of the benchmark process over the transfer, and sub-benchmark names end in recv=... so
// that benchstat -col /recv sets net.TCPConn and the zcnet modes side by side:
//
//	go test -run '^$' -bench 'ReadBusy|FileSink|Proxy|HTTPSmall' -count 5 | tee wl.txt
//	benchstat -col /recv wl.txt

// wlShootdowns returns the TLB shootdown interrupts all CPUs have received so far (the
// "TLB" line of /proc/interrupts), and false where the kernel does not count them. The
// count is machine-wide: other processes add to it too.
func wlShootdowns() (int64, bool) {
	data, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(data) {
		f := bytes.Fields(line)
		if len(f) == 0 || string(f[0]) != "TLB:" {
			continue
		}
		var n int64
		for _, v := range f[1:] {
			k, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				break // the description after the per-CPU counts
			}
			n += k
		}
		return n, true
	}
	return 0, false
}

// wlTLB measures TLB shootdowns over a transfer: start it before, and call the function
// it returns after, with the MiB transferred, to report them per MiB.
func wlTLB(b *testing.B) func(mib float64) {
	t0, ok := wlShootdowns()
	return func(mib float64) {
		if t1, ok1 := wlShootdowns(); ok && ok1 && mib > 0 {
			b.ReportMetric(float64(t1-t0)/mib, "tlb-shootdowns/MiB")
		}
	}
}

// wlSpot checks the first and last 64 bytes of p, received at stream offset off, against
// the pattern: a check of every read that costs next to nothing, so that the CPU figures
// stay the receiver's, yet catches lost, repeated or misplaced chunks.
func wlSpot(p []byte, off int64) error {
	const edge = 64
	if len(p) <= 2*edge {
		return patternErr(off, p)
	}
	if err := patternErr(off, p[:edge]); err != nil {
		return err
	}
	return patternErr(off+int64(len(p)-edge), p[len(p)-edge:])
}

// wlSpotWriter is an io.Writer that spot-checks (wlSpot) each write as the stream from
// offset 0 on.
type wlSpotWriter struct{ off int64 }

func (w *wlSpotWriter) Write(p []byte) (int, error) {
	if err := wlSpot(p, w.off); err != nil {
		return 0, err
	}
	w.off += int64(len(p))
	return len(p), nil
}

// BenchmarkReadBusy drains the page-aligned stream with Read into a reused buffer of
// 512 KiB or 64 KiB, and with Next(512 KiB) (recv=next-auto, recv=next-zerocopy), while
// another goroutine of the process, locked to its own thread, spins on the other CPU: a
// server always has other threads running, and each unmapping then interrupts their CPUs
// to flush the TLB, which a lone reader never pays. cpu-us/MiB is the process's CPU,
// spinner included; rcv-cpu-us/MiB subtracts the spinner thread's own CPU time, leaving
// the receiver's (see cpumeter for how the two are read so that they agree).
func BenchmarkReadBusy(b *testing.B) {
	snd := benchSenders[0].opts
	for _, size := range []int{512 << 10, 64 << 10} {
		for _, rv := range benchRecvs {
			b.Run(fmt.Sprintf("size=%dKiB/recv=%s", size>>10, rv.name), func(b *testing.B) {
				wlBusy(b, snd, rv.zc, rv.mode, func(r io.Reader, _ *Conn) (int64, error) {
					return zcsend.DrainRead(r, make([]byte, size), &wlSpotWriter{})
				})
			})
		}
	}
	const msg = 512 << 10
	for _, mode := range []Mode{ModeAuto, ModeZeroCopy} {
		b.Run(fmt.Sprintf("size=%dKiB/recv=next-%s", msg>>10, mode), func(b *testing.B) {
			wlBusy(b, snd, true, mode, func(_ io.Reader, c *Conn) (int64, error) {
				return zcsend.DrainNext(c, msg, &wlSpotWriter{})
			})
		})
	}
}

// wlBusy receives b.N MiB from a sender with snd's options through drain, with a spinner
// running, and reports the figures of BenchmarkReadBusy.
func wlBusy(b *testing.B, snd zcsend.Options, zc bool, mode Mode, drain func(io.Reader, *Conn) (int64, error)) {
	b.StopTimer()
	total := int64(b.N) * benchUnit
	r, c, p := benchConn(b, snd, total, zc, mode)
	defer p.done()
	b.SetBytes(benchUnit)
	b.ResetTimer()
	tlb := wlTLB(b)
	m := cpumeter.Start(true)
	b.StartTimer()
	n, err := drain(r, c)
	b.StopTimer()
	mr := m.Stop()
	tlb(float64(n) / benchUnit)
	if err != nil {
		b.Fatal(err)
	}
	if n != total {
		b.Fatalf("received %d bytes, want %d", n, total)
	}
	mib := float64(n) / benchUnit
	b.ReportMetric(float64((mr.CPU+mr.Spun).Microseconds())/mib, "cpu-us/MiB")
	b.ReportMetric(float64(mr.CPU.Microseconds())/mib, "rcv-cpu-us/MiB")
	if c != nil {
		b.ReportMetric(100*c.Stats().MappedShare(), "mapped-%")
	}
}

// wlTmpfs returns a directory on tmpfs for BenchmarkFileSink: a fresh one in /dev/shm
// when it can be created there, else the benchmark's temporary directory.
func wlTmpfs(b *testing.B) string {
	if dir, err := os.MkdirTemp("/dev/shm", "zcnet-bench-"); err == nil {
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// wlFileRound bounds the file of BenchmarkFileSink: one sender conn carries at most this
// many bytes, and the file is emptied between conns.
const wlFileRound = 64 << 20

// BenchmarkFileSink stores uploads in a file on tmpfs with io.Copy(file, conn), as an
// upload server does: net.TCPConn splices into the file (os.File.ReadFrom), a zcnet Conn
// writes to it from WriteTo. The b.N MiB arrive on conns of at most 64 MiB, one after the
// other, and the file is emptied between them (outside the timer and the CPU
// measurement), so that it stays bounded. After each conn the whole file is compared with
// the pattern.
func BenchmarkFileSink(b *testing.B) {
	dir := wlTmpfs(b)
	for _, s := range benchSenders {
		for _, rv := range benchRecvs {
			b.Run("send="+s.name+"/recv="+rv.name, func(b *testing.B) {
				wlFileSink(b, dir, s.opts, rv.zc, rv.mode)
			})
		}
	}
}

// wlFileSink runs one BenchmarkFileSink case.
func wlFileSink(b *testing.B, dir string, snd zcsend.Options, zc bool, mode Mode) {
	b.StopTimer()
	f, err := os.CreateTemp(dir, "sink-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	b.SetBytes(benchUnit)
	b.ResetTimer()
	var cpu, sent time.Duration
	var st Stats
	var tlb int64
	_, tlbOK := wlShootdowns()
	for left := int64(b.N) * benchUnit; left > 0; {
		size := min(left, wlFileRound)
		left -= size
		if err := f.Truncate(0); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		c, t := wlSinkConn(b, f, snd, size, zc, mode, &st, &sent)
		cpu, tlb = cpu+c, tlb+t
		if err := wlCheckFile(f, size); err != nil {
			b.Fatal(err)
		}
	}
	benchCPUMetrics(b, int64(b.N)*benchUnit, cpu, sent)
	if tlbOK {
		b.ReportMetric(float64(tlb)/float64(b.N), "tlb-shootdowns/MiB")
	}
	if zc {
		b.ReportMetric(100*st.MappedShare(), "mapped-%")
	}
}

// wlSinkConn copies one sender conn of size bytes into f and returns the CPU time it
// took and the TLB shootdowns (wlShootdowns) meanwhile; the conn's Stats are added to st,
// the sender's CPU time to sent.
func wlSinkConn(b *testing.B, f *os.File, snd zcsend.Options, size int64, zc bool, mode Mode, st *Stats, sent *time.Duration) (time.Duration, int64) {
	r, c, p := benchConn(b, snd, size, zc, mode)
	defer p.done()
	tlb0, _ := wlShootdowns()
	p.start()
	cpu0 := cpumeter.Process()
	b.StartTimer()
	n, err := io.Copy(f, r)
	b.StopTimer()
	cpu := cpumeter.Process() - cpu0
	tlb1, _ := wlShootdowns()
	p.done()
	*sent += p.sent
	if c != nil {
		st.Add(c.Stats())
	}
	if err != nil {
		b.Fatal(err)
	}
	if n != size {
		b.Fatalf("copied %d bytes, want %d", n, size)
	}
	return cpu, tlb1 - tlb0
}

// wlCheckFile compares the whole of f, which must be size bytes long, with the pattern.
func wlCheckFile(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("file holds %d bytes, want %d", fi.Size(), size)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if err := patternErr(off, buf[:n]); err != nil {
			return fmt.Errorf("file: %w", err)
		}
		off += int64(n)
		if err != nil && off < size {
			return err
		}
	}
	return nil
}

// BenchmarkProxy forwards the stream to a backend, as a reverse proxy does: the receiver
// runs io.Copy(backend, conn), where backend is a *net.TCPConn to a plain net.Listen
// server in this same process that reads everything and compares it with the pattern.
// net.TCPConn to net.TCPConn splices (TCPConn.ReadFrom); a zcnet Conn writes to the
// backend from WriteTo. cpu-us/MiB is the CPU of the whole process: the proxy and the
// backend, whose reading and checking cost the same whatever the receiver.
func BenchmarkProxy(b *testing.B) {
	for _, s := range benchSenders {
		for _, rv := range benchRecvs {
			b.Run("send="+s.name+"/recv="+rv.name, func(b *testing.B) {
				wlProxy(b, s.opts, rv.zc, rv.mode)
			})
		}
	}
}

// wlProxy runs one BenchmarkProxy case.
func wlProxy(b *testing.B, snd zcsend.Options, zc bool, mode Mode) {
	b.StopTimer()
	total := int64(b.N) * benchUnit
	bl := loopbackListen(b, false)
	defer bl.Close()
	type result struct {
		n   int64
		err error
	}
	drained := make(chan result, 1)
	go func() {
		nc, err := bl.Accept()
		if err != nil {
			drained <- result{0, err}
			return
		}
		defer nc.Close()
		w := &patternWriter{}
		n, err := zcsend.DrainRead(nc, make([]byte, 256<<10), w)
		if w.err != nil {
			err = fmt.Errorf("backend: %w", err)
		}
		drained <- result{n, err}
	}()
	bc, err := net.Dial("tcp", bl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	backend := bc.(*net.TCPConn)
	defer backend.Close()
	r, c, p := benchConn(b, snd, total, zc, mode)
	defer p.done()
	b.SetBytes(benchUnit)
	b.ResetTimer()
	tlb := wlTLB(b)
	p.start()
	cpu0 := cpumeter.Process()
	b.StartTimer()
	n, err := io.Copy(backend, r)
	if err == nil {
		err = backend.CloseWrite()
	}
	var res result
	if err == nil {
		res = <-drained
	}
	b.StopTimer()
	cpu := cpumeter.Process() - cpu0
	tlb(float64(res.n) / benchUnit)
	if err != nil {
		b.Fatal(err)
	}
	if res.err != nil {
		b.Fatal(res.err)
	}
	if n != total || res.n != total {
		b.Fatalf("proxied %d bytes, backend got %d, want %d", n, res.n, total)
	}
	p.done()
	benchCPUMetrics(b, total, cpu, p.sent)
	if c != nil {
		b.ReportMetric(100*c.Stats().MappedShare(), "mapped-%")
	}
}

// wlHTTPLoadEnv is the environment variable through which this test binary re-executes
// itself as the HTTP client of BenchmarkHTTPSmall: "ADDR,CONNS,REQUESTS". The client dials
// CONNS conns, prints "ready", waits for a line on stdin, sends REQUESTS requests spread
// over the conns (each conn one after the other, keep-alive), checks every reply, prints
// "done" and exits. TestMain cannot be changed for it, so an init function of this file
// runs it before TestMain: the server's CPU is then measured without the client's.
const wlHTTPLoadEnv = "ZCNET_HTTPLOAD"

// wlHTTPBody is the size of each request body.
const wlHTTPBody = 200

func init() {
	v := os.Getenv(wlHTTPLoadEnv)
	if v == "" {
		return
	}
	if err := wlHTTPLoad(v); err != nil {
		fmt.Fprintln(os.Stderr, "http load:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// wlHTTPReply is the body the server answers to a request body: its CRC-32.
func wlHTTPReply(body []byte) string {
	return fmt.Sprintf("%08x\n", crc32.ChecksumIEEE(body))
}

// wlHTTPLoad is the client process of BenchmarkHTTPSmall (see wlHTTPLoadEnv).
func wlHTTPLoad(v string) error {
	parts := strings.Split(v, ",")
	if len(parts) != 3 {
		return fmt.Errorf("bad %s=%q", wlHTTPLoadEnv, v)
	}
	conns, err1 := strconv.Atoi(parts[1])
	reqs, err2 := strconv.Atoi(parts[2])
	if err := errors.Join(err1, err2); err != nil || conns <= 0 || reqs < 0 {
		return fmt.Errorf("bad %s=%q", wlHTTPLoadEnv, v)
	}
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", parts[0])
		if err != nil {
			return err
		}
		defer c.Close()
		cs[i] = c
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	errs := make([]error, conns)
	var wg sync.WaitGroup
	for i, c := range cs {
		n := reqs / conns
		if i < reqs%conns {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = wlHTTPConn(c, i, n)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Println("done")
	return nil
}

// wlHTTPConn sends n requests on c, the conn number i, one after the other, and checks
// each reply.
func wlHTTPConn(c net.Conn, i, n int) error {
	pat := zcsend.PatternBytes()
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	head := fmt.Sprintf("POST /small HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n", wlHTTPBody)
	for j := range n {
		off := (i*7919 + j*wlHTTPBody) % (len(pat) - wlHTTPBody)
		body := pat[off : off+wlHTTPBody]
		bw.WriteString(head)
		bw.Write(body)
		if err := bw.Flush(); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || string(got) != wlHTTPReply(body) {
			return fmt.Errorf("conn %d request %d: %s %q, want 200 %q", i, j, resp.Status, got, wlHTTPReply(body))
		}
	}
	return nil
}

// BenchmarkHTTPSmall serves HTTP/1.1 keep-alive requests with 200-byte bodies on 32 conns:
// the handler reads the body with io.ReadAll and answers its CRC-32, which the client
// checks. The server runs on net.Listen or on a zcnet ListenConfig in each mode; the
// client is a separate process (this test binary re-executed, see wlHTTPLoadEnv), so
// cpu-us/req is the server's CPU alone. b.N counts requests.
func BenchmarkHTTPSmall(b *testing.B) {
	const conns = 32
	for _, rv := range benchRecvs {
		b.Run("recv="+rv.name, func(b *testing.B) {
			wlHTTPSmall(b, conns, rv.zc, rv.mode)
		})
	}
}

// wlHTTPSmall runs one BenchmarkHTTPSmall case.
func wlHTTPSmall(b *testing.B, conns int, zc bool, mode Mode) {
	b.StopTimer()
	var ln net.Listener
	var zl *Listener
	if zc {
		lc := ListenConfig{Options: Options{Mode: mode}}
		var err error
		if zl, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
		ln = zl
	} else {
		ln = loopbackListen(b, false)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || len(body) != wlHTTPBody {
			http.Error(w, fmt.Sprintf("body of %d bytes, %v", len(body), err), http.StatusBadRequest)
			return
		}
		io.WriteString(w, wlHTTPReply(body))
	})}
	serveHTTP(b, srv, ln)
	env := fmt.Sprintf("%s=%s,%d,%d", wlHTTPLoadEnv, ln.Addr(), conns, b.N)
	stdin, in := io.Pipe()
	cmd, stdout := benchChild(b, env, stdin, true)
	defer cmd.Wait()
	defer in.Close()
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		b.Fatalf("client: %q, %v", line, err)
	}
	b.ResetTimer()
	cpu0 := cpumeter.Process()
	t0 := time.Now()
	b.StartTimer()
	if _, err := io.WriteString(in, "go\n"); err != nil {
		b.Fatal(err)
	}
	line, err := out.ReadString('\n')
	b.StopTimer()
	wall := time.Since(t0)
	cpu := cpumeter.Process() - cpu0
	if err != nil || line != "done\n" {
		b.Fatalf("client: %q, %v", line, err)
	}
	b.ReportMetric(float64(b.N)/wall.Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-us/req")
	if zl != nil {
		b.ReportMetric(100*zl.Stats().MappedShare(), "mapped-%")
	}
}
