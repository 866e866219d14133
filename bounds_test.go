//go:build linux

package zcnet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketRssKiB sums the resident size of every socket mapping of the process (the rings)
// in /proc/self/smaps: the mapped pages the conns pin.
func socketRssKiB(t testing.TB) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var total int64
	inSocket := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fs := strings.Fields(line); len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			inSocket = strings.HasPrefix(fs[len(fs)-1], "socket:")
			continue
		}
		if rest, ok := strings.CutPrefix(line, "Rss:"); ok && inSocket {
			fs := strings.Fields(rest)
			if n, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
				total += n
			}
		}
	}
	return total
}

// TestSmallReadPinsFewPages: 1,000 conns whose peers have filled the receive window with
// mappable pages each do one Read(16). A Read maps at most what it can hand out (its
// length rounded up to a page), so the rings pin a few pages each, not the window.
func TestSmallReadPinsFewPages(t *testing.T) {
	requireSupported(t)
	const conns, queued = 1000, 256 << 10
	for _, m := range []Mode{ModeZeroCopy, ModeAuto} {
		t.Run(m.String(), func(t *testing.T) {
			ln := listenLoopback(t, Options{Mode: m, PageAlignedMSS: true})
			base := socketRssKiB(t)
			cs := make([]*Conn, conns)
			for i := range cs {
				s := dialSender(t, ln.Addr().String(), true)
				cs[i] = acceptConn(t, ln)
				if err := writeStream(s, 0, queued, true); err != nil {
					t.Fatal(err)
				}
			}
			for i, c := range cs {
				if err := readPattern(c, 0, 16); err != nil {
					t.Fatalf("conn %d: %v", i, err)
				}
			}
			var st Stats
			for _, c := range cs {
				st.Add(c.Stats())
			}
			rss := socketRssKiB(t) - base
			t.Logf("%s: %d conns did Read(16) over %d KiB queued: rings resident %d KiB (%.1f KiB per conn); %d bytes mapped, %d copied",
				m, conns, queued>>10, rss, float64(rss)/conns, st.MappedBytes, st.CopiedBytes)
			if m == ModeZeroCopy && st.MappedBytes == 0 {
				t.Fatalf("nothing was mapped: the test does not exercise the rings: %+v", st)
			}
			if limit := int64(conns * 4 * pageSize >> 10); rss > limit {
				t.Fatalf("rings resident %d KiB after one Read(16) per conn, want at most %d (4 pages per conn)", rss, limit)
			}
			for i, c := range cs {
				c.Close()
				cs[i] = nil
			}
		})
	}
}

// TestDroppedConnsClosed: conns that mapped pages and are then dropped without Close are
// closed when collected, as net.TCPConn's are: their peers see EOF after a GC.
func TestDroppedConnsClosed(t *testing.T) {
	requireSupported(t)
	const conns, total = 50, 64 << 10
	ln := listenLoopback(t, Options{Mode: ModeZeroCopy, PageAlignedMSS: true})
	peers := make([]*net.TCPConn, conns)
	var mapped uint64
	for i := range peers {
		peers[i] = dialSender(t, ln.Addr().String(), true)
		mapped += receiveAndDrop(t, ln, peers[i], total)
	}
	if mapped == 0 {
		t.Fatal("the dropped conns mapped nothing: the test does not exercise their rings")
	}
	eofs := 0
	deadline := time.Now().Add(10 * time.Second)
	for i, p := range peers {
		for {
			runtime.GC()
			p.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := p.Read(make([]byte, 1))
			if err == io.EOF {
				eofs++
				break
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) || time.Now().After(deadline) {
				t.Fatalf("peer %d of a dropped conn: %v; %d of %d peers saw EOF", i, err, eofs, conns)
			}
		}
	}
	t.Logf("%d of %d peers of dropped conns saw EOF after GC (%d bytes had been mapped)", eofs, conns, mapped)
}

// receiveAndDrop accepts the conn of peer, receives total mappable bytes on it, checks
// them, and drops it without Close, returning the bytes it mapped.
func receiveAndDrop(t *testing.T, ln *Listener, peer *net.TCPConn, total int64) uint64 {
	t.Helper()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := writeStream(peer, 0, total, true); err != nil {
		t.Fatal(err)
	}
	if err := readPattern(nc, 0, total); err != nil {
		t.Fatal(err)
	}
	return nc.(*Conn).Stats().MappedBytes
}

