//go:build !linux

package main

import "errors"

// cpuTime is not measured here: zcperf reports 0 CPU outside Linux.
func cpuTime() float64 { return 0 }

// setPageMSS fails: zcperf sets TCP_MAXSEG only on Linux.
func setPageMSS(fd uintptr) error {
	return errors.New("zcperf: -mss needs Linux")
}
