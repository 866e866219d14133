// Command zcperf measures what receiving a bulk TCP stream costs with net.TCPConn and with
// each of zcnet's receive paths, on loopback or across two hosts.
//
// With no flags it runs everything on this host: for each receiver it starts a sender as a
// separate process (this binary re-executed; it sends a page-aligned stream with
// MSG_ZEROCOPY, the payload TCP_ZEROCOPY_RECEIVE can map on loopback), receives -size
// bytes and measures the receiving process's CPU time (getrusage, user+sys) around the
// transfer. The sender being another process, that CPU is the receiver's alone. The
// receivers run in rounds (A B C ... A B C ...) so that a noisy host disturbs all of them
// alike; the table shows medians over the rounds:
//
//	receiver               Gbit/s  CPU us/MiB  mapped %  vs net
//	net.TCPConn Read        ...
//
// "vs net" is the median over rounds of the receiver's CPU per MiB divided by that of
// net.TCPConn.Read in the same round; "mapped %" is zcnet's Stats.MappedShare over all
// rounds.
//
// Across two hosts, run "zcperf -s" on the receiving host and "zcperf -c HOST:PORT" on the
// sending one, with the same -rounds, -size and -recv: the client sends one stream per
// receiver and round, in the order the server receives them.
//
// Usage:
//
//	zcperf [-s] [-c host:port] [-addr host:port] [-size bytes] [-read bytes] [-msg bytes]
//	       [-mss=true|false] [-zerocopy=true|false] [-rounds n] [-recv list] [-verify] [-json]
package main

