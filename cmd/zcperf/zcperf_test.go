package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/zcnet/zcnet"
)

// TestMain doubles as zcperf's child processes (senders, the proxy backend, the http
// client), as main does.
func TestMain(m *testing.M) {
	if ran, code := runChild(); ran {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestUsage checks that -h prints the flags with their placeholders and says what
// "vs net" is, and that no flag's description lost words to placeholder extraction.
func TestUsage(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	u := out.String()
	for _, want := range []string{"-size bytes", "-workload list", "-c host:port", "-timeout duration", "vs net", "Lower is", "-busy\n", "zcperf doctor [-json]", "not the ratio of the two medians"} {
		if !strings.Contains(u, want) {
			t.Errorf("usage lacks %q:\n%s", want, u)
		}
	}
	if strings.Contains(u, "`") {
		t.Errorf("usage shows backquotes:\n%s", u)
	}
}

// The table prints "vs net" as the median of the per-round ratios, and says so beside
// it: with these samples the ratio of the medians (200/100) would be 2.00x, the median
// of the ratios (3, 1.5, 0.5) is 1.50x.
func TestTableVsNet(t *testing.T) {
	cfg, err := parseFlags([]string{"-recv", "net,read-zc"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cfg.out = &out
	mib := func(cpu float64) sample { return sample{bytes: 1 << 20, secs: 1, cpuSecs: cpu / 1e6} }
	samples := [][]sample{
		{mib(100), mib(100), mib(400)},
		{mib(300), mib(150), mib(200)},
	}
	if err := report(cfg, samples); err != nil {
		t.Fatal(err)
	}
	tab := out.String()
	line := ""
	for l := range strings.Lines(tab) {
		if strings.HasPrefix(l, "bulk") && strings.Contains(l, "zerocopy") {
			line = l
		}
	}
	if !strings.Contains(line, "200.0 us/MiB") || !strings.HasSuffix(strings.TrimSpace(line), "1.50x") {
		t.Errorf("the zerocopy row is %q, want 200.0 us/MiB and 1.50x", line)
	}
	if !strings.Contains(tab, "not the ratio of the two medians") {
		t.Errorf("the table does not say what vs net is:\n%s", tab)
	}
}

// run parses args, runs zcperf as the receiver and returns its JSON rows.
func run(t *testing.T, args ...string) []row {
	t.Helper()
	cfg, err := parseFlags(append(args, "-json"), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cfg.out = &out
	if err := runServer(cfg); err != nil {
		t.Fatal(err)
	}
	return decodeRows(t, &out)
}

func decodeRows(t *testing.T, out *bytes.Buffer) []row {
	t.Helper()
	var rows []row
	for dec := json.NewDecoder(out); dec.More(); {
		var r row
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	return rows
}

// TestAllWorkloads runs every row of every workload once, small, with -verify and -busy:
// every transfer must deliver the whole pattern, and each row report its size.
func TestAllWorkloads(t *testing.T) {
	const size = 4 << 20
	rows := run(t, "-workload", "all", "-size", "4194304", "-rounds", "1", "-requests", "300", "-conns", "4", "-verify", "-busy")
	if want := len(bulkReceivers) + 3*4; len(rows) != want {
		t.Fatalf("%d rows, want %d", len(rows), want)
	}
	for _, r := range rows {
		if r.Rounds != 1 || !r.Verified || !r.Busy || r.Ratio <= 0 || len(r.CPUSamples) != 1 {
			t.Errorf("%s %s: %+v", r.Workload, r.Receiver, r)
		}
		if r.Key == "net" && r.Ratio != 1 {
			t.Errorf("%s %s: ratio to itself %v", r.Workload, r.Receiver, r.Ratio)
		}
		if r.Workload == "http" {
			if r.Requests != 300 || r.Bytes != 300*512 || r.ReqPerSec <= 0 {
				t.Errorf("http %s: %d requests, %d bytes, %v req/s", r.Receiver, r.Requests, r.Bytes, r.ReqPerSec)
			}
		} else if r.Bytes != size || r.Gbits <= 0 {
			t.Errorf("%s %s: %d bytes, %v Gbit/s", r.Workload, r.Receiver, r.Bytes, r.Gbits)
		}
		if (r.Stats != nil) != (r.Key != "net") {
			t.Errorf("%s %s: stats %v", r.Workload, r.Receiver, r.Stats)
		}
		// The mappable sender's stream is mapped where the host allows it.
		if r.Workload == "bulk" && r.Key == "read-zc" && zcnet.Supported() == nil && r.MappedPct < 90 {
			t.Errorf("bulk Read zerocopy: %.2f%% mapped, want most of it: %+v", r.MappedPct, r.Stats)
		}
	}
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// twoHosts runs a zcperf -s with serverArgs and a zcperf -c with clientArgs over
// loopback and returns their errors and the server's rows.
func twoHosts(t *testing.T, serverArgs, clientArgs []string) (serr, cerr error, rows []row) {
	t.Helper()
	addr := freeAddr(t)
	scfg, err := parseFlags(append([]string{"-s", "-addr", addr, "-json", "-timeout", "20s"}, serverArgs...), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	scfg.out = &out
	done := make(chan error, 1)
	go func() { done <- runServer(scfg) }()
	ccfg, err := parseFlags(append([]string{"-c", addr}, clientArgs...), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	cerr = runClient(ccfg)
	serr = <-done
	if serr == nil {
		rows = decodeRows(t, &out)
	}
	return serr, cerr, rows
}

// TestTwoHosts runs both sides of two-host mode over loopback.
func TestTwoHosts(t *testing.T) {
	args := []string{"-workload", "bulk,filesink,proxy", "-recv", "net,next-zc", "-size", "2097152", "-rounds", "2"}
	serr, cerr, rows := twoHosts(t, append(args, "-verify"), args)
	if serr != nil || cerr != nil {
		t.Fatalf("server: %v; client: %v", serr, cerr)
	}
	if len(rows) != 2+4+4 {
		t.Fatalf("%d rows, want 10", len(rows))
	}
	for _, r := range rows {
		if r.Rounds != 2 || r.Bytes != 2<<20 || !r.Verified {
			t.Errorf("%s %s: %+v", r.Workload, r.Receiver, r)
		}
	}
}

// TestTwoHostsMismatch checks that sides with different -rounds both fail, saying so,
// rather than one waiting for streams that never come.
func TestTwoHostsMismatch(t *testing.T) {
	serr, cerr, _ := twoHosts(t,
		[]string{"-recv", "net", "-size", "1048576", "-rounds", "2"},
		[]string{"-recv", "net", "-size", "1048576", "-rounds", "1"})
	for side, err := range map[string]error{"server": serr, "client": cerr} {
		if err == nil || !strings.Contains(err.Error(), "give both the same") {
			t.Errorf("%s: %v, want an error naming the mismatch", side, err)
		}
	}
}

// TestServerTimeout checks that a server without a client gives up after -timeout.
func TestServerTimeout(t *testing.T) {
	cfg, err := parseFlags([]string{"-s", "-addr", "127.0.0.1:0", "-timeout", "200ms"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := runServer(cfg); err == nil || !strings.Contains(err.Error(), "no client within -timeout") {
		t.Fatalf("%v, want a timeout error", err)
	}
}
