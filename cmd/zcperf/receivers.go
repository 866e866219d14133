package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// recvKind is how a row consumes what it receives.
type recvKind int

const (
	kindRead    recvKind = iota // Read into a reused buffer of -read bytes
	kindNext                    // Next(-msg)
	kindWriteTo                 // WriteTo(io.Discard)
	kindFile                    // io.Copy(file, conn)
	kindProxy                   // io.Copy(backend, conn)
	kindHTTP                    // a net/http server answering small requests
)

// receiver is one row of the table: a workload and how its conns are received.
type receiver struct {
	workload string // bulk, filesink, proxy or http
	key      string // short name, unique within the workload (-recv for bulk)
	name     string // name in the table
	zc       bool   // a zcnet.Conn (else the net.TCPConn itself)
	mode     zcnet.Mode
	kind     recvKind
}

// id names the row across workloads (in the two-host plan).
func (r receiver) id() string { return r.workload + "/" + r.key }

// workloadNames are the workloads, in the order they run.
var workloadNames = []string{"bulk", "filesink", "proxy", "http"}

// bulkReceivers are the bulk workload's rows, net.TCPConn.Read first: the others are
// compared with it.
var bulkReceivers = []receiver{
	{workload: "bulk", key: "net", name: "net.TCPConn Read", kind: kindRead},
	{workload: "bulk", key: "read-auto", name: "zcnet Read auto", zc: true, mode: zcnet.ModeAuto, kind: kindRead},
	{workload: "bulk", key: "read-zc", name: "zcnet Read zerocopy", zc: true, mode: zcnet.ModeZeroCopy, kind: kindRead},
	{workload: "bulk", key: "read-copy", name: "zcnet Read copy", zc: true, mode: zcnet.ModeCopy, kind: kindRead},
	{workload: "bulk", key: "next-auto", name: "zcnet Next auto", zc: true, mode: zcnet.ModeAuto, kind: kindNext},
	{workload: "bulk", key: "next-zc", name: "zcnet Next zerocopy", zc: true, mode: zcnet.ModeZeroCopy, kind: kindNext},
	{workload: "bulk", key: "writeto-zc", name: "zcnet WriteTo zerocopy", zc: true, mode: zcnet.ModeZeroCopy, kind: kindWriteTo},
	{workload: "bulk", key: "writeto-auto", name: "zcnet WriteTo auto", zc: true, mode: zcnet.ModeAuto, kind: kindWriteTo},
}

func bulkKeys() []string {
	keys := make([]string, len(bulkReceivers))
	for i, r := range bulkReceivers {
		keys[i] = r.key
	}
	return keys
}

// workloadRows are the rows of a workload other than bulk: net.TCPConn first, then zcnet
// in each mode.
func workloadRows(w string) []receiver {
	kind := map[string]recvKind{"filesink": kindFile, "proxy": kindProxy, "http": kindHTTP}[w]
	rows := []receiver{{workload: w, key: "net", name: "net.TCPConn", kind: kind}}
	for _, m := range []zcnet.Mode{zcnet.ModeAuto, zcnet.ModeZeroCopy, zcnet.ModeCopy} {
		rows = append(rows, receiver{workload: w, key: m.String(), name: "zcnet " + m.String(), zc: true, mode: m, kind: kind})
	}
	return rows
}

// sample is one transfer's outcome.
type sample struct {
	bytes    int64
	requests int64 // http only
	secs     float64
	cpuSecs  float64
	sndSecs  float64 // the local sender process's CPU time (its whole life), 0 if none
	stats    zcnet.Stats
}

// sndPerMiB is the sender's CPU time in microseconds per MiB (0 without a local sender).
func (s sample) sndPerMiB() float64 {
	return s.sndSecs * 1e6 / (float64(s.bytes) / (1 << 20))
}

// cpuPerUnit is the receiver's CPU time in microseconds per MiB, or per request for http.
func (s sample) cpuPerUnit() float64 {
	if s.requests > 0 {
		return s.cpuSecs * 1e6 / float64(s.requests)
	}
	return s.cpuSecs * 1e6 / (float64(s.bytes) / (1 << 20))
}

