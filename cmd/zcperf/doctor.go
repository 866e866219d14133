package main

// zcperf doctor: the host checks, the loopback measurements and the verdict. The host
// facts only Linux has are gathered by docHostOS (doctor_linux.go, doctor_other.go);
// everything else here is portable. Names in these files start with "doc" or "doctor".

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// Check statuses.
const (
	docOK      = "ok"
	docWarn    = "warn"
	docFail    = "fail"
	docUnknown = "unknown"
)

// docCheck is one line of the host report.
type docCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Value  string `json:"value"`
	Detail string `json:"detail"`
}

// docHost are the facts the host checks are made of. Integers are -1 where unknown.
type docHost struct {
	OS     string `json:"os"`
	Kernel string `json:"kernel"` // uname release
	// SupportedError is zcnet.Supported()'s error text, empty when it returned nil.
	SupportedError string `json:"supported_error"`
	// Seccomp is /proc/self/status's Seccomp field: 0 none, 1 strict, 2 filter.
	Seccomp   int    `json:"seccomp"`
	Container string `json:"container"` // a hint that this is a container, or ""
	// MaxMapCount is vm.max_map_count; Mappings the lines of /proc/self/maps.
	MaxMapCount int `json:"max_map_count"`
	Mappings    int `json:"mappings"`
	// RlimitAS is RLIMIT_AS in bytes (-1 unlimited, -2 unknown); VirtualMemory is the
	// process's VmSize in bytes.
	RlimitAS      int64 `json:"rlimit_as"`
	VirtualMemory int64 `json:"virtual_memory"`
	PageSize      int   `json:"page_size"`
	// HighOrderAllocDisable is net.core.high_order_alloc_disable.
	HighOrderAllocDisable int        `json:"high_order_alloc_disable"`
	Interfaces            []docIface `json:"interfaces"`
	InterfacesError       string     `json:"interfaces_error,omitempty"`
}

// docIface is a non-loopback network interface.
type docIface struct {
	Name string `json:"name"`
	Up   bool   `json:"up"`
	MTU  int    `json:"mtu"`
	// PayloadIPv4 and PayloadIPv6 are the TCP payload bytes one segment carries at this
	// MTU, with the 12-byte timestamp option.
	PayloadIPv4 int `json:"tcp_payload_ipv4"`
	PayloadIPv6 int `json:"tcp_payload_ipv6"`
	// HeaderSplit is the NIC's tcp-data-split setting: "enabled", "disabled" or
	// "unknown"; HeaderSplitDetail says where an unknown came from.
	HeaderSplit       string `json:"header_split"`
	HeaderSplitDetail string `json:"header_split_detail,omitempty"`
}

// Header sizes for docPayload: IPv4 and IPv6 headers without options, and the TCP header
// with the timestamp option Linux uses by default.
const (
	docIPv4Header = 20
	docIPv6Header = 40
	docTCPHeader  = 20 + 12
)

// docPayload is the TCP payload one segment carries at mtu with an IP header of ipHeader
// bytes (0 when the MTU is too small for the headers).
func docPayload(mtu, ipHeader int) int {
	return max(0, mtu-ipHeader-docTCPHeader)
}

// docMinMTU is the MTU needed for one page of TCP payload per segment.
func docMinMTU(page, ipHeader int) int { return page + ipHeader + docTCPHeader }

// docCauseRun is one loopback transfer into a ModeZeroCopy conn, to see what is mapped
// and why the rest is copied.
type docCauseRun struct {
	Name           string      `json:"name"`
	Title          string      `json:"title"`
	SenderZeroCopy bool        `json:"sender_msg_zerocopy"`
	PageAlignedMSS bool        `json:"page_aligned_mss"`
	Bytes          int64       `json:"bytes"`
	Verified       bool        `json:"verified"`
	MappedPct      float64     `json:"mapped_pct"`
	MainCause      string      `json:"main_cause"` // the Stats field with most copied bytes, or ""
	Diagnosis      string      `json:"diagnosis"`
	Stats          zcnet.Stats `json:"stats"`
	Error          string      `json:"error,omitempty"`
}

// Names of the cause runs.
const (
	docRunPlain     = "plain_sender_page_mss"
	docRunNoMSS     = "zerocopy_sender_no_page_mss"
	docRunZeroCopy  = "zerocopy_sender_page_mss"
	docCauseRunSize = 32 << 20
)

// docCostRow is one receiver of the CPU comparison.
type docCostRow struct {
	Key      string `json:"key"` // net_read, zc_read, zc_next
	Receiver string `json:"receiver"`
	// CPUPerMiB is the median over rounds of the receiving process's CPU (user+sys, the
	// busy goroutine's thread excluded) per MiB received.
	CPUPerMiB float64   `json:"cpu_us_per_mib"`
	Samples   []float64 `json:"cpu_us_per_mib_samples"`
	// Ratio is the median over rounds of CPUPerMiB over net_read's in the same round.
	Ratio     float64      `json:"ratio_to_net"`
	MappedPct float64      `json:"mapped_pct"`
	Stats     *zcnet.Stats `json:"stats,omitempty"`
}

// docCost is the receiver CPU comparison.
type docCost struct {
	Rounds           int          `json:"rounds"`
	BytesPerTransfer int64        `json:"bytes_per_transfer"`
	BusyGoroutine    bool         `json:"busy_goroutine"`
	Receivers        []docCostRow `json:"receivers"`
	// MapCopyRead is the median over rounds of the CPU per MiB of zc_read over net_read
	// (mapping and copying out, against copying, with the same wake-ups);
	// MapCopyNext is that of zc_next over the cheaper of copy_next (the same Next calls,
	// copied) and net_read: the cheapest way to get the bytes without mapping.
	MapCopyRead float64 `json:"map_copy_ratio_read"`
	MapCopyNext float64 `json:"map_copy_ratio_next"`
	// The per-round ratios behind the two medians.
	MapCopyReadSamples []float64 `json:"map_copy_ratio_read_samples"`
	MapCopyNextSamples []float64 `json:"map_copy_ratio_next_samples"`
	Error              string    `json:"error,omitempty"`
}

