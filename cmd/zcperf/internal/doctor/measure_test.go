package doctor

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/zcnet/zcnet"
)

func TestUsage(t *testing.T) {
	stderr := os.Stderr
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	os.Stderr = devnull
	defer func() { os.Stderr = stderr }()
	for _, args := range [][]string{{"-seconds", "-1"}, {"-rounds", "0"}, {"extra"}, {"-nosuchflag"}} {
		if got := Main(args); got != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, got)
		}
	}
}

// requireMapping skips a real-conn test where the process cannot map, naming why.
func requireMapping(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("zero-copy receive is Linux-only")
	}
	if err := zcnet.Supported(); err != nil {
		t.Skipf("fast path unavailable here: %v", err)
	}
}

// checkRun checks what every cause run must show: the whole stream, verified against
// the pattern, and causes that add up to the copied bytes.
func checkRun(t *testing.T, r CauseRun, total int64) {
	t.Helper()
	if r.Error != "" || !r.Verified || r.Bytes != total {
		t.Fatalf("run %s: %d bytes, verified %v, error %q", r.Name, r.Bytes, r.Verified, r.Error)
	}
	st := r.Stats
	if st.MappedBytes+st.CopiedBytes != uint64(total) {
		t.Errorf("mapped %d + copied %d bytes, want %d", st.MappedBytes, st.CopiedBytes, total)
	}
	var sum uint64
	for _, v := range causes(st) {
		sum += v
	}
	if sum != st.CopiedBytes {
		t.Errorf("copy causes add up to %d, CopiedBytes is %d (%+v)", sum, st.CopiedBytes, st)
	}
}

// realRun runs the cause run name over 16 MiB on real loopback conns, checks what
// every run must show (checkRun), and returns it with the changes the verdict on it
// asks for, one a line.
func realRun(t *testing.T, name, title string, zerocopy, mss bool) (CauseRun, string) {
	t.Helper()
	const total = 16 << 20
	r := causeRunOnce(name, title, zerocopy, mss, total, goroutineSender)
	checkRun(t, r, total)
	v := Decide(testHost(), Measurements{Causes: []CauseRun{r}})
	return r, strings.Join(v.Changes, "\n")
}

// An ordinary sender to a PageAlignedMSS listener on loopback sends page-sized segments
// in compound pages: the copied bytes are CopiedPageKind, and the doctor says so.
func TestCausePlainSender(t *testing.T) {
	requireMapping(t)
	b, err := os.ReadFile("/proc/sys/net/core/high_order_alloc_disable")
	if err != nil {
		t.Skipf("cannot read net.core.high_order_alloc_disable: %v", err)
	}
	if parseInt(b) != 0 {
		t.Skip("net.core.high_order_alloc_disable is not 0 here: an ordinary sender's pages are order-0 and map")
	}
	r, changes := realRun(t, runPlain, "plain", false, true)
	if r.MainCause != "CopiedPageKind" {
		t.Errorf("main cause %q, want CopiedPageKind (%+v)", r.MainCause, r.Stats)
	}
	if !strings.Contains(r.Diagnosis, "CopiedPageKind") {
		t.Errorf("diagnosis does not name CopiedPageKind: %s", r.Diagnosis)
	}
	if !strings.Contains(changes, "MSG_ZEROCOPY") {
		t.Errorf("the verdict does not tell the sender to use MSG_ZEROCOPY:\n%s", changes)
	}
}

// A MSG_ZEROCOPY sender to a listener without PageAlignedMSS sends ~64 KiB segments: full
// pages in them that are not mapped are CopiedSegment, and the doctor says so.
func TestCauseNoPageMSS(t *testing.T) {
	requireMapping(t)
	r, changes := realRun(t, runNoMSS, "no page MSS", true, false)
	if r.Stats.CopiedSegment == 0 {
		t.Errorf("CopiedSegment is 0 (%+v)", r.Stats)
	}
	if !strings.Contains(r.Diagnosis, "CopiedSegment") {
		t.Errorf("diagnosis does not name CopiedSegment: %s", r.Diagnosis)
	}
	if !strings.Contains(changes, "PageAlignedMSS") {
		t.Errorf("the verdict does not ask for PageAlignedMSS:\n%s", changes)
	}
}

// A MSG_ZEROCOPY sender to a PageAlignedMSS listener gets its stream mapped, and the
// doctor asks for no change on the sender or the listener.
func TestCauseMapped(t *testing.T) {
	requireMapping(t)
	r, changes := realRun(t, runZeroCopy, "zerocopy", true, true)
	if r.Stats.MappedShare() < 0.99 {
		t.Errorf("%.2f%% mapped, want >= 99%% (%+v)", 100*r.Stats.MappedShare(), r.Stats)
	}
	if !strings.Contains(r.Diagnosis, "% mapped") {
		t.Errorf("diagnosis %q", r.Diagnosis)
	}
	if strings.Contains(changes, "send with MSG_ZEROCOPY") || strings.Contains(changes, "PageAlignedMSS") {
		t.Errorf("the verdict asks for changes where everything maps:\n%s", changes)
	}
}

// The CPU comparison runs its receivers over real conns, every byte checked: the
// ModeZeroCopy receivers map the stream, the ModeCopy one copies it, and every figure
// the verdict reads is there.
func TestCostRun(t *testing.T) {
	requireMapping(t)
	c := costRun(0, 2, goroutineSender, true, true, func(string) {})
	if c.Error != "" {
		t.Fatal(c.Error)
	}
	if c.BytesPerTransfer <= 0 || len(c.Receivers) != len(costReceivers) {
		t.Fatalf("%d bytes per transfer, %d receivers", c.BytesPerTransfer, len(c.Receivers))
	}
	for _, row := range c.Receivers {
		if len(row.Samples) != 2 || row.CPUPerMiB <= 0 || row.Ratio <= 0 {
			t.Errorf("%s: samples %v, median %v, ratio %v", row.Key, row.Samples, row.CPUPerMiB, row.Ratio)
		}
		switch row.Key {
		case "net_read":
			if row.Stats != nil {
				t.Errorf("net.TCPConn has Stats")
			}
		case "copy_next":
			if row.Stats == nil || row.Stats.MappedBytes != 0 || row.Stats.CopiedBytes != uint64(2*c.BytesPerTransfer) {
				t.Errorf("%s: %+v, want %d bytes copied", row.Key, row.Stats, 2*c.BytesPerTransfer)
			}
		default:
			if row.Stats == nil || row.MappedPct < mostlyMapped {
				t.Errorf("%s: %.2f%% mapped, want >= %d%% (%+v)", row.Key, row.MappedPct, mostlyMapped, row.Stats)
			}
		}
	}
	if len(c.MapCopyReadSamples) != 2 || len(c.MapCopyNextSamples) != 2 || c.MapCopyRead <= 0 || c.MapCopyNext <= 0 {
		t.Errorf("map/copy ratios %v %v", c.MapCopyReadSamples, c.MapCopyNextSamples)
	}
	if v := Decide(testHost(), Measurements{Cost: c}); v.MappingPays == "unknown" {
		t.Errorf("the verdict could not read the comparison: %v", v.Findings)
	}
}
