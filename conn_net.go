package zcnet

import (
	"io"
	"net"
	"time"
)

// LocalAddr returns the local network address (nil for a Conn with no socket).
func (c *Conn) LocalAddr() net.Addr {
	if c == nil {
		return nil
	}
	return c.laddr
}

// RemoteAddr returns the remote network address (nil for a Conn with no socket).
func (c *Conn) RemoteAddr() net.Addr {
	if c == nil {
		return nil
	}
	return c.raddr
}

// SetDeadline sets the read and write deadlines, as net.Conn.SetDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	c.setReadDeadline(t)
	return c.tc.SetDeadline(t)
}

// SetReadDeadline sets the deadline for Read, Next and WriteTo, as
// net.Conn.SetReadDeadline. A past deadline fails them even when bytes are buffered.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	c.setReadDeadline(t)
	return c.tc.SetReadDeadline(t)
}

func (c *Conn) setReadDeadline(t time.Time) {
	if t.IsZero() {
		c.deadline.Store(0)
	} else {
		c.deadline.Store(t.UnixNano())
	}
}

// SetWriteDeadline sets the deadline for Write and ReadFrom.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetWriteDeadline(t)
}

// Write writes to the socket, as net.TCPConn.Write.
func (c *Conn) Write(b []byte) (int, error) {
	if c == nil || c.tc == nil {
		return 0, c.noSocket("write")
	}
	return c.tc.Write(b)
}

// ReadFrom implements io.ReaderFrom with net.TCPConn's, so io.Copy(conn, file) still uses
// sendfile(2) or splice(2).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if c == nil || c.tc == nil {
		return 0, c.noSocket("readfrom")
	}
	return c.tc.ReadFrom(r)
}

// CloseRead shuts down the reading side, as net.TCPConn.CloseRead.
func (c *Conn) CloseRead() error {
	if c == nil || c.tc == nil {
		return c.noSocket("close")
	}
	return c.tc.CloseRead()
}

// CloseWrite shuts down the writing side, as net.TCPConn.CloseWrite.
func (c *Conn) CloseWrite() error {
	if c == nil || c.tc == nil {
		return c.noSocket("close")
	}
	return c.tc.CloseWrite()
}

// SetReadBuffer sets the socket's receive buffer size (SO_RCVBUF).
func (c *Conn) SetReadBuffer(bytes int) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetReadBuffer(bytes)
}

// SetWriteBuffer sets the socket's send buffer size (SO_SNDBUF).
func (c *Conn) SetWriteBuffer(bytes int) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetWriteBuffer(bytes)
}

// SetNoDelay controls Nagle's algorithm, as net.TCPConn.SetNoDelay.
func (c *Conn) SetNoDelay(noDelay bool) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetNoDelay(noDelay)
}

// SetLinger sets SO_LINGER, as net.TCPConn.SetLinger.
func (c *Conn) SetLinger(sec int) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetLinger(sec)
}

// SetKeepAlive enables TCP keep-alives, as net.TCPConn.SetKeepAlive.
func (c *Conn) SetKeepAlive(keepalive bool) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetKeepAlive(keepalive)
}

// SetKeepAlivePeriod sets the keep-alive idle time, as net.TCPConn.SetKeepAlivePeriod.
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetKeepAlivePeriod(d)
}

// SetKeepAliveConfig configures keep-alives, as net.TCPConn.SetKeepAliveConfig.
func (c *Conn) SetKeepAliveConfig(config net.KeepAliveConfig) error {
	if c == nil || c.tc == nil {
		return c.noSocket("set")
	}
	return c.tc.SetKeepAliveConfig(config)
}