// row returns the row with key k, or nil.
func (c *docCost) row(k string) *docCostRow {
	if c == nil {
		return nil
	}
	for i := range c.Receivers {
		if c.Receivers[i].Key == k {
			return &c.Receivers[i]
		}
	}
	return nil
}

// docMeasurements are the loopback measurements.
type docMeasurements struct {
	Skipped string        `json:"skipped,omitempty"` // why nothing was measured
	Causes  []docCauseRun `json:"causes"`
	Cost    *docCost      `json:"cost,omitempty"`
}

// run returns the cause run named name, or nil.
func (m *docMeasurements) run(name string) *docCauseRun {
	for i := range m.Causes {
		if m.Causes[i].Name == name {
			return &m.Causes[i]
		}
	}
	return nil
}

// docVerdict is the doctor's conclusion.
type docVerdict struct {
	// Mode is the Options.Mode to use here: "ModeAuto" or "ModeZeroCopy".
	Mode string `json:"mode"`
	// MappingPays: "yes" (ModeZeroCopy pays with Read too), "next" (with Next and
	// WriteTo only), "no", or "unknown" (not measured, or nothing was mapped).
	MappingPays string   `json:"mapping_pays"`
	Summary     string   `json:"summary"`
	Findings    []string `json:"findings"`
	Changes     []string `json:"changes"` // what to change to get pages mapped, or to map at all
}

// docReport is the whole output, also its JSON form.
type docReport struct {
	Host         docHost         `json:"host"`
	Checks       []docCheck      `json:"checks"`
	Measurements docMeasurements `json:"measurements"`
	Verdict      docVerdict      `json:"verdict"`
}

// docPays is the map/copy ratio of CPU per MiB at or under which mapping is said to pay:
// a margin for the noise of a few rounds.
const docPays = 0.90

// docMostlyMapped is the mapped share, in percent, at which the CPU comparison prices
// mapping: Next can copy the odd partial page when a message ends mid-page.
const docMostlyMapped = 90

// docPaysIn says whether a map/copy ratio shows that mapping pays: its median is at most
// docPays and at least three rounds in four found mapping cheaper (one outlier in five
// rounds is the noise of a shared host; one in three is not a clear answer).
func docPaysIn(median float64, samples []float64) bool {
	cheaper := 0
	for _, x := range samples {
		if x < 1 {
			cheaper++
		}
	}
	return median <= docPays && len(samples) > 0 && 4*cheaper >= 3*len(samples)
}

// doctorMain runs "zcperf doctor" with args and returns the exit status.
func doctorMain(args []string) int {
	fs := flag.NewFlagSet("zcperf doctor", flag.ContinueOnError)
	jsonOut := fs.Bool("json", false, "print one JSON object instead of the report")
	seconds := fs.Float64("seconds", 6, "time for the loopback measurements; 0 runs the checks and the short cause runs only")
	rounds := fs.Int("rounds", 5, "rounds of the CPU comparison (medians)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: zcperf doctor [-json] [-seconds N] [-rounds N]\n\n"+
			"Says whether zcnet's zero-copy receive helps on this host, and why: host checks,\n"+
			"loopback measurements, a verdict. Exit status 0 when it ran (the verdict is in the\n"+
			"output), 1 when a measurement could not be made, 2 for bad arguments.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *seconds < 0 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "zcperf doctor: want [-json] [-seconds N>=0] [-rounds N>=1]")
		return 2
	}
	progress := func(string) {}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		progress = func(s string) { fmt.Fprintf(os.Stderr, "\r\033[Kzcperf doctor: %s", s) }
		defer fmt.Fprint(os.Stderr, "\r\033[K")
	}
	var rep docReport
	rep.Host = doctorHost()
	rep.Checks = docChecks(rep.Host)
	rep.Measurements = docMeasure(rep.Host, time.Duration(*seconds*float64(time.Second)), *rounds, progress)
	progress("")
	rep.Verdict = docDecide(rep.Host, rep.Measurements)
	if *jsonOut {
		if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "zcperf doctor:", err)
			return 1
		}
	} else if err := docPrint(os.Stdout, &rep); err != nil {
		fmt.Fprintln(os.Stderr, "zcperf doctor:", err)
		return 1
	}
	if docFailed(&rep.Measurements) {
		return 1
	}
	return 0
}

// docFailed reports whether a measurement could not be made (an error, not a finding).
func docFailed(m *docMeasurements) bool {
	for _, r := range m.Causes {
		if r.Error != "" {
			return true
		}
	}
	return m.Cost != nil && m.Cost.Error != ""
}

// doctorHost gathers the host facts of the checks.
func doctorHost() docHost {
	h := docHost{
		OS:                    runtime.GOOS,
		Seccomp:               -1,
		MaxMapCount:           -1,
		Mappings:              -1,
		RlimitAS:              -2,
		VirtualMemory:         -1,
		PageSize:              os.Getpagesize(),
		HighOrderAllocDisable: -1,
	}
	docHostOS(&h)
	if err := zcnet.Supported(); err != nil {
		h.SupportedError = err.Error()
	}
	ifs, err := net.Interfaces()
	if err != nil {
		h.InterfacesError = "cannot list interfaces: " + err.Error()
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		d := docIface{
			Name:        ifc.Name,
			Up:          ifc.Flags&net.FlagUp != 0,
			MTU:         ifc.MTU,
			PayloadIPv4: docPayload(ifc.MTU, docIPv4Header),
			PayloadIPv6: docPayload(ifc.MTU, docIPv6Header),
		}
		d.HeaderSplit, d.HeaderSplitDetail = docHeaderSplit(ifc.Name)
		h.Interfaces = append(h.Interfaces, d)
	}
	return h
}

