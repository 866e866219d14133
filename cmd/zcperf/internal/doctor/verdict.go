package doctor

// The verdict, a pure function of the host facts and the measurements, and the
// diagnosis of each cause run.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/zcnet/zcnet"
)

// Verdict is the doctor's conclusion.
type Verdict struct {
	// Mode is the Options.Mode to use here: "ModeAuto" or "ModeZeroCopy".
	Mode string `json:"mode"`
	// Reason is the condition the mode rests on, in a few words and without measured
	// costs, so that it reads the same from run to run while the host stays the same.
	Reason string `json:"reason"`
	// OrdinaryMappedPct is what an ordinary sender (plain writes, no MSG_ZEROCOPY) got
	// mapped on loopback, in percent; -1 when not measured.
	OrdinaryMappedPct float64 `json:"ordinary_mapped_pct"`
	// MappableInterfaces are the up interfaces whose traffic can map: a segment carries
	// a page of payload and the NIC splits headers from payload.
	MappableInterfaces []string `json:"mappable_interfaces"`
	// MappingPays: "yes" (ModeZeroCopy pays with Read too), "next" (with Next and
	// WriteTo only), "no", or "unknown" (not measured, or nothing was mapped), as the
	// CPU comparison (a MSG_ZEROCOPY sender, whose pages map) measured it.
	MappingPays string   `json:"mapping_pays"`
	Summary     string   `json:"summary"`
	Findings    []string `json:"findings"`
	Changes     []string `json:"changes"` // what to change to get pages mapped, or to map at all
}

// find adds a finding.
func (v *Verdict) find(f string, a ...any) { v.Findings = append(v.Findings, fmt.Sprintf(f, a...)) }

// change adds a change to make.
func (v *Verdict) change(f string, a ...any) { v.Changes = append(v.Changes, fmt.Sprintf(f, a...)) }

// paysAt is the map/copy ratio of CPU per MiB at or under which mapping is said to pay:
// a margin for the noise of a few rounds.
const paysAt = 0.90

// mostlyMapped is the mapped share, in percent, at which the CPU comparison prices
// mapping: Next can copy the odd partial page when a message ends mid-page.
const mostlyMapped = 90

// paysIn says whether a map/copy ratio shows that mapping pays: its median is at most
// paysAt and at least three rounds in four found mapping cheaper (one outlier in five
// rounds is the noise of a shared host; one in three is not a clear answer).
func paysIn(median float64, samples []float64) bool {
	cheaper := 0
	for _, x := range samples {
		if x < 1 {
			cheaper++
		}
	}
	return median <= paysAt && len(samples) > 0 && 4*cheaper >= 3*len(samples)
}

// causeNames are the Stats fields that count copied bytes by cause.
var causeNames = []string{"CopiedPolicy", "CopiedDisabled", "CopiedTail", "CopiedSegment", "CopiedPageKind"}

// causes returns the copy-cause counters of st, in causeNames order.
func causes(st zcnet.Stats) []uint64 {
	return []uint64{st.CopiedPolicy, st.CopiedDisabled, st.CopiedTail, st.CopiedSegment, st.CopiedPageKind}
}

// mainCause is the name of the cause with most copied bytes, or "" when none is
// counted.
func mainCause(st zcnet.Stats) string {
	best, name := uint64(0), ""
	for i, v := range causes(st) {
		if v > best {
			best, name = v, causeNames[i]
		}
	}
	return name
}

// causeText explains a copy cause.
var causeText = map[string]string{
	"CopiedPolicy":   "the mode chose to copy",
	"CopiedDisabled": "mapping was not available (FallbackReason says why)",
	"CopiedTail":     "less than a page was queued, or a partial page at the head or tail of a segment",
	"CopiedSegment":  "segments did not carry a page of payload (TCP_INFO rcv_mss is not the page size): the listener needs PageAlignedMSS, or the NIC header split",
	"CopiedPageKind": "page-sized segments the kernel would not map because the sender's pages are compound (on loopback: a sender without MSG_ZEROCOPY while net.core.high_order_alloc_disable is 0)",
}

// diagnose explains a cause run: the mapped share and every copy cause counted,
// largest first.
func diagnose(r CauseRun) string {
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
	for i, v := range causes(st) {
		if v > 0 {
			cs = append(cs, cause{causeNames[i], v})
		}
	}
	if len(cs) == 0 {
		return s + fmt.Sprintf("; %s copied, causes not reported by this build", formatBytes(int64(st.CopiedBytes)))
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
			100*float64(c.n)/float64(st.MappedBytes+st.CopiedBytes), causeText[c.name]))
	}
	if st.FallbackReason != "" {
		parts = append(parts, "FallbackReason: "+st.FallbackReason)
	}
	return s + "; copied: " + strings.Join(parts, "; ")
}

// formatRatios formats ratios as "0.91x 1.05x ...".
func formatRatios(xs []float64) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.2fx", x)
	}
	return b.String()
}

// intOr formats n, or returns unknown for a negative n.
func intOr(n int, unknown string) string {
	if n < 0 {
		return unknown
	}
	return strconv.Itoa(n)
}
