package doctor

import (
	"fmt"
	"strings"
)

// Decide is the verdict: a pure function of the host facts and the measurements.
//
// It recommends ModeZeroCopy only where the traffic this host will see maps (an ordinary
// sender on loopback got its stream mapped, or an up interface carries a page per segment
// and splits headers from payload) and the CPU comparison found mapping cheaper than
// copying. Otherwise the mode is ModeAuto, and Reason names the condition that decided:
// the first of "nothing real maps", "mapping is not cheaper", "not measured".
func Decide(h Host, m Measurements) Verdict {
	v := Verdict{Mode: "ModeAuto", MappingPays: "unknown", OrdinaryMappedPct: -1}
	if h.SupportedError != "" {
		v.decideUnsupported(h)
		return v
	}
	n, by := ringRoom(h)
	if n < 1 {
		v.change("raise vm.max_map_count (now %s) or RLIMIT_AS (now %s): zcnet.DefaultLimits lets no conn map (%s binds)",
			intOr(h.MaxMapCount, "unknown"), rlimitText(h.RlimitAS), by)
	} else {
		v.find("zcnet.DefaultLimits lets %d conns map at once (%s binds); conns past that copy", n, by)
	}
	v.MappingPays = v.priceMapping(m)
	v.causeChanges(h, m)
	v.interfaces(h)
	if r := m.run(runPlain); r != nil && r.Error == "" {
		v.OrdinaryMappedPct = r.MappedPct
	}
	v.choose(h, m.Cost)
	return v
}

// decideUnsupported is the verdict where zcnet cannot map at all.
func (v *Verdict) decideUnsupported(h Host) {
	v.MappingPays = "no"
	v.Reason = "zcnet cannot map here"
	v.Summary = "zcnet cannot map on this host, so every conn copies like a net.TCPConn: use ModeAuto (the default), which costs about what net.TCPConn does; nothing else pays here."
	v.find("zcnet.Supported: %s", h.SupportedError)
	major, minor, ok := parseRelease(h.Kernel)
	switch {
	case h.OS != "linux":
		v.change("run on Linux 4.18 or later: zero-copy receive is Linux-only")
	case ok && (major < 4 || major == 4 && minor < 18):
		v.change("upgrade the kernel to Linux 4.18 or later (5.11 or later batches mapping better)")
	default:
		v.change("let the process call mmap on TCP sockets and getsockopt(IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE): the sandbox or seccomp policy refuses them")
	}
}

// priceMapping reads the CPU comparison, adds its findings and returns whether mapping
// pays: "yes", "next", "no" or "unknown".
func (v *Verdict) priceMapping(m Measurements) string {
	c := m.Cost
	net, rd, nx, cp := c.row("net_read"), c.row("zc_read"), c.row("zc_next"), c.row("copy_next")
	switch {
	case m.Skipped != "":
		v.find("measurements skipped: %s", m.Skipped)
		return "unknown"
	case c == nil:
		v.find("receiver CPU not measured (-seconds 0)")
		return "unknown"
	case c.Error != "":
		v.find("receiver CPU comparison failed: %s", c.Error)
		return "unknown"
	case net == nil || rd == nil || nx == nil || cp == nil:
		v.find("receiver CPU comparison incomplete")
		return "unknown"
	case rd.MappedPct < mostlyMapped || nx.MappedPct < mostlyMapped:
		v.find("the CPU comparison did not map its pages (Read %.1f%%, Next %.1f%% mapped), so it does not price mapping", rd.MappedPct, nx.MappedPct)
		return "unknown"
	}
	busy := ""
	if c.BusyGoroutine {
		busy = " with a busy goroutine in the process"
	}
	v.find("receiver CPU per MiB from a MSG_ZEROCOPY sender%s: net.TCPConn Read %.0f us/MiB; zcnet ModeZeroCopy Read %.2fx of it (%.1f%% mapped), ModeZeroCopy Next %.2fx (%.1f%% mapped), ModeCopy Next %.2fx",
		busy, net.CPUPerMiB, rd.Ratio, rd.MappedPct, nx.Ratio, nx.MappedPct, cp.Ratio)
	v.find("mapping against copying: Read %.2fx (ModeZeroCopy Read / net.TCPConn Read), Next %.2fx (ModeZeroCopy Next / the cheaper of ModeCopy Next and net.TCPConn Read)",
		c.MapCopyRead, c.MapCopyNext)
	for _, r := range []struct {
		what    string
		median  float64
		samples []float64
	}{{"Read", c.MapCopyRead, c.MapCopyReadSamples}, {"Next", c.MapCopyNext, c.MapCopyNextSamples}} {
		if r.median <= paysAt && !paysIn(r.median, r.samples) {
			v.find("the rounds disagree on mapping with %s (map/copy %s): not counted as paying; the host is noisy, run again, with more -rounds", r.what, formatRatios(r.samples))
		}
	}
	switch {
	case paysIn(c.MapCopyRead, c.MapCopyReadSamples):
		return "yes"
	case paysIn(c.MapCopyNext, c.MapCopyNextSamples):
		return "next"
	}
	return "no"
}

