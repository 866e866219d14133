package zcnet

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"
)

// Listener is a net.Listener whose Accept returns *Conn (as net.Conn) for TCP
// connections. It is safe for concurrent use.
type Listener struct {
	inner net.Listener
	opts  Options
	err   error // invalid options: Accept fails with it

	mu     sync.Mutex
	live   map[*Conn]struct{}
	closed Stats // sums of the conns closed so far
}

// Listen announces on the local network address, as net.Listen, for the networks "tcp",
// "tcp4" and "tcp6", with the zero Options.
func Listen(network, address string) (*Listener, error) {
	var lc ListenConfig
	return lc.Listen(context.Background(), network, address)
}

// ListenConfig is net.ListenConfig plus the Options of the conns it accepts.
type ListenConfig struct {
	net.ListenConfig
	Options Options
}

// Listen announces on the local network address, as net.ListenConfig.Listen, for "tcp",
// "tcp4" and "tcp6". With Options.PageAlignedMSS the listening socket advertises a
// maximum segment size of one page of payload.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (*Listener, error) {
	if err := checkArgs("listen", network, &lc.Options); err != nil {
		return nil, err
	}
	cfg := lc.ListenConfig
	if lc.Options.PageAlignedMSS {
		userControl := cfg.Control
		cfg.Control = func(network, address string, c syscall.RawConn) error {
			if userControl != nil {
				if err := userControl(network, address, c); err != nil {
					return err
				}
			}
			var serr error
			if err := c.Control(func(fd uintptr) { serr = setMSS(fd, pageSize+12) }); err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := cfg.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return NewListener(ln, lc.Options), nil
}

// checkArgs rejects, for op ("listen" or "dial"), networks other than TCP ones and
// invalid options.
func checkArgs(op, network string, opts *Options) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return &net.OpError{Op: op, Net: network, Err: net.UnknownNetworkError(network)}
	}
	if _, err := opts.validate(); err != nil {
		return &net.OpError{Op: op, Net: network, Err: err}
	}
	return nil
}

// NewListener wraps inner: Accept turns each *net.TCPConn it returns into a *Conn with
// opts, and passes other conns through unchanged. Invalid opts make Accept fail.
// Options.PageAlignedMSS has no effect here (the socket already exists; set TCP_MAXSEG
// before listen, or use ListenConfig).
func NewListener(inner net.Listener, opts Options) *Listener {
	_, err := opts.validate()
	return &Listener{inner: inner, opts: opts, err: err, live: make(map[*Conn]struct{})}
}

// Accept waits for and returns the next connection: a *Conn for TCP connections.
func (l *Listener) Accept() (net.Conn, error) {
	if l.err != nil {
		return nil, &net.OpError{Op: "accept", Net: l.inner.Addr().Network(), Addr: l.inner.Addr(), Err: l.err}
	}
	c, err := l.inner.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	zc, err := NewConn(tc, l.opts)
	if err != nil {
		tc.Close()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.inner.Addr(), Err: err}
	}
	l.mu.Lock()
	l.live[zc] = struct{}{}
	l.mu.Unlock()
	zc.onClose = l.forget
	return zc, nil
}

// forget moves a closed conn's counters into the listener's sums.
func (l *Listener) forget(c *Conn) {
	s := c.Stats()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.live[c]; ok {
		delete(l.live, c)
		l.closed.Add(s)
	}
}

// Stats returns the sums of the counters of every conn this listener accepted, open or
// closed. FallbackReason is one conn's reason, when any has one.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	s := l.closed
	conns := make([]*Conn, 0, len(l.live))
	for c := range l.live {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		s.Add(c.Stats())
	}
	return s
}

// Close stops listening; conns already accepted stay open.
func (l *Listener) Close() error { return l.inner.Close() }

// Addr returns the listener's network address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// SetDeadline sets the deadline for Accept when the wrapped listener has one (as
// *net.TCPListener does).
func (l *Listener) SetDeadline(t time.Time) error {
	d, ok := l.inner.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return &net.OpError{Op: "set", Net: l.inner.Addr().Network(), Addr: l.inner.Addr(), Err: syscall.EINVAL}
	}
	return d.SetDeadline(t)
}

// Dialer is net.Dialer plus the Options of the conns it makes.
type Dialer struct {
	net.Dialer
	Options Options
}

// DialContext connects to address on "tcp", "tcp4" or "tcp6", as net.Dialer.DialContext,
// and returns the connection as a *Conn.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (*Conn, error) {
	if err := checkArgs("dial", network, &d.Options); err != nil {
		return nil, err
	}
	c, err := d.Dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	zc, err := NewConn(c.(*net.TCPConn), d.Options)
	if err != nil {
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return zc, nil
}

// Dial connects to address, as net.Dialer.Dial.
func (d *Dialer) Dial(network, address string) (*Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// Dial connects to address on "tcp", "tcp4" or "tcp6" with the zero Options.
func Dial(network, address string) (*Conn, error) {
	var d Dialer
	return d.DialContext(context.Background(), network, address)
}
