//go:build !linux

package main

// docHostOS adds nothing off Linux: zero-copy receive does not exist here, and the
// facts the checks look at are Linux's.
func docHostOS(h *docHost) {}

// docHeaderSplit cannot ask a device off Linux.
func docHeaderSplit(name string) (string, string) {
	return "unknown", "queried through Linux's ethtool netlink only"
}

// docThreadClock cannot read a thread's CPU time here: it returns a clock of zeros.
func docThreadClock() func() float64 { return func() float64 { return 0 } }
