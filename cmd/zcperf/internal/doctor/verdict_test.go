package doctor

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// testHost is a healthy Linux host on loopback only.
func testHost() Host {
	return Host{
		OS: "linux", Kernel: "6.18.0", Seccomp: 0, MaxMapCount: 65530, RlimitAS: -1, PageSize: 4096,
		HighOrderAllocDisable: 0,
		Limits:                zcnet.Limits{MaxRings: 32735, MaxRingBytes: 1 << 62, MaxPinnedBytes: 1 << 30},
	}
}

// testStats makes Stats with mapped bytes and copied bytes by cause.
func testStats(mapped uint64, causes map[string]uint64) zcnet.Stats {
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

// testRun makes a cause run as causeRunOnce would report it.
func testRun(name string, st zcnet.Stats) CauseRun {
	r := CauseRun{Name: name, Title: name, Bytes: int64(st.MappedBytes + st.CopiedBytes), Verified: true, Stats: st}
	r.MappedPct = 100 * st.MappedShare()
	r.MainCause = mainCause(st)
	r.Diagnosis = diagnose(r)
	return r
}

// testCost makes a cost comparison with the per-round map/copy ratios given.
func testCost(mapped float64, read, next []float64) *Cost {
	c := &Cost{Rounds: len(read), BytesPerTransfer: 64 << 20, BusyGoroutine: true}
	for _, r := range costReceivers {
		row := CostRow{Key: r.key, Receiver: r.name, CPUPerMiB: 200, Ratio: 1}
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

// testCauses are cause runs as this machine gives them once every cause is counted.
func testCauses() []CauseRun {
	return []CauseRun{
		testRun(runPlain, testStats(0, map[string]uint64{"CopiedPageKind": 32 << 20})),
		testRun(runNoMSS, testStats(30<<20, map[string]uint64{"CopiedSegment": 1 << 20, "CopiedTail": 1 << 20})),
		testRun(runZeroCopy, testStats(32<<20, nil)),
	}
}

// ordinaryMaps is a host where ordinary senders' pages are order-0.
func ordinaryMaps(h *Host) { h.HighOrderAllocDisable = 1 }

// ordinaryMapped makes the ordinary sender's cause run map everything.
func ordinaryMapped(m *Measurements) { m.Causes[0] = testRun(runPlain, testStats(32<<20, nil)) }

func TestVerdict(t *testing.T) {
	type tc struct {
		name       string
		host       func(*Host)
		m          func(*Measurements)
		mode, pays string
		changes    []string // substrings some change must contain
		noChanges  []string // substrings no change may contain
		findings   []string
		noFindings []string
		summary    []string
		reason     string // the whole Reason, when given
	}
	cases := []tc{
		{
			name: "unsupported by a sandbox",
			host: func(h *Host) { h.SupportedError = "zcnet: mmap on a TCP socket refused: operation not permitted" },
			m:    func(m *Measurements) { *m = Measurements{Skipped: "zcnet cannot map here"} },
			mode: "ModeAuto", pays: "no", reason: "zcnet cannot map here",
			changes:   []string{"seccomp"},
			noChanges: []string{"MSG_ZEROCOPY", "PageAlignedMSS"},
			findings:  []string{"mmap on a TCP socket refused"},
		},
		{
			name: "kernel too old",
			host: func(h *Host) {
				h.Kernel = "4.14.1"
				h.SupportedError = "zcnet: kernel lacks TCP_ZEROCOPY_RECEIVE (Linux 4.18+)"
			},
			m:    func(m *Measurements) { *m = Measurements{Skipped: "zcnet cannot map here"} },
			mode: "ModeAuto", pays: "no",
			changes: []string{"4.18"},
		},
		{
			name: "not Linux",
			host: func(h *Host) { h.OS, h.Kernel, h.SupportedError = "darwin", "", "zcnet: not Linux" },
			m:    func(m *Measurements) { *m = Measurements{Skipped: "zcnet cannot map here"} },
			mode: "ModeAuto", pays: "no",
			changes: []string{"Linux-only"},
		},
		{
			name: "mapping costs more",
			host: ordinaryMaps,
			m: func(m *Measurements) {
				ordinaryMapped(m)
				m.Cost = testCost(100, []float64{1.3, 1.2, 1.4}, []float64{1.1, 1.0, 1.2})
			},
			mode: "ModeAuto", pays: "no", reason: "mapping measured no cheaper than copying",
			summary:  []string{"keep ModeAuto", "no cheaper than copying"},
			findings: []string{"Read 1.30x", "Next 1.10x"},
		},
		{
			name: "mapping pays for Next only",
			host: ordinaryMaps,
			m: func(m *Measurements) {
				ordinaryMapped(m)
				m.Cost = testCost(100, []float64{1.2, 1.1, 1.3}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeZeroCopy", pays: "next", reason: "real senders' pages map and mapping measured cheaper with Next and WriteTo",
			summary: []string{"Next or WriteTo", "ModeAuto (the default) everywhere else", "ordinary sender on loopback got 100.0% mapped"},
		},
		{
			name: "mapping pays with Read",
			host: ordinaryMaps,
			m: func(m *Measurements) {
				ordinaryMapped(m)
				m.Cost = testCost(100, []float64{0.7, 0.6, 0.8}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeZeroCopy", pays: "yes", reason: "real senders' pages map and mapping measured cheaper",
		},
		{
			// This host as the doctor used to see it: ModeZeroCopy measured cheaper with
			// a MSG_ZEROCOPY sender, while ordinary senders map nothing and eth0 carries
			// no page.
			name: "mapping pays, but ordinary senders map nothing",
			host: func(h *Host) {
				h.Interfaces = []Iface{{Name: "eth0", Up: true, MTU: 1400, PayloadIPv4: 1348, PayloadIPv6: 1328, HeaderSplit: "unknown"}}
			},
			m: func(m *Measurements) {
				m.Cost = testCost(100, []float64{0.7, 0.6, 0.8}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeAuto", pays: "yes", reason: "ordinary senders map 0%; no up interface carries pages that map",
			summary: []string{"does not map", "got 0.0% mapped", "eth0 carries 1348 bytes", "mapping measured cheaper"},
		},
		{
			name: "ordinary senders map nothing, but a NIC carries pages",
			host: func(h *Host) {
				h.Interfaces = []Iface{{Name: "eth1", Up: true, MTU: 9000, PayloadIPv4: 8948, PayloadIPv6: 8928, HeaderSplit: "enabled"}}
			},
			m: func(m *Measurements) {
				m.Cost = testCost(100, []float64{0.7, 0.6, 0.8}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeZeroCopy", pays: "yes", reason: "real senders' pages map and mapping measured cheaper",
			summary: []string{"interface eth1 carries pages that map"},
		},
		{
			name: "a NIC that may split headers is not counted",
			host: func(h *Host) {
				h.Interfaces = []Iface{{Name: "eth1", Up: true, MTU: 9000, PayloadIPv4: 8948, HeaderSplit: "unknown"}}
			},
			m: func(m *Measurements) {
				m.Cost = testCost(100, []float64{0.7, 0.6, 0.8}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeAuto", pays: "yes", reason: "ordinary senders map 0%; no up interface carries pages that map",
			changes: []string{"eth1: header split is unknown"},
		},
		{
			name: "ordinary senders map, cost not measured",
			host: ordinaryMaps,
			m:    ordinaryMapped,
			mode: "ModeAuto", pays: "unknown", reason: "what mapping costs was not measured",
		},
		{
			name: "the ordinary run failed",
			m: func(m *Measurements) {
				m.Causes[0].Error = "connection reset"
				m.Cost = testCost(100, []float64{0.7, 0.6, 0.8}, []float64{0.6, 0.7, 0.5})
			},
			mode: "ModeAuto", pays: "yes", reason: "what ordinary senders map was not measured; no up interface carries pages that map",
		},
		{
			name: "a round disagrees",
			host: ordinaryMaps,
			m: func(m *Measurements) {
				ordinaryMapped(m)
				m.Cost = testCost(100, []float64{0.8, 0.85, 1.1}, []float64{0.8, 1.05, 0.7})
			},
			mode: "ModeAuto", pays: "no",
			findings: []string{"rounds disagree on mapping with Read (map/copy 0.80x 0.85x 1.10x)", "rounds disagree on mapping with Next"},
		},
		{
			name: "one outlier in five rounds",
			host: ordinaryMaps,
			m: func(m *Measurements) {
				ordinaryMapped(m)
				m.Cost = testCost(100, []float64{1.0, 1.1, 0.9, 1.2, 1.0}, []float64{0.58, 0.68, 1.35, 0.63, 0.62})
			},
			mode: "ModeZeroCopy", pays: "next",
			noFindings: []string{"disagree"},
		},
		{
			name: "the cost runs did not map",
			m: func(m *Measurements) {
				m.Cost = testCost(40, []float64{0.5, 0.5, 0.5}, []float64{0.5, 0.5, 0.5})
			},
			mode: "ModeAuto", pays: "unknown",
			findings: []string{"does not price mapping"},
		},
		{
			name: "cost failed",
			m: func(m *Measurements) {
				m.Cost = &Cost{Error: "sender: exit status 1"}
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
			host: func(h *Host) { h.HighOrderAllocDisable = 1 },
			m: func(m *Measurements) {
				m.Causes[0] = testRun(runPlain, testStats(32<<20, nil))
			},
			mode: "ModeAuto", pays: "unknown",
			noChanges: []string{"send with MSG_ZEROCOPY", "high_order_alloc_disable"},
			changes:   []string{"PageAlignedMSS"},
		},
		{
			name: "causes not reported: the runs' contrast decides",
			host: func(h *Host) { h.HighOrderAllocDisable = -1 },
			m: func(m *Measurements) {
				m.Causes[0] = testRun(runPlain, zcnet.Stats{CopiedBytes: 32 << 20})
				m.Causes[1] = testRun(runNoMSS, zcnet.Stats{MappedBytes: 30 << 20, CopiedBytes: 2 << 20})
			},
			mode: "ModeAuto", pays: "unknown",
			changes:  []string{"MSG_ZEROCOPY", "PageAlignedMSS"},
			findings: []string{"causes not reported"},
		},
		{
			name: "even the zerocopy sender does not map",
			m: func(m *Measurements) {
				m.Causes[2] = testRun(runZeroCopy, testStats(1<<20, map[string]uint64{"CopiedDisabled": 31 << 20}))
				m.Causes[2].Stats.FallbackReason = "mmap: cannot allocate memory"
				m.Causes[2].Diagnosis = diagnose(m.Causes[2])
			},
			mode: "ModeAuto", pays: "unknown",
			changes: []string{"CopiedDisabled", "cannot allocate memory"},
		},
		{
			name: "a NIC too small and not splitting",
			host: func(h *Host) {
				h.Interfaces = []Iface{{Name: "eth0", Up: true, MTU: 1500, PayloadIPv4: 1448, PayloadIPv6: 1428, HeaderSplit: "disabled"}}
			},
			mode: "ModeAuto", pays: "unknown",
			changes:   []string{"eth0: MTU 1500 carries 1448 bytes", "at least 4148 (IPv4) or 4168 (IPv6)", "header split is disabled"},
			noChanges: []string{"no network interface"},
		},
		{
			name: "a NIC that can map",
			host: func(h *Host) {
				h.Interfaces = []Iface{{Name: "eth1", Up: true, MTU: 9000, PayloadIPv4: 8948, PayloadIPv6: 8928, HeaderSplit: "enabled"}}
			},
			mode: "ModeAuto", pays: "unknown",
			noChanges: []string{"eth1"},
		},
		{
			name: "loopback only",
			host: func(h *Host) {
				h.Interfaces = []Iface{{Name: "ifb0", MTU: 1500, PayloadIPv4: 1448, HeaderSplit: "unknown"}}
			},
			mode: "ModeAuto", pays: "unknown",
			findings:  []string{"only loopback"},
			noChanges: []string{"ifb0"},
		},
		{
			name: "the limits let no conn map",
			host: func(h *Host) { h.Limits.MaxRings, h.MaxMapCount = 0, 100 },
			mode: "ModeAuto", pays: "unknown",
			changes: []string{"raise vm.max_map_count (now 100)", "MaxRings binds"},
		},
		{
			name: "address space binds",
			host: func(h *Host) { h.Limits.MaxRingBytes, h.RlimitAS = 64<<20, 1<<30 },
			mode: "ModeAuto", pays: "unknown",
			findings:  []string{"lets 8 conns map at once (MaxRingBytes binds)"},
			noChanges: []string{"vm.max_map_count", "RLIMIT_AS"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := testHost()
			if c.host != nil {
				c.host(&h)
			}
			m := Measurements{Causes: testCauses()}
			if c.m != nil {
				c.m(&m)
			}
			v := Decide(h, m)
			if v.Mode != c.mode || v.MappingPays != c.pays {
				t.Errorf("mode %q, mapping pays %q; want %q, %q\n%s", v.Mode, v.MappingPays, c.mode, c.pays, v.Summary)
			}
			if v.Summary == "" || v.Reason == "" {
				t.Errorf("summary %q, reason %q", v.Summary, v.Reason)
			}
			if c.reason != "" && v.Reason != c.reason {
				t.Errorf("reason %q, want %q", v.Reason, c.reason)
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
			if w := Decide(h, m); strings.Join(w.Changes, "\n") != changes || w.Summary != v.Summary {
				t.Error("a second call gave another verdict")
			}
		})
	}
}

func TestDiagnose(t *testing.T) {
	r := testRun("x", testStats(30<<20, map[string]uint64{"CopiedTail": 1 << 20, "CopiedSegment": 3 << 20}))
	if r.MainCause != "CopiedSegment" {
		t.Errorf("main cause %q", r.MainCause)
	}
	d := r.Diagnosis
	seg, tail := strings.Index(d, "CopiedSegment"), strings.Index(d, "CopiedTail")
	if seg < 0 || tail < 0 || seg > tail || !strings.Contains(d, "88.2% mapped") {
		t.Errorf("diagnosis does not name the causes largest first: %s", d)
	}
	if d := testRun("x", testStats(1<<20, nil)).Diagnosis; !strings.Contains(d, "100.0% mapped, nothing copied") {
		t.Errorf("diagnosis %q", d)
	}
	if r := testRun("x", zcnet.Stats{CopiedBytes: 1 << 20}); r.MainCause != "" || !strings.Contains(r.Diagnosis, "not reported") {
		t.Errorf("unreported causes: %q, %q", r.MainCause, r.Diagnosis)
	}
	if d := diagnose(CauseRun{Error: "boom"}); d != "failed: boom" {
		t.Errorf("diagnosis of a failed run %q", d)
	}
}

func TestHelpers(t *testing.T) {
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
		if got := paysIn(cpumeter.Median(c.samples), c.samples); got != c.want {
			t.Errorf("paysIn(%v) = %v", c.samples, got)
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
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestJSONNames(t *testing.T) {
	rep := Report{Host: testHost(), Measurements: Measurements{Causes: testCauses()}}
	rep.Measurements.Cost = testCost(100, []float64{1.2}, []float64{0.95})
	rep.Checks = checks(rep.Host)
	rep.Verdict = Decide(rep.Host, rep.Measurements)
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
		`"busy_goroutine":true`, `"mode":"ModeAuto"`, `"reason":"ordinary senders map 0%; no up interface carries pages that map"`, `"limits":{`, `"mapping_pays":"no"`, `"summary":`, `"changes":[`, `"status":"warn"`,
	} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s", k)
		}
	}
}
