//go:build linux

package zcnet

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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

// The stress tests: many conns at once, Close and deadlines racing the read path,
// hostile peers, and real HTTP clients (Go's and curl) over TLS and in clear.

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

// closeRound is one round of TestCloseRacesReads: a reader of kind takes the first total
// pattern bytes from c while c is closed.
type closeRound struct {
	kind      readKind
	total     int64         // pattern bytes the peer sent or sends
	ended     bool          // the peer half-closes after them: the reader may see the end first
	exactNext bool          // Next asks for no more than is left, then for one byte more
	waitAll   bool          // Close once the reader has every byte and waits in the poller
	delay     time.Duration // otherwise, Close after this long
}

// raceClose runs round r on c: it starts the reader, closes c, and returns the bytes the
// reader got, whether it ended with net.ErrClosed, and an error unless the reader got
// at most the bytes sent, in order (Read and WriteTo check them; Next views are only
// touched, since Close may swap their pages underneath, which must read as zeros,
// never fault), and then net.ErrClosed (or the end of the stream when the peer ended
// it).
func raceClose(c *Conn, r closeRound, rnd *rand.Rand) (got int64, closed bool, err error) {
	res := make(chan error, 1)
	w := &patternWriter{}
	var nextOff atomic.Int64
	go func() {
		var err error
		switch r.kind {
		case byNext:
			var off int64
			var sum byte
			for err == nil {
				n := 1 + rnd.IntN(16<<10)
				if r.exactNext {
					n = int(max(1, min(int64(n), r.total-off)))
				}
				var v []byte
				v, err = c.Next(n)
				for _, b := range v {
					sum += b // touch the view: it may be unmapped meanwhile
				}
				off += int64(len(v))
				nextOff.Store(off)
			}
			_ = sum
		default:
			_, err = drainPattern(c, r.kind, w, 16<<10, rnd)
			if err == nil {
				err = io.EOF
			}
		}
		res <- err
	}()
	progress := func() int64 {
		if r.kind == byNext {
			return nextOff.Load()
		}
		return w.done.Load()
	}
	if r.waitAll {
		for progress() < r.total {
			time.Sleep(20 * time.Microsecond)
		}
	} else if r.delay > 0 {
		time.Sleep(r.delay)
	}
	if cerr := c.Close(); cerr != nil {
		err = fmt.Errorf("Close: %w", cerr)
	}
	rerr := <-res
	got = progress()
	switch {
	case errors.Is(rerr, net.ErrClosed):
		closed = true
	case r.ended && (rerr == io.EOF || rerr == io.ErrUnexpectedEOF):
	default:
		err = fmt.Errorf("%v after %d of %d bytes: %v", r.kind, got, r.total, rerr)
	}
	if got > r.total {
		err = fmt.Errorf("%v got %d bytes of %d", r.kind, got, r.total)
	}
	return got, closed, err
}

// TestCloseRacesReads closes conns while a Read, Next or WriteTo runs on them, at varied
// moments: while bytes are being mapped or copied, just as the call returns, or once the
// reader has taken every byte sent and waits in the poller. It proves that the racing
// call returns the exact stream bytes it gets and then net.ErrClosed (or io.EOF when the
// stream ended first), that touching a Next view while Close runs never faults, that no
// ring stays mapped and that no goroutine leaks.
//
// serial/MODE runs 200 rounds (80 under the race detector) one after the other in each
// mode, the peer leaving its conn open, a third of them closing once the reader waits;
// parallel runs 10,000 rounds on 8 workers in ModeZeroCopy, half the peers sending
// mappable pages (so that Close races the ring) and half plain ones, and closes at a
// random moment. Meant for -race as well as for the plain build; -zcnet.long runs
// 100,000 parallel rounds.
func TestCloseRacesReads(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, m := range modes {
		t.Run("serial/"+m.String(), func(t *testing.T) { testCloseSerial(t, m) })
	}
	t.Run("parallel", testCloseParallel)
}

