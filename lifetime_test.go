//go:build linux

package zcnet

import (
	"bytes"
	"fmt"
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
	"unsafe"

	"golang.org/x/sys/unix"
)

// lifetimeEnv names what a child process of TestClosedViewsProcess runs short of.
const lifetimeEnv = "ZCNET_LIFETIME"

// TestClosedViewsProcess runs, in a child process with the garbage collector off, 3,000
// conns (1,000 under the race detector) in every mode that each take one message with
// Next and Close with the view still held: the common handler shape. The child has
// either only 1,500 memory-map slots free (filler mappings take the rest of
// vm.max_map_count) or a tight RLIMIT_AS.
// Closed conns' ranges wait in the quarantine, counted by the limits: the mappings the
// conns leave never go past the limits (sampled in /proc/self/maps and in the budget's
// counters throughout), every byte of every view matches the pattern, and the runtime
// can still allocate and touch 200 MiB afterwards.
func TestClosedViewsProcess(t *testing.T) {
	if what := os.Getenv(lifetimeEnv); what != "" {
		closedViewsChild(t, what)
		return
	}
	requireSupported(t)
	runChildren(t, "TestClosedViewsProcess", lifetimeEnv, "closed views: ok")
}

// runChildren runs the test named test in a child process of the test binary, once with
// env set to "map-slots" and once to "address-space" (not under the race detector), and
// fails unless the child passes and prints ok.
func runChildren(t *testing.T, test, env, ok string) {
	for _, what := range []string{"map-slots", "address-space"} {
		t.Run(what, func(t *testing.T) {
			if what == "address-space" && raceEnabled {
				t.Skip("the race detector reserves terabytes of shadow address space: no RLIMIT_AS fits it")
			}
			cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), env+"="+what)
			out, err := cmd.CombinedOutput()
			t.Logf("child:\n%s", out)
			if err != nil {
				t.Fatalf("child process: %v", err)
			}
			if !bytes.Contains(out, []byte(ok)) {
				t.Fatal("the child did not report its checks")
			}
		})
	}
}