import (
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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// recvKind is how a receiver consumes the stream.
type recvKind int

const (
	kindRead    recvKind = iota // Read into a reused buffer of -read bytes
	kindNext                    // Next(-msg)
	kindWriteTo                 // WriteTo(io.Discard)
)

// receiver is one row of the table.
type receiver struct {
	key  string // short name for -recv
	name string // name in the table
	zc   bool   // a zcnet.Conn (else the net.TCPConn itself)
	mode zcnet.Mode
	kind recvKind
}

// receivers are all receivers, net.TCPConn.Read first: the others are compared with it.
var receivers = []receiver{
	{key: "net", name: "net.TCPConn Read", kind: kindRead},
	{key: "read-auto", name: "zcnet Read auto", zc: true, mode: zcnet.ModeAuto, kind: kindRead},
	{key: "read-zc", name: "zcnet Read zerocopy", zc: true, mode: zcnet.ModeZeroCopy, kind: kindRead},
	{key: "read-copy", name: "zcnet Read copy", zc: true, mode: zcnet.ModeCopy, kind: kindRead},
	{key: "next-auto", name: "zcnet Next auto", zc: true, mode: zcnet.ModeAuto, kind: kindNext},
	{key: "next-zc", name: "zcnet Next zerocopy", zc: true, mode: zcnet.ModeZeroCopy, kind: kindNext},
	{key: "writeto-zc", name: "zcnet WriteTo zerocopy", zc: true, mode: zcnet.ModeZeroCopy, kind: kindWriteTo},
	{key: "writeto-auto", name: "zcnet WriteTo auto", zc: true, mode: zcnet.ModeAuto, kind: kindWriteTo},
}

// config is the parsed command line.
type config struct {
	server   bool
	client   string
	addr     string
	size     int64
	read     int
	msg      int
	mss      bool
	zerocopy bool
	rounds   int
	recv     []receiver
	verify   bool
	json     bool
}

// sample is one transfer's outcome.
type sample struct {
	bytes   int64
	secs    float64
	cpuSecs float64
	stats   zcnet.Stats
}

func (s sample) gbits() float64 { return float64(s.bytes) * 8 / s.secs / 1e9 }

func (s sample) cpuPerMiB() float64 { return s.cpuSecs * 1e6 / (float64(s.bytes) / (1 << 20)) }

// row is one line of the result, also its JSON form.
type row struct {
	Receiver   string    `json:"receiver"`
	Bytes      int64     `json:"bytes"`
	Rounds     int       `json:"rounds"`
	Gbits      float64   `json:"gbit_s"`
	CPUPerMiB  float64   `json:"cpu_us_per_mib"`
	MappedPct  float64   `json:"mapped_pct"`
	Ratio      float64   `json:"ratio_to_net"`
	CPUSamples []float64 `json:"cpu_us_per_mib_samples"`
	Verified   bool      `json:"verified,omitempty"`
	// Stats are zcnet's counters summed over the rounds (nil for net.TCPConn).
	Stats *zcnet.Stats `json:"stats,omitempty"`
}

func main() {
	if ran, err := zcsend.RunFromEnv(); ran {
		if err != nil {
			fmt.Fprintln(os.Stderr, "zcperf sender:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "doctor" {
		os.Exit(doctorMain(os.Args[2:]))
	}
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zcperf:", err)
		os.Exit(2)
	}
	if cfg.client != "" {
		err = runClient(cfg)
	} else {
		err = runServer(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "\nzcperf:", err)
		os.Exit(1)
	}
}

func parseFlags() (*config, error) {
	cfg := &config{}
	var recv string
	flag.BoolVar(&cfg.server, "s", false, "server only: listen on -addr, receive the streams a remote `zcperf -c` sends, print the table")
	flag.StringVar(&cfg.client, "c", "", "client only: send the streams to the zcperf -s at `host:port`")
	flag.StringVar(&cfg.addr, "addr", "", "listen address (default 127.0.0.1:0, or :9100 with -s)")
	flag.Int64Var(&cfg.size, "size", 1<<30, "bytes per transfer")
	flag.IntVar(&cfg.read, "read", 512<<10, "Read buffer size in bytes")
	flag.IntVar(&cfg.msg, "msg", 1<<20, "Next size in bytes (at most zcnet.DefaultRingSize)")
	flag.BoolVar(&cfg.mss, "mss", true, "page-sized MSS: the listener advertises it and the sender sets it")
	flag.BoolVar(&cfg.zerocopy, "zerocopy", true, "the sender sends with MSG_ZEROCOPY")
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds over all receivers; the table shows medians")
	flag.StringVar(&recv, "recv", "", "comma-separated receivers to run (default all): "+receiverKeys())
	flag.BoolVar(&cfg.verify, "verify", false, "check every received byte against the sent pattern (costs receiver CPU)")
	flag.BoolVar(&cfg.json, "json", false, "print one JSON object per row instead of the table")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
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
	}
	if cfg.addr == "" {
		cfg.addr = "127.0.0.1:0"
		if cfg.server {
			cfg.addr = ":9100"
		}
	}
	if recv == "" {
		cfg.recv = receivers
	} else {
		for _, k := range strings.Split(recv, ",") {
			i := slices.IndexFunc(receivers, func(r receiver) bool { return r.key == k })
			if i < 0 {
				return nil, fmt.Errorf("unknown receiver %q (want %s)", k, receiverKeys())
			}
			cfg.recv = append(cfg.recv, receivers[i])
		}
	}
	return cfg, nil
}

func receiverKeys() string {
	keys := make([]string, len(receivers))
	for i, r := range receivers {
		keys[i] = r.key
	}
	return strings.Join(keys, ",")
}

// senderOptions are the sender's stream options from the flags.
func (cfg *config) senderOptions() zcsend.Options {
	return zcsend.Options{PageMSS: cfg.mss, ZeroCopy: cfg.zerocopy}
}

// runClient sends one stream per receiver and round to the server at cfg.client.
func runClient(cfg *config) error {
	o := cfg.senderOptions()
	n := cfg.rounds * len(cfg.recv)
	for i := range n {
		fmt.Fprintf(os.Stderr, "\rzcperf: sending stream %d/%d", i+1, n)
		var c *net.TCPConn
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; {
			c, err = zcsend.Dial(context.Background(), cfg.client, o)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		err = zcsend.Send(c, cfg.size, o)
		c.Close()
		if err != nil {
			return err
		}
	}
	fmt.Fprintln(os.Stderr)
	return nil
}

// runServer receives cfg.rounds rounds of every receiver and prints the result.
func runServer(cfg *config) error {
	ln, err := listen(cfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	if cfg.server {
		fmt.Fprintf(os.Stderr, "zcperf: listening on %s for %d streams of %d bytes\n",
			ln.Addr(), cfg.rounds*len(cfg.recv), cfg.size)
	}
	samples := make([][]sample, len(cfg.recv))
	start := time.Now()
	if !cfg.server {
		// Warm up (page faults of fresh buffers, the auto mode's process-wide
		// calibration) with a short stream per receiver, not counted.
		warm := *cfg
		warm.size = min(cfg.size, 64<<20)
		for _, r := range cfg.recv {
			fmt.Fprintf(os.Stderr, "\r\033[Kzcperf: warm-up  %-24s", r.name)
			if _, err := transfer(&warm, ln, r); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
		}
	}
	for round := range cfg.rounds {
		for k := range cfg.recv {
			// Rotate the order each round so that no receiver always follows the same one.
			i := k
			if !cfg.server {
				i = (k + round) % len(cfg.recv)
			}
			r := cfg.recv[i]
			fmt.Fprintf(os.Stderr, "\r\033[Kzcperf: round %d/%d  %-24s  %2d/%d  %4.0fs",
				round+1, cfg.rounds, r.name, k+1, len(cfg.recv), time.Since(start).Seconds())
			s, err := transfer(cfg, ln, r)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			samples[i] = append(samples[i], s)
		}
	}
	fmt.Fprintf(os.Stderr, "\r\033[Kzcperf: %d transfers of %d bytes in %.0fs\n",
		cfg.rounds*len(cfg.recv), cfg.size, time.Since(start).Seconds())
	return report(cfg, samples)
}

// listen opens the listening socket, advertising a page-sized MSS when cfg.mss is set. It
// is a plain TCP listener: each transfer wraps the accepted conn as its receiver needs.
func listen(cfg *config) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if !cfg.mss {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) { serr = setPageMSS(fd) })
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", cfg.addr)
}

// startSender re-executes this binary as a sender of cfg.size bytes to addr.
func startSender(cfg *config, addr string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), zcsend.ProcessEnv+"="+zcsend.EnvValue(addr, cfg.size, cfg.senderOptions()))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd, cmd.Start()
}

