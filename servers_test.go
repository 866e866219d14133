package zcnet

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// hashReply is the "bytes sha256" line servers in these tests answer with.
func hashReply(n int64, sum []byte) string { return fmt.Sprintf("%d %x", n, sum) }

// wantReply fails the test unless reply says total pattern bytes were received intact.
func wantReply(t *testing.T, reply string, total int64) {
	t.Helper()
	want := patternSum(total)
	if w := hashReply(total, want[:]); reply != w {
		t.Fatalf("server replied %q, want %q", reply, w)
	}
}

// TestServerHTTPUpload256M serves net/http on zcnet.Listen and uploads 256 MiB with Go's
// HTTP client: the handler receives the body intact (SHA-256) and the listener's Stats
// count at least the body.
func TestServerHTTPUpload256M(t *testing.T) {
	const total = 256 << 20
	ln, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, hashReply(n, h.Sum(nil)))
	})}
	serveHTTP(t, srv, ln)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+ln.Addr().String()+"/", "application/octet-stream",
		io.LimitReader(&patternReader{}, total))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	wantReply(t, string(reply), total)
	if s := ln.Stats(); s.MappedBytes+s.CopiedBytes < total {
		t.Errorf("listener Stats count %d bytes, want at least %d", s.MappedBytes+s.CopiedBytes, total)
	}
}

// hashServer accepts one conn on a plain TCP listener and reports the "bytes sha256"
// of what it reads until EOF.
func hashServer(t *testing.T) (addr string, reply <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			out <- err.Error()
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			out <- err.Error()
			return
		}
		out <- hashReply(n, h.Sum(nil))
	}()
	return ln.Addr().String(), out
}

// TestProxyCopy forwards 256 MiB from a client through a zcnet conn to a plain TCP
// backend with io.Copy(backend, conn), as a proxy does: the backend receives the stream
// intact (SHA-256). With the mappable sender in ModeZeroCopy, at least 99% of it was
// mapped and handed to the backend's Write without a copy in user space.
func TestProxyCopy(t *testing.T) {
	const total = 256 << 20
	mappable := runtime.GOOS == "linux" && Supported() == nil
	opts := Options{}
	if mappable {
		opts = Options{Mode: ModeZeroCopy, PageAlignedMSS: true}
	}
	ln := listenLoopback(t, opts)
	sent := make(chan error, 1)
	go func() {
		if !mappable {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err == nil {
				_, err = io.Copy(c, io.LimitReader(&patternReader{}, total))
				c.Close()
			}
			sent <- err
			return
		}
		o := zcsend.Options{PageMSS: true, ZeroCopy: true}
		c, err := zcsend.Dial(context.Background(), ln.Addr().String(), o)
		if err == nil {
			err = zcsend.Send(c, total, o)
			c.Close()
		}
		sent <- err
	}()
	zc := acceptConn(t, ln)
	backendAddr, reply := hashServer(t)
	backend, err := net.Dial("tcp", backendAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	n, err := io.Copy(backend, zc)
	if err != nil {
		t.Fatal(err)
	}
	if err := backend.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	zc.Close()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if n != total {
		t.Errorf("io.Copy forwarded %d bytes, want %d", n, int64(total))
	}
	wantReply(t, <-reply, total)
	st := zc.Stats()
	if mappable && (st.MappedShare() < 0.99 || st.ViewBytes < st.MappedBytes) {
		t.Errorf("mapped share %.4f (want at least 0.99), %d bytes passed as views of %d mapped: %+v",
			st.MappedShare(), st.ViewBytes, st.MappedBytes, st)
	}
	t.Logf("mapped share %.4f", st.MappedShare())
}

// TestDialerHTTPTransport uses Dialer.DialContext as http.Transport.DialContext: a GET
// of a 32 MiB body from a net/http server arrives intact (SHA-256) through a *Conn, whose
// Stats, and the Dialer's, count the body; the Dialer's still do after the conn is closed.
func TestDialerHTTPTransport(t *testing.T) {
	const total = 32 << 20
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(total))
		io.Copy(w, io.LimitReader(&patternReader{}, total))
	})}
	serveHTTP(t, srv, inner)

	d := &Dialer{}
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	var conn net.Conn
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { conn = info.Conn },
	})
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+inner.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := patternSum(total); n != total || [32]byte(h.Sum(nil)) != want {
		t.Fatalf("body of %d bytes, want %d; sha256 match: %v", n, int64(total), [32]byte(h.Sum(nil)) == want)
	}
	zc, ok := conn.(*Conn)
	if !ok {
		t.Fatalf("the transport used a %T, want *Conn", conn)
	}
	cs := zc.Stats()
	if cs.MappedBytes+cs.CopiedBytes < total {
		t.Errorf("conn Stats count %d bytes, want at least %d", cs.MappedBytes+cs.CopiedBytes, total)
	}
	// (The transport's reader may be starting a wait now, which its counters record: the
	// bytes, not yet every counter, must agree.)
	if ds := d.Stats(); ds.CopiedBytes != cs.CopiedBytes || ds.MappedBytes != cs.MappedBytes {
		t.Errorf("Dialer Stats %+v, want the conn's bytes %+v", ds, cs)
	}
	tr.CloseIdleConnections()
	zc.Close() // the transport may not have taken it back as idle yet
	if ds := d.Stats(); ds.CopiedBytes+ds.MappedBytes != cs.CopiedBytes+cs.MappedBytes {
		t.Errorf("Dialer Stats after Close count %d bytes, want the conn's %d", ds.CopiedBytes+ds.MappedBytes, cs.CopiedBytes+cs.MappedBytes)
	}
	// A Read the transport's reader has running when Close comes frees the conn (and
	// folds it into the Dialer's sums) as it returns, on its own goroutine; as it returns
	// it may still count the wait Close ended (a batched one, whose bound may have fired).
	for end := time.Now().Add(5 * time.Second); d.sums.liveCount() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the Dialer tracks %d live conns 5 s after Close, want 0", d.sums.liveCount())
		}
	}
	if ds, final := d.Stats(), zc.Stats(); ds != final || final.CopiedBytes != cs.CopiedBytes || final.MappedBytes != cs.MappedBytes {
		t.Errorf("Dialer Stats once the conn is freed %+v, want the conn's %+v (bytes as before Close: %+v)", ds, final, cs)
	}
}

