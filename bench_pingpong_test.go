//go:build linux

package zcnet

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// BenchmarkPingPongEcho measures request/response latency through an echo server that
// reads with a Read buffer of 512 KiB or 4 KiB (many servers read into large buffers)
// and writes back what it read. The server's conn is a net.TCPConn or a zcnet Conn in
// each mode; the client, a plain net.TCPConn in the same process, sends one message of
// 64 B or 16 KiB and reads its echo, b.N times. It reports the median and 99th
// percentile round trip. On a shared machine, compare servers in alternating runs (one
// go test per server and round, as -count repeats a sub-benchmark back to back), or with
// BenchmarkPingPongEchoPaired, which alternates within one run:
//
//	go test -run '^$' -bench 'PingPongEchoPaired/.*/.*/server=auto' -benchtime 20000x
func BenchmarkPingPongEcho(b *testing.B) {
	for _, msg := range []int{64, 16 << 10} {
		for _, size := range []int{512 << 10, 4 << 10} {
			for _, rv := range benchRecvs {
				name := fmt.Sprintf("msg=%dB/buf=%dKiB/server=%s", msg, size>>10, rv.name)
				b.Run(name, func(b *testing.B) { benchEcho(b, msg, size, rv.zc, rv.mode) })
			}
		}
	}
}

// BenchmarkPingPongEchoPaired is BenchmarkPingPongEcho with a zcnet server in each mode
// and a net.TCPConn server measured in the same run: the client alternates between the
// two every pairBlock round trips, so that both see the same load on a shared machine. It
// reports each one's percentiles and their ratios (zcnet over net).
func BenchmarkPingPongEchoPaired(b *testing.B) {
	for _, msg := range []int{64, 16 << 10} {
		for _, size := range []int{512 << 10, 4 << 10} {
			for _, rv := range benchRecvs[1:] {
				name := fmt.Sprintf("msg=%dB/buf=%dKiB/server=%s-vs-net", msg, size>>10, rv.name)
				b.Run(name, func(b *testing.B) { benchEchoPaired(b, msg, size, rv.mode) })
			}
		}
	}
}

// pairBlock is the round trips a paired run makes on one server before it turns to the
// other.
const pairBlock = 500

// benchEchoPaired runs b.N round trips of msg bytes through each of two echo servers
// reading into buffers of size bytes, a net.TCPConn and a zcnet Conn with mode,
// alternating every pairBlock round trips.
func benchEchoPaired(b *testing.B, msg, size int, mode Mode) {
	var cs [2]*net.TCPConn
	var served [2]chan error
	for i := range cs {
		ln := loopbackListen(b, false)
		defer ln.Close()
		served[i] = make(chan error, 1)
		go func() { served[i] <- echoServe(ln, size, i == 1, mode) }()
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		cs[i] = nc.(*net.TCPConn)
		defer cs[i].Close()
	}
	out, in := patternData(0, int64(msg)), make([]byte, msg)
	rtt := [2][]time.Duration{make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)}
	b.ResetTimer()
	for i := range 2 * b.N {
		k := i / pairBlock % 2 // the server of this block, unless it is done
		if len(rtt[k]) == b.N {
			k = 1 - k
		}
		rtt[k] = append(rtt[k], benchRoundTrip(b, cs[k], i, out, in))
	}
	b.StopTimer()
	for i, c := range cs {
		c.CloseWrite()
		if err := <-served[i]; err != nil {
			b.Fatal(err)
		}
	}
	var p [2][2]float64
	for i := range rtt {
		slices.Sort(rtt[i])
		p[i] = [2]float64{float64(rtt[i][len(rtt[i])/2]), float64(rtt[i][len(rtt[i])*99/100])}
	}
	b.ReportMetric(p[0][0], "net-p50-ns")
	b.ReportMetric(p[1][0], "p50-ns")
	b.ReportMetric(p[1][0]/p[0][0], "p50-x-net")
	b.ReportMetric(p[0][1], "net-p99-ns")
	b.ReportMetric(p[1][1], "p99-ns")
	b.ReportMetric(p[1][1]/p[0][1], "p99-x-net")
}

// benchEcho runs b.N round trips of msg bytes through an echo server reading into a
// buffer of size bytes, on a zcnet Conn with mode when zc is set.
func benchEcho(b *testing.B, msg, size int, zc bool, mode Mode) {
	ln := loopbackListen(b, false)
	defer ln.Close()
	served := make(chan error, 1)
	go func() { served <- echoServe(ln, size, zc, mode) }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	defer c.Close()
	rtt := benchRoundTrips(b, c, msg)
	c.CloseWrite()
	if err := <-served; err != nil {
		b.Fatal(err)
	}
	benchReportRTT(b, rtt)
}

// benchRoundTrips writes a message of msg pattern bytes to rw and reads its echo, b.N
// times (the first byte varies), checking each echo, and returns the round trips' times.
func benchRoundTrips(b *testing.B, rw io.ReadWriter, msg int) []time.Duration {
	out, in := patternData(0, int64(msg)), make([]byte, msg)
	rtt := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		rtt[i] = benchRoundTrip(b, rw, i, out, in)
	}
	b.StopTimer()
	return rtt
}

// benchRoundTrip is round trip i: it writes out (its first byte set to i) to rw, reads
// the echo into in and checks it, and returns the time from the write to the echo.
func benchRoundTrip(b *testing.B, rw io.ReadWriter, i int, out, in []byte) time.Duration {
	out[0] = byte(i)
	t0 := time.Now()
	if _, err := rw.Write(out); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(rw, in); err != nil {
		b.Fatal(err)
	}
	d := time.Since(t0)
	if !bytes.Equal(in, out) {
		b.Fatalf("round trip %d: the echo differs from the message", i)
	}
	return d
}

// benchReportRTT reports the median and 99th percentile of the round trips rtt.
func benchReportRTT(b *testing.B, rtt []time.Duration) {
	slices.Sort(rtt)
	b.ReportMetric(float64(rtt[len(rtt)/2]), "p50-ns")
	b.ReportMetric(float64(rtt[len(rtt)*99/100]), "p99-ns")
}

// echoServe accepts one conn of ln (wrapped in a zcnet Conn with mode when zc is set)
// and echoes what it reads, with Reads of size bytes, until the end of the stream.
func echoServe(ln net.Listener, size int, zc bool, mode Mode) error {
	nc, err := ln.Accept()
	if err != nil {
		return err
	}
	c := nc
	if zc {
		if c, err = NewConn(nc.(*net.TCPConn), Options{Mode: mode}); err != nil {
			nc.Close()
			return err
		}
	}
	defer c.Close()
	buf := make([]byte, size)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
}
