package zcnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// requireSupported skips a test that needs the fast path where this process cannot map,
// naming the reason.
func requireSupported(t testing.TB) {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skipf("fast path unavailable here: %v", err)
	}
}

// patternSum is the SHA-256 of the first total bytes of the zcsend pattern.
func patternSum(total int64) [32]byte {
	h := sha256.New()
	p := zcsend.PatternBytes()
	for total > 0 {
		n := min(total, int64(len(p)))
		h.Write(p[:n])
		total -= n
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// sendMappable starts a goroutine sending total pattern bytes to addr with a page MSS and
// MSG_ZEROCOPY (mappable payload on loopback); the returned channel yields its error.
func sendMappable(t testing.TB, addr string, total int64) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		o := zcsend.Options{PageMSS: true, ZeroCopy: true}
		c, err := zcsend.Dial(context.Background(), addr, o)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- zcsend.Send(c, total, o)
	}()
	return done
}

// TestFastPathIntegrity receives a 256 MiB mappable stream with random read sizes (1 byte
// to 1 MiB) in ModeZeroCopy and checks that at least 99% of it was mapped and that the
// bytes are exactly the ones sent.
func TestFastPathIntegrity(t *testing.T) {
	requireSupported(t)
	const total = 256 << 20
	lc := ListenConfig{Options: Options{Mode: ModeZeroCopy, PageAlignedMSS: true}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sent := sendMappable(t, ln.Addr().String(), total)
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*Conn)
	h := sha256.New()
	rnd := rand.New(rand.NewSource(1))
	buf := make([]byte, 1<<20)
	var got int64
	for {
		n, err := c.Read(buf[:1+rnd.Intn(len(buf))])
		h.Write(buf[:n])
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if want := patternSum(total); got != total || [32]byte(h.Sum(nil)) != want {
		t.Fatalf("received %d bytes, want %d; sha256 match: %v", got, int64(total), [32]byte(h.Sum(nil)) == want)
	}
	st := c.Stats()
	t.Logf("stats: %+v, mapped share %.4f", st, st.MappedShare())
	if st.MappedShare() < 0.99 {
		t.Fatalf("mapped share %.4f < 0.99: %+v", st.MappedShare(), st)
	}
	if ls := ln.Stats(); ls.MappedBytes != st.MappedBytes {
		t.Fatalf("listener stats %+v do not sum the conn's %+v", ls, st)
	}
}

// modes are the receive modes every functional test runs in.
var modes = []Mode{ModeZeroCopy, ModeAuto, ModeCopy}

// listenLoopback listens on 127.0.0.1 with opts; the listener is closed when the test ends.
func listenLoopback(t testing.TB, opts Options) *Listener {
	t.Helper()
	lc := ListenConfig{Options: opts}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// acceptConn accepts the next conn of ln; it is closed when the test ends.
func acceptConn(t testing.TB, ln *Listener) *Conn {
	t.Helper()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, ok := nc.(*Conn)
	if !ok {
		nc.Close()
		t.Fatalf("Accept returned %T, want *Conn", nc)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialSender dials addr as a plain sender, or as a mappable one (page MSS and SO_ZEROCOPY,
// to be written with writeStream). The conn is closed when the test ends.
func dialSender(t testing.TB, addr string, mappable bool) *net.TCPConn {
	t.Helper()
	var c *net.TCPConn
	if mappable {
		if runtime.GOOS != "linux" {
			t.Skip("a mappable sender needs Linux (MSG_ZEROCOPY)")
		}
		var err error
		if c, err = zcsend.Dial(context.Background(), addr, zcsend.Options{PageMSS: true, ZeroCopy: true}); err != nil {
			t.Fatal(err)
		}
	} else {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c = nc.(*net.TCPConn)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pairWith returns a zcnet conn accepted with opts and the sender conn dialed to it.
func pairWith(t testing.TB, opts Options, mappable bool) (*Conn, *net.TCPConn) {
	t.Helper()
	opts.PageAlignedMSS = opts.PageAlignedMSS || mappable
	ln := listenLoopback(t, opts)
	s := dialSender(t, ln.Addr().String(), mappable)
	return acceptConn(t, ln), s
}

// writeStream writes the pattern bytes at stream offsets [off, off+n) to c: with
// MSG_ZEROCOPY when mappable (c must come from dialSender with mappable), which on
// loopback delivers payload the receiver can map, and with plain writes otherwise.
func writeStream(c *net.TCPConn, off, n int64, mappable bool) error {
	pat := zcsend.PatternBytes()
	if !mappable {
		for n > 0 {
			o := off % zcsend.Period
			p := pat[o:min(int64(len(pat)), o+n)]
			w, err := c.Write(p)
			off += int64(w)
			n -= int64(w)
			if err != nil {
				return err
			}
		}
		return nil
	}
	for n > 0 {
		o := off % zcsend.Period
		p := pat[o:min(int64(len(pat)), o+n)]
		if err := writeZerocopy(c, p); err != nil {
			return err
		}
		off += int64(len(p))
		n -= int64(len(p))
	}
	return nil
}

// sendStream starts a goroutine that writes total pattern bytes to c (see writeStream)
// and then closes it, or only half-closes it when halfClose is set. The returned channel
// yields the writer's error.
func sendStream(c *net.TCPConn, total int64, mappable, halfClose bool) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := writeStream(c, 0, total, mappable)
		var cerr error
		if halfClose {
			cerr = c.CloseWrite()
		} else {
			cerr = c.Close()
		}
		if err == nil {
			err = cerr
		}
		done <- err
	}()
	return done
}

// patternData returns the pattern bytes at stream offsets [off, off+n).
func patternData(off, n int64) []byte {
	p := make([]byte, n)
	pat := zcsend.PatternBytes()
	for i := int64(0); i < n; {
		o := (off + i) % zcsend.Period
		i += int64(copy(p[i:], pat[o:]))
	}
	return p
}

// checkPattern reports the first offset in p (a stream read from offset off) that does
// not hold the pattern, or -1.
func checkPattern(off int64, p []byte) int64 {
	pat := zcsend.PatternBytes()
	for len(p) > 0 {
		o := off % zcsend.Period
		n := min(len(p), int(int64(len(pat))-o))
		if !bytes.Equal(p[:n], pat[o:o+int64(n)]) {
			for i := range n {
				if p[i] != pat[o+int64(i)] {
					return off + int64(i)
				}
			}
		}
		p, off = p[n:], off+int64(n)
	}
	return -1
}

// readStream reads c to the end with read sizes drawn from [1, maxRead] and returns the
// number of bytes, their SHA-256 and the error that ended the stream (nil for io.EOF).
func readStream(c io.Reader, rnd *rand.Rand, maxRead int) (int64, [32]byte, error) {
	h := sha256.New()
	buf := make([]byte, maxRead)
	var got int64
	for {
		n, err := c.Read(buf[:1+rnd.Intn(maxRead)])
		h.Write(buf[:n])
		got += int64(n)
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return got, [32]byte(h.Sum(nil)), err
		}
	}
}

// senders names the two kinds of sender: mappable payload (page MSS, MSG_ZEROCOPY) and
// plain writes, which the kernel cannot map.
var senders = []struct {
	name     string
	mappable bool
}{{"mappable", true}, {"plain", false}}

// wantStream fails the test unless a reader that ended with err received exactly the
// total bytes of the pattern (got bytes hashing to sum) and the sender, whose result
// sent yields, succeeded.
func wantStream(t *testing.T, got int64, sum [32]byte, err error, sent <-chan error, total int64) {
	t.Helper()
	if err != nil {
		t.Fatalf("after %d bytes: %v", got, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if want := patternSum(total); got != total || sum != want {
		t.Fatalf("received %d bytes, want %d; sha256 match: %v", got, total, sum == want)
	}
}

// eachPair runs f as a subtest for every mode and both kinds of sender, with a zcnet conn
// in that mode facing a sender of that kind (the mappable one in ModeZeroCopy only where
// the fast path is available).
func eachPair(t *testing.T, f func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn)) {
	for _, m := range modes {
		for _, s := range senders {
			t.Run(m.String()+"/"+s.name, func(t *testing.T) {
				if m == ModeZeroCopy && s.mappable {
					requireSupported(t)
				}
				c, sc := pairWith(t, Options{Mode: m}, s.mappable)
				f(t, m, s.mappable, c, sc)
			})
		}
	}
}

// TestEOFAfterData checks, in every mode and with both kinds of sender, that a stream
// ended by the peer's FIN is read exactly (SHA-256), ends with io.EOF (never EIO or
// another error), and keeps returning io.EOF; Stats count every byte, and in
// ModeZeroCopy a mappable stream was mapped (at least 98%).
func TestEOFAfterData(t *testing.T) {
	const total = 8<<20 + 123
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		sent := sendStream(sc, total, mappable, false)
		got, sum, err := readStream(c, rand.New(rand.NewSource(2)), 256<<10)
		wantStream(t, got, sum, err, sent, total)
		for range 2 {
			if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
			}
		}
		st := c.Stats()
		if st.MappedBytes+st.CopiedBytes != total {
			t.Errorf("stats count %d received bytes, want %d: %+v", st.MappedBytes+st.CopiedBytes, int64(total), st)
		}
		// The bound leaves room for the few short segments a sender that had to
		// wait for the reader sends (partial writes), which cannot be mapped.
		if m == ModeZeroCopy && mappable && st.MappedShare() < 0.98 {
			t.Errorf("mapped share %.4f < 0.98: %+v", st.MappedShare(), st)
		}
		if m == ModeCopy && st.MappedBytes != 0 {
			t.Errorf("ModeCopy mapped %d bytes", st.MappedBytes)
		}
	})
}

// waitAcked waits until the peer has acknowledged every byte written to c (SIOCOUTQ is 0),
// so that all of them sit in the peer's receive queue.
func waitAcked(t testing.TB, c *net.TCPConn) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("waiting for the peer's acknowledgements needs Linux (SIOCOUTQ)")
	}
	for i := 0; ; i++ {
		q, err := unackedBytes(c)
		if err != nil {
			t.Fatal(err)
		}
		if q == 0 {
			return
		}
		if i > 10000 {
			t.Fatalf("%d bytes still unacknowledged", q)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// resetConn makes c send a reset: SO_LINGER 0, then Close.
func resetConn(t testing.TB, c *net.TCPConn) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkReset checks that err reports a connection reset the way net.TCPConn does.
func checkReset(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("got %v, want an error satisfying errors.Is(err, syscall.ECONNRESET)", err)
	}
	if _, ok := err.(*net.OpError); !ok {
		t.Fatalf("got %T (%v), want *net.OpError", err, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.EIO) {
		t.Fatalf("reset reported as %v", err)
	}
}

// TestResetMidStream has the peer reset the connection (SO_LINGER 0 and Close) while
// bytes it sent are still queued at the receiver, in every mode, with both kinds of
// sender, with a ring smaller than what is queued, and with Read, Next and WriteTo as
// the reader. As with net.TCPConn (checked as a control), the reader gets every queued
// byte in order and then an error satisfying errors.Is(err, syscall.ECONNRESET), a
// *net.OpError, never io.EOF or EIO; the next Read returns io.EOF. With a mappable
// sender in ModeZeroCopy the kernel reports the reset in the TCP_ZEROCOPY_RECEIVE result
// while bytes are still queued.
func TestResetMidStream(t *testing.T) {
	const (
		first  = 64 << 10 // read before the reset: the ring is in use
		queued = 48 << 10 // left in the receive queue when the reset arrives
		ring   = 16 << 10 // smaller than queued: several fills after the reset is known
	)
	for _, m := range append([]Mode{-1}, modes...) {
		name, consumers := "net.TCPConn", []string{"Read"}
		if m >= 0 {
			name, consumers = m.String(), []string{"Read", "Next", "WriteTo"}
		}
		for _, s := range senders {
			for _, kind := range consumers {
				t.Run(name+"/"+s.name+"/"+kind, func(t *testing.T) {
					testReset(t, m, s.mappable, kind, first, queued, ring)
				})
			}
		}
	}
}

// testReset runs one case of TestResetMidStream; m < 0 selects a plain net.TCPConn reader.
func testReset(t *testing.T, m Mode, mappable bool, kind string, first, queued, ring int) {
	var r io.Reader
	var sc *net.TCPConn
	var zc *Conn
	if m < 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		sc = dialSender(t, ln.Addr().String(), mappable)
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r = c
	} else {
		if m == ModeZeroCopy && mappable {
			requireSupported(t)
		}
		zc, sc = pairWith(t, Options{Mode: m, RingSize: ring}, mappable)
		r = zc
	}
	if err := writeStream(sc, 0, int64(first), mappable); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, first+queued)
	if _, err := io.ReadFull(r, buf[:first]); err != nil {
		t.Fatal(err)
	}
	if err := writeStream(sc, int64(first), int64(queued), mappable); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, sc)
	resetConn(t, sc)
	// Let the poller take the reset's readiness event before the reads: the reader must
	// not depend on seeing it again.
	time.Sleep(10 * time.Millisecond)
	if c, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a hang fails, not stalls
	}
	var rest bytes.Buffer
	var err error
	switch kind {
	case "Read":
		p := make([]byte, 5000)
		for err == nil {
			var k int
			k, err = r.Read(p)
			rest.Write(p[:k])
		}
	case "Next":
		for err == nil {
			var v []byte
			v, err = zc.Next(5000)
			rest.Write(v)
		}
	case "WriteTo":
		_, err = zc.WriteTo(&rest)
	}
	if rest.Len() != queued {
		t.Errorf("got %d bytes before the error, want %d", rest.Len(), queued)
	}
	if off := checkPattern(int64(first), rest.Bytes()); off >= 0 {
		t.Fatalf("stream differs at offset %d", off)
	}
	checkReset(t, err)
	// As with net.TCPConn, the reset is reported once; the stream then ends.
	if k, err := r.Read(buf); k != 0 || err != io.EOF {
		t.Errorf("Read after the reset = %d, %v; want 0, io.EOF", k, err)
	}
	if zc != nil {
		st := zc.Stats()
		t.Logf("stats: %+v", st)
		if m == ModeZeroCopy && mappable && st.MappedBytes == 0 {
			t.Errorf("nothing was mapped: %+v", st)
		}
	}
}

