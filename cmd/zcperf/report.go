package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
)

// row is one line of the result, also its JSON form.
type row struct {
	Workload string `json:"workload"`
	Receiver string `json:"receiver"`
	Key      string `json:"key"`
	Bytes    int64  `json:"bytes"`              // per transfer
	Requests int64  `json:"requests,omitempty"` // per transfer (http)
	Rounds   int    `json:"rounds"`
	// Gbits (streams) or ReqPerSec (http) is the median rate.
	Gbits     float64 `json:"gbit_s,omitempty"`
	ReqPerSec float64 `json:"req_per_s,omitempty"`
	// CPUPerMiB (streams) or CPUPerReq (http) is the median receiver CPU time, and
	// CPUSamples the value of each round.
	CPUPerMiB  float64   `json:"cpu_us_per_mib,omitempty"`
	CPUPerReq  float64   `json:"cpu_us_per_req,omitempty"`
	CPUSamples []float64 `json:"cpu_samples"`
	// SndPerMiB is the median CPU time of the local sender process per MiB (its whole
	// life, start-up included; 0 for http and in two-host mode), SumPerMiB the median of
	// sender plus receiver.
	SndPerMiB float64 `json:"snd_cpu_us_per_mib,omitempty"`
	SumPerMiB float64 `json:"sum_cpu_us_per_mib,omitempty"`
	MappedPct float64 `json:"mapped_pct"`
	// Ratio ("vs net") is the median over rounds of this row's CPU per MiB (per request
	// for http) divided by that of the workload's net.TCPConn row in the same round; 0
	// when that row did not run.
	Ratio    float64 `json:"ratio_to_net"`
	Verified bool    `json:"verified,omitempty"`
	Busy     bool    `json:"busy,omitempty"`
	// Stats are zcnet's counters summed over the rounds (nil for net.TCPConn).
	Stats *zcnet.Stats `json:"stats,omitempty"`
}

// rows computes the result rows from the samples of every row of cfg.
func rows(cfg *config, samples [][]sample) []row {
	out := make([]row, len(cfg.rows))
	for i, r := range cfg.rows {
		base := slices.IndexFunc(cfg.rows, func(b receiver) bool { return b.workload == r.workload && b.key == "net" })
		var rate, cpu, ratio, snd, sum []float64
		var st zcnet.Stats
		o := row{Workload: r.workload, Receiver: r.name, Key: r.key, Rounds: len(samples[i]), Verified: cfg.verify, Busy: cfg.busy}
		for k, s := range samples[i] {
			rate = append(rate, s.rate())
			cpu = append(cpu, s.cpuPerUnit())
			if s.sndSecs > 0 && s.requests == 0 {
				snd = append(snd, s.sndPerMiB())
				sum = append(sum, s.sndPerMiB()+s.cpuPerUnit())
			}
			if base >= 0 && samples[base][k].cpuPerUnit() > 0 {
				ratio = append(ratio, s.cpuPerUnit()/samples[base][k].cpuPerUnit())
			}
			st.Add(s.stats)
			o.Bytes, o.Requests = s.bytes, s.requests
		}
		o.CPUSamples, o.Ratio, o.MappedPct = cpu, cpumeter.Median(ratio), 100*st.MappedShare()
		o.SndPerMiB, o.SumPerMiB = cpumeter.Median(snd), cpumeter.Median(sum)
		if r.kind == kindHTTP {
			o.ReqPerSec, o.CPUPerReq = cpumeter.Median(rate), cpumeter.Median(cpu)
		} else {
			o.Gbits, o.CPUPerMiB = cpumeter.Median(rate), cpumeter.Median(cpu)
		}
		if r.zc {
			o.Stats = &st
		}
		out[i] = o
	}
	return out
}

// report prints the table (or JSON rows) from the samples of every row.
func report(cfg *config, samples [][]sample) error {
	rs := rows(cfg, samples)
	if cfg.json {
		enc := json.NewEncoder(cfg.out)
		for _, r := range rs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	fmt.Fprintf(cfg.out, "zcperf: %d rounds; streams of %d MiB, read %d KiB, Next %d KiB, page MSS %v, MSG_ZEROCOPY %v",
		cfg.rounds, cfg.size>>20, cfg.read>>10, cfg.msg>>10, cfg.mss, cfg.zerocopy)
	if slices.Contains(cfg.workloads, "http") {
		fmt.Fprintf(cfg.out, "; http %d requests of %d B over %d conns", cfg.requests, cfg.body, cfg.conns)
	}
	fmt.Fprintf(cfg.out, "; verify %v, busy %v\n", cfg.verify, cfg.busy)
	fmt.Fprintf(cfg.out, "%-9s %-23s %15s %15s %13s %13s %9s %7s\n", "workload", "receiver", "rate", "receiver CPU", "sender CPU", "sum", "mapped %", "vs net")
	for i, r := range rs {
		mapped, ratio := "-", "-"
		if cfg.rows[i].zc {
			mapped = fmt.Sprintf("%.2f", r.MappedPct)
		}
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		rate := fmt.Sprintf("%.2f Gbit/s", r.Gbits)
		cpu := fmt.Sprintf("%.1f us/MiB", r.CPUPerMiB)
		if cfg.rows[i].kind == kindHTTP {
			rate = fmt.Sprintf("%.0f req/s", r.ReqPerSec)
			cpu = fmt.Sprintf("%.1f us/req", r.CPUPerReq)
		}
		snd, sum := "-", "-"
		if r.SndPerMiB > 0 {
			snd, sum = fmt.Sprintf("%.1f us/MiB", r.SndPerMiB), fmt.Sprintf("%.1f us/MiB", r.SumPerMiB)
		}
		fmt.Fprintf(cfg.out, "%-9s %-23s %15s %15s %13s %13s %9s %7s\n", r.Workload, r.Receiver, rate, cpu, snd, sum, mapped, ratio)
	}
	fmt.Fprintln(cfg.out, "receiver CPU: getrusage user+sys of this process per MiB (per request for http), median over rounds.")
	fmt.Fprintln(cfg.out, "sender CPU: the local sender process's user+sys per MiB over its life; sum: sender plus receiver.")
	fmt.Fprintln(cfg.out, "vs net: that CPU divided by net.TCPConn's in the same workload and round, the median of those per-round")
	fmt.Fprintln(cfg.out, "        ratios (not the ratio of the two medians above, which a noisy round can move); lower is better.")
	return nil
}

// progress reports progress on stderr: on a terminal as one line rewritten in place,
// otherwise as plain lines, one per round, without terminal escape codes.
type progress struct {
	tty bool
}

func newProgress() *progress { return &progress{tty: isTerminal(os.Stderr)} }

// status shows a status line; off a terminal only the lines that start a step are
// printed.
func (p *progress) status(step bool, format string, args ...any) {
	switch {
	case p.tty:
		fmt.Fprintf(os.Stderr, "\r\033[Kzcperf: "+format, args...)
	case step:
		fmt.Fprintf(os.Stderr, "zcperf: "+format+"\n", args...)
	}
}

// done ends the status line with a final message.
func (p *progress) done(format string, args ...any) {
	if p.tty {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	fmt.Fprintf(os.Stderr, "zcperf: "+format+"\n", args...)
}
