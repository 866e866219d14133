// Command zcperf measures what receiving TCP costs with net.TCPConn and with each of
// zcnet's receive paths, on loopback or across two hosts.
//
// With no flags it runs the bulk workload on this host: for each receiver it starts a
// sender as a separate process (this binary re-executed; it sends a page-aligned stream
// with MSG_ZEROCOPY, the payload TCP_ZEROCOPY_RECEIVE can map on loopback), receives -size
// bytes and measures the receiving process's CPU time (getrusage, user+sys) around the
// transfer. The sender being another process, that CPU is the receiver's alone. The
// receivers run in rounds (A B C ... then B C ... A, the order rotating) so that a noisy
// host disturbs all of them alike; the table shows medians over the rounds.
//
// Other workloads (-workload) put the conn where real servers put it: io.Copy into a file
// (filesink), io.Copy into a TCP conn to a backend (proxy), and a net/http server
// answering small keep-alive requests (http). Each compares net.Listen with zcnet in every
// mode.
//
// "vs net" is the receiver's CPU per MiB (per request for http) divided by that of
// net.TCPConn in the same workload and round, the median over the rounds of those ratios
// (not the ratio of the medians): lower is better, below 1.00x zcnet costs less CPU than
// net.TCPConn. "mapped %" is zcnet's
// Stats.MappedShare over all rounds.
//
// Across two hosts, run "zcperf -s" on the receiving host and "zcperf -c HOST:PORT" on the
// sending one, with the same -rounds, -size, -recv and -workload: the client sends one
// stream per row and round, and the server checks that both sides agree, that every
// stream has -size bytes and that each arrives within -timeout.
//
// "zcperf doctor [-json] [-seconds N] [-rounds N] [-busy]" checks this host instead
// (package cmd/zcperf/internal/doctor): whether the kernel and the process can map, what
// the traffic this host will see gets mapped (an ordinary sender on loopback, each up
// interface) and why the rest is copied, what mapping costs against copying, and which
// mode to use.
//
// Run "zcperf -h" for the flags.
package main

import (
	"os"

	"github.com/zcnet/zcnet/cmd/zcperf/internal/doctor"
)

func main() {
	if ran, code := runChild(); ran {
		os.Exit(code)
	}
	if len(os.Args) > 1 && os.Args[1] == "doctor" {
		os.Exit(doctor.Main(os.Args[2:]))
	}
	os.Exit(perfMain(os.Args[1:]))
}
