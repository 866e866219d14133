package doctor

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/zcnet/zcnet"
)

func TestChecks(t *testing.T) {
	status := func(cs []Check, name string) string {
		for _, c := range cs {
			if c.Name == name {
				return c.Status
			}
		}
		return "(missing)"
	}
	h := testHost()
	cs := checks(h)
	for name, want := range map[string]string{
		"kernel": statusOK, "supported": statusOK, "seccomp": statusOK, "limits": statusOK,
		"page_size": statusOK, "high_order_alloc_disable": statusWarn,
		"interfaces": statusWarn, "container": "(missing)",
	} {
		if got := status(cs, name); got != want {
			t.Errorf("%s: status %q, want %q", name, got, want)
		}
	}

	h.Kernel, h.SupportedError, h.Seccomp = "4.9.0", "zcnet: kernel lacks TCP_ZEROCOPY_RECEIVE", 2
	h.Limits.MaxRings, h.HighOrderAllocDisable = 0, 1
	h.Container = "docker (/.dockerenv)"
	h.Interfaces = []Iface{
		{Name: "a", Up: true, MTU: 1500, PayloadIPv4: 1448, HeaderSplit: "enabled"},
		{Name: "b", Up: true, MTU: 9000, PayloadIPv4: 8948, HeaderSplit: "enabled"},
		{Name: "c", Up: true, MTU: 9000, PayloadIPv4: 8948, HeaderSplit: "unknown", HeaderSplitDetail: "the driver reports no ring parameters"},
		{Name: "d", Up: true, MTU: 9000, PayloadIPv4: 8948, HeaderSplit: "disabled"},
	}
	cs = checks(h)
	for name, want := range map[string]string{
		"kernel": statusFail, "supported": statusFail, "seccomp": statusWarn, "limits": statusFail,
		"high_order_alloc_disable": statusOK, "container": statusOK,
		"interface a": statusWarn, "interface b": statusOK, "interface c": statusUnknown, "interface d": statusWarn,
		"interfaces": "(missing)",
	} {
		if got := status(cs, name); got != want {
			t.Errorf("%s: status %q, want %q", name, got, want)
		}
	}
	for _, c := range cs {
		if c.Detail == "" || c.Value == "" {
			t.Errorf("check %q has no value or explanation: %+v", c.Name, c)
		}
	}

	h = testHost()
	h.Seccomp, h.HighOrderAllocDisable, h.Kernel = -1, -1, "weird"
	cs = checks(h)
	for _, name := range []string{"kernel", "seccomp", "high_order_alloc_disable"} {
		if got := status(cs, name); got != statusUnknown {
			t.Errorf("%s: status %q, want unknown", name, got)
		}
	}
}

// The limits check reports the room zcnet.DefaultLimits leaves, and the limit that binds.
func TestLimitsCheck(t *testing.T) {
	limits := func(h Host) Check {
		for _, c := range checks(h) {
			if c.Name == "limits" {
				return c
			}
		}
		t.Fatal("no limits check")
		return Check{}
	}
	h := testHost()
	c := limits(h)
	if c.Value != "32735 conns map at once" || !strings.Contains(c.Detail, "MaxRingBytes no bound") || !strings.Contains(c.Detail, "MaxRings binds") {
		t.Errorf("%+v", c)
	}
	h.Limits.MaxRingBytes, h.RlimitAS = 64<<20, 1<<30
	c = limits(h)
	if c.Value != "8 conns map at once" || !strings.Contains(c.Detail, "64 MiB = 8 rings of 8 MiB (from RLIMIT_AS 1 GiB)") || !strings.Contains(c.Detail, "MaxRingBytes binds") {
		t.Errorf("%+v", c)
	}
}

func TestParseRelease(t *testing.T) {
	for _, c := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"6.18.44-fc-v657", 6, 18, true},
		{"4.18.0", 4, 18, true},
		{"5.4", 5, 4, true},
		{"3.10.0-1160.el7.x86_64", 3, 10, true},
		{"6.1-rc3", 6, 1, true},
		{"", 0, 0, false},
		{"linux", 0, 0, false},
		{"x.1", 0, 0, false},
	} {
		major, minor, ok := parseRelease(c.in)
		if major != c.major || minor != c.minor || ok != c.ok {
			t.Errorf("parseRelease(%q) = %d, %d, %v; want %d, %d, %v", c.in, major, minor, ok, c.major, c.minor, c.ok)
		}
	}
}

// statusFixture is the start of a /proc/self/status.
const statusFixture = `Name:	zcperf
Umask:	0022
State:	R (running)
VmPeak:	 1242292 kB
VmSize:	 1242036 kB
VmRSS:	    9728 kB
Threads:	5
NoNewPrivs:	0
Seccomp:	2
Seccomp_filters:	1
Speculation_Store_Bypass:	thread vulnerable
`