// docChecks turns the host facts into checks, each with a status and an explanation.
func docChecks(h docHost) []docCheck {
	var cs []docCheck
	add := func(name, status, value, detail string) {
		cs = append(cs, docCheck{Name: name, Status: status, Value: value, Detail: detail})
	}
	switch major, minor, ok := docParseRelease(h.Kernel); {
	case h.OS != "linux":
		add("kernel", docFail, h.OS, "zero-copy receive exists only on Linux: zcnet conns copy, like net.TCPConn")
	case !ok:
		add("kernel", docUnknown, h.Kernel, "cannot read the version from the release")
	case major < 4 || major == 4 && minor < 18:
		add("kernel", docFail, h.Kernel, "TCP_ZEROCOPY_RECEIVE needs Linux 4.18 or later")
	default:
		add("kernel", docOK, h.Kernel, "TCP_ZEROCOPY_RECEIVE exists from Linux 4.18")
	}
	if h.SupportedError == "" {
		add("supported", docOK, "yes", "zcnet.Supported(): mmap on a TCP socket and getsockopt(TCP_ZEROCOPY_RECEIVE) both work in this process")
	} else {
		add("supported", docFail, "no", "zcnet.Supported(): "+h.SupportedError+"; every conn copies")
	}
	switch h.Seccomp {
	case -1:
		add("seccomp", docUnknown, "?", "no Seccomp field in /proc/self/status")
	case 0:
		add("seccomp", docOK, "none", "no seccomp filter on this process")
	default:
		v := map[int]string{1: "strict", 2: "filter"}[h.Seccomp]
		if v == "" {
			v = strconv.Itoa(h.Seccomp)
		}
		if h.SupportedError == "" {
			add("seccomp", docOK, v, "a seccomp policy is active, and it lets mmap on sockets and getsockopt through (Supported says so)")
		} else {
			add("seccomp", docWarn, v, "a seccomp policy is active: it may be what refuses the calls Supported names")
		}
	}
	if h.Container != "" {
		add("container", docOK, h.Container, "running in a container: its seccomp policy and limits apply (the checks above and below show their effect)")
	}
	switch {
	case h.MaxMapCount < 0 || h.Mappings < 0:
		add("max_map_count", docUnknown, "?", "cannot read vm.max_map_count or /proc/self/maps")
	default:
		room := h.MaxMapCount - h.Mappings
		st := docOK
		if room < 4096 {
			st = docWarn
		}
		add("max_map_count", st, fmt.Sprintf("%d (%d in use)", h.MaxMapCount, h.Mappings),
			fmt.Sprintf("room for about %d rings at once (one mapping per conn that maps); past that, conns copy and FallbackReason names mmap", max(room, 0)))
	}
	ring := int64(zcnet.DefaultRingSize)
	switch {
	case h.RlimitAS == -2:
		add("rlimit_as", docUnknown, "?", "cannot read RLIMIT_AS")
	case h.RlimitAS == -1:
		add("rlimit_as", docOK, "unlimited", "address space is not limited: rings are bounded by vm.max_map_count and memory only")
	default:
		n := max(h.RlimitAS-h.VirtualMemory, 0) / ring
		st := docOK
		if n < 4096 {
			st = docWarn
		}
		add("rlimit_as", st, docBytes(h.RlimitAS),
			fmt.Sprintf("%s of address space left: room for %d rings of %s (Options.RingSize)", docBytes(max(h.RlimitAS-h.VirtualMemory, 0)), n, docBytes(ring)))
	}
	if h.PageSize == 4096 {
		add("page_size", docOK, "4 KiB", "PageAlignedMSS advertises an MSS of 4108 (a page plus the timestamp option)")
	} else {
		add("page_size", docWarn, docBytes(int64(h.PageSize)),
			fmt.Sprintf("pages are large: a segment must carry %d bytes of payload to be mapped (PageAlignedMSS advertises %d)", h.PageSize, h.PageSize+12))
	}
	switch h.HighOrderAllocDisable {
	case 0:
		add("high_order_alloc_disable", docWarn, "0", "ordinary senders on loopback (no MSG_ZEROCOPY) put payload in compound pages, which the kernel cannot map; only MSG_ZEROCOPY senders' payload maps on loopback")
	case -1:
		add("high_order_alloc_disable", docUnknown, "?", "cannot read /proc/sys/net/core/high_order_alloc_disable")
	default:
		add("high_order_alloc_disable", docOK, strconv.Itoa(h.HighOrderAllocDisable), "senders on loopback use order-0 pages: ordinary senders' payload can be mapped")
	}
	if h.InterfacesError != "" {
		add("interfaces", docUnknown, "?", h.InterfacesError)
	} else if len(h.Interfaces) == 0 {
		add("interfaces", docWarn, "loopback only", "no network interface but loopback: only loopback traffic can be examined here")
	}
	for _, ifc := range h.Interfaces {
		st, detail := docIfaceStatus(ifc, h.PageSize)
		state := "down"
		if ifc.Up {
			state = "up"
		}
		add("interface "+ifc.Name, st, fmt.Sprintf("%s, MTU %d, header split %s", state, ifc.MTU, ifc.HeaderSplit), detail)
	}
	return cs
}

