package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// docTestHost is a healthy Linux host on loopback only.
func docTestHost() docHost {
	return docHost{
		OS: "linux", Kernel: "6.18.0", Seccomp: 0, MaxMapCount: 65530, Mappings: 60,
		RlimitAS: -1, VirtualMemory: 1 << 30, PageSize: 4096, HighOrderAllocDisable: 0,
	}
}

// docTestStats makes Stats with mapped bytes and copied bytes by cause.
func docTestStats(mapped uint64, causes map[string]uint64) zcnet.Stats {
	st := zcnet.Stats{MappedBytes: mapped}
	for k, v := range causes {
		switch k {
		case "CopiedPolicy":
			st.CopiedPolicy = v
		case "CopiedDisabled":
			st.CopiedDisabled = v
		case "CopiedTail":
			st.CopiedTail = v
		case "CopiedSegment":
			st.CopiedSegment = v
		case "CopiedPageKind":
			st.CopiedPageKind = v
		default:
			panic("unknown cause " + k) // a typo in a test table
		}
		st.CopiedBytes += v
	}
	return st
}

// docTestRun makes a cause run as docCauseRunOnce would report it.
func docTestRun(name string, st zcnet.Stats) docCauseRun {
	r := docCauseRun{Name: name, Title: name, Bytes: int64(st.MappedBytes + st.CopiedBytes), Verified: true, Stats: st}
	r.MappedPct = 100 * st.MappedShare()
	r.MainCause = docMainCause(st)
	r.Diagnosis = docDiagnose(r)
	return r
}

// docTestCost makes a cost comparison with the per-round map/copy ratios given.
func docTestCost(mapped float64, read, next []float64) *docCost {
	c := &docCost{Rounds: len(read), BytesPerTransfer: 64 << 20, BusyGoroutine: true}
	for _, r := range docCostReceivers {
		row := docCostRow{Key: r.key, Receiver: r.name, CPUPerMiB: 200, Ratio: 1}
		if r.key != "net_read" {
			st := zcnet.Stats{MappedBytes: uint64(mapped * 1e6), CopiedBytes: uint64((100 - mapped) * 1e6)}
			if r.key == "copy_next" {
				st = zcnet.Stats{CopiedBytes: 100e6, CopiedPolicy: 100e6}
			}
			row.Stats = &st
			row.MappedPct = 100 * st.MappedShare()
		}
		c.Receivers = append(c.Receivers, row)
	}
	c.MapCopyReadSamples, c.MapCopyNextSamples = read, next
	c.MapCopyRead, c.MapCopyNext = cpumeter.Median(read), cpumeter.Median(next)
	return c
}

// docTestCauses are cause runs as this machine gives them once every cause is counted.
func docTestCauses() []docCauseRun {
	return []docCauseRun{
		docTestRun(docRunPlain, docTestStats(0, map[string]uint64{"CopiedPageKind": 32 << 20})),
		docTestRun(docRunNoMSS, docTestStats(30<<20, map[string]uint64{"CopiedSegment": 1 << 20, "CopiedTail": 1 << 20})),
		docTestRun(docRunZeroCopy, docTestStats(32<<20, nil)),
	}
}