// transfer receives one stream with r and measures it.
func transfer(cfg *config, ln net.Listener, r receiver) (sample, error) {
	var cmd *exec.Cmd
	if !cfg.server {
		var err error
		if cmd, err = startSender(cfg, ln.Addr().String()); err != nil {
			return sample{}, err
		}
	}
	s, err := receive(cfg, ln, r)
	if cmd != nil {
		if werr := cmd.Wait(); err == nil && werr != nil {
			err = fmt.Errorf("sender: %w", werr)
		}
	}
	if err == nil && !cfg.server && s.bytes != cfg.size {
		err = fmt.Errorf("received %d bytes, want %d", s.bytes, cfg.size)
	}
	return s, err
}

// receive accepts one conn and drains it with r, measuring wall and CPU time from the
// accept to the end of the stream.
func receive(cfg *config, ln net.Listener, r receiver) (sample, error) {
	nc, err := ln.Accept()
	if err != nil {
		return sample{}, err
	}
	tc := nc.(*net.TCPConn)
	defer tc.Close()
	var zc *zcnet.Conn
	if r.zc {
		if zc, err = zcnet.NewConn(tc, zcnet.Options{Mode: r.mode}); err != nil {
			return sample{}, err
		}
		defer zc.Close()
	}
	var v *verifier
	if cfg.verify {
		v = new(verifier)
	}
	var buf []byte
	if r.kind == kindRead {
		buf = make([]byte, cfg.read)
	}
	cpu0, t0 := cpuTime(), time.Now()
	var n int64
	switch {
	case r.kind == kindRead && zc == nil:
		n, err = drainRead(tc, buf, v)
	case r.kind == kindRead:
		n, err = drainRead(zc, buf, v)
	case r.kind == kindNext:
		n, err = drainNext(zc, cfg.msg, v)
	case r.kind == kindWriteTo:
		var w io.Writer = io.Discard
		if v != nil {
			w = v
		}
		n, err = zc.WriteTo(w)
	}
	s := sample{bytes: n, secs: time.Since(t0).Seconds(), cpuSecs: cpuTime() - cpu0}
	if zc != nil {
		s.stats = zc.Stats()
	}
	if err == nil && v != nil && v.bad > 0 {
		err = fmt.Errorf("%d bytes differ from the sent pattern (first at offset %d)", v.bad, v.firstBad)
	}
	return s, err
}

