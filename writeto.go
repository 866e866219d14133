package zcnet

import (
	"errors"
	"io"
	"net"
)

// ErrWriteToActive is the Err of the *net.OpError returned by a read-side call (Read,
// Next, WriteTo, File, SyscallConn's Read) made while a WriteTo runs on the same conn,
// from its writer or from another goroutine: WriteTo consumes the stream until its end,
// and holds the conn's read side until it returns, so such a call could only wait for
// it (from the writer: forever). A call that races WriteTo's start may instead wait for
// it to end. Close is not a read-side call here: it ends the WriteTo.
var ErrWriteToActive = errors.New("zcnet: a WriteTo is running on the conn")

// writeToErr shapes an error of WriteTo as net.TCPConn.WriteTo's: a *net.OpError with
// Op "writeto" around the read's error (itself a *net.OpError) or the writer's.
func (c *Conn) writeToErr(err error) error {
	if err == nil || err == io.EOF || c == nil {
		return err
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "writeto" {
		return err
	}
	return &net.OpError{Op: "writeto", Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// isClosed reports whether Close was called.
func (c *Conn) isClosed() bool {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.closed
}
