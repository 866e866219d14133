package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// httpClientEnv is the environment variable through which zcperf re-executes itself as
// the http workload's client: "URL,CONNS,REQUESTS,BODY". The client POSTs REQUESTS bodies
// of BODY pattern bytes over CONNS keep-alive conns and prints "elapsed NANOSECONDS".
const httpClientEnv = "ZCPERF_HTTP_CLIENT"

// httpServer counts what the http workload's handler received.
type httpServer struct {
	verify   bool
	body     int64
	requests atomic.Int64
	bytes    atomic.Int64
	bad      atomic.Int64 // requests whose body was not the expected pattern
}

func (h *httpServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var n int64
	var err error
	ok := true
	if h.verify {
		var v zcsend.Verifier
		n, err = io.Copy(&v, r.Body)
		ok = v.Err() == nil && n == h.body
	} else {
		n, err = io.Copy(io.Discard, r.Body)
	}
	h.requests.Add(1)
	h.bytes.Add(n)
	if err != nil || !ok {
		h.bad.Add(1)
		http.Error(w, "unexpected body", http.StatusBadRequest)
		return
	}
	io.WriteString(w, "ok\n")
}

// httpTransfer runs one round of the http workload for row r: a net/http server on
// net.Listen or zcnet.Listen answers cfg.requests requests from a client process, and
// the server process's CPU time is measured.
func httpTransfer(cfg *config, r receiver) (sample, error) {
	var ln net.Listener
	var zln *zcnet.Listener
	var err error
	if r.zc {
		lc := zcnet.ListenConfig{Options: zcnet.Options{Mode: r.mode, PageAlignedMSS: cfg.mss}}
		zln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		ln = zln
	} else {
		ln, err = listen(cfg, "127.0.0.1:0")
	}
	if err != nil {
		return sample{}, err
	}
	h := &httpServer{verify: cfg.verify, body: int64(cfg.body)}
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	defer srv.Close()

	exe, err := os.Executable()
	if err != nil {
		return sample{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=http://%s/,%d,%d,%d", httpClientEnv, ln.Addr(), cfg.conns, cfg.requests, cfg.body))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	m := cpumeter.Start(cfg.busy)
	err = cmd.Run()
	cpu := m.Stop().CPU.Seconds()
	srv.Close()
	if ctx.Err() != nil {
		return sample{}, fmt.Errorf("the client did not finish within -timeout %v", cfg.timeout)
	}
	if err != nil {
		return sample{}, fmt.Errorf("client: %w", err)
	}
	var ns int64
	if _, err := fmt.Sscanf(out.String(), "elapsed %d", &ns); err != nil || ns <= 0 {
		return sample{}, fmt.Errorf("client said %q", out.String())
	}
	s := sample{bytes: h.bytes.Load(), requests: h.requests.Load(), secs: float64(ns) / 1e9, cpuSecs: cpu}
	if zln != nil {
		s.stats = zln.Stats()
	}
	want := int64(cfg.requests)
	if s.requests != want || s.bytes != want*int64(cfg.body) || h.bad.Load() != 0 {
		return s, fmt.Errorf("the server received %d requests with %d body bytes (%d unexpected), want %d with %d",
			s.requests, s.bytes, h.bad.Load(), want, want*int64(cfg.body))
	}
	return s, nil
}

// runHTTPClientFromEnv runs the http workload's client if httpClientEnv asks for it.
func runHTTPClientFromEnv() (ran bool, err error) {
	v := os.Getenv(httpClientEnv)
	if v == "" {
		return false, nil
	}
	f := strings.Split(v, ",")
	if len(f) != 4 {
		return true, fmt.Errorf("bad %s=%q", httpClientEnv, v)
	}
	var n [3]int
	for i := range n {
		if n[i], err = strconv.Atoi(f[i+1]); err != nil {
			return true, fmt.Errorf("bad %s=%q", httpClientEnv, v)
		}
	}
	return true, httpClient(f[0], n[0], int64(n[1]), n[2])
}

// httpClient POSTs requests bodies of body pattern bytes to url over conns keep-alive
// conns, and prints how long that took.
func httpClient(url string, conns int, requests int64, body int) error {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	payload := zcsend.PatternBytes()[:body]
	var next atomic.Int64
	errc := make(chan error, conns)
	start := time.Now()
	for range conns {
		go func() {
			for next.Add(1) <= requests {
				resp, err := cl.Post(url, "application/octet-stream", bytes.NewReader(payload))
				if err != nil {
					errc <- err
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = errors.New(resp.Status)
				}
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	var first error
	for range conns {
		if err := <-errc; err != nil && first == nil {
			first = err
			next.Store(requests) // stop the others
		}
	}
	if first != nil {
		return first
	}
	_, err := fmt.Printf("elapsed %d\n", time.Since(start).Nanoseconds())
	return err
}
