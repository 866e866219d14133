package doctor

// The host facts and the checks made of them.

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/zcnet/zcnet"
)

// Check statuses.
const (
	statusOK      = "ok"
	statusWarn    = "warn"
	statusFail    = "fail"
	statusUnknown = "unknown"
)

// Check is one line of the host report.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Value  string `json:"value"`
	Detail string `json:"detail"`
}

// Host are the facts the host checks are made of. Integers are -1 where unknown.
type Host struct {
	OS     string `json:"os"`
	Kernel string `json:"kernel"` // uname release
	// SupportedError is zcnet.Supported()'s error text, empty when it returned nil.
	SupportedError string `json:"supported_error"`
	// Seccomp is /proc/self/status's Seccomp field: 0 none, 1 strict, 2 filter.
	Seccomp   int    `json:"seccomp"`
	Container string `json:"container"` // a hint that this is a container, or ""
	// Limits are zcnet.DefaultLimits(): how many conns may map at once, and how much.
	Limits zcnet.Limits `json:"limits"`
	// MaxMapCount is vm.max_map_count and RlimitAS is RLIMIT_AS in bytes (-1 unlimited,
	// -2 unknown): what the limits derive from, named when they bind.
	MaxMapCount int   `json:"max_map_count"`
	RlimitAS    int64 `json:"rlimit_as"`
	PageSize    int   `json:"page_size"`
	// HighOrderAllocDisable is net.core.high_order_alloc_disable.
	HighOrderAllocDisable int     `json:"high_order_alloc_disable"`
	Interfaces            []Iface `json:"interfaces"`
	InterfacesError       string  `json:"interfaces_error,omitempty"`
}

// Iface is a non-loopback network interface.
type Iface struct {
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

// Header sizes for payload: IPv4 and IPv6 headers without options, and the TCP header
// with the timestamp option Linux uses by default.
const (
	ipv4Header = 20
	ipv6Header = 40
	tcpHeader  = 20 + 12
)

// payload is the TCP payload one segment carries at mtu with an IP header of ipHeader
// bytes (0 when the MTU is too small for the headers).
func payload(mtu, ipHeader int) int {
	return max(0, mtu-ipHeader-tcpHeader)
}

// minMTU is the MTU needed for one page of TCP payload per segment.
func minMTU(page, ipHeader int) int { return page + ipHeader + tcpHeader }

// readHost gathers the host facts of the checks.
func readHost() Host {
	h := Host{
		OS:                    runtime.GOOS,
		Seccomp:               -1,
		MaxMapCount:           -1,
		RlimitAS:              -2,
		Limits:                zcnet.DefaultLimits(),
		PageSize:              os.Getpagesize(),
		HighOrderAllocDisable: -1,
	}
	hostOS(&h)
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
		d := Iface{
			Name:        ifc.Name,
			Up:          ifc.Flags&net.FlagUp != 0,
			MTU:         ifc.MTU,
			PayloadIPv4: payload(ifc.MTU, ipv4Header),
			PayloadIPv6: payload(ifc.MTU, ipv6Header),
		}
		d.HeaderSplit, d.HeaderSplitDetail = headerSplit(ifc.Name)
		h.Interfaces = append(h.Interfaces, d)
	}
	return h
}

