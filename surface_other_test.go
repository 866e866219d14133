//go:build !linux

package zcnet

import (
	"syscall"
	"testing"
)

// checkListeningSocket checks nothing outside Linux.
func checkListeningSocket(t *testing.T, rc syscall.RawConn) {}