// docIfaceStatus rates an interface for mapping: a page of payload must fit in a segment
// and the NIC must split headers from payload.
func docIfaceStatus(ifc docIface, page int) (string, string) {
	fits := ifc.PayloadIPv4 >= page
	var parts []string
	if fits {
		parts = append(parts, fmt.Sprintf("a segment carries %d bytes of TCP payload over IPv4 (%d over IPv6): a page fits", ifc.PayloadIPv4, ifc.PayloadIPv6))
	} else {
		parts = append(parts, fmt.Sprintf("a segment carries at most %d bytes of TCP payload over IPv4 (%d over IPv6): no page fits, so traffic through it is copied; an MTU of %d (IPv4) or %d (IPv6) carries a page",
			ifc.PayloadIPv4, ifc.PayloadIPv6, docMinMTU(page, docIPv4Header), docMinMTU(page, docIPv6Header)))
	}
	switch ifc.HeaderSplit {
	case "enabled":
		parts = append(parts, "the NIC splits headers from payload")
	case "disabled":
		parts = append(parts, "the NIC does not split headers from payload (tcp-data-split off): payload shares pages with headers and is copied")
	default:
		parts = append(parts, "header split: unknown ("+ifc.HeaderSplitDetail+")")
	}
	st := docWarn
	switch {
	case fits && ifc.HeaderSplit == "enabled":
		st = docOK
	case fits && ifc.HeaderSplit == "unknown":
		st = docUnknown
	}
	return st, strings.Join(parts, "; ")
}

// docBytes formats n bytes in binary units.
func docBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// docParseRelease returns the major and minor version of a kernel release such as
// "6.18.0-rc1".
func docParseRelease(rel string) (major, minor int, ok bool) {
	a, rest, found := strings.Cut(rel, ".")
	if !found {
		return 0, 0, false
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		rest = rest[:end]
	}
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(rest)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return major, minor, true
}

// docStatusField returns the value of field key in a /proc/PID/status text.
func docStatusField(status, key string) (string, bool) {
	for line := range strings.Lines(status) {
		k, v, ok := strings.Cut(line, ":")
		if ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// docStatusKB returns a "NNN kB" field of a /proc/PID/status text in bytes, or -1.
func docStatusKB(status, key string) int64 {
	v, ok := docStatusField(status, key)
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		return -1
	}
	return n << 10
}

// docParseInt parses a one-number file such as a sysctl, or returns -1.
func docParseInt(b []byte) int {
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// docCountLines counts the lines of r (a /proc/self/maps listing has one per mapping).
func docCountLines(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

// docContainerHint says whether this looks like a container, from cheap signs: the
// marker files of Docker and Podman, the container environment variable, and pid 1's
// cgroup.
func docContainerHint(exists func(string) bool, getenv func(string) string, cgroup1 string) string {
	switch {
	case exists("/.dockerenv"):
		return "docker (/.dockerenv)"
	case exists("/run/.containerenv"):
		return "podman (/run/.containerenv)"
	case getenv("container") != "":
		return getenv("container") + " ($container)"
	}
	for _, w := range []string{"docker", "kubepods", "lxc", "containerd"} {
		if strings.Contains(cgroup1, w) {
			return w + " (/proc/1/cgroup)"
		}
	}
	return ""
}

// docCauseNames are the Stats fields that count copied bytes by cause.
var docCauseNames = []string{"CopiedPolicy", "CopiedDisabled", "CopiedTail", "CopiedSegment", "CopiedPageKind"}

// docCauses returns the copy-cause counters of st, in docCauseNames order.
func docCauses(st zcnet.Stats) []uint64 {
	return []uint64{st.CopiedPolicy, st.CopiedDisabled, st.CopiedTail, st.CopiedSegment, st.CopiedPageKind}
}

// docMainCause is the name of the cause with most copied bytes, or "" when none is
// counted.
func docMainCause(st zcnet.Stats) string {
	best, name := uint64(0), ""
	for i, v := range docCauses(st) {
		if v > best {
			best, name = v, docCauseNames[i]
		}
	}
	return name
}

// docCauseText explains a copy cause.
var docCauseText = map[string]string{
	"CopiedPolicy":   "the mode chose to copy",
	"CopiedDisabled": "mapping was not available (FallbackReason says why)",
	"CopiedTail":     "less than a page was queued, or a partial page at the head or tail of a segment",
	"CopiedSegment":  "segments did not carry a page of payload (TCP_INFO rcv_mss is not the page size): the listener needs PageAlignedMSS, or the NIC header split",
	"CopiedPageKind": "page-sized segments the kernel would not map because the sender's pages are compound (on loopback: a sender without MSG_ZEROCOPY while net.core.high_order_alloc_disable is 0)",
}

// docDiagnose explains a cause run: the mapped share and every copy cause counted,
// largest first.
func docDiagnose(r docCauseRun) string {
	if r.Error != "" {
		return "failed: " + r.Error
	}
	st := r.Stats
	s := fmt.Sprintf("%.1f%% mapped", r.MappedPct)
	if st.CopiedBytes == 0 {
		return s + ", nothing copied"
	}
	type cause struct {
		name string
		n    uint64
	}
	var cs []cause
	for i, v := range docCauses(st) {
		if v > 0 {
			cs = append(cs, cause{docCauseNames[i], v})
		}
	}
	if len(cs) == 0 {
		return s + fmt.Sprintf("; %s copied, causes not reported by this build", docBytes(int64(st.CopiedBytes)))
	}
	slices.SortStableFunc(cs, func(a, b cause) int {
		switch {
		case a.n > b.n:
			return -1
		case a.n < b.n:
			return 1
		}
		return 0
	})
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s %.1f%% of the stream: %s", c.name,
			100*float64(c.n)/float64(st.MappedBytes+st.CopiedBytes), docCauseText[c.name]))
	}
	if st.FallbackReason != "" {
		parts = append(parts, "FallbackReason: "+st.FallbackReason)
	}
	return s + "; copied: " + strings.Join(parts, "; ")
}

