package zcnet

import (
	"runtime"
	"sync"
)

// connSums keeps the counters of the conns a Listener accepted or a Dialer dialed, for
// their Stats, but not the conns themselves: a conn dropped without Close can be garbage
// collected, and its counters then join the sums of the closed ones. What it holds is
// one entry per conn still open, so it stays bounded by the live conns. The zero value
// is ready to use.
type connSums struct {
	mu     sync.Mutex
	live   map[*counters]runtime.Cleanup // counters of the conns not closed nor collected
	closed Stats                         // sums of the conns closed or collected so far
}

// track counts zc in the sums from now on, until it is closed or collected.
func (s *connSums) track(zc *Conn) {
	st := zc.st
	s.mu.Lock()
	if s.live == nil {
		s.live = make(map[*counters]runtime.Cleanup)
	}
	// The cleanup holds s and the counters, never the conn: a conn dropped without Close
	// stays collectable, and its counters move into the sums when it is collected.
	s.live[st] = runtime.AddCleanup(zc, s.collected, st)
	s.mu.Unlock()
	zc.onClose = s.forget
}

// forget moves a closed conn's counters into the sums.
func (s *connSums) forget(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl, ok := s.live[c.st]; ok {
		cl.Stop()
		delete(s.live, c.st)
		s.closed.Add(c.st.snapshot())
	}
}

// collected moves the counters of a conn collected without Close into the sums.
func (s *connSums) collected(st *counters) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[st]; ok {
		delete(s.live, st)
		s.closed.Add(st.snapshot())
	}
}

// stats returns the sums of the counters of every conn tracked, open or closed.
func (s *connSums) stats() Stats {
	s.mu.Lock()
	sum := s.closed
	sts := make([]*counters, 0, len(s.live))
	for st := range s.live {
		sts = append(sts, st)
	}
	s.mu.Unlock()
	for _, st := range sts {
		sum.Add(st.snapshot())
	}
	return sum
}
