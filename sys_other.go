//go:build !linux

package zcnet

import (
	"errors"
	"os"
	"time"
	"unsafe"
)

// zerocopyRecv reports that this platform has the TCP_ZEROCOPY_RECEIVE path.
const zerocopyRecv = false

const tcpZerocopyFlagTLBCleanHint = 0x1

var errNotLinux = errors.New("zcnet: TCP_ZEROCOPY_RECEIVE is Linux-only; conns copy")

func unsupportedPtr(int, uintptr) (unsafe.Pointer, error) { return nil, errNotLinux }
func unsupportedRange(unsafe.Pointer, uintptr) error      { return errNotLinux }

// otherSys is the syscall layer where the fast path does not exist: every call fails, and
// Conns read through net.TCPConn (see filler.fillConn).
var otherSys = sysCalls{
	reserve:     unsupportedPtr,
	unmap:       unsupportedRange,
	dontneed:    unsupportedRange,
	mapAnon:     unsupportedRange,
	zerocopy:    func(int, *zerocopyReceive) error { return errNotLinux },
	read:        func(int, []byte) (int, error) { return 0, errNotLinux },
	setRcvlowat: func(int, int) error { return errNotLinux },
}

var defaultSys = &otherSys

var pageSize = os.Getpagesize()

func isEAGAIN(err error) bool { return false }
func isEINTR(err error) bool  { return false }
func isEIO(err error) bool    { return false }

const clockThread = 0

// setMSS does nothing here: a page-sized MSS only serves the mapping path.
func setMSS(fd uintptr, mss int) error { return nil }

// Supported returns nil when this process can receive with TCP_ZEROCOPY_RECEIVE, and
// otherwise an error saying why not. On this platform it never can; conns copy.
func Supported() error { return errNotLinux }

// cpuClock stands in for the CPU clocks where conns never time fills.
func cpuClock(int32) int64 { return time.Now().UnixNano() }

// hostLimits: nothing is ever mapped here.
func hostLimits() Limits {
	return Limits{MaxRings: 1, MaxRingBytes: 1, MaxPinnedBytes: 1}
}