// docDecide is the verdict: a pure function of the host facts and the measurements.
func docDecide(h docHost, m docMeasurements) docVerdict {
	v := docVerdict{Mode: "ModeAuto", MappingPays: "unknown"}
	find := func(f string, a ...any) { v.Findings = append(v.Findings, fmt.Sprintf(f, a...)) }
	change := func(f string, a ...any) { v.Changes = append(v.Changes, fmt.Sprintf(f, a...)) }

	if h.SupportedError != "" {
		v.MappingPays = "no"
		v.Summary = "zcnet cannot map on this host, so every conn copies like a net.TCPConn: use ModeAuto (the default), which costs about what net.TCPConn does; nothing else pays here."
		find("zcnet.Supported: %s", h.SupportedError)
		major, minor, ok := docParseRelease(h.Kernel)
		switch {
		case h.OS != "linux":
			change("run on Linux 4.18 or later: zero-copy receive is Linux-only")
		case ok && (major < 4 || major == 4 && minor < 18):
			change("upgrade the kernel to Linux 4.18 or later (5.11 or later batches mapping better)")
		default:
			change("let the process call mmap on TCP sockets and getsockopt(IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE): the sandbox or seccomp policy refuses them")
		}
		return v
	}

	// Limits on how many conns can map at once.
	if h.MaxMapCount >= 0 && h.Mappings >= 0 && h.MaxMapCount-h.Mappings < 4096 {
		change("raise vm.max_map_count (now %d, %d in use): each conn that maps holds one mapping, and conns past the limit copy", h.MaxMapCount, h.Mappings)
	}
	if h.RlimitAS >= 0 && (h.RlimitAS-h.VirtualMemory)/zcnet.DefaultRingSize < 4096 {
		change("raise RLIMIT_AS (now %s) or lower Options.RingSize: each conn that maps reserves a ring of address space", docBytes(h.RlimitAS))
	}

	// What the receive costs: the CPU comparison.
	c := m.Cost
	net, rd, nx, cp := c.row("net_read"), c.row("zc_read"), c.row("zc_next"), c.row("copy_next")
	switch {
	case m.Skipped != "":
		find("measurements skipped: %s", m.Skipped)
	case c == nil:
		find("receiver CPU not measured (-seconds 0)")
	case c.Error != "":
		find("receiver CPU comparison failed: %s", c.Error)
	case net == nil || rd == nil || nx == nil || cp == nil:
		find("receiver CPU comparison incomplete")
	case rd.MappedPct < docMostlyMapped || nx.MappedPct < docMostlyMapped:
		find("the CPU comparison did not map its pages (Read %.1f%%, Next %.1f%% mapped), so it does not price mapping", rd.MappedPct, nx.MappedPct)
	default:
		find("receiver CPU per MiB with a busy goroutine in the process: net.TCPConn Read %.0f us/MiB; zcnet ModeZeroCopy Read %.2fx of it (%.1f%% mapped), ModeZeroCopy Next %.2fx (%.1f%% mapped), ModeCopy Next %.2fx",
			net.CPUPerMiB, rd.Ratio, rd.MappedPct, nx.Ratio, nx.MappedPct, cp.Ratio)
		find("mapping against copying: Read %.2fx (ModeZeroCopy Read / net.TCPConn Read), Next %.2fx (ModeZeroCopy Next / the cheaper of ModeCopy Next and net.TCPConn Read)",
			c.MapCopyRead, c.MapCopyNext)
		for _, r := range []struct {
			what    string
			median  float64
			samples []float64
		}{{"Read", c.MapCopyRead, c.MapCopyReadSamples}, {"Next", c.MapCopyNext, c.MapCopyNextSamples}} {
			if r.median <= docPays && !docPaysIn(r.median, r.samples) {
				find("the rounds disagree on mapping with %s (map/copy %s): not counted as paying; the host is noisy, run again, with more -rounds", r.what, docRatios(r.samples))
			}
		}
		switch {
		case docPaysIn(c.MapCopyRead, c.MapCopyReadSamples):
			v.MappingPays = "yes"
		case docPaysIn(c.MapCopyNext, c.MapCopyNextSamples):
			v.MappingPays = "next"
		default:
			v.MappingPays = "no"
		}
	}
	switch v.MappingPays {
	case "yes":
		v.Mode = "ModeZeroCopy"
		v.Summary = fmt.Sprintf("Mapping is cheaper than copying here (ModeZeroCopy Read %.2fx of net.TCPConn Read's CPU per MiB, ModeZeroCopy Next %.2fx of the cheapest copying receiver): ModeZeroCopy pays for bulk streams whose pages map; ModeAuto (the default) is safe everywhere.",
			c.MapCopyRead, c.MapCopyNext)
	case "next":
		v.Mode = "ModeZeroCopy"
		v.Summary = fmt.Sprintf("Mapping pays here only where nothing copies the bytes out again: ModeZeroCopy Next costs %.2fx of the cheapest copying receiver (ModeCopy Next or net.TCPConn Read), but ModeZeroCopy Read %.2fx of net.TCPConn Read. Use ModeZeroCopy for servers that consume with Next or WriteTo and whose peers send mappable pages; ModeAuto (the default) everywhere else.",
			c.MapCopyNext, c.MapCopyRead)
	case "no":
		v.Summary = fmt.Sprintf("Mapping does not clearly pay on this host (ModeZeroCopy Read %.2fx of net.TCPConn Read, ModeZeroCopy Next %.2fx of the cheapest copying receiver, medians): keep ModeAuto (the default), which measures and copies when copying is cheaper; ModeZeroCopy is not worth forcing here.",
			c.MapCopyRead, c.MapCopyNext)
	default:
		v.Summary = "Whether mapping pays here was not measured: use ModeAuto (the default), which is safe everywhere: it measures and copies when copying is cheaper."
	}
	if v.MappingPays != "unknown" && cp.Ratio <= docPays {
		v.Summary += fmt.Sprintf(" Whatever the mode, Next saves wake-ups (it waits for the whole message with SO_RCVLOWAT): ModeCopy Next costs %.2fx of net.TCPConn Read here.", cp.Ratio)
	}

	// Which payload maps: the cause runs.
	plain, nomss, zc := m.run(docRunPlain), m.run(docRunNoMSS), m.run(docRunZeroCopy)
	zcMaps := zc != nil && zc.Error == "" && zc.MappedPct >= 99
	for _, r := range []*docCauseRun{plain, nomss, zc} {
		if r != nil {
			find("%s: %s", r.Title, r.Diagnosis)
		}
	}
	if zc != nil && zc.Error == "" && !zcMaps {
		change("even a MSG_ZEROCOPY sender to a PageAlignedMSS listener mapped only %.1f%% here (%s)", zc.MappedPct, zc.Diagnosis)
	}
	if plain != nil && plain.Error == "" && plain.MappedPct < 99 {
		// The plain run differs from the zerocopy one by the sender's MSG_ZEROCOPY alone.
		byCause := plain.Stats.CopiedPageKind > 0
		byContrast := zcMaps && docMainCause(plain.Stats) == ""
		if byCause || byContrast || h.HighOrderAllocDisable == 0 {
			change("on loopback, send with MSG_ZEROCOPY (SO_ZEROCOPY on the sender's socket), or set net.core.high_order_alloc_disable=1 (root, machine-wide; now %s) so that ordinary clients' payload is in order-0 pages that map: an ordinary sender got %.1f%% mapped",
				docIntOr(h.HighOrderAllocDisable, "unknown"), plain.MappedPct)
		}
	}
	if nomss != nil && nomss.Error == "" {
		bySegment := nomss.Stats.CopiedSegment > 0
		byContrast := zcMaps && docMainCause(nomss.Stats) == "" && nomss.MappedPct < 99
		if bySegment || byContrast {
			change("set PageAlignedMSS on the listener (zcnet.ListenConfig{Options: zcnet.Options{PageAlignedMSS: true}}): without it a MSG_ZEROCOPY sender got %.1f%% mapped", nomss.MappedPct)
		}
	}

	// Real networks: the NICs.
	up := 0
	for _, ifc := range h.Interfaces {
		if !ifc.Up {
			continue
		}
		up++
		if ifc.PayloadIPv4 < h.PageSize {
			change("interface %s: MTU %d carries %d bytes of TCP payload per segment, less than a page: an MTU of at least %d (IPv4) or %d (IPv6) is needed for its traffic to map",
				ifc.Name, ifc.MTU, ifc.PayloadIPv4, docMinMTU(h.PageSize, docIPv4Header), docMinMTU(h.PageSize, docIPv6Header))
		}
		if ifc.HeaderSplit != "enabled" {
			change("interface %s: header split is %s: its traffic maps only with a NIC that splits headers from payload (tcp-data-split on, e.g. ethtool -G %s tcp-data-split on where the driver has it)",
				ifc.Name, ifc.HeaderSplit, ifc.Name)
		}
	}
	if h.InterfacesError == "" && up == 0 {
		find("no network interface but loopback is up: only loopback traffic was examined")
	}
	return v
}