func TestProcParsers(t *testing.T) {
	if v, ok := statusField(statusFixture, "Seccomp"); !ok || v != "2" {
		t.Errorf("Seccomp = %q, %v; want 2", v, ok)
	}
	if v, ok := statusField(statusFixture, "Seccomp_filters"); !ok || v != "1" {
		t.Errorf("Seccomp_filters = %q, %v; want 1", v, ok)
	}
	if _, ok := statusField(statusFixture, "Secc"); ok {
		t.Error("a prefix of a field matched")
	}
	if _, ok := statusField("Name:\tx", "Seccomp"); ok {
		t.Error("a missing Seccomp field was found")
	}
	for in, want := range map[string]int{"65530\n": 65530, "0\n": 0, "1": 1, "": -1, "x\n": -1} {
		if got := parseInt([]byte(in)); got != want {
			t.Errorf("parseInt(%q) = %d, want %d", in, got, want)
		}
	}
	none := func(string) bool { return false }
	noenv := func(string) string { return "" }
	for _, c := range []struct {
		exists func(string) bool
		getenv func(string) string
		cgroup string
		want   string
	}{
		{none, noenv, "0::/\n", ""},
		{func(p string) bool { return p == "/.dockerenv" }, noenv, "0::/\n", "docker"},
		{func(p string) bool { return p == "/run/.containerenv" }, noenv, "", "podman"},
		{none, func(k string) string { return map[string]string{"container": "lxc"}[k] }, "", "lxc ($container)"},
		{none, noenv, "12:pids:/kubepods/besteffort/pod1\n", "kubepods"},
	} {
		got := containerHint(c.exists, c.getenv, c.cgroup)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("containerHint = %q, want %q", got, c.want)
		}
	}
}

func TestSegmentPayload(t *testing.T) {
	for _, c := range []struct{ mtu, v4, v6 int }{
		{1500, 1448, 1428}, {1400, 1348, 1328}, {9000, 8948, 8928}, {4148, 4096, 4076}, {40, 0, 0},
	} {
		if v4, v6 := payload(c.mtu, ipv4Header), payload(c.mtu, ipv6Header); v4 != c.v4 || v6 != c.v6 {
			t.Errorf("MTU %d: payload %d (IPv4), %d (IPv6); want %d, %d", c.mtu, v4, v6, c.v4, c.v6)
		}
	}
	if a, b := minMTU(4096, ipv4Header), minMTU(4096, ipv6Header); a != 4148 || b != 4168 {
		t.Errorf("minimum MTUs %d, %d; want 4148, 4168", a, b)
	}
	// The minimum MTU carries exactly a page.
	for _, ip := range []int{ipv4Header, ipv6Header} {
		if p := payload(minMTU(16384, ip), ip); p != 16384 {
			t.Errorf("payload at the minimum MTU is %d", p)
		}
	}
}

// The host facts read on this machine agree with what the process can see for itself.
func TestHost(t *testing.T) {
	h := readHost()
	if h.OS != runtime.GOOS || h.PageSize != os.Getpagesize() {
		t.Errorf("OS %q, page size %d", h.OS, h.PageSize)
	}
	if (h.SupportedError == "") != (zcnet.Supported() == nil) {
		t.Errorf("supported error %q, zcnet.Supported() %v", h.SupportedError, zcnet.Supported())
	}
	for _, ifc := range h.Interfaces {
		if ifc.Name == "lo" || ifc.PayloadIPv4 != payload(ifc.MTU, ipv4Header) {
			t.Errorf("interface %+v", ifc)
		}
		switch ifc.HeaderSplit {
		case "enabled", "disabled":
		case "unknown":
			if ifc.HeaderSplitDetail == "" {
				t.Errorf("interface %s: header split unknown with no reason", ifc.Name)
			}
		default:
			t.Errorf("interface %s: header split %q", ifc.Name, ifc.HeaderSplit)
		}
	}
	if runtime.GOOS != "linux" {
		return
	}
	if _, _, ok := parseRelease(h.Kernel); !ok {
		t.Errorf("kernel release %q", h.Kernel)
	}
	if h.Seccomp < 0 || h.MaxMapCount <= 0 || h.RlimitAS == -2 || h.Limits != zcnet.DefaultLimits() || h.Limits.MaxRings <= 0 {
		t.Errorf("host facts %+v", h)
	}
	if _, err := os.Stat("/proc/sys/net/core/high_order_alloc_disable"); err == nil && h.HighOrderAllocDisable < 0 {
		t.Errorf("high_order_alloc_disable unread: %d", h.HighOrderAllocDisable)
	}
}
