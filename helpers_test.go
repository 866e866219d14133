package zcnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// What every test file shares: listening, accepting and pairing conns, sending the
// zcsend pattern (plain or with MSG_ZEROCOPY), verifying whole streams, and checking
// errors the way net.TCPConn reports them.

// longRuns selects the long versions of the stress tests (see the README section on
// long runs): go test -run 'TestScale10k$' -zcnet.long -timeout 20m .
var longRuns = flag.Bool("zcnet.long", false, "run the long versions of the stress tests")

// machineTestsEnv names the environment variable that lets tests change machine-wide
// settings (sysctls, installed packages): they run only when it is "1".
const machineTestsEnv = "ZCNET_MACHINE_TESTS"

// requireMachineTests skips a test that would change the machine (what it does, in
// words) unless ZCNET_MACHINE_TESTS=1.
func requireMachineTests(t testing.TB, what string) {
	t.Helper()
	if os.Getenv(machineTestsEnv) != "1" {
		t.Skipf("%s changes the machine: set %s=1 to run it", what, machineTestsEnv)
	}
}

// requireSupported skips a test that needs the fast path where this process cannot map,
// naming the reason.
func requireSupported(t testing.TB) {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skipf("fast path unavailable here: %v", err)
	}
}

// modes are the receive modes every functional test runs in.
var modes = []Mode{ModeZeroCopy, ModeAuto, ModeCopy}

// senders names the two kinds of sender: mappable payload (page MSS, MSG_ZEROCOPY) and
// plain writes, which the kernel cannot map.
var senders = []struct {
	name     string
	mappable bool
}{{"mappable", true}, {"plain", false}}

// readKind is how a test consumes a conn: Read, Next or WriteTo.
type readKind int

const (
	byRead readKind = iota
	byNext
	byWriteTo
	readKinds
)

func (k readKind) String() string { return [...]string{"Read", "Next", "WriteTo"}[k] }

// listenLoopback listens on 127.0.0.1 with opts (with PageAlignedMSS, advertising a
// page-sized MSS); the listener is closed when the test ends.
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

// acceptConn accepts the next conn of ln, which must hand out *Conn (a *Listener, or a
// seamListener); the conn is closed when the test ends.
func acceptConn(t testing.TB, ln net.Listener) *Conn {
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

// seamListener wraps the TCP conns of a plain listener with opts: over the syscall layer
// sys, or by NewConn when sys is nil.
type seamListener struct {
	net.Listener
	opts Options
	sys  *sysCalls
}

func (l seamListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("accepted a %T, want a *net.TCPConn", nc)
	}
	var c *Conn
	if l.sys == nil {
		c, err = NewConn(tc, l.opts)
	} else {
		c, err = newTCPConn(tc, l.opts, l.sys)
	}
	if err != nil {
		tc.Close()
		return nil, err
	}
	return c, nil
}