// docRatios formats ratios as "0.91x 1.05x ...".
func docRatios(xs []float64) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.2fx", x)
	}
	return b.String()
}

// docIntOr formats n, or returns unknown for a negative n.
func docIntOr(n int, unknown string) string {
	if n < 0 {
		return unknown
	}
	return strconv.Itoa(n)
}

// docPrint writes the report in plain words.
func docPrint(w io.Writer, r *docReport) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "zcperf doctor: does zcnet's zero-copy receive help on this host?\n\nHost checks\n")
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-8s %-26s %s\n  %-8s %-26s %s\n", c.Status, c.Name, c.Value, "", "", c.Detail)
	}
	m := &r.Measurements
	fmt.Fprintf(&b, "\nMeasurements on loopback (receiver zcnet ModeZeroCopy, Read 512 KiB)\n")
	if m.Skipped != "" {
		fmt.Fprintf(&b, "  skipped: %s\n", m.Skipped)
	}
	for _, c := range m.Causes {
		fmt.Fprintf(&b, "  %s, %s: %s\n", c.Title, docBytes(c.Bytes), c.Diagnosis)
	}
	if c := m.Cost; c != nil {
		busy := ""
		if c.BusyGoroutine {
			busy = ", a busy goroutine spinning"
		}
		fmt.Fprintf(&b, "\n  receiver CPU per MiB, MSG_ZEROCOPY sender, PageAlignedMSS (%d rounds of %s%s; medians):\n",
			c.Rounds, docBytes(c.BytesPerTransfer), busy)
		if c.Error != "" {
			fmt.Fprintf(&b, "  failed: %s\n", c.Error)
		}
		for _, row := range c.Receivers {
			mapped := "-"
			if row.Stats != nil {
				mapped = fmt.Sprintf("%.1f%%", row.MappedPct)
			}
			fmt.Fprintf(&b, "    %-32s %8.1f us/MiB  mapped %6s  %.2fx\n", row.Receiver, row.CPUPerMiB, mapped, row.Ratio)
		}
	}
	v := &r.Verdict
	fmt.Fprintf(&b, "\nVerdict: %s (mapping pays: %s)\n  %s\n", v.Mode, v.MappingPays, v.Summary)
	if len(v.Findings) > 0 {
		fmt.Fprintf(&b, "\n  Findings:\n")
		for _, f := range v.Findings {
			fmt.Fprintf(&b, "  - %s\n", f)
		}
	}
	if len(v.Changes) > 0 {
		fmt.Fprintf(&b, "\n  To get pages mapped:\n")
		for _, f := range v.Changes {
			fmt.Fprintf(&b, "  - %s\n", f)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// docSender starts a sender of total bytes of the zcsend pattern to addr and returns a
// function that waits for it to finish (after the receiver has closed).
type docSender func(addr string, total int64, o zcsend.Options) (wait func() error, err error)

// docGoroutineSender sends from a goroutine of this process.
func docGoroutineSender(addr string, total int64, o zcsend.Options) (func() error, error) {
	done := make(chan error, 1)
	go func() {
		c, err := zcsend.Dial(context.Background(), addr, o)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- zcsend.Send(c, total, o)
	}()
	return func() error { return <-done }, nil
}

// docProcessSender re-executes this binary as the sender (main runs zcsend.RunFromEnv
// first), so that the sender's CPU is not the receiving process's.
func docProcessSender(addr string, total int64, o zcsend.Options) (func() error, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), zcsend.ProcessEnv+"="+zcsend.EnvValue(addr, total, o))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("sender: %w", err)
		}
		return nil
	}, nil
}