// checks turns the host facts into checks, each with a status and an explanation.
func checks(h Host) []Check {
	var cs []Check
	add := func(name, status, value, detail string) {
		cs = append(cs, Check{Name: name, Status: status, Value: value, Detail: detail})
	}
	switch major, minor, ok := parseRelease(h.Kernel); {
	case h.OS != "linux":
		add("kernel", statusFail, h.OS, "zero-copy receive exists only on Linux: zcnet conns copy, like net.TCPConn")
	case !ok:
		add("kernel", statusUnknown, h.Kernel, "cannot read the version from the release")
	case major < 4 || major == 4 && minor < 18:
		add("kernel", statusFail, h.Kernel, "TCP_ZEROCOPY_RECEIVE needs Linux 4.18 or later")
	default:
		add("kernel", statusOK, h.Kernel, "TCP_ZEROCOPY_RECEIVE exists from Linux 4.18")
	}
	if h.SupportedError == "" {
		add("supported", statusOK, "yes", "zcnet.Supported(): mmap on a TCP socket and getsockopt(TCP_ZEROCOPY_RECEIVE) both work in this process")
	} else {
		add("supported", statusFail, "no", "zcnet.Supported(): "+h.SupportedError+"; every conn copies")
	}
	switch h.Seccomp {
	case -1:
		add("seccomp", statusUnknown, "?", "no Seccomp field in /proc/self/status")
	case 0:
		add("seccomp", statusOK, "none", "no seccomp filter on this process")
	default:
		v := map[int]string{1: "strict", 2: "filter"}[h.Seccomp]
		if v == "" {
			v = strconv.Itoa(h.Seccomp)
		}
		if h.SupportedError == "" {
			add("seccomp", statusOK, v, "a seccomp policy is active, and it lets mmap on sockets and getsockopt through (Supported says so)")
		} else {
			add("seccomp", statusWarn, v, "a seccomp policy is active: it may be what refuses the calls Supported names")
		}
	}
	if h.Container != "" {
		add("container", statusOK, h.Container, "running in a container: its seccomp policy and limits apply (the checks above and below show their effect)")
	}
	n, by := ringRoom(h)
	st := statusOK
	if n < 1 {
		st = statusFail
	}
	ringBytes := "no bound"
	if h.Limits.MaxRingBytes < 1<<60 {
		ringBytes = fmt.Sprintf("%s = %d rings of %s", formatBytes(h.Limits.MaxRingBytes), h.Limits.MaxRingBytes/zcnet.DefaultRingSize, formatBytes(zcnet.DefaultRingSize))
	}
	add("limits", st, fmt.Sprintf("%d conns map at once", n),
		fmt.Sprintf("zcnet.DefaultLimits: MaxRings %d (from vm.max_map_count %s), MaxRingBytes %s (from RLIMIT_AS %s), MaxPinnedBytes %s; %s binds: conns past it copy (Stats.CopiedDisabled, FallbackReason names the limit), zcnet.SetLimits changes them",
			h.Limits.MaxRings, intOr(h.MaxMapCount, "unknown"), ringBytes, rlimitText(h.RlimitAS), formatBytes(h.Limits.MaxPinnedBytes), by))
	if h.PageSize == 4096 {
		add("page_size", statusOK, "4 KiB", "PageAlignedMSS advertises an MSS of 4108 (a page plus the timestamp option)")
	} else {
		add("page_size", statusWarn, formatBytes(int64(h.PageSize)),
			fmt.Sprintf("pages are large: a segment must carry %d bytes of payload to be mapped (PageAlignedMSS advertises %d)", h.PageSize, h.PageSize+12))
	}
	switch h.HighOrderAllocDisable {
	case 0:
		add("high_order_alloc_disable", statusWarn, "0", "ordinary senders on loopback (no MSG_ZEROCOPY) put payload in compound pages, which the kernel cannot map; only MSG_ZEROCOPY senders' payload maps on loopback")
	case -1:
		add("high_order_alloc_disable", statusUnknown, "?", "cannot read /proc/sys/net/core/high_order_alloc_disable")
	default:
		add("high_order_alloc_disable", statusOK, strconv.Itoa(h.HighOrderAllocDisable), "senders on loopback use order-0 pages: ordinary senders' payload can be mapped")
	}
	if h.InterfacesError != "" {
		add("interfaces", statusUnknown, "?", h.InterfacesError)
	} else if len(h.Interfaces) == 0 {
		add("interfaces", statusWarn, "loopback only", "no network interface but loopback: only loopback traffic can be examined here")
	}
	for _, ifc := range h.Interfaces {
		st, detail := ifaceStatus(ifc, h.PageSize)
		state := "down"
		if ifc.Up {
			state = "up"
		}
		add("interface "+ifc.Name, st, fmt.Sprintf("%s, MTU %d, header split %s", state, ifc.MTU, ifc.HeaderSplit), detail)
	}
	return cs
}

// ringRoom is how many conns with the default ring may map at once under h.Limits, and
// the limit that binds: "MaxRings" or "MaxRingBytes".
func ringRoom(h Host) (int64, string) {
	rings, bytes := int64(h.Limits.MaxRings), h.Limits.MaxRingBytes/zcnet.DefaultRingSize
	if bytes < rings {
		return bytes, "MaxRingBytes"
	}
	return rings, "MaxRings"
}

// rlimitText formats an RLIMIT_AS fact.
func rlimitText(n int64) string {
	switch n {
	case -1:
		return "unlimited"
	case -2:
		return "unknown"
	}
	return formatBytes(n)
}

// ifaceStatus rates an interface for mapping: a page of payload must fit in a segment
// and the NIC must split headers from payload.
func ifaceStatus(ifc Iface, page int) (string, string) {
	fits := ifc.PayloadIPv4 >= page
	var parts []string
	if fits {
		parts = append(parts, fmt.Sprintf("a segment carries %d bytes of TCP payload over IPv4 (%d over IPv6): a page fits", ifc.PayloadIPv4, ifc.PayloadIPv6))
	} else {
		parts = append(parts, fmt.Sprintf("a segment carries at most %d bytes of TCP payload over IPv4 (%d over IPv6): no page fits, so traffic through it is copied; an MTU of %d (IPv4) or %d (IPv6) carries a page",
			ifc.PayloadIPv4, ifc.PayloadIPv6, minMTU(page, ipv4Header), minMTU(page, ipv6Header)))
	}
	switch ifc.HeaderSplit {
	case "enabled":
		parts = append(parts, "the NIC splits headers from payload")
	case "disabled":
		parts = append(parts, "the NIC does not split headers from payload (tcp-data-split off): payload shares pages with headers and is copied")
	default:
		parts = append(parts, "header split: unknown ("+ifc.HeaderSplitDetail+")")
	}
	st := statusWarn
	switch {
	case fits && ifc.HeaderSplit == "enabled":
		st = statusOK
	case fits && ifc.HeaderSplit == "unknown":
		st = statusUnknown
	}
	return st, strings.Join(parts, "; ")
}

// formatBytes formats n bytes in binary units.
func formatBytes(n int64) string {
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

// parseRelease returns the major and minor version of a kernel release such as
// "6.18.0-rc1".
func parseRelease(rel string) (major, minor int, ok bool) {
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

// statusField returns the value of field key in a /proc/PID/status text.
func statusField(status, key string) (string, bool) {
	for line := range strings.Lines(status) {
		k, v, ok := strings.Cut(line, ":")
		if ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// parseInt parses a one-number file such as a sysctl, or returns -1.
func parseInt(b []byte) int {
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// containerHint says whether this looks like a container, from cheap signs: the
// marker files of Docker and Podman, the container environment variable, and pid 1's
// cgroup.
func containerHint(exists func(string) bool, getenv func(string) string, cgroup1 string) string {
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