// causeChanges adds the cause runs' findings, and the changes that would get pages
// mapped.
func (v *Verdict) causeChanges(h Host, m Measurements) {
	plain, nomss, zc := m.run(runPlain), m.run(runNoMSS), m.run(runZeroCopy)
	zcMaps := zc != nil && zc.Error == "" && zc.MappedPct >= 99
	for _, r := range []*CauseRun{plain, nomss, zc} {
		if r != nil {
			v.find("%s: %s", r.Title, r.Diagnosis)
		}
	}
	if zc != nil && zc.Error == "" && !zcMaps {
		v.change("even a MSG_ZEROCOPY sender to a PageAlignedMSS listener mapped only %.1f%% here (%s)", zc.MappedPct, zc.Diagnosis)
	}
	if plain != nil && plain.Error == "" && plain.MappedPct < 99 {
		// The plain run differs from the zerocopy one by the sender's MSG_ZEROCOPY alone.
		byCause := plain.Stats.CopiedPageKind > 0
		byContrast := zcMaps && mainCause(plain.Stats) == ""
		if byCause || byContrast || h.HighOrderAllocDisable == 0 {
			v.change("on loopback, send with MSG_ZEROCOPY (SO_ZEROCOPY on the sender's socket), or set net.core.high_order_alloc_disable=1 (root, machine-wide; now %s) so that ordinary clients' payload is in order-0 pages that map: an ordinary sender got %.1f%% mapped",
				intOr(h.HighOrderAllocDisable, "unknown"), plain.MappedPct)
		}
	}
	if nomss != nil && nomss.Error == "" {
		bySegment := nomss.Stats.CopiedSegment > 0
		byContrast := zcMaps && mainCause(nomss.Stats) == "" && nomss.MappedPct < 99
		if bySegment || byContrast {
			v.change("set PageAlignedMSS on the listener (zcnet.ListenConfig{Options: zcnet.Options{PageAlignedMSS: true}}): without it a MSG_ZEROCOPY sender got %.1f%% mapped", nomss.MappedPct)
		}
	}
}

// mappable reports whether traffic through ifc can map: it is up, a segment carries a
// page of payload, and the NIC splits headers from payload.
func mappable(ifc Iface, page int) bool {
	return ifc.Up && ifc.PayloadIPv4 >= page && ifc.HeaderSplit == "enabled"
}

// interfaces sets v.MappableInterfaces, and adds what each up interface lacks.
func (v *Verdict) interfaces(h Host) {
	up := 0
	for _, ifc := range h.Interfaces {
		if !ifc.Up {
			continue
		}
		up++
		if mappable(ifc, h.PageSize) {
			v.MappableInterfaces = append(v.MappableInterfaces, ifc.Name)
		}
		if ifc.PayloadIPv4 < h.PageSize {
			v.change("interface %s: MTU %d carries %d bytes of TCP payload per segment, less than a page: an MTU of at least %d (IPv4) or %d (IPv6) is needed for its traffic to map",
				ifc.Name, ifc.MTU, ifc.PayloadIPv4, minMTU(h.PageSize, ipv4Header), minMTU(h.PageSize, ipv6Header))
		}
		if ifc.HeaderSplit != "enabled" {
			v.change("interface %s: header split is %s: its traffic maps only with a NIC that splits headers from payload (tcp-data-split on, e.g. ethtool -G %s tcp-data-split on where the driver has it)",
				ifc.Name, ifc.HeaderSplit, ifc.Name)
		}
	}
	if h.InterfacesError == "" && up == 0 {
		v.find("no network interface but loopback is up: only loopback traffic was examined")
	}
}