// docMeasure runs the loopback measurements: the three cause runs, then, with budget
// left, the CPU comparison.
//
// The cause runs send from a goroutine: they count bytes, not CPU, and a sender's
// pages are the same from a goroutine as from a process. The CPU comparison sends from
// another process, so that getrusage of this one counts the receiver alone.
func docMeasure(h docHost, budget time.Duration, rounds int, progress func(string)) docMeasurements {
	var m docMeasurements
	if h.SupportedError != "" {
		m.Skipped = "zcnet cannot map here: " + h.SupportedError
		return m
	}
	start := time.Now()
	for _, spec := range docCauseSpecs {
		progress(spec.title)
		m.Causes = append(m.Causes, docCauseRunOnce(spec.name, spec.title, spec.zerocopy, spec.mss, docCauseRunSize, docGoroutineSender))
	}
	if budget > 0 {
		m.Cost = docCostRun(budget-time.Since(start), rounds, docProcessSender, true, false, progress)
	}
	return m
}

// docCauseSpecs are the cause runs: a, b and c of the report.
var docCauseSpecs = []struct {
	name, title   string
	zerocopy, mss bool
}{
	{docRunPlain, "a. ordinary sender (plain write), PageAlignedMSS listener", false, true},
	{docRunNoMSS, "b. MSG_ZEROCOPY sender, listener without PageAlignedMSS", true, false},
	{docRunZeroCopy, "c. MSG_ZEROCOPY sender, PageAlignedMSS listener", true, true},
}

// docCauseRunOnce sends total bytes with send (MSG_ZEROCOPY as zerocopy says) to a
// ModeZeroCopy listener (with PageAlignedMSS as mss says), reads them with Read(512 KiB),
// checks every byte against the pattern and reports what was mapped and why the rest was
// copied.
func docCauseRunOnce(name, title string, zerocopy, mss bool, total int64, send docSender) docCauseRun {
	r := docCauseRun{Name: name, Title: title, SenderZeroCopy: zerocopy, PageAlignedMSS: mss}
	err := func() error {
		lc := zcnet.ListenConfig{Options: zcnet.Options{Mode: zcnet.ModeZeroCopy, PageAlignedMSS: mss}}
		ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		wait, err := send(ln.Addr().String(), total, zcsend.Options{ZeroCopy: zerocopy})
		if err != nil {
			return err
		}
		ln.SetDeadline(time.Now().Add(30 * time.Second))
		nc, err := ln.Accept()
		if err != nil {
			return errors.Join(err, wait())
		}
		zc, ok := nc.(*zcnet.Conn)
		if !ok {
			nc.Close()
			return errors.Join(fmt.Errorf("accepted a %T, not a *zcnet.Conn", nc), wait())
		}
		zc.SetReadDeadline(time.Now().Add(2 * time.Minute))
		var v zcsend.Verifier
		n, err := zcsend.DrainRead(zc, make([]byte, 512<<10), &v)
		r.Stats = zc.Stats()
		zc.Close()
		if werr := wait(); err == nil {
			err = werr
		}
		r.Bytes = n
		switch {
		case err != nil:
		case n != total:
			err = fmt.Errorf("received %d bytes, want %d", n, total)
		case v.Err() != nil:
			err = v.Err()
		default:
			r.Verified = true
		}
		return err
	}()
	if err != nil {
		r.Error = err.Error()
	}
	r.MappedPct = 100 * r.Stats.MappedShare()
	r.MainCause = docMainCause(r.Stats)
	r.Diagnosis = docDiagnose(r)
	return r
}

// docCostReceivers are the receivers of the CPU comparison, in this order (docCostRun
// indexes them): net.TCPConn Read is the base; ModeCopy Next is the control for
// ModeZeroCopy Next, the same calls and wake-ups without mapping.
var docCostReceivers = []struct{ key, name string }{
	{"net_read", "net.TCPConn Read 512 KiB"},
	{"zc_read", "zcnet ModeZeroCopy Read 512 KiB"},
	{"zc_next", "zcnet ModeZeroCopy Next 512 KiB"},
	{"copy_next", "zcnet ModeCopy Next 512 KiB"},
}