// TestStalledNextHoldsLittle plays slowloris against Next: 1,000 peers each send 100
// bytes of a 512-byte message and stall, with the 100 bytes queued before Next starts.
// The conns waiting in Next(512) hold a buffer sized to the message, a few KiB each,
// and then return the exact message once the rest comes.
func TestStalledNextHoldsLittle(t *testing.T) {
	const conns, msg, first = 1000, 512, 100
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m != ModeCopy && Supported() == nil
			ln := listenLoopback(t, Options{Mode: m, PageAlignedMSS: mappable})
			peers := make([]*net.TCPConn, conns)
			cs := make([]*Conn, conns)
			for i := range cs {
				peers[i] = dialSender(t, ln.Addr().String(), false)
				cs[i] = acceptConn(t, ln)
				if err := writeStream(peers[i], 0, first, false); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range peers {
				waitAcked(t, p) // the 100 bytes are queued before Next starts
			}
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for i, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					v, err := c.Next(msg)
					switch {
					case err != nil:
						errs <- fmt.Errorf("conn %d: Next: %w", i, err)
					case len(v) != msg || checkPattern(0, v) >= 0:
						errs <- fmt.Errorf("conn %d: Next returned %d bytes off the pattern", i, len(v))
					}
				}()
			}
			waitWaits(t, cs)
			var during runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&during)
			perConn := (int64(during.HeapInuse) - int64(before.HeapInuse)) / conns
			t.Logf("%s: %d conns stalled in Next(%d) with %d bytes queued: heap +%d B per conn (goroutine stacks apart)",
				m, conns, msg, first, perConn)
			for _, p := range peers {
				if err := writeStream(p, first, msg-first, false); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if perConn > 8<<10 {
				t.Fatalf("each stalled Next(%d) holds %d B of heap, want at most 8 KiB", msg, perConn)
			}
		})
	}
}

