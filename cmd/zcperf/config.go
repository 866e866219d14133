package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// config is the parsed command line.
type config struct {
	server    bool
	client    string
	addr      string
	size      int64
	read      int
	msg       int
	mss       bool
	zerocopy  bool
	rounds    int
	workloads []string
	rows      []receiver // what runs, in order: the bulk receivers chosen by -recv, then the other workloads
	requests  int
	conns     int
	body      int
	busy      bool
	verify    bool
	json      bool
	timeout   time.Duration
	out       io.Writer // where the result goes (stdout)
}

const usageHead = `zcperf measures the receiver's CPU time per MiB (per request for http) with
net.TCPConn and with zcnet, in alternating rounds, and prints medians.

Usage:
  zcperf [flags]                  everything on this host (loopback)
  zcperf -s [-addr :9100] [flags] two hosts: the receiver ...
  zcperf -c HOST:9100 [flags]     ... and the sender (same -size, -rounds, -recv, -workload)
  zcperf doctor [-json] [-seconds N] [-rounds N] [-busy]
                                  check this host instead: whether zero-copy receive
                                  helps here, why, and which mode to use
                                  ("zcperf doctor -h" for its flags)

"vs net" in the output: the row's receiver CPU per MiB (per request for http) divided by
that of net.TCPConn in the same workload and round, median over the rounds of those
ratios. It is not the ratio of the two medians printed beside it, and can differ from it
on a noisy host. Lower is better; below 1.00x zcnet costs less CPU than net.TCPConn.

Flags:
`

// errReported is a command-line error that has been printed already.
var errReported = errors.New("invalid command line")

// parseFlags parses args; it returns flag.ErrHelp after printing the usage for -h.
func parseFlags(args []string, out io.Writer) (*config, error) {
	cfg := &config{out: os.Stdout}
	var recv, workloads string
	fs := flag.NewFlagSet("zcperf", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageHead)
		fs.PrintDefaults()
	}
	// Usage strings name their value in backquotes (flag shows it as the placeholder);
	// they contain no other backquotes.
	fs.BoolVar(&cfg.server, "s", false, "two hosts: be the receiver; listen on -addr for the streams a remote zcperf -c sends")
	fs.StringVar(&cfg.client, "c", "", "two hosts: be the sender; send the streams to the zcperf -s at `host:port`")
	fs.StringVar(&cfg.addr, "addr", "", "listen `address` (default 127.0.0.1:0, or :9100 with -s)")
	fs.Int64Var(&cfg.size, "size", 512<<20, "`bytes` per stream")
	fs.IntVar(&cfg.read, "read", 512<<10, "Read buffer size in `bytes`")
	fs.IntVar(&cfg.msg, "msg", 1<<20, fmt.Sprintf("Next size in `bytes` (at most %d)", zcnet.DefaultRingSize))
	fs.BoolVar(&cfg.mss, "mss", true, "page-sized MSS: the listener advertises it and the sender sets it")
	fs.BoolVar(&cfg.zerocopy, "zerocopy", true, "the sender sends with MSG_ZEROCOPY (mappable pages on loopback)")
	fs.IntVar(&cfg.rounds, "rounds", 5, "`n` rounds over all rows; the table shows medians")
	fs.StringVar(&workloads, "workload", "bulk", "comma-separated `list` of workloads: "+strings.Join(workloadNames, ",")+", or all")
	fs.StringVar(&recv, "recv", "", "comma-separated `list` of bulk receivers (default all): "+strings.Join(bulkKeys(), ","))
	fs.IntVar(&cfg.requests, "requests", 20000, "http: `n` requests per round")
	fs.IntVar(&cfg.conns, "conns", 32, "http: `n` keep-alive client conns")
	fs.IntVar(&cfg.body, "body", 512, "http: request body `bytes`")
	fs.BoolVar(&cfg.busy, "busy", false, "keep a goroutine spinning on another CPU in the receiver during each transfer (its CPU is not counted)")
	fs.BoolVar(&cfg.verify, "verify", false, "check every received byte against the sent pattern (costs receiver CPU)")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object per row instead of the table")
	fs.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "each stream (or http round) must arrive and end within `duration`")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, errReported // fs has printed the error and the usage
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case cfg.server && cfg.client != "":
		return nil, errors.New("-s and -c exclude each other")
	case cfg.size <= 0:
		return nil, errors.New("-size must be positive")
	case cfg.read <= 0:
		return nil, errors.New("-read must be positive")
	case cfg.msg <= 0 || cfg.msg > zcnet.DefaultRingSize:
		return nil, fmt.Errorf("-msg must be in 1..%d", zcnet.DefaultRingSize)
	case cfg.rounds <= 0:
		return nil, errors.New("-rounds must be positive")
	case cfg.requests <= 0 || cfg.conns <= 0:
		return nil, errors.New("-requests and -conns must be positive")
	case cfg.body < 0 || cfg.body > len(zcsend.PatternBytes()):
		return nil, fmt.Errorf("-body must be in 0..%d", len(zcsend.PatternBytes()))
	case cfg.timeout <= 0:
		return nil, errors.New("-timeout must be positive")
	}
	if cfg.addr == "" {
		cfg.addr = "127.0.0.1:0"
		if cfg.server {
			cfg.addr = ":9100"
		}
	}
	if workloads == "all" {
		cfg.workloads = workloadNames
	} else {
		for _, w := range strings.Split(workloads, ",") {
			if !slices.Contains(workloadNames, w) {
				return nil, fmt.Errorf("unknown workload %q (want %s, or all)", w, strings.Join(workloadNames, ","))
			}
			if !slices.Contains(cfg.workloads, w) {
				cfg.workloads = append(cfg.workloads, w)
			}
		}
	}
	if (cfg.server || cfg.client != "") && slices.Contains(cfg.workloads, "http") {
		return nil, errors.New("the http workload runs on one host only (it starts its own clients)")
	}
	if recv != "" && !slices.Contains(cfg.workloads, "bulk") {
		return nil, errors.New("-recv chooses bulk receivers: add bulk to -workload")
	}
	for _, w := range cfg.workloads {
		if w != "bulk" {
			cfg.rows = append(cfg.rows, workloadRows(w)...)
			continue
		}
		if recv == "" {
			cfg.rows = append(cfg.rows, bulkReceivers...)
			continue
		}
		for _, k := range strings.Split(recv, ",") {
			i := slices.IndexFunc(bulkReceivers, func(r receiver) bool { return r.key == k })
			if i < 0 {
				return nil, fmt.Errorf("unknown receiver %q (want %s)", k, strings.Join(bulkKeys(), ","))
			}
			cfg.rows = append(cfg.rows, bulkReceivers[i])
		}
	}
	return cfg, nil
}
