package zcnet

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// Listener is a net.Listener whose Accept returns *Conn (as net.Conn) for TCP
// connections. It is safe for concurrent use. It keeps the counters of the conns it
// accepted, for Stats, but not the conns themselves: a conn dropped without Close can be
// garbage collected, and its counters then join the sums of the closed ones. The zero
// Listener has no socket: its methods return errors.
type Listener struct {
	inner net.Listener
	opts  Options
	err   error // invalid options: Accept fails with it

	sums connSums
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
			return controlMSS(c)
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
	if !isTCP(network) {
		return &net.OpError{Op: op, Net: network, Err: net.UnknownNetworkError(network)}
	}
	if _, err := opts.validate(); err != nil {
		return &net.OpError{Op: op, Net: network, Err: err}
	}
	return nil
}

// isTCP reports whether network is one of net's TCP networks.
func isTCP(network string) bool {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return true
	}
	return false
}

// controlMSS sets the page-sized TCP_MAXSEG (page size + 12 bytes of timestamp option)
// on the socket of c, before listen or connect.
func controlMSS(c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = setMSS(fd, pageSize+12) }); err != nil {
		return err
	}
	return serr
}

// ErrNotInitialized is the Err of the *net.OpError returned by the methods of a Conn or
// Listener that has no socket: a zero value (not made by Accept, Dial, NewConn, Listen or
// NewListener), or a Listener made by NewListener(nil, opts).
var ErrNotInitialized = errors.New("zcnet: no socket (zero value or nil inner listener)")

// NewListener wraps inner: Accept turns each *net.TCPConn it returns into a *Conn with
// opts, and passes other conns through unchanged. Invalid opts, or a nil inner, make
// Accept fail. Options.PageAlignedMSS has no effect here (the socket already exists; set
// TCP_MAXSEG before listen, or use ListenConfig); Options.UserTimeout is applied to every
// conn accepted.
func NewListener(inner net.Listener, opts Options) *Listener {
	_, err := opts.validate()
	return &Listener{inner: inner, opts: opts, err: err}
}

// addr returns the inner listener's address, or nil when there is none.
func (l *Listener) addr() net.Addr {
	if l.inner == nil {
		return nil
	}
	return l.inner.Addr()
}

// opErr returns the *net.OpError of op on l with err.
func (l *Listener) opErr(op string, err error) error {
	a := l.addr()
	network := "tcp"
	if a != nil {
		network = a.Network()
	}
	return &net.OpError{Op: op, Net: network, Addr: a, Err: err}
}

// Accept waits for and returns the next connection: a *Conn for TCP connections, other
// conns of the inner listener unchanged.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.accept()
	if err != nil {
		return nil, err // a nil interface, never a nil *Conn in one
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	zc, err := l.wrap(tc)
	if err != nil {
		return nil, err
	}
	return zc, nil
}

// AcceptConn waits for and returns the next connection as a *Conn. When the inner
// listener returns a conn that is not a *net.TCPConn, AcceptConn closes it and returns a
// *net.OpError saying so; use Accept to take such conns.
//
// There is no AcceptTCP: a Listener hands out no *net.TCPConn, since reading one directly
// would skip the bytes its Conn holds.
func (l *Listener) AcceptConn() (*Conn, error) {
	c, err := l.accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, l.opErr("accept", errNotTCPConn)
	}
	return l.wrap(tc)
}

// errNotTCPConn is the Err of AcceptConn and of a Dialer given a conn that is not a
// *net.TCPConn.
var errNotTCPConn = errors.New("zcnet: conn is not a *net.TCPConn")

// accept checks l and takes the inner listener's next conn.
func (l *Listener) accept() (net.Conn, error) {
	if l.inner == nil {
		return nil, l.opErr("accept", ErrNotInitialized)
	}
	if l.err != nil {
		return nil, l.opErr("accept", l.err)
	}
	return l.inner.Accept()
}

// wrap turns an accepted TCP conn into a *Conn counted by l, setting UserTimeout.
func (l *Listener) wrap(tc *net.TCPConn) (*Conn, error) {
	if l.opts.UserTimeout > 0 {
		if err := setUserTimeoutConn(tc, l.opts.UserTimeout); err != nil {
			tc.Close()
			return nil, l.opErr("accept", err)
		}
	}
	zc, err := NewConn(tc, l.opts)
	if err != nil {
		tc.Close()
		return nil, l.opErr("accept", err)
	}
	l.sums.track(zc)
	return zc, nil
}

// Stats returns the sums of the counters of every conn this listener accepted, open or
// closed. FallbackReason is one conn's reason, when any has one.
func (l *Listener) Stats() Stats { return l.sums.stats() }

// Close stops listening; conns already accepted stay open.
func (l *Listener) Close() error {
	if l.inner == nil {
		return l.opErr("close", ErrNotInitialized)
	}
	return l.inner.Close()
}

// Addr returns the listener's network address (nil for a Listener with no socket).
func (l *Listener) Addr() net.Addr { return l.addr() }