// TestHalfClose checks, in every mode with zcnet conns on both ends, that a peer that
// half-closes (CloseWrite) after sending is read exactly to io.EOF, and that both conns
// keep their other direction: the reader answers with the stream's SHA-256 and the
// half-closed side reads that answer and then io.EOF.
func TestHalfClose(t *testing.T) {
	const total = 1<<20 + 7
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			ln := listenLoopback(t, Options{Mode: m})
			d := Dialer{Options: Options{Mode: m}}
			client, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server := acceptConn(t, ln)

			done := make(chan error, 1)
			go func() {
				got, sum, err := readStream(server, rand.New(rand.NewSource(3)), 64<<10)
				if err == nil && got != total {
					err = fmt.Errorf("server read %d bytes, want %d", got, int64(total))
				}
				if err == nil {
					_, err = server.Write(sum[:])
				}
				if cerr := server.Close(); err == nil {
					err = cerr
				}
				done <- err
			}()
			if _, err := client.Write(patternData(0, total)); err != nil {
				t.Fatal(err)
			}
			if err := client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			answer, err := io.ReadAll(client)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if want := patternSum(total); !bytes.Equal(answer, want[:]) {
				t.Fatalf("answer %x, want %x", answer, want)
			}
		})
	}
}

// TestCloseRead checks, in every mode and after some mapped or copied bytes were read,
// that Read, Next and WriteTo after CloseRead report the end of the stream at once (as
// net.TCPConn does) instead of waiting for data.
func TestCloseRead(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			c, sc := pairWith(t, Options{Mode: m}, m == ModeZeroCopy && Supported() == nil)
			const total = 256 << 10
			if err := writeStream(sc, 0, total, m == ModeZeroCopy && Supported() == nil); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, total)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			if off := checkPattern(0, buf); off >= 0 {
				t.Fatalf("stream differs at offset %d", off)
			}
			if err := c.CloseRead(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)                  // the poller takes the shutdown's event first
			c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a hang fails, not stalls
			if n, err := c.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("Read after CloseRead = %d, %v; want 0, io.EOF", n, err)
			}
			if v, err := c.Next(10); len(v) != 0 || err != io.EOF {
				t.Fatalf("Next after CloseRead = %d bytes, %v; want 0, io.EOF", len(v), err)
			}
			if n, err := c.WriteTo(io.Discard); n != 0 || err != nil {
				t.Fatalf("WriteTo after CloseRead = %d, %v; want 0, nil", n, err)
			}
		})
	}
}

