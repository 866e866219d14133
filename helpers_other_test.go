//go:build !linux

package zcnet

import (
	"errors"
	"net"
	"testing"
)

// unackedBytes fails: SIOCOUTQ is Linux-only.
func unackedBytes(c *net.TCPConn) (int, error) {
	return 0, errors.New("SIOCOUTQ is Linux-only")
}

// socketInode returns 0: conns have no ring here.
func socketInode(t testing.TB, c *Conn) uint64 { return 0 }

// ringRssKiB reports no ring: conns have none here.
func ringRssKiB(t testing.TB, ino uint64) (int64, bool) { return 0, false }
