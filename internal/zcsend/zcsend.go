// Package zcsend is the measuring harness of zcnet's tests, benchmarks and cmd/zcperf: a
// loopback sender whose stream a TCP_ZEROCOPY_RECEIVE receiver can map, the pattern it
// sends, a Verifier of that pattern, drain loops, and a sink process that drains and checks
// the streams forwarded to it.
//
// The stream byte at offset o is Pattern(o): byte((uint32(o % (1<<20)) * 2654435761) >> 24),
// a pattern any other sender or receiver (in C, say) can reproduce.
//
// A binary that uses the child processes (the sender, the idle-conn holder, the sink)
// calls RunFromEnv first thing in main or TestMain.
package zcsend

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

// Period is the length of the repeating pattern.
const Period = 1 << 20

// Pattern returns the stream byte at offset off.
func Pattern(off int64) byte {
	return byte((uint32(off%Period) * 2654435761) >> 24)
}

// patternBuf is one period of the pattern, page aligned by construction of a fresh
// allocation this large.
var patternBuf = func() []byte {
	b := make([]byte, Period)
	for i := range b {
		b[i] = Pattern(int64(i))
	}
	return b
}()

// PageMSS is the TCP_MAXSEG that makes each segment carry one page of payload: the page
// size plus the 12 bytes of the timestamp option.
func PageMSS() int { return os.Getpagesize() + 12 }

// PatternBytes returns one period of the pattern (read-only).
func PatternBytes() []byte { return patternBuf }

// Options shape the stream.
type Options struct {
	// PageMSS sets TCP_MAXSEG to one page of payload plus the timestamp option.
	PageMSS bool
	// ZeroCopy sends with MSG_ZEROCOPY: on loopback the kernel then delivers the payload
	// in order-0 pages, which the receiver can map.
	ZeroCopy bool
	// Chunk is the size of each send (default 256 KiB); it must divide Period.
	Chunk int
}

func (o Options) chunk() int {
	if o.Chunk <= 0 {
		return 256 << 10
	}
	return o.Chunk
}

// ProcessEnv is the environment variable through which a test binary or command
// re-executes itself as a sender: "ADDR,TOTAL,FLAGS,CHUNK" with FLAGS made of m (PageMSS),
// z (ZeroCopy).
const ProcessEnv = "ZCNET_SENDER"

// EnvValue encodes a sender request for ProcessEnv.
func EnvValue(addr string, total int64, o Options) string {
	f := ""
	if o.PageMSS {
		f += "m"
	}
	if o.ZeroCopy {
		f += "z"
	}
	return fmt.Sprintf("%s,%d,%s,%d", addr, total, f, o.chunk())
}

// RunFromEnv runs the sender described by ProcessEnv, if set, and reports whether it did.
// Call it first thing in TestMain or main, and exit when it returns true.
func RunFromEnv() (ran bool, err error) {
	if v := os.Getenv(HoldEnv); v != "" {
		return true, runHold(v)
	}
	if v := os.Getenv(SinkEnv); v != "" {
		return true, runSink(v)
	}
	v := os.Getenv(ProcessEnv)
	if v == "" {
		return false, nil
	}
	parts := strings.Split(v, ",")
	if len(parts) != 4 {
		return true, fmt.Errorf("zcsend: bad %s=%q", ProcessEnv, v)
	}
	total, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return true, err
	}
	chunk, err := strconv.Atoi(parts[3])
	if err != nil {
		return true, err
	}
	o := Options{
		PageMSS:  strings.Contains(parts[2], "m"),
		ZeroCopy: strings.Contains(parts[2], "z"),
		Chunk:    chunk,
	}
	c, err := Dial(context.Background(), parts[0], o)
	if err != nil {
		return true, err
	}
	defer c.Close()
	return true, Send(c, total, o)
}

// HoldEnv is the environment variable through which a test binary or command re-executes
// itself as the client side of many idle conns: "ADDR,N". RunFromEnv then dials N conns
// to ADDR, writes one byte on each, prints "ready" on stdout and holds the conns open
// until stdin reaches EOF.
const HoldEnv = "ZCNET_HOLD"

// runHold serves a HoldEnv request v.
func runHold(v string) error {
	addr, count, ok := strings.Cut(v, ",")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n < 0 {
		return fmt.Errorf("zcsend: bad %s=%q", HoldEnv, v)
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte{1}); err != nil {
			return err
		}
	}
	if _, err := fmt.Println("ready"); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}