// choose sets the mode, the reason and the summary from what maps and what it costs.
func (v *Verdict) choose(h Host, c *Cost) {
	var maps []string
	if v.OrdinaryMappedPct >= mostlyMapped {
		maps = append(maps, fmt.Sprintf("an ordinary sender on loopback got %.1f%% mapped", v.OrdinaryMappedPct))
	}
	for _, name := range v.MappableInterfaces {
		maps = append(maps, "interface "+name+" carries pages that map")
	}
	cost := costText(v.MappingPays, c)
	where := strings.Join(maps, "; ")
	switch {
	case len(maps) == 0:
		v.Reason = "no up interface carries pages that map"
		if v.OrdinaryMappedPct >= 0 {
			v.Reason = fmt.Sprintf("ordinary senders map %.0f%%; %s", v.OrdinaryMappedPct, v.Reason)
		} else {
			v.Reason = "what ordinary senders map was not measured; " + v.Reason
		}
		v.Summary = fmt.Sprintf("The traffic this host will see does not map: %s. ModeZeroCopy would make mapping calls that map nothing: use ModeAuto (the default), which then costs what net.TCPConn costs. Where pages do map (a MSG_ZEROCOPY sender on loopback), %s.",
			trafficText(h, v.OrdinaryMappedPct), cost)
	case v.MappingPays == "yes":
		v.Mode, v.Reason = "ModeZeroCopy", "real senders' pages map and mapping measured cheaper"
		v.Summary = fmt.Sprintf("Real senders' pages map here (%s) and %s: use ModeZeroCopy for bulk streams from them; ModeAuto (the default) is safe everywhere.", where, cost)
	case v.MappingPays == "next":
		v.Mode, v.Reason = "ModeZeroCopy", "real senders' pages map and mapping measured cheaper with Next and WriteTo"
		v.Summary = fmt.Sprintf("Real senders' pages map here (%s) and %s: use ModeZeroCopy for servers that consume with Next or WriteTo; ModeAuto (the default) everywhere else.", where, cost)
	case v.MappingPays == "no":
		v.Reason = "mapping measured no cheaper than copying"
		v.Summary = fmt.Sprintf("Real senders' pages map here (%s), but %s: keep ModeAuto (the default), which measures and copies when copying is cheaper.", where, cost)
	default:
		v.Reason = "what mapping costs was not measured"
		v.Summary = fmt.Sprintf("Real senders' pages map here (%s), but %s: use ModeAuto (the default), which measures and copies when copying is cheaper.", where, cost)
	}
	if cp := c.row("copy_next"); v.MappingPays != "unknown" && cp != nil && cp.Ratio <= paysAt {
		v.Summary += fmt.Sprintf(" Whatever the mode, Next saves wake-ups (it waits for the whole message with SO_RCVLOWAT): ModeCopy Next costs %.2fx of net.TCPConn Read here.", cp.Ratio)
	}
}

// costText says what the CPU comparison found mapping to cost.
func costText(pays string, c *Cost) string {
	switch pays {
	case "yes":
		return fmt.Sprintf("mapping measured cheaper than copying (ModeZeroCopy Read %.2fx of net.TCPConn Read's CPU per MiB, ModeZeroCopy Next %.2fx of the cheapest copying receiver)", c.MapCopyRead, c.MapCopyNext)
	case "next":
		return fmt.Sprintf("mapping measured cheaper only where nothing copies the bytes out again (ModeZeroCopy Next %.2fx of the cheapest copying receiver, ModeZeroCopy Read %.2fx of net.TCPConn Read)", c.MapCopyNext, c.MapCopyRead)
	case "no":
		return fmt.Sprintf("mapping measured no cheaper than copying (ModeZeroCopy Read %.2fx of net.TCPConn Read, ModeZeroCopy Next %.2fx of the cheapest copying receiver, medians)", c.MapCopyRead, c.MapCopyNext)
	}
	return "whether mapping is cheaper than copying was not measured"
}

// trafficText says why the traffic this host will see does not map.
func trafficText(h Host, ordinary float64) string {
	var parts []string
	if ordinary >= 0 {
		parts = append(parts, fmt.Sprintf("an ordinary sender on loopback got %.1f%% mapped", ordinary))
	} else {
		parts = append(parts, "what an ordinary sender on loopback gets mapped was not measured")
	}
	for _, ifc := range h.Interfaces {
		if ifc.Up {
			parts = append(parts, fmt.Sprintf("interface %s carries %d bytes of TCP payload per segment (MTU %d, page %d), header split %s",
				ifc.Name, ifc.PayloadIPv4, ifc.MTU, h.PageSize, ifc.HeaderSplit))
		}
	}
	return strings.Join(parts, "; ")
}
