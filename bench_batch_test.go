//go:build linux

package zcnet

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// The benchmarks of batched wake-ups: what batching saves (io.Copy into a hash or
// io.Discard, many streams at once), and what it must not cost (bursts answered by one
// byte; ping-pong through a large Read buffer is BenchmarkPingPongEcho's). As in bench_test.go, sub-benchmark names
// end in recv=..., so that benchstat -col /recv sets net.TCPConn and zcnet side by side:
//
//	go test -run '^$' -bench 'CopyTo|Streams|Bursts' -count 5 | tee batch.txt
//	benchstat -col /recv batch.txt

// batchRecvs are the receivers these benchmarks compare: net.TCPConn, and a zcnet Conn
// in the default mode and in ModeCopy.
var batchRecvs = []struct {
	name string
	zc   bool
	mode Mode
}{
	{"net", false, 0},
	{"auto", true, ModeAuto},
	{"copy", true, ModeCopy},
}

// BenchmarkCopyTo drains a plain sender's stream with io.Copy into io.Discard and into a
// SHA-256 hash: net.TCPConn goes through io.Discard's ReadFrom (8 KiB reads) or io.Copy's
// 32 KiB buffer, a zcnet Conn through its WriteTo.
func BenchmarkCopyTo(b *testing.B) {
	sinks := []struct {
		name string
		w    func() io.Writer
	}{
		{"discard", func() io.Writer { return io.Discard }},
		{"sha256", func() io.Writer { return sha256.New() }},
	}
	for _, sk := range sinks {
		for _, rv := range batchRecvs {
			b.Run("to="+sk.name+"/recv="+rv.name, func(b *testing.B) {
				benchReceive(b, zcsend.Options{}, rv.zc, rv.mode, func(r io.Reader, _ *Conn) func() (int64, error) {
					w := sk.w()
					return func() (int64, error) {
						n, err := io.Copy(w, r)
						if h, ok := w.(hash.Hash); ok && n > 0 {
							want := patternSum(n)
							if got := h.Sum(nil); string(got) != string(want[:]) {
								return n, fmt.Errorf("sha256 of the stream differs")
							}
						}
						return n, err
					}
				})
			})
		}
	}
}

// BenchmarkStreams64 receives from 64 sender processes at once, each conn read into its
// own 512 KiB buffer by its own goroutine, as a server with many uploads does: there the
// poller already wakes readers with more than a train queued. b.N MiB are spread over the
// 64 conns; cpu-us/MiB is the receiving process's, snd-cpu-us/MiB the 64 senders'.
func BenchmarkStreams64(b *testing.B) {
	const streams = 64
	for _, rv := range batchRecvs {
		b.Run("recv="+rv.name, func(b *testing.B) {
			b.StopTimer()
			per := int64(max(b.N/streams, 1)) * benchUnit
			rs := make([]io.Reader, streams)
			cs := make([]*Conn, streams)
			ps := make([]*benchPeer, streams)
			for i := range streams {
				rs[i], cs[i], ps[i] = benchConn(b, zcsend.Options{}, per, rv.zc, rv.mode)
				defer ps[i].done()
			}
			b.SetBytes(per * streams / int64(b.N))
			b.ResetTimer()
			for _, p := range ps {
				p.start()
			}
			cpu0 := cpumeter.Process()
			b.StartTimer()
			errs := make([]error, streams)
			var wg sync.WaitGroup
			for i, r := range rs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n, err := zcsend.DrainRead(r, make([]byte, 512<<10), &wlSpotWriter{})
					if err == nil && n != per {
						err = fmt.Errorf("stream %d: %d bytes, want %d", i, n, per)
					}
					errs[i] = err
				}()
			}
			wg.Wait()
			b.StopTimer()
			cpu := cpumeter.Process() - cpu0
			var sent time.Duration
			var st Stats
			for i, p := range ps {
				if errs[i] != nil {
					b.Fatal(errs[i])
				}
				if cs[i] != nil {
					st.Add(cs[i].Stats())
				}
				p.done()
				sent += p.sent
			}
			benchCPUMetrics(b, per*streams, cpu, sent)
			if rv.zc {
				b.ReportMetric(float64(st.BatchedWaits)/float64(max(st.Waits, 1))*100, "batched-%")
			}
		})
	}
}

// benchEchoPair returns the benchmark's end of a loopback conn (net.TCPConn, or a zcnet
// Conn in mode when zc is set) and the peer's end, a plain net.TCPConn.
func benchEchoPair(b *testing.B, zc bool, mode Mode) (net.Conn, *net.TCPConn) {
	ln := loopbackListen(b, false)
	defer ln.Close()
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
		}
		dialed <- c
	}()
	nc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	rw := nc
	if zc {
		if rw, err = NewConn(nc.(*net.TCPConn), Options{Mode: mode}); err != nil {
			b.Fatal(err)
		}
	}
	pc := <-dialed
	if pc == nil {
		b.FailNow()
	}
	return rw, pc.(*net.TCPConn)
}

// benchReadMsg reads exactly len(msg) bytes from r through buf, as a server that reads
// into one large buffer does: every Read may take up to len(buf).
func benchReadMsg(r io.Reader, buf []byte, n int) error {
	for got := 0; got < n; {
		k, err := r.Read(buf)
		got += k
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkBursts sends bursts of 1.3 MiB that the benchmark side reads with Reads into
// a 512 KiB buffer and answers with one byte, and measures, at the sender, the time from
// the start of a burst to the answer: the last Read of a burst gets less than it asks, so
// a batched wait there ends only by its bound.
func BenchmarkBursts(b *testing.B) {
	const burst = 1300 << 10
	for _, rv := range batchRecvs {
		b.Run("recv="+rv.name, func(b *testing.B) {
			rw, peer := benchEchoPair(b, rv.zc, rv.mode)
			served := make(chan error, 1)
			go func() {
				buf := make([]byte, 512<<10)
				for {
					if err := benchReadMsg(rw, buf, burst); err != nil {
						served <- err
						return
					}
					if _, err := rw.Write([]byte{1}); err != nil {
						served <- err
						return
					}
				}
			}()
			data, one := patternData(0, burst), make([]byte, 1)
			lat := make([]time.Duration, b.N)
			b.SetBytes(burst)
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				if _, err := peer.Write(data); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(peer, one); err != nil {
					b.Fatal(err)
				}
				lat[i] = time.Since(t0)
			}
			b.StopTimer()
			peer.Close()
			if err := <-served; err != io.EOF {
				b.Fatal(err)
			}
			rw.Close()
			benchReportRTT(b, lat)
			if c, ok := rw.(*Conn); ok {
				st := c.Stats()
				b.ReportMetric(float64(st.BoundedWaits)/float64(b.N), "bounded/burst")
			}
		})
	}
}