// dialPattern dials addr as a pattern sender: mappable (page MSS and SO_ZEROCOPY, to be
// written with MSG_ZEROCOPY) or plain.
func dialPattern(addr string, mappable bool) (*net.TCPConn, error) {
	if mappable {
		return zcsend.Dial(context.Background(), addr, zcsend.Options{PageMSS: true, ZeroCopy: true})
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return nc.(*net.TCPConn), nil
}

// dialSender is dialPattern for the test goroutine; the conn is closed when the test
// ends. A mappable sender needs Linux: the test is skipped elsewhere.
func dialSender(t testing.TB, addr string, mappable bool) *net.TCPConn {
	t.Helper()
	if mappable && runtime.GOOS != "linux" {
		t.Skip("a mappable sender needs Linux (MSG_ZEROCOPY)")
	}
	c, err := dialPattern(addr, mappable)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pairWith returns a zcnet conn accepted with opts (and a page-sized MSS for a mappable
// sender) and the sender conn dialed to it; both are closed when the test ends.
func pairWith(t testing.TB, opts Options, mappable bool) (*Conn, *net.TCPConn) {
	t.Helper()
	opts.PageAlignedMSS = opts.PageAlignedMSS || mappable
	ln := listenLoopback(t, opts)
	s := dialSender(t, ln.Addr().String(), mappable)
	return acceptConn(t, ln), s
}

// eachPair runs f as a subtest for every mode and both kinds of sender, with a zcnet conn
// in that mode facing a sender of that kind (the mappable one in ModeZeroCopy only where
// the fast path is available).
func eachPair(t *testing.T, f func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn)) {
	eachPairWith(t, Options{}, f)
}

// eachPairWith is eachPair with the conns' other Options set by opts.
func eachPairWith(t *testing.T, opts Options, f func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn)) {
	for _, m := range modes {
		for _, s := range senders {
			t.Run(m.String()+"/"+s.name, func(t *testing.T) {
				if m == ModeZeroCopy && s.mappable {
					requireSupported(t)
				}
				opts.Mode = m
				c, sc := pairWith(t, opts, s.mappable)
				f(t, m, s.mappable, c, sc)
			})
		}
	}
}

// writeZerocopy writes all of p to c with MSG_ZEROCOPY (c must have SO_ZEROCOPY on, as a
// mappable dialPattern conn has), which on loopback delivers payload the receiver can
// map, reaping the completions. p must not change until the peer has received it.
func writeZerocopy(c *net.TCPConn, p []byte) error { return zcsend.Write(c, p, true) }

// patternSender writes the zcsend pattern to a conn. The zero value writes as much as it
// can at once, with plain writes.
type patternSender struct {
	zerocopy bool          // MSG_ZEROCOPY through writeZerocopy (the conn must be a *net.TCPConn with SO_ZEROCOPY)
	maxWrite int           // the largest write; 0: up to the end of the pattern's period
	rnd      *rand.Rand    // when set, each write's size is drawn from [1, maxWrite]
	pause    time.Duration // a pause after each write: drawn from [0, pause) when rnd is set
	keepOpen bool          // sendPattern leaves the conn open after the stream
	close    bool          // sendPattern closes the conn after the stream instead of half-closing it
}

// write writes the pattern bytes at stream offsets [off, off+n) to c.
func (s patternSender) write(c net.Conn, off, n int64) error {
	pat := zcsend.PatternBytes()
	for n > 0 {
		o := off % zcsend.Period
		k := min(n, zcsend.Period-o)
		if s.maxWrite > 0 {
			w := int64(s.maxWrite)
			if s.rnd != nil {
				w = 1 + s.rnd.Int64N(w)
			}
			k = min(k, w)
		}
		p := pat[o : o+k]
		var w int
		var err error
		if s.zerocopy {
			tc, ok := c.(*net.TCPConn)
			if !ok {
				return fmt.Errorf("MSG_ZEROCOPY on a %T", c)
			}
			if err = writeZerocopy(tc, p); err == nil {
				w = len(p)
			}
		} else {
			w, err = c.Write(p)
		}
		off += int64(w)
		n -= int64(w)
		if err != nil {
			return err
		}
		switch {
		case s.pause > 0 && s.rnd != nil:
			time.Sleep(time.Duration(s.rnd.Int64N(int64(s.pause))))
		case s.pause > 0:
			time.Sleep(s.pause)
		}
	}
	return nil
}

// writeStream writes the pattern bytes at stream offsets [off, off+n) to c, with
// MSG_ZEROCOPY when mappable (c must come from dialPattern with mappable).
func writeStream(c net.Conn, off, n int64, mappable bool) error {
	return patternSender{zerocopy: mappable}.write(c, off, n)
}

// patternData returns the pattern bytes at stream offsets [off, off+n).
func patternData(off, n int64) []byte {
	p := make([]byte, n)
	io.ReadFull(&patternReader{off: off}, p)
	return p
}

// halfCloser is a conn that can shut down its writing side: a *net.TCPConn or a *Conn.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// sendPattern starts a goroutine that writes the first total pattern bytes to c with s
// and then half-closes c (or as s says). The returned channel yields the writer's error.
func sendPattern(c halfCloser, total int64, s patternSender) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := s.write(c, 0, total)
		var cerr error
		switch {
		case s.close:
			cerr = c.Close()
		case !s.keepOpen:
			cerr = c.CloseWrite()
		}
		if err == nil {
			err = cerr
		}
		done <- err
	}()
	return done
}

// sendStream is sendPattern with plain writes, or MSG_ZEROCOPY when mappable, closing c
// after the stream, or only half-closing it when halfClose is set.
func sendStream(c *net.TCPConn, total int64, mappable, halfClose bool) <-chan error {
	return sendPattern(c, total, patternSender{zerocopy: mappable, close: !halfClose})
}

