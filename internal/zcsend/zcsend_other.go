//go:build !linux

package zcsend

import (
	"context"
	"errors"
	"net"
)

var errNotLinux = errors.New("zcsend: the mappable sender needs Linux (MSG_ZEROCOPY)")

// Dial fails: the sender's socket options are Linux-only.
func Dial(ctx context.Context, addr string, o Options) (*net.TCPConn, error) {
	return nil, errNotLinux
}

// Send fails: MSG_ZEROCOPY is Linux-only.
func Send(c *net.TCPConn, total int64, o Options) error { return errNotLinux }

// Write fails: MSG_ZEROCOPY is Linux-only.
func Write(c *net.TCPConn, p []byte, zerocopy bool) error { return errNotLinux }

// SetPageMSS fails: TCP_MAXSEG is set only on Linux.
func SetPageMSS(fd uintptr) error { return errNotLinux }
