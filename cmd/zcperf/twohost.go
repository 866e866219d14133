package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// plan is what a two-host run transfers. The client sends its plan as one JSON line on a
// first, control conn; the server compares it with its own and answers "ok" or
// "error: ..." on the same conn, so that a mismatch of flags is an error on both hosts
// rather than a wait.
type plan struct {
	Plan   int      `json:"zcperf_plan"` // format version, 1
	Size   int64    `json:"size"`
	Rounds int      `json:"rounds"`
	Rows   []string `json:"rows"`
}

func newPlan(cfg *config) *plan {
	p := &plan{Plan: 1, Size: cfg.size, Rounds: cfg.rounds}
	for _, r := range cfg.rows {
		p.Rows = append(p.Rows, r.id())
	}
	return p
}

// streams is the number of streams the plan sends.
func (p *plan) streams() int { return p.Rounds * len(p.Rows) }

func (p *plan) String() string {
	return fmt.Sprintf("%d rounds of %d streams of %d bytes (%s)", p.Rounds, len(p.Rows), p.Size, strings.Join(p.Rows, ","))
}

// serverHandshake accepts the client's control conn, checks its plan against cfg and
// answers it.
func serverHandshake(cfg *config, h *harness) error {
	h.plan = newPlan(cfg)
	fmt.Fprintf(os.Stderr, "zcperf: listening on %s for a zcperf -c sending %v\n", h.ln.Addr(), h.plan)
	if tl, ok := h.ln.(*net.TCPListener); ok {
		tl.SetDeadline(time.Now().Add(cfg.timeout))
	}
	c, err := h.ln.Accept()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("no client within -timeout %v", cfg.timeout)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(cfg.timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	var theirs plan
	if err == nil {
		err = json.Unmarshal([]byte(line), &theirs)
	}
	if err != nil || theirs.Plan != 1 {
		return fmt.Errorf("%v did not announce a zcperf -c plan (another program, or another zcperf version)", c.RemoteAddr())
	}
	if theirs.Size != h.plan.Size || theirs.Rounds != h.plan.Rounds || !slices.Equal(theirs.Rows, h.plan.Rows) {
		err := fmt.Errorf("the client at %v would send %v; this server expects %v: give both the same -size, -rounds, -recv and -workload",
			c.RemoteAddr(), &theirs, h.plan)
		fmt.Fprintf(c, "error: %v\n", err)
		return err
	}
	_, err = fmt.Fprintln(c, "ok")
	return err
}

// runClient announces its plan to the server at cfg.client, then sends one stream per
// row and round.
func runClient(cfg *config) error {
	o := cfg.senderOptions()
	p := newPlan(cfg)
	ctl, err := dialRetry(cfg.client, zcsend.Options{})
	if err != nil {
		return err
	}
	ctl.SetDeadline(time.Now().Add(cfg.timeout))
	enc, _ := json.Marshal(p)
	if _, err := ctl.Write(append(enc, '\n')); err != nil {
		ctl.Close()
		return err
	}
	answer, err := bufio.NewReader(ctl).ReadString('\n')
	ctl.Close()
	answer = strings.TrimSpace(answer)
	if err != nil && answer == "" {
		return fmt.Errorf("the server did not answer: %w", err)
	}
	if answer != "ok" {
		return fmt.Errorf("the server refused: %s", strings.TrimPrefix(answer, "error: "))
	}
	prog := newProgress()
	n := p.streams()
	for i := range n {
		prog.status(i%len(cfg.rows) == 0, "sending stream %d/%d", i+1, n)
		c, err := dialRetry(cfg.client, o)
		if err != nil {
			return err
		}
		err = zcsend.Send(c, cfg.size, o)
		c.Close()
		if err != nil {
			return fmt.Errorf("stream %d of %d: %w", i+1, n, err)
		}
	}
	prog.done("sent %d streams of %d bytes", n, cfg.size)
	return nil
}

// dialRetry dials addr with o, retrying for 30 s while the server is not (yet) there.
func dialRetry(addr string, o zcsend.Options) (*net.TCPConn, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := zcsend.Dial(context.Background(), addr, o)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
