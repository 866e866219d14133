// Package doctor is "zcperf doctor": it checks whether zcnet's zero-copy receive helps on
// this host, and says why: host checks (host.go; the facts only Linux has in
// host_linux.go), loopback measurements (measure.go) and a verdict (verdict.go), a pure
// function of the two.
//
// The binary that calls Main must run zcsend.RunFromEnv first thing: the CPU comparison
// re-executes it as its sender.
package doctor

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// Report is the whole output, also its JSON form.
type Report struct {
	Host         Host         `json:"host"`
	Checks       []Check      `json:"checks"`
	Measurements Measurements `json:"measurements"`
	Verdict      Verdict      `json:"verdict"`
}

// Main runs "zcperf doctor" with args and returns the exit status.
func Main(args []string) int {
	fs := flag.NewFlagSet("zcperf doctor", flag.ContinueOnError)
	jsonOut := fs.Bool("json", false, "print one JSON object instead of the report")
	seconds := fs.Float64("seconds", 6, "time for the loopback measurements; 0 runs the checks and the short cause runs only")
	rounds := fs.Int("rounds", 5, "rounds of the CPU comparison (medians)")
	busy := fs.Bool("busy", false, "keep a goroutine spinning on another CPU during each transfer of the CPU comparison (its CPU is not counted), as zcperf -busy does")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: zcperf doctor [-json] [-seconds N] [-rounds N] [-busy]\n\n"+
			"Says whether zcnet's zero-copy receive helps on this host, and why: host checks,\n"+
			"what the traffic this host will see maps (an ordinary sender on loopback, each up\n"+
			"interface), what mapping costs against copying, and a verdict. Exit status 0 when\n"+
			"it ran (the verdict is in the output), 1 when a measurement could not be made, 2\n"+
			"for bad arguments.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *seconds < 0 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "zcperf doctor: want [-json] [-seconds N>=0] [-rounds N>=1] [-busy]")
		return 2
	}
	progress := func(string) {}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		progress = func(s string) { fmt.Fprintf(os.Stderr, "\r\033[Kzcperf doctor: %s", s) }
		defer fmt.Fprint(os.Stderr, "\r\033[K")
	}
	var rep Report
	rep.Host = readHost()
	rep.Checks = checks(rep.Host)
	rep.Measurements = measure(rep.Host, time.Duration(*seconds*float64(time.Second)), *rounds, *busy, progress)
	progress("")
	rep.Verdict = Decide(rep.Host, rep.Measurements)
	if *jsonOut {
		if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "zcperf doctor:", err)
			return 1
		}
	} else if err := writeReport(os.Stdout, &rep); err != nil {
		fmt.Fprintln(os.Stderr, "zcperf doctor:", err)
		return 1
	}
	if failed(&rep.Measurements) {
		return 1
	}
	return 0
}

// failed reports whether a measurement could not be made (an error, not a finding).
func failed(m *Measurements) bool {
	for _, r := range m.Causes {
		if r.Error != "" {
			return true
		}
	}
	return m.Cost != nil && m.Cost.Error != ""
}

// writeReport writes the report in plain words.
func writeReport(w io.Writer, r *Report) error {
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
		fmt.Fprintf(&b, "  %s, %s: %s\n", c.Title, formatBytes(c.Bytes), c.Diagnosis)
	}
	if c := m.Cost; c != nil {
		busy := ""
		if c.BusyGoroutine {
			busy = ", a busy goroutine spinning"
		}
		fmt.Fprintf(&b, "\n  receiver CPU per MiB, MSG_ZEROCOPY sender, PageAlignedMSS (%d rounds of %s%s; medians;\n  vs net: the median of each round's ratio to net.TCPConn Read):\n",
			c.Rounds, formatBytes(c.BytesPerTransfer), busy)
		if c.Error != "" {
			fmt.Fprintf(&b, "  failed: %s\n", c.Error)
		}
		for _, row := range c.Receivers {
			mapped := "-"
			if row.Stats != nil {
				mapped = fmt.Sprintf("%.1f%%", row.MappedPct)
			}
			fmt.Fprintf(&b, "    %-32s %8.1f us/MiB  mapped %6s  vs net %.2fx\n", row.Receiver, row.CPUPerMiB, mapped, row.Ratio)
		}
	}
	v := &r.Verdict
	fmt.Fprintf(&b, "\nVerdict: %s (%s)\n  %s\n", v.Mode, v.Reason, v.Summary)
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