// TestDialerUnix dials "unix" and "unixpacket" through Dialer.DialContext, as a database
// driver configured with a socket path does: the conn is net.Dialer's *net.UnixConn,
// whatever the Options, a 4 MiB stream read from it arrives intact (SHA-256), and the
// Dialer's Stats do not count it. DialConn refuses the networks, naming them.
func TestDialerUnix(t *testing.T) {
	const total = 4 << 20
	for _, network := range []string{"unix", "unixpacket"} {
		t.Run(network, func(t *testing.T) {
			if runtime.GOOS != "linux" && network == "unixpacket" {
				t.Skip("unixpacket is a Linux socket type here")
			}
			path := filepath.Join(t.TempDir(), "s")
			ln, err := net.Listen(network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			sent := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					sent <- err
					return
				}
				defer c.Close()
				// 16 KiB writes: each is one message on unixpacket, under io.Copy's buffer.
				_, err = io.CopyBuffer(struct{ io.Writer }{c}, io.LimitReader(&patternReader{}, total), make([]byte, 16<<10))
				sent <- err
			}()
			d := &Dialer{Options: Options{Mode: ModeZeroCopy, PageAlignedMSS: true, UserTimeout: time.Second}}
			c, err := d.DialContext(context.Background(), network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, ok := c.(*net.UnixConn); !ok {
				t.Errorf("DialContext(%q) returned a %T, want net.Dialer's *net.UnixConn", network, c)
			}
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if want := patternSum(total); n != total || [32]byte(h.Sum(nil)) != want {
				t.Fatalf("received %d bytes, want %d; sha256 match: %v", n, int64(total), [32]byte(h.Sum(nil)) == want)
			}
			if s := d.Stats(); s != (Stats{}) {
				t.Errorf("Dialer Stats count a %s conn: %+v", network, s)
			}
			if zc, err := d.DialConn(network, path); err == nil || zc != nil || !strings.Contains(err.Error(), network) {
				t.Errorf("DialConn(%q): %v, %v; want nil and an error naming the network", network, zc, err)
			}
		})
	}
}