// testCloseSerial runs the serial rounds of TestCloseRacesReads in mode m.
func testCloseSerial(t *testing.T, m Mode) {
	rounds := 200
	if raceEnabled {
		rounds = 80
	}
	mappable := m == ModeZeroCopy && Supported() == nil
	ln := listenLoopback(t, Options{Mode: m, PageAlignedMSS: mappable})
	rnd := rand.New(rand.NewPCG(4, 0))
	for i := range rounds {
		sc := dialSender(t, ln.Addr().String(), mappable)
		c := acceptConn(t, ln)
		// Written before anything reads: keep it well inside the initial receive buffer
		// (the truesize of 4 KiB segments is more than 4 KiB each), or the write blocks.
		r := closeRound{
			kind:      readKind(i / 3 % int(readKinds)),
			total:     rnd.Int64N(64 << 10),
			exactNext: true,
			waitAll:   i%3 == 0,
			delay:     time.Duration(rnd.IntN(3)*50) * time.Microsecond,
		}
		if err := writeStream(sc, 0, r.total, mappable); err != nil {
			t.Fatal(err)
		}
		_, closed, err := raceClose(c, r, rand.New(rand.NewPCG(uint64(i), 4)))
		sc.Close()
		if err == nil && !closed {
			err = errors.New("the call did not end with net.ErrClosed")
		}
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
}

// testCloseParallel runs the parallel rounds of TestCloseRacesReads.
func testCloseParallel(t *testing.T) {
	rounds, limit := 10000, 60*time.Second
	if *longRuns {
		rounds, limit = 100000, 15*time.Minute
	}
	_, ringsBase := mapsCount(t)

	var (
		next     atomic.Int64
		failures atomic.Int64
		closed   [readKinds]atomic.Int64 // calls that ended with net.ErrClosed
		total    atomic.Int64            // stream bytes received
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	var st Stats
	var stMu sync.Mutex
	for w := range 8 {
		// One listener per worker, so that its next accepted conn is the one it dialed.
		ln := listenLoopback(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true})
		addr := ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				ln.Close()
				stMu.Lock()
				st.Add(ln.Stats())
				stMu.Unlock()
			}()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for failures.Load() == 0 && time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= rounds {
					return
				}
				mappable := i%2 == 0
				r := closeRound{
					kind:  readKind(i / 2 % int(readKinds)),
					total: int64(4096 * (1 + rnd.IntN(16))),
					ended: mappable,
				}
				if !mappable {
					r.total += int64(rnd.IntN(4096))
				}
				cc, err := dialPattern(addr, mappable)
				if err != nil {
					fail("round %d: dial: %v", i, err)
					return
				}
				var sent <-chan error
				if mappable {
					sent = sendPattern(cc, r.total, patternSender{zerocopy: true})
				} else {
					// Small enough for the socket buffers: the write completes without
					// a reader. The conn stays open, so the reader ends up waiting.
					s := patternSender{maxWrite: 256 << 10, rnd: rnd, keepOpen: true}
					sent = sendPattern(cc, r.total, s)
					if err := <-sent; err != nil {
						fail("round %d: send: %v", i, err)
						return
					}
				}
				nc, err := ln.Accept()
				if err != nil {
					fail("round %d: accept: %v", i, err)
					return
				}
				r.delay = time.Duration(rnd.IntN(400)) * time.Microsecond
				got, isClosed, err := raceClose(nc.(*Conn), r, rand.New(rand.NewPCG(uint64(i), 1)))
				if err != nil {
					fail("round %d (mappable %v): %v", i, mappable, err)
				}
				if isClosed {
					closed[r.kind].Add(1)
				}
				total.Add(got)
				cc.Close()
				if mappable {
					if err := <-sent; err != nil && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
						fail("round %d: send: %v", i, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	done := min(int(next.Load()), rounds)
	if done < rounds && failures.Load() == 0 {
		t.Fatalf("only %d of %d rounds in %v", done, rounds, limit)
	}
	t.Logf("%d rounds; calls ended by Close: Read %d, Next %d, WriteTo %d; %d stream bytes received (%d mapped)",
		done, closed[byRead].Load(), closed[byNext].Load(), closed[byWriteTo].Load(), total.Load(), st.MappedBytes)
	if _, rings := mapsCount(t); rings != ringsBase {
		t.Errorf("%d rings still mapped after every conn was closed", rings-ringsBase)
	}
	if Supported() == nil && st.MappedBytes == 0 {
		t.Errorf("no byte was mapped: the race never involved the ring: %+v", st)
	}
}

// TestPeerSendsOneByteAtATime is fed by a peer that writes its stream one byte per
// segment (TCP_NODELAY), the worst case for a receiver that maps pages. It proves that
// Read, Next and WriteTo each yield the exact stream.
func TestPeerSendsOneByteAtATime(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const total = 6000
	for kind := range readKinds {
		t.Run(kind.String(), func(t *testing.T) {
			c, p := pairWith(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true}, false)
			p.SetNoDelay(true)
			sent := sendPattern(p, total, patternSender{maxWrite: 1})
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			w := &patternWriter{}
			_, err := drainPattern(c, kind, w, 4096, rand.New(rand.NewPCG(uint64(kind), 1)))
			checkStream(t, w, err, sent, total)
			t.Logf("%d one-byte segments, stream exact; stats %+v", total, c.Stats())
		})
	}
}

// TestDeadlineFlipsKeepStream receives streams while another goroutine keeps moving the
// read deadline between the near past, the near future and none, so that Read, Next and
// WriteTo time out over and over in every state of the read path: a fast mappable stream
// (timeouts with mapped bytes pending) and a bursty one with pauses (timeouts while
// waiting in the poller). It proves that a timeout never loses, repeats or reorders a
// byte: retrying after each timeout yields the exact stream.
func TestDeadlineFlipsKeepStream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const total = 32 << 20
	for _, bursty := range []bool{false, true} {
		for kind := range readKinds {
			name := kind.String() + "/fast"
			if bursty {
				name = kind.String() + "/bursty"
			}
			t.Run(name, func(t *testing.T) {
				testDeadlineFlips(t, kind, bursty, total)
			})
		}
	}
}

// testDeadlineFlips runs one case of TestDeadlineFlipsKeepStream.
func testDeadlineFlips(t *testing.T, kind readKind, bursty bool, total int64) {
	s := patternSender{zerocopy: true}
	if bursty {
		total /= 8
		s = patternSender{maxWrite: 32 << 10, rnd: rand.New(rand.NewPCG(uint64(kind), 11)), pause: 300 * time.Microsecond}
	}
	c, sc := pairWith(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true}, !bursty)
	sent := sendPattern(sc, total, s)
	// Start with a call under a past deadline, so that at least one times out even when
	// the stream is over before the flipper's first change.
	c.SetReadDeadline(time.Now().Add(-time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("Read under a past deadline: %v, want a timeout", err)
	}
	stop := make(chan struct{})
	flipped := make(chan struct{})
	go func() {
		defer close(flipped)
		rnd := rand.New(rand.NewPCG(uint64(kind), 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			switch rnd.IntN(4) {
			case 0, 1:
				c.SetReadDeadline(time.Now().Add(-time.Millisecond))
			case 2:
				c.SetReadDeadline(time.Now().Add(time.Duration(rnd.IntN(300)) * time.Microsecond))
			default:
				c.SetReadDeadline(time.Time{})
			}
			time.Sleep(time.Duration(rnd.IntN(200)) * time.Microsecond)
		}
	}()
	w := &patternWriter{}
	rnd := rand.New(rand.NewPCG(uint64(kind), 10))
	buf := make([]byte, 256<<10)
	timeouts := 1
	end := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(end) {
		switch kind {
		case byRead:
			var n int
			n, err = c.Read(buf[:1+rnd.IntN(len(buf))])
			w.Write(buf[:n])
		case byNext:
			var v []byte
			v, err = c.Next(1 + rnd.IntN(256<<10))
			w.Write(v)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
		default:
			_, err = c.WriteTo(w)
			if err == nil {
				err = io.EOF
			}
		}
		if w.err != nil {
			break
		}
		if isTimeout(err) {
			timeouts++
			continue
		}
		if err != nil {
			break
		}
	}
	close(stop)
	<-flipped
	c.Close()
	if serr := <-sent; serr != nil {
		t.Errorf("sender: %v", serr)
	}
	st := c.Stats()
	t.Logf("%d bytes exact across %d timeouts; stats %+v", w.off, timeouts, st)
	if w.err != nil {
		t.Fatal(w.err)
	}
	if err != io.EOF || w.off != total {
		t.Fatalf("stream ended after %d of %d bytes with %v", w.off, total, err)
	}
	if timeouts == 0 {
		t.Errorf("no call timed out: the test did not exercise deadlines")
	}
}

// selfSignedTLS makes a server certificate for 127.0.0.1, ::1 and localhost, signed by
// itself, and returns the server config, a pool trusting it and its PEM.
func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "zcnet test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	return cfg, pool, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// uploadSize is the size of each upload in the real-client tests: 64 MiB (16 MiB under
// the race detector), 1 GiB with -zcnet.long.
func uploadSize() int64 {
	switch {
	case *longRuns:
		return 1 << 30
	case raceEnabled:
		return 16 << 20
	}
	return 64 << 20
}

// curlPath returns the curl binary, installing it with apt-get when it is missing, the
// test runs as root and ZCNET_MACHINE_TESTS=1; it skips the test, naming the reason,
// otherwise.
func curlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("curl"); err == nil {
		return p
	}
	requireMachineTests(t, "installing curl (it is not installed)")
	if os.Geteuid() != 0 {
		t.Skip("curl is not installed and the test does not run as root to install it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "curl").CombinedOutput()
	if err != nil {
		if out2, err2 := exec.CommandContext(ctx, "sh", "-c", "apt-get update -q && apt-get install -y -q curl").CombinedOutput(); err2 != nil {
			t.Skipf("curl is not installed and apt-get could not install it: %v\n%s\n%s", err2, out, out2)
		}
	}
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Skipf("curl still not found after apt-get install: %v", err)
	}
	return p
}

// patternFile writes the pattern's first total bytes to a file for curl to upload.
func patternFile(t *testing.T, total int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "upload.bin")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, io.LimitReader(&patternReader{}, total)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

// curlUpload streams file to url with curl (-T: read and sent in chunks, as a client
// uploading a large file does), trusting caPEM for https.
func curlUpload(t *testing.T, curl, url, file string, caPEM []byte) string {
	t.Helper()
	args := []string{"-sS", "--fail", "--max-time", "120", "-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", file}
	if caPEM != nil {
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--cacert", ca)
	}
	out, err := exec.Command(curl, append(args, url)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("curl: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("curl: %v", err)
	}
	return string(out)
}

// listenAddr returns a loopback address to listen on: [::1] when IPv6 works here and
// ipv6 is asked for, else 127.0.0.1.
func listenAddr(ipv6 bool) string {
	if ipv6 {
		if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
			l.Close()
			return "[::1]:0"
		}
	}
	return "127.0.0.1:0"
}

// TestRealClientUploads serves net/http on zcnet.Listen, in clear and over crypto/tls
// (tls.Server over each *Conn, self-signed certificate), and receives large uploads from
// Go's http client and from curl. It proves that the body the handler reads has the
// SHA-256 of what the client sent, for each of the four combinations, and that every conn
// behind the handler was a *zcnet.Conn.
func TestRealClientUploads(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	total := uploadSize()
	tlsCfg, pool, caPEM := selfSignedTLS(t)
	for _, secure := range []bool{false, true} {
		for _, client := range []string{"go", "curl"} {
			name := "http/" + client
			if secure {
				name = "https/" + client
			}
			t.Run(name, func(t *testing.T) {
				var curl string
				if client == "curl" {
					curl = curlPath(t)
				}
				ln, err := Listen("tcp", listenAddr(secure))
				if err != nil {
					t.Fatal(err)
				}
				cfg, ca := (*tls.Config)(nil), []byte(nil)
				if secure {
					cfg, ca = tlsCfg, caPEM
				}
				s := startUploadServer(t, ln, cfg)
				start := time.Now()
				var reply string
				if client == "go" {
					reply = goUpload(t, s.url, pool, total, false)
				} else {
					reply = curlUpload(t, curl, s.url, patternFile(t, total), ca)
				}
				d := time.Since(start)
				s.check(t, reply, total)
				st := ln.Stats()
				t.Logf("%s: %d MiB, SHA-256 exact, in %v (%.0f MiB/s); stats %+v, mapped share %.3f",
					s.url, total>>20, d.Round(time.Millisecond), float64(total)/(1<<20)/d.Seconds(), st, st.MappedShare())
			})
		}
	}
}

// TestCurlFastPathSysctl uploads with curl's ordinary sends to a net/http server on a
// ModeZeroCopy, PageAlignedMSS listener while net.core.high_order_alloc_disable is 1 (so
// that any sender's payload lands in order-0 pages, which the receiver can map). It
// proves that the fast path engages for an unmodified client: most of the upload was
// mapped, and its SHA-256 is exact. It changes the machine, so it runs only with
// ZCNET_MACHINE_TESTS=1; it needs root to set the sysctl, which it restores afterwards
// (also when the test fails), and skips otherwise.
func TestCurlFastPathSysctl(t *testing.T) {
	requireMachineTests(t, "setting net.core.high_order_alloc_disable")
	requireSupported(t)
	running := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, running) }) // after the server's cleanup
	const sysctl = "/proc/sys/net/core/high_order_alloc_disable"
	if os.Geteuid() != 0 {
		t.Skip("setting net.core.high_order_alloc_disable needs root")
	}
	curl := curlPath(t)
	total := uploadSize()
	file := patternFile(t, total) // before the sysctl: keep the machine-wide change short
	old, err := os.ReadFile(sysctl)
	if err != nil {
		t.Skipf("cannot read %s: %v", sysctl, err)
	}
	if err := os.WriteFile(sysctl, []byte("1\n"), 0o644); err != nil {
		t.Skipf("cannot set %s: %v", sysctl, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(sysctl, old, 0o644); err != nil {
			t.Errorf("restoring %s to %q: %v", sysctl, strings.TrimSpace(string(old)), err)
		}
	})
	lc := ListenConfig{Options: Options{Mode: ModeZeroCopy, PageAlignedMSS: true}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := startUploadServer(t, ln, nil)
	start := time.Now()
	reply := curlUpload(t, curl, s.url, file, nil)
	d := time.Since(start)
	s.check(t, reply, total)
	st := ln.Stats()
	t.Logf("curl, %d MiB with high_order_alloc_disable=1 (was %s), SHA-256 exact, in %v: stats %+v, mapped share %.3f",
		total>>20, strings.TrimSpace(string(old)), d.Round(time.Millisecond), st, st.MappedShare())
	// How much of curl's stream lines up with whole pages varies from run to run
	// (88-100% measured here, the rest arriving in segments that straddle the
	// sender's pages); the fast path must carry most of it.
	if st.MappedBytes == 0 || st.MappedShare() < 0.5 {
		t.Fatalf("fast path did not engage for curl: mapped share %.3f < 0.5: %+v", st.MappedShare(), st)
	}
}