func TestDoctorVerdict(t *testing.T) {
	type tc struct {
		name       string
		host       func(*docHost)
		m          func(*docMeasurements)
		mode, pays string
		changes    []string // substrings some change must contain
		noChanges  []string // substrings no change may contain
		findings   []string
		noFindings []string
		summary    []string
	}
	cases := []tc{
		{
			name: "unsupported by a sandbox",
			host: func(h *docHost) { h.SupportedError = "zcnet: mmap on a TCP socket refused: operation not permitted" },
			m:    func(m *docMeasurements) { *m = docMeasurements{Skipped: "zcnet cannot map here"} },
			mode: "ModeAuto", pays: "no",
			changes:   []string{"seccomp"},
			noChanges: []string{"MSG_ZEROCOPY", "PageAlignedMSS"},
			findings:  []string{"mmap on a TCP socket refused"},
		},
		{
			name: "kernel too old",
			host: func(h *docHost) {
				h.Kernel = "4.14.1"
				h.SupportedError = "zcnet: kernel lacks TCP_ZEROCOPY_RECEIVE (Linux 4.18+)"
			},
			m:    func(m *docMeasurements) { *m = docMeasurements{Skipped: "zcnet cannot map here"} },
			mode: "ModeAuto", pays: "no",
			changes: []string{"4.18"},
		},
		{
			name: "not Linux",
			host: func(h *docHost) { h.OS, h.Kernel, h.SupportedError = "darwin", "", "zcnet: not Linux" },
			m:    func(m *docMeasurements) { *m = docMeasurements{Skipped: "zcnet cannot map here"} },
			mode: "ModeAuto", pays: "no",
			changes: []string{"Linux-only"},
		},
		{
			name: "mapping costs more",
			m: func(m *docMeasurements) {
				m.Cost = docTestCost(100, []float64{1.3, 1.2, 1.4}, []float64{1.1, 1.0, 1.2})
			},
			mode: "ModeAuto", pays: "no",
			summary:  []string{"keep ModeAuto", "does not clearly pay"},
			findings: []string{"Read 1.30x", "Next 1.10x"},
		},
		{
			name: "mapping pays for Next only",
			m: func(m *docMeasurements) {
				m.Cost = docTestCost(100, []float64{1.2, 1.1, 1.3}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeZeroCopy", pays: "next",
			summary: []string{"Next or WriteTo", "ModeAuto (the default) everywhere else"},
		},
		{
			name: "mapping pays with Read",
			m: func(m *docMeasurements) {
				m.Cost = docTestCost(100, []float64{0.7, 0.6, 0.8}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeZeroCopy", pays: "yes",
		},
		{
			name: "a round disagrees",
			m: func(m *docMeasurements) {
				m.Cost = docTestCost(100, []float64{0.8, 0.85, 1.1}, []float64{0.8, 1.05, 0.7})
			},
			mode: "ModeAuto", pays: "no",
			findings: []string{"rounds disagree on mapping with Read (map/copy 0.80x 0.85x 1.10x)", "rounds disagree on mapping with Next"},
		},
		{
			name: "one outlier in five rounds",
			m: func(m *docMeasurements) {
				m.Cost = docTestCost(100, []float64{1.0, 1.1, 0.9, 1.2, 1.0}, []float64{0.58, 0.68, 1.35, 0.63, 0.62})
			},
			mode: "ModeZeroCopy", pays: "next",
			noFindings: []string{"disagree"},
		},
		{
			name: "the cost runs did not map",
			m: func(m *docMeasurements) {
				m.Cost = docTestCost(40, []float64{0.5, 0.5, 0.5}, []float64{0.5, 0.5, 0.5})
			},
			mode: "ModeAuto", pays: "unknown",
			findings: []string{"does not price mapping"},
		},
		{
			name: "cost failed",
			m: func(m *docMeasurements) {
				m.Cost = &docCost{Error: "sender: exit status 1"}
			},
			mode: "ModeAuto", pays: "unknown",
			findings: []string{"sender: exit status 1"},
		},
		{
			name:     "cost not measured",
			mode:     "ModeAuto",
			pays:     "unknown",
			findings: []string{"-seconds 0"},
		},
		{
			name:     "every cause named",
			mode:     "ModeAuto",
			pays:     "unknown",
			changes:  []string{"MSG_ZEROCOPY", "high_order_alloc_disable=1", "PageAlignedMSS"},
			findings: []string{"CopiedPageKind", "CopiedSegment", "CopiedTail", "100.0% mapped"},
		},
		{
			name: "ordinary senders map with the sysctl",
			host: func(h *docHost) { h.HighOrderAllocDisable = 1 },
			m: func(m *docMeasurements) {
				m.Causes[0] = docTestRun(docRunPlain, docTestStats(32<<20, nil))
			},
			mode: "ModeAuto", pays: "unknown",
			noChanges: []string{"send with MSG_ZEROCOPY", "high_order_alloc_disable"},
			changes:   []string{"PageAlignedMSS"},
		},
		{
			name: "causes not reported: the runs' contrast decides",
			host: func(h *docHost) { h.HighOrderAllocDisable = -1 },
			m: func(m *docMeasurements) {
				m.Causes[0] = docTestRun(docRunPlain, zcnet.Stats{CopiedBytes: 32 << 20})
				m.Causes[1] = docTestRun(docRunNoMSS, zcnet.Stats{MappedBytes: 30 << 20, CopiedBytes: 2 << 20})
			},
			mode: "ModeAuto", pays: "unknown",
			changes:  []string{"MSG_ZEROCOPY", "PageAlignedMSS"},
			findings: []string{"causes not reported"},
		},
		{
			name: "even the zerocopy sender does not map",
			m: func(m *docMeasurements) {
				m.Causes[2] = docTestRun(docRunZeroCopy, docTestStats(1<<20, map[string]uint64{"CopiedDisabled": 31 << 20}))
				m.Causes[2].Stats.FallbackReason = "mmap: cannot allocate memory"
				m.Causes[2].Diagnosis = docDiagnose(m.Causes[2])
			},
			mode: "ModeAuto", pays: "unknown",
			changes: []string{"CopiedDisabled", "cannot allocate memory"},
		},
		{
			name: "a NIC too small and not splitting",
			host: func(h *docHost) {
				h.Interfaces = []docIface{{Name: "eth0", Up: true, MTU: 1500, PayloadIPv4: 1448, PayloadIPv6: 1428, HeaderSplit: "disabled"}}
			},
			mode: "ModeAuto", pays: "unknown",
			changes:   []string{"eth0: MTU 1500 carries 1448 bytes", "at least 4148 (IPv4) or 4168 (IPv6)", "header split is disabled"},
			noChanges: []string{"no network interface"},
		},
		{
			name: "a NIC that can map",
			host: func(h *docHost) {
				h.Interfaces = []docIface{{Name: "eth1", Up: true, MTU: 9000, PayloadIPv4: 8948, PayloadIPv6: 8928, HeaderSplit: "enabled"}}
			},
			mode: "ModeAuto", pays: "unknown",
			noChanges: []string{"eth1"},
		},
		{
			name: "loopback only",
			host: func(h *docHost) {
				h.Interfaces = []docIface{{Name: "ifb0", MTU: 1500, PayloadIPv4: 1448, HeaderSplit: "unknown"}}
			},
			mode: "ModeAuto", pays: "unknown",
			findings:  []string{"only loopback"},
			noChanges: []string{"ifb0"},
		},
		{
			name: "few mappings left",
			host: func(h *docHost) { h.MaxMapCount, h.Mappings = 65530, 64000 },
			mode: "ModeAuto", pays: "unknown",
			changes: []string{"vm.max_map_count"},
		},
		{
			name: "address space limited",
			host: func(h *docHost) { h.RlimitAS = 4 << 30 },
			mode: "ModeAuto", pays: "unknown",
			changes: []string{"RLIMIT_AS"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := docTestHost()
			if c.host != nil {
				c.host(&h)
			}
			m := docMeasurements{Causes: docTestCauses()}
			if c.m != nil {
				c.m(&m)
			}
			v := docDecide(h, m)
			if v.Mode != c.mode || v.MappingPays != c.pays {
				t.Errorf("mode %q, mapping pays %q; want %q, %q\n%s", v.Mode, v.MappingPays, c.mode, c.pays, v.Summary)
			}
			if v.Summary == "" {
				t.Error("no summary")
			}
			changes, findings := strings.Join(v.Changes, "\n"), strings.Join(v.Findings, "\n")
			for _, s := range c.changes {
				if !strings.Contains(changes, s) {
					t.Errorf("changes do not name %q:\n%s", s, changes)
				}
			}
			for _, s := range c.noChanges {
				if strings.Contains(changes, s) {
					t.Errorf("changes name %q:\n%s", s, changes)
				}
			}
			for _, s := range c.findings {
				if !strings.Contains(findings, s) {
					t.Errorf("findings do not name %q:\n%s", s, findings)
				}
			}
			for _, s := range c.noFindings {
				if strings.Contains(findings, s) {
					t.Errorf("findings name %q:\n%s", s, findings)
				}
			}
			for _, s := range c.summary {
				if !strings.Contains(v.Summary, s) {
					t.Errorf("summary does not say %q: %s", s, v.Summary)
				}
			}
			// Pure: the same input gives the same verdict.
			if w := docDecide(h, m); strings.Join(w.Changes, "\n") != changes || w.Summary != v.Summary {
				t.Error("a second call gave another verdict")
			}
		})
	}
}

func TestDoctorChecks(t *testing.T) {
	status := func(cs []docCheck, name string) string {
		for _, c := range cs {
			if c.Name == name {
				return c.Status
			}
		}
		return "(missing)"
	}
	h := docTestHost()
	cs := docChecks(h)
	for name, want := range map[string]string{
		"kernel": docOK, "supported": docOK, "seccomp": docOK, "max_map_count": docOK,
		"rlimit_as": docOK, "page_size": docOK, "high_order_alloc_disable": docWarn,
		"interfaces": docWarn, "container": "(missing)",
	} {
		if got := status(cs, name); got != want {
			t.Errorf("%s: status %q, want %q", name, got, want)
		}
	}

	h.Kernel, h.SupportedError, h.Seccomp = "4.9.0", "zcnet: kernel lacks TCP_ZEROCOPY_RECEIVE", 2
	h.MaxMapCount, h.Mappings, h.RlimitAS, h.HighOrderAllocDisable = 1000, 900, 2<<30, 1
	h.Container = "docker (/.dockerenv)"
	h.Interfaces = []docIface{
		{Name: "a", Up: true, MTU: 1500, PayloadIPv4: 1448, HeaderSplit: "enabled"},
		{Name: "b", Up: true, MTU: 9000, PayloadIPv4: 8948, HeaderSplit: "enabled"},
		{Name: "c", Up: true, MTU: 9000, PayloadIPv4: 8948, HeaderSplit: "unknown", HeaderSplitDetail: "the driver reports no ring parameters"},
		{Name: "d", Up: true, MTU: 9000, PayloadIPv4: 8948, HeaderSplit: "disabled"},
	}
	cs = docChecks(h)
	for name, want := range map[string]string{
		"kernel": docFail, "supported": docFail, "seccomp": docWarn, "max_map_count": docWarn,
		"rlimit_as": docWarn, "high_order_alloc_disable": docOK, "container": docOK,
		"interface a": docWarn, "interface b": docOK, "interface c": docUnknown, "interface d": docWarn,
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

	h = docTestHost()
	h.Seccomp, h.MaxMapCount, h.RlimitAS, h.HighOrderAllocDisable, h.Kernel = -1, -1, -2, -1, "weird"
	cs = docChecks(h)
	for _, name := range []string{"kernel", "seccomp", "max_map_count", "rlimit_as", "high_order_alloc_disable"} {
		if got := status(cs, name); got != docUnknown {
			t.Errorf("%s: status %q, want unknown", name, got)
		}
	}
}

func TestDoctorParseRelease(t *testing.T) {
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
		major, minor, ok := docParseRelease(c.in)
		if major != c.major || minor != c.minor || ok != c.ok {
			t.Errorf("docParseRelease(%q) = %d, %d, %v; want %d, %d, %v", c.in, major, minor, ok, c.major, c.minor, c.ok)
		}
	}
}

// docStatusFixture is the start of a /proc/self/status.
const docStatusFixture = `Name:	zcperf
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

func TestDoctorProcParsers(t *testing.T) {
	if v, ok := docStatusField(docStatusFixture, "Seccomp"); !ok || v != "2" {
		t.Errorf("Seccomp = %q, %v; want 2", v, ok)
	}
	if v, ok := docStatusField(docStatusFixture, "Seccomp_filters"); !ok || v != "1" {
		t.Errorf("Seccomp_filters = %q, %v; want 1", v, ok)
	}
	if _, ok := docStatusField(docStatusFixture, "Secc"); ok {
		t.Error("a prefix of a field matched")
	}
	if _, ok := docStatusField("Name:\tx", "Seccomp"); ok {
		t.Error("a missing Seccomp field was found")
	}
	if got := docStatusKB(docStatusFixture, "VmSize"); got != 1242036<<10 {
		t.Errorf("VmSize = %d", got)
	}
	if got := docStatusKB(docStatusFixture, "State"); got != -1 {
		t.Errorf("a non-number field parsed as %d", got)
	}
	for in, want := range map[string]int{"65530\n": 65530, "0\n": 0, "1": 1, "": -1, "x\n": -1} {
		if got := docParseInt([]byte(in)); got != want {
			t.Errorf("docParseInt(%q) = %d, want %d", in, got, want)
		}
	}
	maps := `55d1c6a00000-55d1c6a28000 r--p 00000000 fd:01 1053 /usr/bin/zcperf
7f0e2c000000-7f0e2c021000 rw-p 00000000 00:00 0
7f0e30000000-7f0e30200000 r--s 00000000 00:08 91234 socket:[91234]
7ffd5a1f0000-7ffd5a211000 rw-p 00000000 00:00 0 [stack]
`
	if n, err := docCountLines(strings.NewReader(maps)); n != 4 || err != nil {
		t.Errorf("docCountLines = %d, %v; want 4", n, err)
	}
	if n, err := docCountLines(strings.NewReader("")); n != 0 || err != nil {
		t.Errorf("docCountLines(empty) = %d, %v", n, err)
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
		got := docContainerHint(c.exists, c.getenv, c.cgroup)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("docContainerHint = %q, want %q", got, c.want)
		}
	}
}

func TestDoctorSegmentPayload(t *testing.T) {
	for _, c := range []struct{ mtu, v4, v6 int }{
		{1500, 1448, 1428}, {1400, 1348, 1328}, {9000, 8948, 8928}, {4148, 4096, 4076}, {40, 0, 0},
	} {
		if v4, v6 := docPayload(c.mtu, docIPv4Header), docPayload(c.mtu, docIPv6Header); v4 != c.v4 || v6 != c.v6 {
			t.Errorf("MTU %d: payload %d (IPv4), %d (IPv6); want %d, %d", c.mtu, v4, v6, c.v4, c.v6)
		}
	}
	if a, b := docMinMTU(4096, docIPv4Header), docMinMTU(4096, docIPv6Header); a != 4148 || b != 4168 {
		t.Errorf("minimum MTUs %d, %d; want 4148, 4168", a, b)
	}
	// The minimum MTU carries exactly a page.
	for _, ip := range []int{docIPv4Header, docIPv6Header} {
		if p := docPayload(docMinMTU(16384, ip), ip); p != 16384 {
			t.Errorf("payload at the minimum MTU is %d", p)
		}
	}
}

func TestDoctorNetlink(t *testing.T) {
	// A request as the ethtool query sends it, parsed back.
	hdr := docNlAttr(2, append([]byte("eth0"), 0)) // ETHTOOL_A_HEADER_DEV_NAME
	req := docGenlMsg(0x1a, 7, 0xf, 1, docNlAttr(1|0x8000, hdr))
	if len(req)%4 != 0 || int(binary.NativeEndian.Uint32(req)) != len(req) {
		t.Fatalf("request length field %d, length %d", binary.NativeEndian.Uint32(req), len(req))
	}
	msgs, err := docParseNlMsgs(req)
	if err != nil || len(msgs) != 1 || msgs[0].typ != 0x1a || msgs[0].seq != 7 {
		t.Fatalf("parsed %+v, %v", msgs, err)
	}
	if msgs[0].data[0] != 0xf || msgs[0].data[1] != 1 {
		t.Errorf("genetlink header %x", msgs[0].data[:4])
	}
	attrs, err := docParseNlAttrs(msgs[0].data[docGenlHdrLen:])
	if err != nil {
		t.Fatal(err)
	}
	nested, ok := attrs[1] // the nested flag is masked off
	if !ok {
		t.Fatalf("no header attribute in %v", attrs)
	}
	inner, err := docParseNlAttrs(nested)
	if err != nil || string(inner[2]) != "eth0\x00" {
		t.Errorf("device name %q, %v", inner[2], err)
	}

	// A rings reply (fixture: a header, rx 1024, tcp-data-split) in a datagram that
	// starts with another message, and the split setting read from it.
	reply := func(split []byte) []byte {
		var a []byte
		a = append(a, docNlAttr(1|0x8000, docNlAttr(2, append([]byte("eth0"), 0)))...)
		a = append(a, docNlAttr(6, binary.NativeEndian.AppendUint32(nil, 1024))...)
		if split != nil {
			a = append(a, docNlAttr(docRingsTCPDataSplit, split)...)
		}
		return append(docGenlMsg(0x1a, 3, 0x10, 1, nil), docGenlMsg(0x1a, 8, 0x10, 1, a)...)
	}
	for _, c := range []struct {
		split []byte
		want  string
		why   string
	}{
		{[]byte{2}, "enabled", ""},
		{[]byte{1}, "disabled", ""},
		{[]byte{0}, "unknown", "reports tcp-data-split as unknown"},
		{nil, "unknown", "does not report"},
		{[]byte{9}, "unknown", "value 9"},
	} {
		msgs, err := docParseNlMsgs(reply(c.split))
		if err != nil || len(msgs) != 2 || msgs[1].seq != 8 {
			t.Fatalf("parsed %d messages, %v", len(msgs), err)
		}
		attrs, err := docParseNlAttrs(msgs[1].data[docGenlHdrLen:])
		if err != nil {
			t.Fatal(err)
		}
		got, why := docDataSplit(attrs)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("split %v: %q (%s), want %q (%s)", c.split, got, why, c.want, c.why)
		}
	}

	// Truncated input is an error, never a panic.
	full := reply([]byte{2})
	for n := 1; n < len(full); n++ {
		msgs, err := docParseNlMsgs(full[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if len(m.data) >= docGenlHdrLen {
				docParseNlAttrs(m.data[docGenlHdrLen:])
			}
		}
	}
	if _, err := docParseNlMsgs(full[:10]); err == nil {
		t.Error("a 10-byte message parsed")
	}
	if _, err := docParseNlAttrs([]byte{8, 0, 1, 0, 1}); err == nil {
		t.Error("an attribute longer than its buffer parsed")
	}
	if _, err := docParseNlAttrs([]byte{2, 0, 1, 0}); err == nil {
		t.Error("an attribute shorter than its header parsed")
	}
}

func TestDoctorDiagnose(t *testing.T) {
	r := docTestRun("x", docTestStats(30<<20, map[string]uint64{"CopiedTail": 1 << 20, "CopiedSegment": 3 << 20}))
	if r.MainCause != "CopiedSegment" {
		t.Errorf("main cause %q", r.MainCause)
	}
	d := r.Diagnosis
	seg, tail := strings.Index(d, "CopiedSegment"), strings.Index(d, "CopiedTail")
	if seg < 0 || tail < 0 || seg > tail || !strings.Contains(d, "88.2% mapped") {
		t.Errorf("diagnosis does not name the causes largest first: %s", d)
	}
	if d := docTestRun("x", docTestStats(1<<20, nil)).Diagnosis; !strings.Contains(d, "100.0% mapped, nothing copied") {
		t.Errorf("diagnosis %q", d)
	}
	if r := docTestRun("x", zcnet.Stats{CopiedBytes: 1 << 20}); r.MainCause != "" || !strings.Contains(r.Diagnosis, "not reported") {
		t.Errorf("unreported causes: %q, %q", r.MainCause, r.Diagnosis)
	}
	if d := docDiagnose(docCauseRun{Error: "boom"}); d != "failed: boom" {
		t.Errorf("diagnosis of a failed run %q", d)
	}
}

func TestDoctorHelpers(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := cpumeter.Median(c.xs); got != c.want {
			t.Errorf("cpumeter.Median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
	for _, c := range []struct {
		samples []float64
		want    bool
	}{
		{[]float64{0.8, 0.7, 0.85}, true},
		{[]float64{0.8, 0.7, 1.0}, false},
		{[]float64{0.6, 0.7, 1.4, 0.6, 0.6}, true},
		{[]float64{0.6, 0.7, 1.4, 1.1, 0.6}, false},
		{[]float64{0.95, 0.92, 0.91}, false},
		{nil, false},
	} {
		if got := docPaysIn(cpumeter.Median(c.samples), c.samples); got != c.want {
			t.Errorf("docPaysIn(%v) = %v", c.samples, got)
		}
	}
	var v zcsend.Verifier
	p := make([]byte, 3<<20)
	for i := range p {
		p[i] = byte((uint32(i%(1<<20)) * 2654435761) >> 24)
	}
	v.Write(p[:5])
	v.Write(p[5:])
	if v.Err() != nil || v.Len() != int64(len(p)) {
		t.Fatalf("the pattern itself: %v", v.Err())
	}
	p[2<<20+7] ^= 1
	v = zcsend.Verifier{}
	v.Write(p)
	if err := v.Err(); err == nil || err.Error() != fmt.Sprintf("zcsend: 1 of %d bytes differ from the pattern (first at offset %d)", len(p), 2<<20+7) {
		t.Errorf("one flipped byte: %v", err)
	}
	for n, want := range map[int64]string{512: "512 B", 4096: "4 KiB", 32 << 20: "32 MiB", 2 << 30: "2 GiB"} {
		if got := docBytes(n); got != want {
			t.Errorf("docBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDoctorJSONNames(t *testing.T) {
	rep := docReport{Host: docTestHost(), Measurements: docMeasurements{Causes: docTestCauses()}}
	rep.Measurements.Cost = docTestCost(100, []float64{1.2}, []float64{0.95})
	rep.Checks = docChecks(rep.Host)
	rep.Verdict = docDecide(rep.Host, rep.Measurements)
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"host", "checks", "measurements", "verdict"} {
		if _, ok := top[k]; !ok {
			t.Errorf("no %q in the JSON", k)
		}
	}
	for _, k := range []string{
		`"high_order_alloc_disable":0`, `"max_map_count":65530`, `"causes":[`, `"main_cause":"CopiedPageKind"`,
		`"mapped_pct":`, `"CopiedSegment":`, `"cpu_us_per_mib":200`, `"ratio_to_net":`, `"map_copy_ratio_next":0.95`,
		`"busy_goroutine":true`, `"mode":"ModeAuto"`, `"mapping_pays":"no"`, `"summary":`, `"changes":[`, `"status":"warn"`,
	} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s", k)
		}
	}
}

func TestDoctorUsage(t *testing.T) {
	stderr := os.Stderr
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	os.Stderr = devnull
	defer func() { os.Stderr = stderr }()
	for _, args := range [][]string{{"-seconds", "-1"}, {"-rounds", "0"}, {"extra"}, {"-nosuchflag"}} {
		if got := doctorMain(args); got != 2 {
			t.Errorf("doctorMain(%q) = %d, want 2", args, got)
		}
	}
}

// docRequireMapping skips a real-conn test where the process cannot map, naming why.
func docRequireMapping(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("zero-copy receive is Linux-only")
	}
	if err := zcnet.Supported(); err != nil {
		t.Skipf("fast path unavailable here: %v", err)
	}
}

// docCheckRun checks what every cause run must show: the whole stream, verified against
// the pattern, and causes that add up to the copied bytes.
func docCheckRun(t *testing.T, r docCauseRun, total int64) {
	t.Helper()
	if r.Error != "" || !r.Verified || r.Bytes != total {
		t.Fatalf("run %s: %d bytes, verified %v, error %q", r.Name, r.Bytes, r.Verified, r.Error)
	}
	st := r.Stats
	if st.MappedBytes+st.CopiedBytes != uint64(total) {
		t.Errorf("mapped %d + copied %d bytes, want %d", st.MappedBytes, st.CopiedBytes, total)
	}
	var sum uint64
	for _, v := range docCauses(st) {
		sum += v
	}
	if sum != st.CopiedBytes {
		t.Errorf("copy causes add up to %d, CopiedBytes is %d (%+v)", sum, st.CopiedBytes, st)
	}
}

// docRealRun runs the cause run name over 16 MiB on real loopback conns, checks what
// every run must show (docCheckRun), and returns it with the changes the verdict on it
// asks for, one a line.
func docRealRun(t *testing.T, name, title string, zerocopy, mss bool) (docCauseRun, string) {
	t.Helper()
	const total = 16 << 20
	r := docCauseRunOnce(name, title, zerocopy, mss, total, docGoroutineSender)
	docCheckRun(t, r, total)
	v := docDecide(docTestHost(), docMeasurements{Causes: []docCauseRun{r}})
	return r, strings.Join(v.Changes, "\n")
}

// An ordinary sender to a PageAlignedMSS listener on loopback sends page-sized segments
// in compound pages: the copied bytes are CopiedPageKind, and the doctor says so.
func TestDoctorCausePlainSender(t *testing.T) {
	docRequireMapping(t)
	b, err := os.ReadFile("/proc/sys/net/core/high_order_alloc_disable")
	if err != nil {
		t.Skipf("cannot read net.core.high_order_alloc_disable: %v", err)
	}
	if docParseInt(b) != 0 {
		t.Skip("net.core.high_order_alloc_disable is not 0 here: an ordinary sender's pages are order-0 and map")
	}
	r, changes := docRealRun(t, docRunPlain, "plain", false, true)
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
func TestDoctorCauseNoPageMSS(t *testing.T) {
	docRequireMapping(t)
	r, changes := docRealRun(t, docRunNoMSS, "no page MSS", true, false)
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
func TestDoctorCauseMapped(t *testing.T) {
	docRequireMapping(t)
	r, changes := docRealRun(t, docRunZeroCopy, "zerocopy", true, true)
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
func TestDoctorCostRun(t *testing.T) {
	docRequireMapping(t)
	c := docCostRun(0, 2, docGoroutineSender, true, true, func(string) {})
	if c.Error != "" {
		t.Fatal(c.Error)
	}
	if c.BytesPerTransfer <= 0 || len(c.Receivers) != len(docCostReceivers) {
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
			if row.Stats == nil || row.MappedPct < docMostlyMapped {
				t.Errorf("%s: %.2f%% mapped, want >= %d%% (%+v)", row.Key, row.MappedPct, docMostlyMapped, row.Stats)
			}
		}
	}
	if len(c.MapCopyReadSamples) != 2 || len(c.MapCopyNextSamples) != 2 || c.MapCopyRead <= 0 || c.MapCopyNext <= 0 {
		t.Errorf("map/copy ratios %v %v", c.MapCopyReadSamples, c.MapCopyNextSamples)
	}
	if v := docDecide(docTestHost(), docMeasurements{Cost: c}); v.MappingPays == "unknown" {
		t.Errorf("the verdict could not read the comparison: %v", v.Findings)
	}
}

// The host facts read on this machine agree with what the process can see for itself.
func TestDoctorHost(t *testing.T) {
	h := doctorHost()
	if h.OS != runtime.GOOS || h.PageSize != os.Getpagesize() {
		t.Errorf("OS %q, page size %d", h.OS, h.PageSize)
	}
	if (h.SupportedError == "") != (zcnet.Supported() == nil) {
		t.Errorf("supported error %q, zcnet.Supported() %v", h.SupportedError, zcnet.Supported())
	}
	for _, ifc := range h.Interfaces {
		if ifc.Name == "lo" || ifc.PayloadIPv4 != docPayload(ifc.MTU, docIPv4Header) {
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
	if _, _, ok := docParseRelease(h.Kernel); !ok {
		t.Errorf("kernel release %q", h.Kernel)
	}
	if h.Seccomp < 0 || h.MaxMapCount <= 0 || h.Mappings <= 0 || h.Mappings >= h.MaxMapCount || h.VirtualMemory <= 0 || h.RlimitAS == -2 {
		t.Errorf("host facts %+v", h)
	}
	if _, err := os.Stat("/proc/sys/net/core/high_order_alloc_disable"); err == nil && h.HighOrderAllocDisable < 0 {
		t.Errorf("high_order_alloc_disable unread: %d", h.HighOrderAllocDisable)
	}
}
