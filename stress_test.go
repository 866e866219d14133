//go:build linux

package zcnet

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// longRuns selects the long versions of the stress tests (see the README section on
// long runs): go test -run 'TestScale10k$' -zcnet.long -timeout 20m .
var longRuns = flag.Bool("zcnet.long", false, "run the long versions of the stress tests")

// patternWriter is an io.Writer that checks that what is written to it continues the
// zcsend pattern from offset 0; it fails at the first byte that does not.
type patternWriter struct {
	off  int64
	err  error
	done atomic.Int64 // off, for other goroutines
}

func (w *patternWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	pat := zcsend.PatternBytes()
	n := 0
	for n < len(p) {
		o := int(w.off % zcsend.Period)
		k := min(len(p)-n, len(pat)-o)
		if !bytes.Equal(p[n:n+k], pat[o:o+k]) {
			i := 0
			for p[n+i] == pat[o+i] {
				i++
			}
			w.err = fmt.Errorf("stream byte %d is %#x, want %#x", w.off+int64(i), p[n+i], pat[o+i])
			return n + i, w.err
		}
		n += k
		w.off += int64(k)
	}
	w.done.Store(w.off)
	return n, nil
}

// readKind is how a test consumes a conn: Read, Next or WriteTo.
type readKind int

const (
	byRead readKind = iota
	byNext
	byWriteTo
	readKinds
)

func (k readKind) String() string { return [...]string{"Read", "Next", "WriteTo"}[k] }

// drainPattern consumes c until EOF with kind, using request sizes from 1 to maxReq bytes
// drawn from rnd, checks every byte against the pattern and returns how many it got.
func drainPattern(c *Conn, kind readKind, maxReq int, rnd *rand.Rand) (int64, error) {
	return drainPatternTo(c, kind, &patternWriter{}, maxReq, rnd)
}

// drainPatternTo is drainPattern continuing the check of w.
func drainPatternTo(c *Conn, kind readKind, w *patternWriter, maxReq int, rnd *rand.Rand) (int64, error) {
	start := w.off
	switch kind {
	case byRead:
		buf := make([]byte, maxReq)
		for {
			n, err := c.Read(buf[:1+rnd.IntN(maxReq)])
			if _, werr := w.Write(buf[:n]); werr != nil {
				return w.off, werr
			}
			if err == io.EOF {
				return w.off, nil
			}
			if err != nil {
				return w.off, err
			}
		}
	case byNext:
		for {
			v, err := c.Next(1 + rnd.IntN(maxReq))
			if _, werr := w.Write(v); werr != nil {
				return w.off, werr
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return w.off, nil
			}
			if err != nil {
				return w.off, err
			}
		}
	default:
		n, err := c.WriteTo(w)
		if err == nil && n != w.off-start {
			err = fmt.Errorf("WriteTo returned %d, wrote %d", n, w.off-start)
		}
		return w.off, err
	}
}

// sendPlain writes total pattern bytes to c in writes of random sizes (ordinary sends:
// the kernel's high-order pages, which cannot be mapped unless the sysctl says so).
func sendPlain(c net.Conn, total int64, rnd *rand.Rand) error {
	pat := zcsend.PatternBytes()
	var off int64
	for off < total {
		o := int(off % zcsend.Period)
		k := min(int64(1+rnd.IntN(256<<10)), total-off, int64(len(pat)-o))
		n, err := c.Write(pat[o : o+int(k)])
		off += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}

// procStatusKiB returns a "Key:  N kB" field of /proc/self/status.
func procStatusKiB(t testing.TB, key string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(rest)
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/self/status", key)
	return 0
}

// rssKiB returns the process's resident set size after a GC that returns freed memory to
// the OS, so that what it reports is what the process holds.
func rssKiB(t testing.TB) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return procStatusKiB(t, "VmRSS")
}

// mapsCount returns the number of VMAs of the process and how many of them map a socket:
// the rings of conns (a ring is one VMA on its socket, "socket:[inode]" in the maps).
func mapsCount(t testing.TB) (all, sockets int) {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		all++
		if strings.Contains(sc.Text(), "socket:[") {
			sockets++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return all, sockets
}

// raiseNofile makes at least n file descriptors available to the process until the test
// ends, raising the hard limit too where the process may; it skips the test otherwise.
func raiseNofile(t testing.TB, n uint64) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n {
		return
	}
	lim := unix.Rlimit{Cur: n, Max: max(old.Max, n)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("needs %d file descriptors; RLIMIT_NOFILE is %d/%d and cannot be raised: %v", n, old.Cur, old.Max, err)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
			t.Errorf("restoring RLIMIT_NOFILE: %v", err)
		}
	})
}

