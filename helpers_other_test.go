//go:build !linux

package zcnet

import (
	"errors"
	"net"
)

var errSenderLinuxOnly = errors.New("MSG_ZEROCOPY and SIOCOUTQ are Linux-only")

// writeZerocopy fails: MSG_ZEROCOPY is Linux-only.
func writeZerocopy(c *net.TCPConn, p []byte) error { return errSenderLinuxOnly }

// unackedBytes fails: SIOCOUTQ is Linux-only.
func unackedBytes(c *net.TCPConn) (int, error) { return 0, errSenderLinuxOnly }