// checkTimeout checks that err is a read deadline error as net.TCPConn reports it.
func checkTimeout(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want an error satisfying errors.Is(err, os.ErrDeadlineExceeded)", err)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("got %v, want a net.Error whose Timeout() is true", err)
	}
	if _, ok := err.(*net.OpError); !ok {
		t.Fatalf("got %T, want *net.OpError", err)
	}
}

// TestReadDeadline checks, in every mode, that Read, Next and WriteTo fail with a timeout
// error (os.ErrDeadlineExceeded, net.Error.Timeout, *net.OpError) under a deadline in the
// past, also when bytes are already buffered (mapped or copied), and after a deadline in
// the future passes while waiting; and that once the deadline is cleared the stream
// continues exactly where it was.
func TestReadDeadline(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m == ModeZeroCopy && Supported() == nil
			c, sc := pairWith(t, Options{Mode: m}, mappable)
			buf := make([]byte, 1<<20)

			// Past deadline, nothing buffered.
			c.SetReadDeadline(time.Now().Add(-time.Second))
			if n, err := c.Read(buf); n != 0 {
				t.Fatalf("Read read %d bytes under a past deadline", n)
			} else {
				checkTimeout(t, err)
			}
			if _, err := c.Next(1); err == nil {
				t.Fatal("Next succeeded under a past deadline")
			} else {
				checkTimeout(t, err)
			}
			if _, err := c.WriteTo(io.Discard); err == nil {
				t.Fatal("WriteTo succeeded under a past deadline")
			} else {
				checkTimeout(t, err)
			}

			// Future deadline, nothing arrives.
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if n, err := c.Read(buf); n != 0 {
				t.Fatalf("Read read %d bytes, nothing was sent", n)
			} else {
				checkTimeout(t, err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Next(1); err == nil {
				t.Fatal("Next succeeded, nothing was sent")
			} else {
				checkTimeout(t, err)
			}

			// Past deadline with bytes buffered.
			const total = 256 << 10
			c.SetReadDeadline(time.Time{})
			if err := writeStream(sc, 0, total, mappable); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:1]); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(-time.Second))
			for _, f := range []func() error{
				func() error { _, err := c.Read(buf); return err },
				func() error { _, err := c.Next(1); return err },
				func() error { _, err := c.WriteTo(io.Discard); return err },
			} {
				if err := f(); err == nil {
					t.Fatalf("read succeeded under a past deadline with %d bytes buffered", c.buffered())
				} else {
					checkTimeout(t, err)
				}
			}
			c.SetReadDeadline(time.Time{})
			if _, err := io.ReadFull(c, buf[1:total]); err != nil {
				t.Fatal(err)
			}
			if off := checkPattern(0, buf[:total]); off >= 0 {
				t.Fatalf("stream differs at offset %d", off)
			}
			if mappable {
				if st := c.Stats(); st.MappedBytes == 0 {
					t.Errorf("nothing was mapped: %+v", st)
				}
			}
		})
	}
}