// drainRead reads r to its end into buf.
func drainRead(r io.Reader, buf []byte, v *verifier) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if v != nil {
			v.Write(buf[:n])
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// drainNext consumes c to its end with Next(msg).
func drainNext(c *zcnet.Conn, msg int, v *verifier) (int64, error) {
	var total int64
	for {
		p, err := c.Next(msg)
		total += int64(len(p))
		if v != nil {
			v.Write(p)
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, err
		}
	}
}

// verifier is an io.Writer that checks the stream it is given against zcsend's pattern.
type verifier struct {
	off, bad, firstBad int64
}

// Write compares p with the pattern at the current offset; it never fails.
func (v *verifier) Write(p []byte) (int, error) {
	pat := zcsend.PatternBytes()
	n := len(p)
	for len(p) > 0 {
		o := int(v.off % zcsend.Period)
		k := min(len(p), zcsend.Period-o)
		if !bytes.Equal(p[:k], pat[o:o+k]) {
			for i := range k {
				if p[i] != pat[o+i] {
					if v.bad == 0 {
						v.firstBad = v.off + int64(i)
					}
					v.bad++
				}
			}
		}
		v.off += int64(k)
		p = p[k:]
	}
	return n, nil
}

// median returns the median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// report prints the table (or JSON rows) from the samples of every receiver.
func report(cfg *config, samples [][]sample) error {
	base := slices.IndexFunc(cfg.recv, func(r receiver) bool { return r.key == "net" })
	rows := make([]row, len(cfg.recv))
	for i, r := range cfg.recv {
		var gb, cpu, ratio []float64
		var st zcnet.Stats
		var bytes int64
		for k, s := range samples[i] {
			gb = append(gb, s.gbits())
			cpu = append(cpu, s.cpuPerMiB())
			if base >= 0 {
				ratio = append(ratio, s.cpuPerMiB()/samples[base][k].cpuPerMiB())
			}
			st.Add(s.stats)
			bytes = s.bytes
		}
		rows[i] = row{
			Receiver:   r.name,
			Bytes:      bytes,
			Rounds:     len(samples[i]),
			Gbits:      median(gb),
			CPUPerMiB:  median(cpu),
			MappedPct:  100 * st.MappedShare(),
			Ratio:      median(ratio),
			CPUSamples: cpu,
			Verified:   cfg.verify,
		}
		if r.zc {
			rows[i].Stats = &st
		}
	}
	if cfg.json {
		enc := json.NewEncoder(os.Stdout)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	fmt.Printf("zcperf: %d rounds of %d MiB, read %d KiB, Next %d KiB, page MSS %v, MSG_ZEROCOPY %v, verify %v (medians; receiver CPU = getrusage user+sys)\n",
		cfg.rounds, cfg.size>>20, cfg.read>>10, cfg.msg>>10, cfg.mss, cfg.zerocopy, cfg.verify)
	fmt.Printf("%-24s %8s %11s %9s %7s\n", "receiver", "Gbit/s", "CPU us/MiB", "mapped %", "vs net")
	for i, r := range rows {
		mapped, ratio := "-", "-"
		if cfg.recv[i].zc {
			mapped = fmt.Sprintf("%.2f", r.MappedPct)
		}
		if base >= 0 {
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		fmt.Printf("%-24s %8.2f %11.1f %9s %7s\n", r.Receiver, r.Gbits, r.CPUPerMiB, mapped, ratio)
	}
	return nil
}