// rate is Gbit/s, or requests per second for http.
func (s sample) rate() float64 {
	if s.requests > 0 {
		return float64(s.requests) / s.secs
	}
	return float64(s.bytes) * 8 / s.secs / 1e9
}

// receive accepts one conn from h.ln and consumes its stream as r does, measuring wall
// and CPU time from the accept to the end of the stream.
func receive(cfg *config, h *harness, r receiver) (sample, error) {
	if tl, ok := h.ln.(*net.TCPListener); ok {
		tl.SetDeadline(time.Now().Add(cfg.timeout))
	}
	nc, err := h.ln.Accept()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return sample{}, fmt.Errorf("no stream arrived within -timeout %v", cfg.timeout)
	}
	if err != nil {
		return sample{}, err
	}
	tc := nc.(*net.TCPConn)
	defer tc.Close()
	var src net.Conn = tc
	var zc *zcnet.Conn
	if r.zc {
		if zc, err = zcnet.NewConn(tc, zcnet.Options{Mode: r.mode}); err != nil {
			return sample{}, err
		}
		defer zc.Close()
		src = zc
	}
	if err := src.SetDeadline(time.Now().Add(cfg.timeout)); err != nil {
		return sample{}, err
	}
	var v *zcsend.Verifier
	// check is nil unless verifying while receiving; the backend verifies what a proxy
	// forwards.
	var check io.Writer
	if cfg.verify && r.kind != kindProxy {
		v = new(zcsend.Verifier)
		check = v
	}

	// What the receiver needs, made before the clock starts.
	var buf []byte
	var file *os.File
	var backend *net.TCPConn
	switch r.kind {
	case kindRead:
		buf = make([]byte, cfg.read)
	case kindFile:
		if file, err = os.CreateTemp(h.dir, "zcperf-*"); err != nil {
			return sample{}, err
		}
		defer os.Remove(file.Name())
		defer file.Close()
	case kindProxy:
		c, err := net.Dial("tcp", h.sink.Addr)
		if err != nil {
			return sample{}, fmt.Errorf("backend: %w", err)
		}
		backend = c.(*net.TCPConn)
		defer backend.Close()
	}

	m := cpumeter.Start(cfg.busy)
	var n int64
	switch r.kind {
	case kindRead:
		n, err = zcsend.DrainRead(src, buf, check)
	case kindNext:
		n, err = zcsend.DrainNext(zc, cfg.msg, check)
	case kindWriteTo:
		w := io.Writer(io.Discard)
		if check != nil {
			w = check
		}
		n, err = zc.WriteTo(w)
	case kindFile:
		n, err = io.Copy(file, src)
	case kindProxy:
		if n, err = io.Copy(backend, src); err == nil {
			err = backend.CloseWrite()
		}
	}
	s := sample{bytes: n}
	mr := m.Stop()
	s.secs, s.cpuSecs = mr.Wall.Seconds(), mr.CPU.Seconds()
	if zc != nil {
		s.stats = zc.Stats()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return s, fmt.Errorf("the stream did not end within -timeout %v (%d of %d bytes received)", cfg.timeout, n, cfg.size)
	}
	if err != nil {
		return s, err
	}

	// Checks, after the clock stopped.
	switch r.kind {
	case kindFile:
		if v != nil {
			if _, err := file.Seek(0, io.SeekStart); err != nil {
				return s, err
			}
			if _, err := io.Copy(v, file); err != nil {
				return s, err
			}
		}
	case kindProxy:
		sn, bad, err := h.sink.Result()
		if err != nil {
			return s, fmt.Errorf("backend: %w", err)
		}
		if sn != n || bad != 0 {
			return s, fmt.Errorf("the backend received %d bytes (%d differing from the pattern), the proxy forwarded %d", sn, bad, n)
		}
	}
	if v != nil {
		if v.Len() != n {
			return s, fmt.Errorf("verified %d bytes of %d", v.Len(), n)
		}
		if err := v.Err(); err != nil {
			return s, err
		}
	}
	return s, nil
}