// TestReadAfterClose checks that Read, Next and WriteTo on a closed conn fail with an
// error satisfying errors.Is(err, net.ErrClosed), as a *net.OpError, also when bytes were
// buffered at Close, and that a second Close reports net.ErrClosed.
func TestReadAfterClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m == ModeZeroCopy && Supported() == nil
			c, sc := pairWith(t, Options{Mode: m}, mappable)
			if err := writeStream(sc, 0, 64<<10, mappable); err != nil {
				t.Fatal(err)
			}
			head := make([]byte, 100)
			if _, err := io.ReadFull(c, head); err != nil {
				t.Fatal(err)
			}
			if off := checkPattern(0, head); off >= 0 {
				t.Fatalf("stream differs at offset %d", off)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			for name, f := range map[string]func() error{
				"Read":    func() error { _, err := c.Read(make([]byte, 10)); return err },
				"Next":    func() error { _, err := c.Next(10); return err },
				"WriteTo": func() error { _, err := c.WriteTo(io.Discard); return err },
				"Close":   c.Close,
			} {
				err := f()
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
				}
				if _, ok := err.(*net.OpError); !ok {
					t.Errorf("%s after Close: %T, want *net.OpError", name, err)
				}
			}
		})
	}
}

// TestCloseRacingRead closes conns while another goroutine is inside Read or Next, many
// times and at varied points of a mapped or copied stream, a third of the times once the
// reader has taken every byte sent and waits in the poller: the reader must get the bytes
// it receives in order and then an error satisfying errors.Is(err, net.ErrClosed), and
// nothing may fault, also when the reader still touches its last Next view.
func TestCloseRacingRead(t *testing.T) {
	rounds := 200
	if raceEnabled {
		rounds = 80
	}
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			mappable := m == ModeZeroCopy && Supported() == nil
			ln := listenLoopback(t, Options{Mode: m, PageAlignedMSS: mappable})
			rnd := rand.New(rand.NewSource(4))
			for i := range rounds {
				sc := dialSender(t, ln.Addr().String(), mappable)
				c := acceptConn(t, ln)
				// Written before anything reads: keep it well inside the initial receive buffer
				// (the truesize of 4 KiB segments is more than 4 KiB each), or the write blocks.
				total := int64(rnd.Intn(64 << 10))
				if err := writeStream(sc, 0, total, mappable); err != nil {
					t.Fatal(err)
				}
				useNext := i%2 == 1
				var progress atomic.Int64
				done := make(chan error, 1)
				go func() {
					var off int64
					var sum byte
					buf := make([]byte, 16<<10)
					for {
						var p []byte
						var err error
						if useNext {
							// Ask for no more than is left, then for one byte more:
							// once all is taken Next waits in the poller.
							p, err = c.Next(max(1, min(1+int(off)%(8<<10), int(total-off))))
							for _, b := range p {
								sum += b // touch the view: it may be unmapped meanwhile
							}
						} else {
							var n int
							n, err = c.Read(buf[:1+int(off)%len(buf)])
							p = buf[:n]
							if o := checkPattern(off, p); o >= 0 {
								done <- fmt.Errorf("stream differs at offset %d", o)
								return
							}
						}
						off += int64(len(p))
						progress.Store(off)
						if err != nil {
							if !errors.Is(err, net.ErrClosed) {
								err = fmt.Errorf("after %d of %d bytes: %w (sum %d)", off, total, err, sum)
							} else {
								err = nil
							}
							done <- err
							return
						}
					}
				}()
				switch d := rnd.Intn(3); {
				case i%3 == 0:
					for progress.Load() < total {
						time.Sleep(20 * time.Microsecond)
					}
				case d > 0:
					time.Sleep(time.Duration(d*50) * time.Microsecond)
				}
				c.Close()
				err := <-done
				sc.Close()
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
			}
		})
	}
}