// waitAcked waits until the peer has acknowledged every byte written to c (SIOCOUTQ is
// 0), so that all of them sit in the peer's receive queue and a reset sent next cannot
// discard any. It needs Linux: the test is skipped elsewhere.
func waitAcked(t testing.TB, c *net.TCPConn) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("waiting for the peer's acknowledgements needs Linux (SIOCOUTQ)")
	}
	if err := waitAckedErr(c); err != nil {
		t.Fatal(err)
	}
}

// waitAckedErr is waitAcked for any goroutine; it fails off Linux.
func waitAckedErr(c *net.TCPConn) error {
	for end := time.Now().Add(5 * time.Second); ; {
		q, err := unackedBytes(c)
		if err != nil {
			return err
		}
		if q == 0 {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("%d bytes still unacknowledged after 5s", q)
		}
		time.Sleep(100 * time.Microsecond)
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

// checkPattern reports the first offset in p (a stream read from offset off) that does
// not hold the pattern, or -1.
func checkPattern(off int64, p []byte) int64 {
	pat := zcsend.PatternBytes()
	for len(p) > 0 {
		o := off % zcsend.Period
		n := min(int64(len(p)), zcsend.Period-o)
		if !bytes.Equal(p[:n], pat[o:o+n]) {
			for i := range n {
				if p[i] != pat[o+i] {
					return off + i
				}
			}
		}
		p, off = p[n:], off+n
	}
	return -1
}

// patternErr reports whether p, a stream read from offset off, holds the pattern: nil
// if it does, else an error naming the first byte that does not.
func patternErr(off int64, p []byte) error {
	o := checkPattern(off, p)
	if o < 0 {
		return nil
	}
	return fmt.Errorf("stream byte %d is %#x, want %#x", o, p[o-off], zcsend.Pattern(o))
}

// readPattern reads n bytes of r with io.ReadFull and checks that they are the pattern
// from stream offset off on (patternErr).
func readPattern(r io.Reader, off, n int64) error {
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return err
	}
	return patternErr(off, buf)
}

// patternReader reads the zcsend pattern from stream offset off on, endlessly.
type patternReader struct{ off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	pat := zcsend.PatternBytes()
	n := 0
	for n < len(p) {
		k := copy(p[n:], pat[r.off%zcsend.Period:])
		n += k
		r.off += int64(k)
	}
	return n, nil
}

// patternWriter is an io.Writer that checks that what is written to it continues the
// zcsend pattern from offset off (0 unless set); it fails at the first byte that does
// not. It is the verifier of every stream the tests receive.
type patternWriter struct {
	off   int64
	err   error
	done  atomic.Int64 // off, for other goroutines
	after func()       // when set, called after each write
}

func (w *patternWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if err := patternErr(w.off, p); err != nil {
		i := checkPattern(w.off, p) - w.off
		w.err = err
		w.off += i
		w.done.Store(w.off)
		return int(i), w.err
	}
	w.off += int64(len(p))
	w.done.Store(w.off)
	if w.after != nil {
		w.after()
	}
	return len(p), nil
}

// drainPattern consumes r until the end of the stream with kind (Next and WriteTo need a
// *Conn), using request sizes from 1 to maxReq bytes drawn from rnd, and writes what it
// gets to w, which checks every byte. It returns w's offset and the error that ended
// the stream: nil for its end (io.EOF, or io.ErrUnexpectedEOF after a short last
// view), w's error, or the conn's. A Next result that breaks Next's contract (a short
// view without an error, bytes with io.EOF) is an error too.
func drainPattern(r io.Reader, kind readKind, w *patternWriter, maxReq int, rnd *rand.Rand) (int64, error) {
	start := w.off
	switch kind {
	case byRead:
		buf := make([]byte, maxReq)
		for {
			n, err := r.Read(buf[:1+rnd.IntN(maxReq)])
			if _, werr := w.Write(buf[:n]); werr != nil {
				return w.off, werr
			}
			if err == io.EOF {
				return w.off, nil
			}
			if err != nil {
				return w.off, err
			}
		}
	case byNext:
		c := r.(*Conn)
		for {
			n := 1 + rnd.IntN(maxReq)
			v, err := c.Next(n)
			if _, werr := w.Write(v); werr != nil {
				return w.off, werr
			}
			switch {
			case err == nil && len(v) != n:
				return w.off, fmt.Errorf("Next(%d) returned %d bytes and no error", n, len(v))
			case err == io.ErrUnexpectedEOF && (len(v) == 0 || len(v) >= n):
				return w.off, fmt.Errorf("Next(%d) returned %d bytes with io.ErrUnexpectedEOF", n, len(v))
			case err == io.EOF && len(v) != 0:
				return w.off, fmt.Errorf("Next(%d) returned %d bytes with io.EOF", n, len(v))
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				return w.off, nil
			case err != nil:
				return w.off, err
			}
		}
	default:
		n, err := r.(*Conn).WriteTo(w)
		if err == nil && n != w.off-start {
			err = fmt.Errorf("WriteTo returned %d, wrote %d", n, w.off-start)
		}
		return w.off, err
	}
}

// checkStream fails the test unless a reader that ended with err verified exactly the
// first total bytes of the pattern into w, and the sender, whose result sent yields,
// succeeded.
func checkStream(t testing.TB, w *patternWriter, err error, sent <-chan error, total int64) {
	t.Helper()
	if err != nil {
		t.Fatalf("after %d bytes: %v", w.off, err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("sender: %v", err)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	if w.off != total {
		t.Fatalf("received %d bytes, want %d", w.off, total)
	}
}

// isTimeout reports whether err is a read deadline expiry as net.TCPConn reports it.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// checkTimeout checks that err is a read deadline error as net.TCPConn reports it: a
// *net.OpError satisfying isTimeout.
func checkTimeout(t testing.TB, err error) {
	t.Helper()
	if !isTimeout(err) {
		t.Fatalf("got %v, want an error satisfying errors.Is(err, os.ErrDeadlineExceeded) with Timeout() true", err)
	}
	if _, ok := err.(*net.OpError); !ok {
		t.Fatalf("got %T, want *net.OpError", err)
	}
}

// isConnReset reports whether err is a connection reset, a broken pipe or a shutdown of
// a reset conn: what a sender sees when the receiver closes with bytes unread.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ENOTCONN)
}

// checkReset checks that err reports a connection reset the way net.TCPConn does: a
// *net.OpError satisfying errors.Is(err, syscall.ECONNRESET), never io.EOF or EIO.
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

// uploadServer serves net/http on a zcnet Listener (with TLS: tls.Server over each
// accepted *Conn). Each request's body is hashed; the reply is "LENGTH SHA256HEX".
type uploadServer struct {
	ln  *Listener
	srv *http.Server
	url string

	mu     sync.Mutex
	conns  int // conns served
	others int // conns that were not a *Conn under the TLS layer
}

// startUploadServer starts an uploadServer on ln, closed when the test ends.
func startUploadServer(t *testing.T, ln *Listener, tlsCfg *tls.Config) *uploadServer {
	t.Helper()
	s := &uploadServer{ln: ln}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			_, ok := c.(*Conn)
			s.mu.Lock()
			s.conns++
			if !ok {
				s.others++
			}
			s.mu.Unlock()
			return ctx
		},
		ReadHeaderTimeout: 30 * time.Second,
	}
	var hl net.Listener = ln
	scheme := "http"
	if tlsCfg != nil {
		hl = tls.NewListener(ln, tlsCfg) // tls.Server(conn, tlsCfg) for each *Conn
		scheme = "https"
	}
	s.url = scheme + "://" + ln.Addr().String() + "/upload"
	serveHTTP(t, s.srv, hl)
	return s
}

// serveHTTP serves srv on ln until the test ends, then closes srv and checks that Serve
// returned http.ErrServerClosed.
func serveHTTP(t testing.TB, srv *http.Server, ln net.Listener) {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
}

// check verifies a reply of the server against the pattern's first total bytes and that
// every conn it served was a *Conn.
func (s *uploadServer) check(t *testing.T, reply string, total int64) {
	t.Helper()
	want := patternSum(total)
	if wantReply := fmt.Sprintf("%d %s", total, hex.EncodeToString(want[:])); strings.TrimSpace(reply) != wantReply {
		t.Fatalf("server received %q; want %q", reply, wantReply)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == 0 || s.others != 0 {
		t.Fatalf("served %d conns, %d of them not a *zcnet.Conn", s.conns, s.others)
	}
}

// goUpload posts total pattern bytes to url with Go's http client, trusting pool, and
// returns the reply: with a Content-Length when sized is set, else chunked.
func goUpload(t *testing.T, url string, pool *x509.CertPool, total int64, sized bool) string {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	req, err := http.NewRequest("POST", url, io.LimitReader(&patternReader{}, total))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if sized {
		req.ContentLength = total
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", resp.Status, b)
	}
	return string(b)
}