// waitWaits waits until every conn has waited in the poller at least once (each is
// parked in its call), for up to 10 s.
func waitWaits(t *testing.T, cs []*Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range cs {
		for c.Stats().Waits == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("a conn never waited: %+v", c.Stats())
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(50 * time.Millisecond) // the last ones reach the poller
}

// exhaustEnv names the resource a child process of TestExhaustedProcess exhausts.
const exhaustEnv = "ZCNET_EXHAUST"

// TestExhaustedProcess runs, in a child process, 2,000 conns receiving in every mode
// after filler mappings have taken nearly all the process's memory-map slots
// (vm.max_map_count), or nearly all its address space under an RLIMIT_AS: the limits
// derived at the first conn leave the runtime room, conns past them copy (with the
// reason in Stats), no byte is lost, and the runtime can still allocate afterwards.
func TestExhaustedProcess(t *testing.T) {
	if what := os.Getenv(exhaustEnv); what != "" {
		exhaustedChild(t, what)
		return
	}
	requireSupported(t)
	runChildren(t, "TestExhaustedProcess", exhaustEnv, "exhausted: ok")
}

// exhaustedChild is TestExhaustedProcess's child: it exhausts what, then receives.
func exhaustedChild(t *testing.T, what string) {
	switch what {
	case "map-slots":
		// Leave 1,200 slots: half for rings (the default limit), half for the runtime.
		fillMapSlots(t, 1200)
	case "address-space":
		vm, err := statusKiB("VmSize:")
		if err != nil {
			t.Skip(err)
		}
		limit := uint64(vm<<10) + 3<<30
		if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
			t.Fatal(err)
		}
		// Filler: take all but 2 GiB of what the limit leaves. The rings may take a
		// quarter of it, live or quarantined; the runtime keeps the address space of
		// its peak heap (2,000 conns' goroutines and buffers), and must still find
		// room for 256 MiB at the end.
		if _, err := unix.Mmap(-1, 0, 1<<30, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE); err != nil {
			t.Fatal(err)
		}
		t.Logf("RLIMIT_AS %d MiB, %d MiB in use", limit>>20, vm>>10)
	}
	lim := CurrentLimits()
	t.Logf("limits: %+v", lim)
	const conns, total = 2000, 256 << 10
	var st Stats
	var mu sync.Mutex
	var wg, half sync.WaitGroup
	half.Add(conns)
	limited := 0
	errs := make(chan error, conns)
	lns := map[Mode]*Listener{}
	for _, m := range modes {
		lns[m] = listenLoopback(t, Options{Mode: m, PageAlignedMSS: true})
	}
	for i := range conns {
		ln := lns[modes[i%len(modes)]]
		s := dialSender(t, ln.Addr().String(), true)
		c := acceptConn(t, ln)
		sent := sendStream(s, total, true, false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			half := &half
			buf := make([]byte, 64<<10)
			var off int64
			for {
				if off >= total/2 && half != nil {
					// Every conn holds its ring (if it has one) at once.
					half.Done()
					half.Wait()
					half = nil
				}
				n, err := c.Read(buf)
				if checkPattern(off, buf[:n]) >= 0 {
					errs <- fmt.Errorf("conn %d: bytes at %d differ from the pattern", i, off)
					return
				}
				off += int64(n)
				if err == io.EOF {
					break
				}
				if err != nil {
					errs <- fmt.Errorf("conn %d: %w", i, err)
					return
				}
			}
			if err := <-sent; err != nil || off != total {
				errs <- fmt.Errorf("conn %d: %d bytes, sender %v", i, off, err)
				return
			}
			cs := c.Stats()
			mu.Lock()
			st.Add(cs)
			if strings.Contains(cs.FallbackReason, errBudget.Error()) {
				limited++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d conns received %d bytes each: %d mapped, %d copied (%d by %d conns past a limit)",
		conns, total, st.MappedBytes, st.CopiedBytes, st.CopiedDisabled, limited)
	if st.MappedBytes == 0 {
		t.Fatal("nothing was mapped: the limits left no room for rings")
	}
	if limited == 0 || st.CopiedDisabled == 0 {
		t.Fatal("no conn went past a limit: the test does not exercise them")
	}
	// The runtime can still map memory: a fresh 256 MiB allocation, touched.
	big := make([]byte, 256<<20)
	for i := 0; i < len(big); i += pageSize {
		big[i] = 1
	}
	runtime.KeepAlive(unsafe.SliceData(big))
	t.Log("exhausted: ok")
}

// TestPinnedBudget: with MaxPinnedBytes at 1 MiB, a conn holding a 768 KiB mapped view
// leaves too little for another conn's 512 KiB mapping fills: that conn copies instead,
// with the reason in Stats, and both streams stay exact.
func TestPinnedBudget(t *testing.T) {
	requireSupported(t)
	saved := CurrentLimits()
	// 1 MiB beyond what conns of other tests may still pin.
	if err := SetLimits(Limits{MaxPinnedBytes: budget.pinned.Load() + 1<<20}); err != nil {
		t.Fatal(err)
	}
	defer SetLimits(saved)
	const total = 4 << 20
	a, sa := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	b, sb := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	sentA := sendStream(sa, total, true, false)
	sentB := sendStream(sb, total, true, false)
	v, err := a.Next(768 << 10)
	if err != nil {
		t.Fatal(err)
	}
	if a.Stats().ViewBytes == 0 {
		t.Fatalf("the held view is not mapped: %+v", a.Stats())
	}
	wa := &patternWriter{}
	wa.Write(v)
	wb := &patternWriter{}
	if _, err := io.CopyBuffer(wb, struct{ io.Reader }{b}, make([]byte, 512<<10)); err != nil {
		t.Fatal(err)
	}
	checkStream(t, wb, nil, sentB, total)
	st := b.Stats()
	t.Logf("second conn, with 768 KiB pinned by the first and a 1 MiB budget: %d mapped, %d copied for the limit, reason %q",
		st.MappedBytes, st.CopiedDisabled, st.FallbackReason)
	if st.CopiedDisabled == 0 || !strings.Contains(st.FallbackReason, errBudget.Error()) {
		t.Fatalf("the conn past the budget did not copy for it: %+v", st)
	}
	_, err = a.WriteTo(wa)
	checkStream(t, wa, err, sentA, total)
}
