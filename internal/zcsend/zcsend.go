// Package zcsend is a loopback sender whose stream a TCP_ZEROCOPY_RECEIVE receiver can
// map, and the pattern it sends, for zcnet's tests, benchmarks and cmd/zcperf.
//
// The stream byte at offset o is Pattern(o): byte((uint32(o % 1<<20) * 2654435761) >> 24),
// the same pattern as the zcsend/zcfloor C tools, so either side can be swapped.
package zcsend

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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

// Dial connects to addr with the socket options o asks for.
func Dial(ctx context.Context, addr string, o Options) (*net.TCPConn, error) {
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if o.PageMSS {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, os.Getpagesize()+12)
			}
			if serr == nil && o.ZeroCopy {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Send writes total bytes of the pattern to c (starting at stream offset 0), then
// half-closes it and waits for the peer to close. With ZeroCopy the conn must have been
// dialed with ZeroCopy.
func Send(c *net.TCPConn, total int64, o Options) error {
	if Period%o.chunk() != 0 {
		return fmt.Errorf("zcsend: chunk %d does not divide %d", o.chunk(), Period)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	chunk := o.chunk()
	var sent int64
	sends := 0
	for sent < total {
		off := int(sent % Period)
		n := chunk - off%chunk
		if int64(n) > total-sent {
			n = int(total - sent)
		}
		p := patternBuf[off : off+n]
		var w int
		var serr error
		flags := 0
		if o.ZeroCopy {
			flags = unix.MSG_ZEROCOPY
		}
		err := rc.Write(func(fd uintptr) bool {
			for {
				w, serr = unix.SendmsgN(int(fd), p, nil, nil, flags|unix.MSG_DONTWAIT)
				switch serr {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				case unix.ENOBUFS:
					// Too many zerocopy sends outstanding: reap completions.
					if drainErrQueue(int(fd)) == 0 {
						time.Sleep(20 * time.Microsecond)
					}
					continue
				}
				return true
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("zcsend: send: %w", serr)
		}
		sent += int64(w)
		sends++
		if o.ZeroCopy && sends%64 == 0 {
			rc.Control(func(fd uintptr) { drainErrQueue(int(fd)) })
		}
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	// Wait for the receiver to close, reaping zerocopy completions meanwhile.
	buf := make([]byte, 4096)
	for {
		if o.ZeroCopy {
			rc.Control(func(fd uintptr) { drainErrQueue(int(fd)) })
		}
		if _, err := c.Read(buf); err != nil {
			return nil // EOF or reset: the receiver is done either way
		}
	}
}

// drainErrQueue reads MSG_ZEROCOPY completions from the socket's error queue and returns
// how many notifications it read.
func drainErrQueue(fd int) int {
	var oob [256]byte
	n := 0
	for {
		_, _, _, _, err := unix.Recvmsg(fd, nil, oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			return n
		}
		n++
	}
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