// SetDeadline sets the deadline for Accept when the wrapped listener has one (as
// *net.TCPListener does).
func (l *Listener) SetDeadline(t time.Time) error {
	if l.inner == nil {
		return l.opErr("set", ErrNotInitialized)
	}
	d, ok := l.inner.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return l.opErr("set", syscall.EINVAL)
	}
	return d.SetDeadline(t)
}

// errNotTCPListener is the Err of SyscallConn and File when the inner listener is not a
// *net.TCPListener (nor has the method asked for).
var errNotTCPListener = errors.New("zcnet: inner listener is not a *net.TCPListener")

// SyscallConn returns the listening socket's raw connection, as
// net.TCPListener.SyscallConn, for socket options. It fails with a *net.OpError when the
// inner listener has no such method (it is not a *net.TCPListener).
func (l *Listener) SyscallConn() (syscall.RawConn, error) {
	if l.inner == nil {
		return nil, l.opErr("raw-control", ErrNotInitialized)
	}
	sc, ok := l.inner.(syscall.Conn)
	if !ok {
		return nil, l.opErr("raw-control", errNotTCPListener)
	}
	return sc.SyscallConn()
}

// File returns a copy of the listening socket's file descriptor, as
// net.TCPListener.File; closing one does not close the other. It fails with a
// *net.OpError when the inner listener has no such method.
func (l *Listener) File() (*os.File, error) {
	if l.inner == nil {
		return nil, l.opErr("file", ErrNotInitialized)
	}
	f, ok := l.inner.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, l.opErr("file", errNotTCPListener)
	}
	return f.File()
}

// Dialer is net.Dialer plus the Options of the conns it makes. Its DialContext has the
// signature of net.Dialer.DialContext and can replace it wherever a dial function is
// asked for (http.Transport.DialContext, grpc.WithContextDialer, a database driver's
// dial hook): TCP connections become *Conn, and other networks ("unix", "unixpacket",
// "udp", ...) pass through to net.Dialer unchanged. DialConnContext returns the *Conn
// itself.
//
// A Dialer keeps the counters of the conns it made, for Stats, as a Listener does, and
// so must not be copied after its first use. It is safe for concurrent use.
type Dialer struct {
	net.Dialer
	Options Options

	sums connSums
}

// DialContext connects to address, as net.Dialer.DialContext. On "tcp", "tcp4" and
// "tcp6" the conn is a *Conn with the Dialer's Options; on any other network it is
// net.Dialer's conn, unchanged, and the Options play no part. On error the conn is a nil
// interface.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if !isTCP(network) {
		return d.Dialer.DialContext(ctx, network, address)
	}
	c, err := d.DialConnContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Dial connects to address, as net.Dialer.Dial, as DialContext does with a background
// context.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialConn is Dial returning the *Conn; it refuses networks other than "tcp", "tcp4" and
// "tcp6".
func (d *Dialer) DialConn(network, address string) (*Conn, error) {
	return d.DialConnContext(context.Background(), network, address)
}

// Stats returns the sums of the counters of every conn this Dialer made, open or closed,
// as Listener.Stats does; conns of other networks than TCP, passed through, are not
// counted. FallbackReason is one conn's reason, when any has one.
func (d *Dialer) Stats() Stats { return d.sums.stats() }

// DialConnContext is DialContext returning the *Conn, for "tcp", "tcp4" and "tcp6"
// only: other networks get a *net.OpError wrapping net.UnknownNetworkError. With
// Options.PageAlignedMSS and Options.UserTimeout the socket gets TCP_MAXSEG and
// TCP_USER_TIMEOUT before it connects, after the net.Dialer's own ControlContext or
// Control has run.
func (d *Dialer) DialConnContext(ctx context.Context, network, address string) (*Conn, error) {
	if err := checkArgs("dial", network, &d.Options); err != nil {
		return nil, err
	}
	nd := d.Dialer
	if d.Options.PageAlignedMSS || d.Options.UserTimeout > 0 {
		userCtl, userCtx := nd.Control, nd.ControlContext
		opts := d.Options
		nd.Control = nil
		nd.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
			var err error
			switch {
			case userCtx != nil:
				err = userCtx(ctx, network, address, c)
			case userCtl != nil:
				err = userCtl(network, address, c)
			}
			if err == nil && opts.PageAlignedMSS {
				err = controlMSS(c)
			}
			if err == nil && opts.UserTimeout > 0 {
				err = controlUserTimeout(c, opts.UserTimeout)
			}
			return err
		}
	}
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Addr: c.RemoteAddr(), Err: errNotTCPConn}
	}
	zc, err := NewConn(tc, d.Options)
	if err != nil {
		tc.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Addr: tc.RemoteAddr(), Err: err}
	}
	d.sums.track(zc)
	return zc, nil
}

// Dial connects to address with the zero Options, as net.Dial: on "tcp", "tcp4" and
// "tcp6" the conn is a *Conn, on other networks net.Dial's conn unchanged; on error it is
// a nil interface.
func Dial(network, address string) (net.Conn, error) {
	var d Dialer
	return d.DialContext(context.Background(), network, address)
}

// DialConn is Dial returning the *Conn; it refuses networks other than TCP ones.
func DialConn(network, address string) (*Conn, error) {
	var d Dialer
	return d.DialConnContext(context.Background(), network, address)
}