// closedViewsChild is TestClosedViewsProcess's child.
func closedViewsChild(t *testing.T, what string) {
	debug.SetGCPercent(-1)
	switch what {
	case "map-slots":
		fillMapSlots(t, 1500)
	case "address-space":
		vm, err := statusKiB("VmSize:")
		if err != nil {
			t.Skip(err)
		}
		limit := uint64(vm<<10) + 5<<29 // the heap grows by ~1.2 GiB with the GC off
		if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
			t.Fatal(err)
		}
		t.Logf("RLIMIT_AS %d MiB, %d MiB in use", limit>>20, vm>>10)
	default:
		t.Fatalf("unknown %s %q", lifetimeEnv, what)
	}
	lim := CurrentLimits()
	base, _ := mapsCount(t)
	t.Logf("limits: %+v; %d mappings before the conns", lim, base)

	// Sample the mappings while the conns run.
	var maxAll, maxSock, maxRings, maxRetired atomic.Int64
	var maxBytes, maxPinned, maxLibN, maxLibBytes atomic.Int64
	var over atomic.Value
	stop := make(chan struct{})
	sampled := make(chan struct{})
	raise := func(m *atomic.Int64, v int64) {
		for o := m.Load(); v > o && !m.CompareAndSwap(o, v); o = m.Load() {
		}
	}
	sample := func() {
		all, sock := mapsCount(t)
		rings, bytes, pinned := budget.rings.Load(), budget.ringBytes.Load(), budget.pinned.Load()
		n, _ := retired.held()
		raise(&maxAll, int64(all))
		raise(&maxSock, int64(sock))
		raise(&maxRings, rings)
		raise(&maxRetired, int64(n))
		raise(&maxBytes, bytes)
		raise(&maxPinned, pinned)
		libN, libBytes := libraryMappings(t)
		raise(&maxLibN, int64(libN))
		raise(&maxLibBytes, libBytes)
		switch {
		case rings > int64(lim.MaxRings) || bytes > lim.MaxRingBytes || pinned > lim.MaxPinnedBytes:
			over.CompareAndSwap(nil, fmt.Sprintf("budget past the limits: %d rings, %d B, %d B pinned", rings, bytes, pinned))
		case libN > lim.MaxRings || libBytes > lim.MaxRingBytes:
			over.CompareAndSwap(nil, fmt.Sprintf("%d rings and retired ranges mapped, %d MiB: past the limits", libN, libBytes>>20))
		case all-base > lim.MaxRings+200:
			over.CompareAndSwap(nil, fmt.Sprintf("%d mappings, %d more than before the conns (limit %d rings)", all, all-base, lim.MaxRings))
		}
	}
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				sample()
			}
		}
	}()

	const batch = 30
	conns := 3000
	if raceEnabled {
		// The detector slows every conn: 1,000 conns still take the quarantine past
		// its bound (in the map-slots child), and keep CI's race step shorter.
		conns = 1000
	}
	sizes := []int{64 << 10, 256 << 10, 1 << 20}
	lns := map[Mode]*Listener{}
	for _, m := range modes {
		lns[m] = listenLoopback(t, Options{Mode: m, PageAlignedMSS: true})
	}
	var st Stats
	var mu sync.Mutex
	var checked int64
	for i := 0; i < conns; i += batch {
		var wg sync.WaitGroup
		errs := make(chan error, batch)
		for j := i; j < i+batch; j++ {
			ln := lns[modes[j%len(modes)]]
			s := dialSender(t, ln.Addr().String(), true)
			c := acceptConn(t, ln)
			size := sizes[(j/len(modes))%len(sizes)]
			sent := sendStream(s, int64(size), true, false)
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := c.Next(size)
				if err != nil {
					errs <- fmt.Errorf("conn %d: Next(%d): %w", j, size, err)
					c.Close()
					return
				}
				if k := checkPattern(0, v); k >= 0 {
					errs <- fmt.Errorf("conn %d: byte %d of the view differs from the pattern", j, k)
				}
				c.Close() // with the view still held, as a handler that returns does
				if err := <-sent; err != nil {
					errs <- fmt.Errorf("conn %d: sender: %w", j, err)
				}
				mu.Lock()
				st.Add(c.Stats())
				checked += int64(len(v))
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if o := over.Load(); o != nil {
			t.Fatal(o)
		}
	}
	close(stop)
	<-sampled
	sample()
	if o := over.Load(); o != nil {
		t.Fatal(o)
	}
	n, b := retired.held()
	all, sock := mapsCount(t)
	t.Logf("%d conns, %d bytes checked: %d mapped, %d viewed in place, %d copied (%d past a limit)",
		conns, checked, st.MappedBytes, st.ViewBytes, st.CopiedBytes, st.CopiedDisabled)
	t.Logf("peaks: %d mappings (%d before the conns), %d socket mappings, %d rings counted (limit %d), %d retired, %d MiB of ring address space (limit %d MiB); %d KiB pinned; in the maps at most %d rings and retired ranges, %d MiB",
		maxAll.Load(), base, maxSock.Load(), maxRings.Load(), lim.MaxRings, maxRetired.Load(), maxBytes.Load()>>20, lim.MaxRingBytes>>20, maxPinned.Load()>>10, maxLibN.Load(), maxLibBytes.Load()>>20)
	t.Logf("after: %d mappings, %d socket mappings, %d retired ranges (%d MiB) in the quarantine, %d evicted",
		all, sock, n, b>>20, retired.evictions())
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	vm, _ := statusKiB("VmSize:")
	t.Logf("runtime: %d MiB of heap in use, %d MiB from the OS; VmSize %d MiB", ms.HeapAlloc>>20, ms.Sys>>20, vm>>10)
	if st.ViewBytes == 0 {
		t.Fatal("no view pointed into a mapping: the test does not exercise the quarantine")
	}
	if retired.evictions() == 0 {
		t.Fatal("the quarantine never went past its bound: the test does not exercise it")
	}
	if n > max(lim.MaxRings/4, 1) {
		t.Fatalf("%d retired ranges left, bound %d", n, max(lim.MaxRings/4, 1))
	}
	// The runtime can still map memory: a fresh 200 MiB allocation, touched.
	big := make([]byte, 200<<20)
	for i := 0; i < len(big); i += pageSize {
		big[i] = 1
	}
	runtime.KeepAlive(unsafe.SliceData(big))
	t.Log("closed views: ok")
}

// libraryMappings counts the mappings a conn can leave and sums their sizes: rings
// (read-only shared mappings of a socket) and retired ranges (read-only private
// anonymous mappings, which neither the Go runtime nor the fillers make).
func libraryMappings(t testing.TB) (n int, size int64) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		ring := len(f) == 6 && f[1] == "r--s" && strings.HasPrefix(f[5], "socket:[")
		retiredRange := len(f) == 5 && f[1] == "r--p" && f[4] == "0"
		if !ring && !retiredRange {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		z, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("unreadable mapping %q", line)
		}
		n++
		size += int64(z - a)
	}
	return n, size
}
