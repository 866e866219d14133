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
// percentile round trip. Compare the servers with alternating rounds:
//
//	go test -run '^$' -bench PingPongEcho -benchtime 20000x -count 6 | tee pp.txt
//	benchstat -col /server pp.txt
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
		out[0] = byte(i)
		t0 := time.Now()
		if _, err := rw.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(rw, in); err != nil {
			b.Fatal(err)
		}
		rtt[i] = time.Since(t0)
		if !bytes.Equal(in, out) {
			b.Fatalf("round trip %d: the echo differs from the message", i)
		}
	}
	b.StopTimer()
	return rtt
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
