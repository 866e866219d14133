package zcsend

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// SinkEnv is the environment variable through which a test binary or command re-executes
// itself as a sink: "ADDR,VERIFY" with VERIFY 0 or 1. RunFromEnv then listens on ADDR,
// prints "listening HOSTPORT" on stdout, and drains each conn it accepts, one at a time,
// printing "BYTES BAD" when the conn ends (BAD counts the bytes that differ from the
// pattern, always 0 without VERIFY), until stdin reaches EOF. Its CPU is its own: a
// receiver that forwards to it is measured without the cost of the far end.
const SinkEnv = "ZCNET_SINK"

// Sink is a running sink process (see SinkEnv).
type Sink struct {
	// Addr is the address the sink listens on.
	Addr string

	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// StartSink starts this binary (which must call RunFromEnv first) as a sink listening on
// a loopback port, checking the pattern of each stream when verify is set.
func StartSink(verify bool) (*Sink, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	v := "0"
	if verify {
		v = "1"
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), SinkEnv+"=127.0.0.1:0,"+v)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Sink{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	line, err := s.line()
	addr, ok := strings.CutPrefix(line, "listening ")
	if err != nil || !ok {
		s.Close()
		if err == nil {
			err = fmt.Errorf("zcsend: sink said %q", line)
		}
		return nil, err
	}
	s.Addr = addr
	return s, nil
}

func (s *Sink) line() (string, error) {
	if s.out.Scan() {
		return s.out.Text(), nil
	}
	if err := s.out.Err(); err != nil {
		return "", err
	}
	return "", errors.New("zcsend: the sink exited")
}

// Result waits for the end of the next conn the sink accepted and returns the bytes it
// drained from it and how many of them differed from the pattern.
func (s *Sink) Result() (n, bad int64, err error) {
	line, err := s.line()
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(line, "%d %d", &n, &bad); err != nil {
		return 0, 0, fmt.Errorf("zcsend: sink said %q", line)
	}
	return n, bad, nil
}

// Close stops the sink and waits for it to exit.
func (s *Sink) Close() error {
	s.stdin.Close()
	return s.cmd.Wait()
}

// runSink serves a SinkEnv request v.
func runSink(v string) error {
	addr, flag, ok := strings.Cut(v, ",")
	verify, err := strconv.ParseBool(flag)
	if !ok || err != nil {
		return fmt.Errorf("zcsend: bad %s=%q", SinkEnv, v)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		ln.Close()
	}()
	if _, err := fmt.Println("listening", ln.Addr()); err != nil {
		return err
	}
	buf := make([]byte, 512<<10)
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil // stdin closed
		}
		var w io.Writer
		var ver Verifier
		if verify {
			w = &ver
		}
		n, err := DrainRead(c, buf, w)
		c.Close()
		if err != nil {
			return err
		}
		if _, err := fmt.Println(n, ver.bad); err != nil {
			return err
		}
	}
}