// TestCopyToFileAfterPartialReads checks, in every mode and with both kinds of sender,
// that io.Copy(file, conn) after a few partial Reads writes exactly the rest of the
// stream: the conn exposes no socket (it does not implement syscall.Conn) through which
// a splice could bypass the bytes it holds.
func TestCopyToFileAfterPartialReads(t *testing.T) {
	const total = 4<<20 + 555
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		if _, ok := any(c).(syscall.Conn); ok {
			t.Fatal("*Conn implements syscall.Conn")
		}
		var nc net.Conn = c
		if _, ok := nc.(syscall.Conn); ok {
			t.Fatal("the net.Conn implements syscall.Conn")
		}
		f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sent := sendStream(sc, total, mappable, false)
		buf := make([]byte, 10000)
		for _, k := range []int{1, 7, 4096, 10000, 3} {
			n, err := c.Read(buf[:k])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := io.Copy(f, nc); err != nil {
			t.Fatal(err)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			t.Fatal(err)
		}
		if n != total || [32]byte(h.Sum(nil)) != patternSum(total) {
			t.Fatalf("file holds %d bytes, want %d; sha256 match: %v", n, int64(total), [32]byte(h.Sum(nil)) == patternSum(total))
		}
		if m == ModeZeroCopy && mappable {
			if st := c.Stats(); st.MappedShare() < 0.98 {
				t.Errorf("mapped share %.4f < 0.98: %+v", st.MappedShare(), st)
			}
		}
	})
}

