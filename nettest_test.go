package zcnet

import (
	"context"
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestNettestConn runs golang.org/x/net/nettest.TestConn, the net.Conn conformance suite
// (data integrity, ping-pong, racy reads and writes, past, present and future deadlines,
// Close unblocking pending calls, concurrent methods), in every mode against zcnet conns
// on both ends and against a zcnet conn facing a plain *net.TCPConn, each side first.
func TestNettestConn(t *testing.T) {
	for _, m := range modes {
		opts := Options{Mode: m}
		t.Run(m.String(), func(t *testing.T) {
			t.Run("zcnet-zcnet", func(t *testing.T) {
				nettest.TestConn(t, makePipe(opts, true, true))
			})
			t.Run("zcnet-tcp", func(t *testing.T) {
				nettest.TestConn(t, makePipe(opts, true, false))
			})
			t.Run("tcp-zcnet", func(t *testing.T) {
				nettest.TestConn(t, makePipe(opts, false, true))
			})
		})
	}
}

// makePipe returns a nettest.MakePipe over loopback TCP: c1 is the accepted side and c2
// the dialing side, each a *Conn with opts when its flag is set and a *net.TCPConn
// otherwise.
func makePipe(opts Options, zc1, zc2 bool) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		var ln net.Listener
		if zc1 {
			lc := ListenConfig{Options: opts}
			ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		} else {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			return nil, nil, nil, err
		}
		defer ln.Close()
		type result struct {
			c   net.Conn
			err error
		}
		dialed := make(chan result, 1)
		go func() {
			var c net.Conn
			var err error
			if zc2 {
				d := Dialer{Options: opts}
				c, err = d.Dial("tcp", ln.Addr().String())
			} else {
				c, err = net.Dial("tcp", ln.Addr().String())
			}
			dialed <- result{c, err}
		}()
		c1, err = ln.Accept()
		r := <-dialed
		if err != nil || r.err != nil {
			if c1 != nil {
				c1.Close()
			}
			if r.c != nil {
				r.c.Close()
			}
			if err == nil {
				err = r.err
			}
			return nil, nil, nil, err
		}
		if _, ok := c1.(*Conn); ok != zc1 {
			c1.Close()
			r.c.Close()
			return nil, nil, nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.UnknownNetworkError("wrong conn type")}
		}
		c2 = r.c
		stop = func() {
			c1.Close()
			c2.Close()
		}
		return c1, c2, stop, nil
	}
}
