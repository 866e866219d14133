//go:build linux

package zcnet

import (
	"bufio"
	"context"
	"errors"
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

// The scale tests: many conns at once, in this process and against a client process,
// with their memory, mappings and descriptors.

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

// scaleStall is how long TestScale10k waits while nothing moves (no conn dialed or
// accepted, no byte verified) before it fails, reporting how far it got. Its waits have
// no other bound than the test binary's own deadline, so a slow machine only makes it
// slower.
const scaleStall = 2 * time.Minute

// scalePeer is what the receiving side of the scale test knows about one conn.
type scalePeer struct {
	total    int64
	mappable bool
	received chan struct{} // closed when the server side has read the whole stream
	stats    Stats         // the server conn's, set before received is closed
}

// scaleProgress is how far TestScale10k got, for its waits and its failure reports.
type scaleProgress struct {
	start    time.Time
	phase    atomic.Value // string
	dialed   atomic.Int64 // conns the client process dialed and listed
	accepted atomic.Int64 // conns the server accepted
	complete atomic.Int64 // streams verified to their end
	verified atomic.Int64 // stream bytes verified
	want     atomic.Int64 // stream bytes the client listed
}

// sum moves whenever anything progresses.
func (p *scaleProgress) sum() int64 {
	return p.dialed.Load() + p.accepted.Load() + p.complete.Load() + p.verified.Load()
}

func (p *scaleProgress) String() string {
	return fmt.Sprintf("phase %q after %v: %d conns dialed by the client, %d accepted, %d streams complete, %d of %d bytes verified",
		p.phase.Load(), time.Since(p.start).Round(time.Millisecond), p.dialed.Load(), p.accepted.Load(),
		p.complete.Load(), p.verified.Load(), p.want.Load())
}

// wait sets the phase and calls step until it reports done. It fails the test, saying
// how far it got, when nothing progresses for scaleStall, or when the test binary's
// deadline is less than a minute away (so that the report comes before go test's
// timeout panics).
func (p *scaleProgress) wait(t *testing.T, phase string, step func() (done bool)) {
	t.Helper()
	p.phase.Store(phase)
	end, hasEnd := t.Deadline()
	last, lastMove := p.sum(), time.Now()
	for !step() {
		now := time.Now()
		if s := p.sum(); s != last {
			last, lastMove = s, now
		}
		switch {
		case now.Sub(lastMove) > scaleStall:
			t.Fatalf("no progress for %v: %v", scaleStall, p)
		case hasEnd && end.Sub(now) < time.Minute:
			t.Fatalf("the test binary's deadline is near: %v", p)
		}
	}
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
// conn carries 64 to 256 KiB (1.6 GB in all); with -zcnet.long each carries 2 to 4 MiB
// (31 GB in all). Its waits are bounded by progress, not by the clock (see scaleStall):
// on failure it reports the phase, the conns dialed and accepted and the bytes verified.
// The test is skipped under the race detector, where 10,000 conns are too slow for the
// suite (TestCloseRacesReads covers the same code paths at small scale), and with
// -short.
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
	prog := &scaleProgress{start: time.Now()}
	prog.phase.Store("listening")

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
		aborted  atomic.Bool // the test failed and closes the conns under the servers
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
			prog.accepted.Add(1)
			accepted <- c
			srvWG.Add(1)
			go func() {
				defer srvWG.Done()
				port := c.RemoteAddr().(*net.TCPAddr).Port
				rnd := rand.New(rand.NewPCG(uint64(port), 1))
				kind := readKind(port % int(readKinds))
				w := &patternWriter{}
				var counted int64
				w.after = func() {
					prog.verified.Add(w.off - counted)
					counted = w.off
				}
				n, err := drainPattern(c, kind, w, 64<<10, rnd)
				mu.Lock()
				p := peers[port]
				mu.Unlock()
				switch {
				case p == nil:
					fail("conn from port %d: no sender known", port)
				case err != nil && aborted.Load() && errors.Is(err, net.ErrClosed):
				case err != nil:
					fail("conn from port %d (%v): after %d bytes: %v", port, kind, n, err)
				case n != p.total:
					fail("conn from port %d (%v): got %d bytes, want %d", port, kind, n, p.total)
				}
				if p != nil {
					p.stats = c.Stats()
					prog.complete.Add(1)
					close(p.received)
				}
				<-hold
				c.Close()
			}()
		}
	}()

	// Client process: it dials every conn, lists each as it is dialed, and sends once
	// told to.
	ctx, cancel := context.WithCancel(context.Background())
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
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var held []*Conn
	closeServers := sync.OnceFunc(func() {
		close(hold)
		aborted.Store(prog.complete.Load() < conns)
		for _, c := range held {
			c.Close() // unblocks servers still reading after a failure
		}
	})
	sc := bufio.NewScanner(stdout)
	clientOut := make(chan string, 16)
	listed := make(chan error, 1)
	clientDone := make(chan struct{})
	var clientErr error
	go func() {
		defer close(clientDone)
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
				prog.want.Add(total)
				prog.dialed.Add(1)
				if n++; n == conns {
					listed <- nil
				}
				continue
			}
			select {
			case clientOut <- line:
			default: // keep reading: the client must never block on its output
			}
		}
		if n < conns {
			listed <- fmt.Errorf("client listed %d of %d conns", n, conns)
		}
		clientErr = cmd.Wait() // once its output ended
	}()
	defer func() {
		closeServers()
		stdin.Close()
		cancel()
		<-clientDone
		srvWG.Wait()
	}()
	clientLog := func() {
		for line := range clientOut {
			t.Logf("client: %s", line)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	prog.wait(t, "dialing", func() bool {
		select {
		case err := <-listed:
			if err != nil {
				cancel()
				clientLog()
				t.Fatalf("%v: %v", err, prog)
			}
			return true
		case <-tick.C:
			return false
		}
	})
	prog.wait(t, "accepting", func() bool {
		select {
		case c, ok := <-accepted:
			if !ok {
				t.Fatalf("accept: %v: %v", acceptErr, prog)
			}
			held = append(held, c)
		case <-tick.C:
		}
		return len(held) == conns
	})
	rssIdle := rssKiB(t)
	vmasIdle, ringsIdle := mapsCount(t)
	t.Logf("%d conns open after %v, each blocked in a read: RSS %d KiB over the %d KiB baseline = %.2f KiB per conn; VMAs %d (baseline %d), rings %d",
		conns, time.Since(prog.start).Round(time.Millisecond), rssIdle-rssBase, rssBase, float64(rssIdle-rssBase)/conns, vmasIdle, vmasBase, ringsIdle-ringsBase)
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
	prog.wait(t, "receiving", func() bool {
		if failures.Load() > 0 {
			t.FailNow()
		}
		<-tick.C
		return prog.complete.Load() == conns
	})
	mu.Lock()
	var total int64
	var mappable Stats
	for _, p := range peers {
		<-p.received
		total += p.total
		if p.mappable {
			mappable.Add(p.stats)
		}
	}
	mu.Unlock()
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
	prog.wait(t, "client exiting", func() bool {
		select {
		case <-clientDone:
			return true
		case <-tick.C:
			return false
		}
	})
	clientLog()
	if clientErr != nil {
		t.Errorf("client process: %v", clientErr)
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
// MSG_ZEROCOPY; odd ones ordinary sends), prints "peer PORT TOTAL MAPPABLE" for each as
// soon as it is dialed, sends every stream at once when stdin says "go", and returns
// when every conn has been closed by the server.
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
	var outMu sync.Mutex
	for range 64 {
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			for failed.Load() == 0 {
				i := int(next.Add(1) - 1)
				if i >= conns {
					return
				}
				// No timeout of its own: the parent sees the progress and fails a stall.
				c, err := dialPattern(addr, i%2 == 0)
				if err != nil {
					failed.Add(1)
					t.Errorf("dial %d: %v", i, err)
					return
				}
				clients[i] = c
				outMu.Lock()
				fmt.Printf("peer %d %d %t\n", c.LocalAddr().(*net.TCPAddr).Port, totals[i], i%2 == 0)
				outMu.Unlock()
			}
		}()
	}
	dialWG.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || line != "go\n" {
		t.Fatalf("waiting for go: %q, %v", line, err)
	}
	var sendWG sync.WaitGroup
	for i, c := range clients {
		sendWG.Add(1)
		go func() {
			defer sendWG.Done()
			s := patternSender{zerocopy: true, maxWrite: 256 << 10}
			if i%2 == 1 {
				s = patternSender{maxWrite: 256 << 10, rnd: rand.New(rand.NewPCG(uint64(i), 3))}
			}
			err := s.write(c, 0, totals[i])
			if err == nil {
				err = c.CloseWrite()
			}
			if err == nil {
				err = zcsend.WaitClose(c, s.zerocopy) // until the server closes
			}
			if err != nil && failed.Add(1) <= 10 {
				t.Errorf("send %d: %v", i, err)
			}
		}()
	}
	sendWG.Wait()
}