// docCostRun measures the receiving process's CPU per MiB for each of docCostReceivers,
// alternating them over rounds, from a MSG_ZEROCOPY sender to a PageAlignedMSS listener,
// in about budget. With busy, a goroutine spins in this process during each transfer (a
// server always has other threads running, and they receive the TLB-flush interrupts
// that releasing mapped pages sends); its thread's CPU is not the receiver's. With verify, every byte is checked (which costs CPU:
// for tests).
func docCostRun(budget time.Duration, rounds int, send docSender, busy, verify bool, progress func(string)) *docCost {
	c := &docCost{Rounds: rounds}
	if busy && runtime.GOMAXPROCS(0) >= 2 {
		c.BusyGoroutine = true
	}
	for _, r := range docCostReceivers {
		c.Receivers = append(c.Receivers, docCostRow{Key: r.key, Receiver: r.name})
	}
	err := func() error {
		lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = setPageMSS(fd) }); err != nil {
				return err
			}
			return serr
		}}
		l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		ln := l.(*net.TCPListener) // a "tcp" listener is one
		// Warm up each receiver, and time the transfers to size the measured ones to the
		// budget left: per transfer, the sender's start-up plus size at the drain rate.
		start := time.Now()
		const warm = 16 << 20
		var drain, overhead time.Duration
		for _, r := range docCostReceivers {
			progress("warm-up " + r.name)
			t0 := time.Now()
			s, err := docCostTransfer(ln, r.key, warm, send, c.BusyGoroutine, verify)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			drain += s.wall
			overhead += time.Since(t0) - s.wall
		}
		n := len(docCostReceivers)
		perTransfer := (budget-time.Since(start))/time.Duration(n*rounds) - overhead/time.Duration(n)
		// Long transfers drain slower than the short warm-ups (the caches are cold, the
		// host's other work gets its turn): plan on 70% of the warm-up rate.
		rate := 0.7 * float64(n*warm) / max(drain.Seconds(), 1e-6)
		size := int64(rate*perTransfer.Seconds()) &^ (1<<20 - 1)
		c.BytesPerTransfer = min(max(size, 8<<20), 2<<30)
		ratios := make([][]float64, n)
		sums := make([]zcnet.Stats, n)
		for round := range rounds {
			for k := range n {
				i := (k + round) % n
				r := docCostReceivers[i]
				progress(fmt.Sprintf("round %d/%d %s", round+1, rounds, r.name))
				s, err := docCostTransfer(ln, r.key, c.BytesPerTransfer, send, c.BusyGoroutine, verify)
				if err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
				mib := float64(c.BytesPerTransfer) / (1 << 20)
				c.Receivers[i].Samples = append(c.Receivers[i].Samples, s.cpu*1e6/mib)
				if s.stats != nil {
					sums[i].Add(*s.stats)
				}
			}
			for i := range n {
				ratios[i] = append(ratios[i], c.Receivers[i].Samples[round]/c.Receivers[0].Samples[round])
			}
			copyNext := min(c.Receivers[3].Samples[round], c.Receivers[0].Samples[round])
			c.MapCopyNextSamples = append(c.MapCopyNextSamples, c.Receivers[2].Samples[round]/copyNext)
		}
		c.MapCopyReadSamples = ratios[1]
		c.MapCopyRead = cpumeter.Median(c.MapCopyReadSamples)
		c.MapCopyNext = cpumeter.Median(c.MapCopyNextSamples)
		for i := range c.Receivers {
			row := &c.Receivers[i]
			row.CPUPerMiB = cpumeter.Median(row.Samples)
			row.Ratio = cpumeter.Median(ratios[i])
			if row.Key != "net_read" {
				st := sums[i]
				row.Stats = &st
				row.MappedPct = 100 * st.MappedShare()
			}
		}
		return nil
	}()
	if err != nil {
		c.Error = err.Error()
	}
	return c
}

// docCostSample is one transfer of the CPU comparison.
type docCostSample struct {
	wall  time.Duration // from the accept to the end of the stream
	cpu   float64       // the receiving process's CPU seconds, the spinner's excluded
	stats *zcnet.Stats
}

// docCostTransfer receives one stream of size bytes from send on ln with the receiver
// key and measures it.
//
// With busy a spinner runs in this process meanwhile (cpumeter), its CPU not counted.
func docCostTransfer(ln *net.TCPListener, key string, size int64, send docSender, busy bool, verify bool) (docCostSample, error) {
	var s docCostSample
	wait, err := send(ln.Addr().String(), size, zcsend.Options{ZeroCopy: true})
	if err != nil {
		return s, err
	}
	ln.SetDeadline(time.Now().Add(30 * time.Second))
	nc, err := ln.AcceptTCP()
	if err != nil {
		return s, errors.Join(err, wait())
	}
	nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var zc *zcnet.Conn
	if key != "net_read" {
		mode := zcnet.ModeZeroCopy
		if key == "copy_next" {
			mode = zcnet.ModeCopy
		}
		if zc, err = zcnet.NewConn(nc, zcnet.Options{Mode: mode}); err != nil {
			nc.Close()
			return s, errors.Join(err, wait())
		}
	}
	var v *zcsend.Verifier
	var w io.Writer // v, or nil (not a nil *zcsend.Verifier) to check nothing
	if verify {
		v = new(zcsend.Verifier)
		w = v
	}
	m := cpumeter.Start(busy)
	var n int64
	switch key {
	case "net_read":
		n, err = zcsend.DrainRead(nc, make([]byte, 512<<10), w)
	case "zc_read":
		n, err = zcsend.DrainRead(zc, make([]byte, 512<<10), w)
	default:
		n, err = zcsend.DrainNext(zc, 512<<10, w)
	}
	r := m.Stop()
	s.wall, s.cpu = r.Wall, r.CPU.Seconds()
	if zc != nil {
		st := zc.Stats()
		s.stats = &st
		zc.Close()
	}
	nc.Close()
	if werr := wait(); err == nil {
		err = werr
	}
	switch {
	case err != nil:
	case n != size:
		err = fmt.Errorf("received %d bytes, want %d", n, size)
	case v != nil && v.Err() != nil:
		err = v.Err()
	}
	return s, err
}
