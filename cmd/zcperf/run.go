package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// perfMain runs zcperf with the command-line arguments args and returns the exit code.
func perfMain(args []string) int {
	cfg, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if err != errReported {
			fmt.Fprintln(os.Stderr, "zcperf:", err)
		}
		return 2
	}
	if cfg.client != "" {
		err = runClient(cfg)
	} else {
		err = runServer(cfg)
	}
	if err != nil {
		if isTerminal(os.Stderr) {
			fmt.Fprintln(os.Stderr) // end the progress line
		}
		fmt.Fprintln(os.Stderr, "zcperf:", err)
		return 1
	}
	return 0
}

// runChild runs this process as one of zcperf's child processes if its environment asks
// for one, and reports whether it did and the exit code.
func runChild() (ran bool, code int) {
	ran, err := zcsend.RunFromEnv()
	if !ran {
		ran, err = runHTTPClientFromEnv()
	}
	if !ran {
		return false, 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zcperf child:", err)
		return true, 1
	}
	return true, 0
}

// harness is what the streams of a run share.
type harness struct {
	ln   net.Listener // the stream listener (plain TCP; each row wraps its conn)
	sink *zcsend.Sink // the proxy workload's backend, a separate process
	dir  string       // where the filesink workload writes
	prog *progress    // progress on stderr
	plan *plan        // two-host mode: what the client announced
	done int          // streams received so far
}

// runServer receives cfg.rounds rounds of every row, here or from a remote client, and
// prints the result.
func runServer(cfg *config) error {
	h := &harness{prog: newProgress()}
	var err error
	if h.ln, err = listen(cfg, cfg.addr); err != nil {
		return err
	}
	defer h.ln.Close()
	if slices.ContainsFunc(cfg.rows, func(r receiver) bool { return r.kind == kindProxy }) {
		if h.sink, err = zcsend.StartSink(cfg.verify); err != nil {
			return fmt.Errorf("starting the proxy backend: %w", err)
		}
		defer h.sink.Close()
	}
	h.dir = os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		h.dir = "/dev/shm" // tmpfs: the file sink measures the copy, not a disk
	}
	samples := make([][]sample, len(cfg.rows))
	start := time.Now()
	if cfg.server {
		if err := serverHandshake(cfg, h); err != nil {
			return err
		}
	} else {
		// Warm up (page faults of fresh buffers, the auto mode's process-wide
		// calibration) with a short transfer per row, not counted.
		warm := *cfg
		warm.size = min(cfg.size, 64<<20)
		warm.requests = min(cfg.requests, 2000)
		for i, r := range cfg.rows {
			h.prog.status(i == 0, "warm-up  %d/%d %-8s %-24s", i+1, len(cfg.rows), r.workload, r.name)
			if _, err := transfer(&warm, h, r); err != nil {
				return fmt.Errorf("warm-up %s %s: %w", r.workload, r.name, err)
			}
		}
	}
	for round := range cfg.rounds {
		for k := range cfg.rows {
			// Rotate the order each round so that no row always follows the same one. In
			// two-host mode the client sends in the table's order.
			i := k
			if !cfg.server {
				i = (k + round) % len(cfg.rows)
			}
			r := cfg.rows[i]
			h.prog.status(k == 0, "round %d/%d  %-8s %-24s %2d/%d  %4.0fs",
				round+1, cfg.rounds, r.workload, r.name, k+1, len(cfg.rows), time.Since(start).Seconds())
			s, err := transfer(cfg, h, r)
			if err != nil {
				return fmt.Errorf("round %d, %s %s: %w", round+1, r.workload, r.name, err)
			}
			samples[i] = append(samples[i], s)
		}
	}
	h.prog.done("%d transfers in %.0fs", cfg.rounds*len(cfg.rows), time.Since(start).Seconds())
	return report(cfg, samples)
}

// listen opens a plain TCP listener on addr, advertising a page-sized MSS when cfg.mss
// is set.
func listen(cfg *config, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if !cfg.mss {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setPageMSS(fd) }); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

// senderOptions are the sender's stream options from the flags.
func (cfg *config) senderOptions() zcsend.Options {
	return zcsend.Options{PageMSS: cfg.mss, ZeroCopy: cfg.zerocopy}
}

// startSender re-executes this binary as a sender of cfg.size bytes to addr.
func startSender(cfg *config, addr string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), zcsend.ProcessEnv+"="+zcsend.EnvValue(addr, cfg.size, cfg.senderOptions()))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd, cmd.Start()
}

// transfer runs one transfer of row r: one stream (from a local sender process unless
// this is the two-host server) or one round of http requests.
func transfer(cfg *config, h *harness, r receiver) (sample, error) {
	if r.kind == kindHTTP {
		return httpTransfer(cfg, r)
	}
	var cmd *exec.Cmd
	var waitc chan error
	var killed, failed atomic.Bool // we killed the sender; it failed before that
	if !cfg.server {
		var err error
		if cmd, err = startSender(cfg, h.ln.Addr().String()); err != nil {
			return sample{}, err
		}
		waitc = make(chan error, 1)
		go func() {
			err := cmd.Wait()
			if err != nil && !killed.Load() {
				// The sender failed: stop waiting for its conn.
				failed.Store(true)
				if tl, ok := h.ln.(*net.TCPListener); ok {
					tl.SetDeadline(time.Now())
				}
			}
			waitc <- err
		}()
	}
	s, err := receive(cfg, h, r)
	if cmd != nil {
		if err != nil {
			killed.Store(true)
			cmd.Process.Kill()
		}
		if werr := <-waitc; werr != nil && failed.Load() {
			err = fmt.Errorf("sender: %w", werr) // the sender's failure explains the receiver's
		}
		if ps := cmd.ProcessState; ps != nil {
			s.sndSecs = (ps.UserTime() + ps.SystemTime()).Seconds()
		}
	}
	if err == nil && s.bytes != cfg.size {
		err = fmt.Errorf("received %d bytes, want %d", s.bytes, cfg.size)
		if cfg.server {
			err = fmt.Errorf("%w: the client sent a shorter stream or stopped", err)
		}
	}
	if cfg.server {
		h.done++
		if err != nil {
			err = fmt.Errorf("stream %d of %d: %w", h.done, h.plan.streams(), err)
		}
	}
	return s, err
}
