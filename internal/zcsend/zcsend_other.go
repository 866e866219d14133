//go:build !linux

package zcsend

import (
	"context"
	"errors"
	"io"
	"net"
)

var errNotLinux = errors.New("zcsend: the mappable sender needs Linux (MSG_ZEROCOPY)")

// Dial fails: the sender's socket options are Linux-only.
func Dial(ctx context.Context, addr string, o Options) (*net.TCPConn, error) {
	return nil, errNotLinux
}

// Send fails: MSG_ZEROCOPY is Linux-only.
func Send(c *net.TCPConn, total int64, o Options) error { return errNotLinux }

// WaitClose waits, after c's CloseWrite, until the peer closes c, reading and dropping
// what it sends; zerocopy has no effect here.
func WaitClose(c *net.TCPConn, zerocopy bool) error {
	_, err := io.Copy(io.Discard, c)
	return err
}

// Write fails: MSG_ZEROCOPY is Linux-only.
func Write(c *net.TCPConn, p []byte, zerocopy bool) error { return errNotLinux }

// SetPageMSS fails: TCP_MAXSEG is set only on Linux.
func SetPageMSS(fd uintptr) error { return errNotLinux }