// scaleClientEnv makes the test binary the client side of TestScale10k (see
// TestScaleClientProcess): "ADDR,CONNS,LONG".
const scaleClientEnv = "ZCNET_SCALE_CLIENT"

// scalePeer is what the receiving side of the scale test knows about one conn.
type scalePeer struct {
	total    int64
	mappable bool
	received chan struct{} // closed when the server side has read the whole stream
	stats    Stats         // the server conn's, set before received is closed
}

// TestScale10k holds 10,000 conns open at once on one ModeZeroCopy Listener, half of
// them fed by mappable (page MSS, MSG_ZEROCOPY) senders and half by ordinary ones, and
// consumes them with Read, Next and WriteTo at random sizes. It proves that every conn's
// stream is exact, that an idle accepted conn reserves no VMA, that the rings are all
// unmapped once the conns are closed, that the RSS per conn stays bounded, that the
// mapping path served the mappable conns (Listener.Stats().MappedBytes > 0), and that no
// goroutine is left behind.
//
// The senders run in a child process (this test binary, see TestScaleClientProcess), so
// the file descriptors, memory and CPU of the two ends are counted apart. By default each
// conn carries 64 to 256 KiB (1.6 GB in all), which keeps the test under ten seconds on
// two cores; with -zcnet.long each carries 2 to 4 MiB (31 GB in all, under two minutes).
// The test is skipped under the race detector, where 10,000 conns are too slow for the
// suite (the race tests in race_test.go cover the same code paths at small scale), and
// with -short.
func TestScale10k(t *testing.T) {
	if raceEnabled {
		t.Skip("10,000 conns are too slow under the race detector; see TestCloseRacesReads")
	}
	if testing.Short() {
		t.Skip("10,000 conns: skipped in -short mode")
	}
	const conns = 10000
	raiseNofile(t, conns+1024)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	mapOK := Supported() == nil
	if !mapOK {
		t.Logf("fast path unavailable (%v): checking the copy path only", Supported())
	}

	rssBase := rssKiB(t)
	vmasBase, ringsBase := mapsCount(t)

	lc := ListenConfig{Options: Options{Mode: ModeZeroCopy, PageAlignedMSS: true}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var (
		mu       sync.Mutex
		peers    = make(map[int]*scalePeer) // by the client's port
		accepted = make(chan *Conn, conns)
		hold     = make(chan struct{}) // closed when the servers may close their conns
		srvWG    sync.WaitGroup
		failures atomic.Int64
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}

	// Server: accept every conn and consume it as soon as bytes arrive; close it only
	// once all conns have been measured.
	var acceptErr error
	go func() {
		defer close(accepted)
		for range conns {
			nc, err := ln.Accept()
			if err != nil {
				acceptErr = err
				return
			}
			c := nc.(*Conn)
			accepted <- c
			srvWG.Add(1)
			go func() {
				defer srvWG.Done()
				port := c.RemoteAddr().(*net.TCPAddr).Port
				rnd := rand.New(rand.NewPCG(uint64(port), 1))
				kind := readKind(port % int(readKinds))
				n, err := drainPattern(c, kind, 64<<10, rnd)
				mu.Lock()
				p := peers[port]
				mu.Unlock()
				switch {
				case p == nil:
					fail("conn from port %d: no sender known", port)
				case err != nil:
					fail("conn from port %d (%v): after %d bytes: %v", port, kind, n, err)
				case n != p.total:
					fail("conn from port %d (%v): got %d bytes, want %d", port, kind, n, p.total)
				}
				if p != nil {
					p.stats = c.Stats()
					close(p.received)
				}
				<-hold
				c.Close()
			}()
		}
	}()

	// Client process: it dials every conn, lists them, and sends once told to.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestScaleClientProcess$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%t", scaleClientEnv, ln.Addr(), conns, *longRuns))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var held []*Conn
	closeServers := sync.OnceFunc(func() {
		close(hold)
		for _, c := range held {
			c.Close() // unblocks servers still reading after a failure
		}
	})
	defer func() {
		closeServers()
		stdin.Close()
		cancel()
		cmd.Wait()
		srvWG.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	clientOut := make(chan string, 16)
	dialed := make(chan error, 1)
	go func() {
		defer close(clientOut)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			var port int
			var total int64
			var mappable bool
			if _, err := fmt.Sscanf(line, "peer %d %d %t", &port, &total, &mappable); err == nil {
				mu.Lock()
				peers[port] = &scalePeer{total: total, mappable: mappable, received: make(chan struct{})}
				mu.Unlock()
				if n++; n == conns {
					dialed <- nil
				}
				continue
			}
			select {
			case clientOut <- line:
			default: // keep reading: the client must never block on its output
			}
		}
		if n < conns {
			dialed <- fmt.Errorf("client listed %d of %d conns", n, conns)
		}
	}()
	clientLog := func() {
		for line := range clientOut {
			t.Logf("client: %s", line)
		}
	}
	select {
	case err := <-dialed:
		if err != nil {
			cancel()
			clientLog()
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("client did not dial %d conns in 90s", conns)
	}
	timeout := time.After(60 * time.Second)
	for len(held) < conns {
		select {
		case c, ok := <-accepted:
			if !ok {
				t.Fatalf("accept after %d conns: %v", len(held), acceptErr)
			}
			held = append(held, c)
		case <-timeout:
			t.Fatalf("only %d of %d conns accepted after 60s", len(held), conns)
		}
	}
	rssIdle := rssKiB(t)
	vmasIdle, ringsIdle := mapsCount(t)
	t.Logf("%d conns open after %v, each blocked in a read: RSS %d KiB over the %d KiB baseline = %.2f KiB per conn; VMAs %d (baseline %d), rings %d",
		conns, time.Since(start).Round(time.Millisecond), rssIdle-rssBase, rssBase, float64(rssIdle-rssBase)/conns, vmasIdle, vmasBase, ringsIdle-ringsBase)
	if ringsIdle != ringsBase {
		t.Errorf("%d rings reserved by conns that have not received a byte; want none", ringsIdle-ringsBase)
	}
	// Generous: a goroutine blocked in a read, the Conn and its socket's file.
	const maxPerIdleConn = 32 // KiB
	if per := (rssIdle - rssBase) / conns; per > maxPerIdleConn {
		t.Errorf("RSS per idle conn %d KiB > %d KiB", per, maxPerIdleConn)
	}

	// Send on every conn at once; wait until every server has its whole stream, with all
	// conns still open.
	sendStart := time.Now()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(4 * time.Minute)
	mu.Lock()
	all := make([]*scalePeer, 0, len(peers))
	for _, p := range peers {
		all = append(all, p)
	}
	mu.Unlock()
	var total int64
	var mappable Stats
	for _, p := range all {
		select {
		case <-p.received:
			total += p.total
			if p.mappable {
				mappable.Add(p.stats)
			}
		case <-deadline:
			t.Fatalf("streams not received after 4m")
		}
	}
	elapsed := time.Since(sendStart)
	rssPeak := rssKiB(t)
	vmasPeak, ringsPeak := mapsCount(t)
	st := ln.Stats()
	t.Logf("received %d streams, %d bytes exact, in %v (%.0f MiB/s); RSS %d KiB over baseline = %.2f KiB per conn; VMAs %d, rings %d",
		conns, total, elapsed.Round(time.Millisecond), float64(total)/(1<<20)/elapsed.Seconds(), rssPeak-rssBase, float64(rssPeak-rssBase)/conns, vmasPeak, ringsPeak-ringsBase)
	t.Logf("listener stats: %+v, mapped share %.3f; mapped share of the mappable senders' conns %.3f", st, st.MappedShare(), mappable.MappedShare())

	// Close every server conn; the client then finishes.
	closeServers()
	srvWG.Wait()
	stdin.Close()
	clientLog()
	if err := cmd.Wait(); err != nil {
		t.Errorf("client process: %v", err)
	}
	ln.Close()
	rssEnd := rssKiB(t)
	vmasEnd, ringsEnd := mapsCount(t)
	t.Logf("after Close: RSS %d KiB over baseline, VMAs %d (baseline %d), rings %d", rssEnd-rssBase, vmasEnd, vmasBase, ringsEnd-ringsBase)

	if failures.Load() > 0 {
		t.FailNow()
	}
	if got := st.MappedBytes + st.CopiedBytes; got != uint64(total) {
		t.Errorf("listener counted %d bytes received, want %d", got, total)
	}
	if mapOK {
		if st.MappedBytes == 0 {
			t.Errorf("no byte was mapped: %+v", st)
		}
		if mappable.MappedShare() < 0.8 {
			t.Errorf("mapped share of the mappable senders' conns %.3f < 0.8: %+v", mappable.MappedShare(), mappable)
		}
		if ringsPeak == ringsBase {
			t.Errorf("no ring was reserved while the conns were open")
		}
	}
	if ringsEnd != ringsBase {
		t.Errorf("%d rings still mapped after every conn was closed", ringsEnd-ringsBase)
	}
	// Generous: a goroutine, a read buffer and the socket pages a ring may still map
	// for each conn.
	const maxPerConn = 128 // KiB
	if per := (rssPeak - rssBase) / conns; per > maxPerConn {
		t.Errorf("RSS per open conn %d KiB > %d KiB", per, maxPerConn)
	}
}

// TestScaleClientProcess is the client side of TestScale10k, run in a child process; it
// is skipped otherwise. It dials the conns (even ones mappable: page MSS and
// MSG_ZEROCOPY; odd ones ordinary sends), prints "peer PORT TOTAL MAPPABLE" for each,
// sends every stream at once when stdin says "go", and returns when every conn has been
// closed by the server.
func TestScaleClientProcess(t *testing.T) {
	env := os.Getenv(scaleClientEnv)
	if env == "" {
		t.Skip("runs only as the client process of TestScale10k")
	}
	var addr string
	var conns int
	var long bool
	f := strings.Split(env, ",")
	if len(f) != 3 {
		t.Fatalf("bad %s=%q", scaleClientEnv, env)
	}
	addr, long = f[0], f[2] == "true"
	conns, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	raiseNofile(t, uint64(conns)+1024)
	rnd := rand.New(rand.NewPCG(1, 2))
	totals := make([]int64, conns)
	for i := range totals {
		if long {
			totals[i] = 2<<20 + rnd.Int64N(2<<20)
		} else {
			totals[i] = 64<<10 + rnd.Int64N(192<<10)
		}
	}
	mappableOpts := zcsend.Options{PageMSS: true, ZeroCopy: true}
	clients := make([]*net.TCPConn, conns)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	var dialWG sync.WaitGroup
	var next, failed atomic.Int64
	for range 64 {
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			for failed.Load() == 0 {
				i := int(next.Add(1) - 1)
				if i >= conns {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var c *net.TCPConn
				var err error
				if i%2 == 0 {
					c, err = zcsend.Dial(ctx, addr, mappableOpts)
				} else {
					var nc net.Conn
					if nc, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr); err == nil {
						c = nc.(*net.TCPConn)
					}
				}
				cancel()
				if err != nil {
					failed.Add(1)
					t.Errorf("dial %d: %v", i, err)
					return
				}
				clients[i] = c
			}
		}()
	}
	dialWG.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	out := bufio.NewWriter(os.Stdout)
	for i, c := range clients {
		fmt.Fprintf(out, "peer %d %d %t\n", c.LocalAddr().(*net.TCPAddr).Port, totals[i], i%2 == 0)
	}
	out.Flush()
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || line != "go\n" {
		t.Fatalf("waiting for go: %q, %v", line, err)
	}
	var sendWG sync.WaitGroup
	for i, c := range clients {
		sendWG.Add(1)
		go func() {
			defer sendWG.Done()
			var err error
			if i%2 == 0 {
				err = zcsend.Send(c, totals[i], mappableOpts)
			} else {
				if err = sendPlain(c, totals[i], rand.New(rand.NewPCG(uint64(i), 3))); err == nil {
					err = c.CloseWrite()
				}
				if err == nil {
					_, err = io.Copy(io.Discard, c) // until the server closes
				}
			}
			if err != nil && failed.Add(1) <= 10 {
				t.Errorf("send %d: %v", i, err)
			}
		}()
	}
	sendWG.Wait()
}