// TestBadInput checks that Listen, ListenConfig, Dialer, NewListener and NewConn reject
// a non-TCP network, a negative RingSize, a RingSize above MaxRingSize and an unknown
// Mode with an error that names the problem, and never panic.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	if ln, err := Listen("udp", "127.0.0.1:0"); err == nil {
		ln.Close()
		t.Error(`Listen("udp") succeeded`)
	} else if !strings.Contains(err.Error(), "udp") {
		t.Errorf(`Listen("udp"): %v does not name the network`, err)
	}
	var d Dialer
	if c, err := d.DialContext(ctx, "udp", "127.0.0.1:9"); err == nil {
		c.Close()
		t.Error(`Dial("udp") succeeded`)
	} else if !strings.Contains(err.Error(), "udp") {
		t.Errorf(`Dial("udp"): %v does not name the network`, err)
	}
	bad := []struct {
		opts Options
		want string
	}{
		{Options{RingSize: -1}, "RingSize"},
		{Options{RingSize: -1 << 40}, "RingSize"},
		{Options{RingSize: MaxRingSize + 1}, "RingSize"},
		{Options{RingSize: math.MaxInt}, "RingSize"},
		{Options{Mode: Mode(42)}, "Mode"},
		{Options{Mode: -1}, "Mode"},
	}
	good := listenLoopback(t, Options{})
	for _, b := range bad {
		lc := ListenConfig{Options: b.opts}
		if ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
			t.Errorf("ListenConfig.Listen with %+v succeeded", b.opts)
		} else if !strings.Contains(err.Error(), b.want) {
			t.Errorf("ListenConfig.Listen with %+v: %v does not name %s", b.opts, err, b.want)
		}
		d := Dialer{Options: b.opts}
		if c, err := d.DialContext(ctx, "tcp", good.Addr().String()); err == nil {
			c.Close()
			t.Errorf("Dialer with %+v succeeded", b.opts)
		} else if !strings.Contains(err.Error(), b.want) {
			t.Errorf("Dialer with %+v: %v does not name %s", b.opts, err, b.want)
		}

		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := NewListener(inner, b.opts)
		pc, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if c, err := ln.Accept(); err == nil {
			c.Close()
			t.Errorf("NewListener with %+v: Accept succeeded", b.opts)
		} else if !strings.Contains(err.Error(), b.want) {
			t.Errorf("NewListener with %+v: Accept: %v does not name %s", b.opts, err, b.want)
		}
		tc, err := inner.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if c, err := NewConn(tc.(*net.TCPConn), b.opts); err == nil {
			c.Close()
			t.Errorf("NewConn with %+v succeeded", b.opts)
		} else if !strings.Contains(err.Error(), b.want) {
			t.Errorf("NewConn with %+v: %v does not name %s", b.opts, err, b.want)
		}
		tc.Close()
		pc.Close()
		ln.Close()
	}
	if ln, err := Listen("tcp", "no-such-host.invalid:x"); err == nil {
		ln.Close()
		t.Error("Listen on a bad address succeeded")
	}
	var lc ListenConfig
	if _, err := lc.Listen(ctx, "", "127.0.0.1:0"); err == nil {
		t.Error(`Listen("") succeeded`)
	}
}

// TestResetAfterFIN checks, in every mode and with both kinds of sender, that a peer that
// half-closes and then resets (the receiver is in CLOSE_WAIT, where the kernel records
// EPIPE) ends the stream the way net.TCPConn sees it: every byte, then io.EOF. The
// mapping call hands that EPIPE over in its err field; it must not surface.
func TestResetAfterFIN(t *testing.T) {
	const total = 32 << 10
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		if err := writeStream(sc, 0, total, mappable); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, sc)
		if err := sc.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the FIN reaches the receiver first
		sc.SetLinger(0)
		sc.Close()
		time.Sleep(20 * time.Millisecond) // then the reset
		var got int64
		buf := make([]byte, 16<<10)
		for {
			n, err := c.Read(buf)
			if o := checkPattern(got, buf[:n]); o >= 0 {
				t.Fatalf("stream differs at offset %d", o)
			}
			got += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d of %d bytes: %v, want io.EOF", got, total, err)
			}
		}
		if got != total {
			t.Fatalf("received %d bytes, want %d", got, total)
		}
		if st := c.Stats(); m == ModeZeroCopy && mappable && st.MappedBytes == 0 {
			t.Fatalf("nothing mapped: %+v", st)
		}
	})
}
