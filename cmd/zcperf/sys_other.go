//go:build !linux

package main

import (
	"errors"
	"os"
)

// cpuTime is not measured here: zcperf reports 0 CPU outside Linux.
func cpuTime() float64 { return 0 }

// setPageMSS fails: zcperf sets TCP_MAXSEG only on Linux.
func setPageMSS(fd uintptr) error {
	return errors.New("zcperf: -mss needs Linux")
}

// isTerminal reports false: progress is printed as plain lines.
func isTerminal(f *os.File) bool { return false }

func gettid() int { return 0 }

// threadCPUSelf is not measured here.
func threadCPUSelf() float64 { return 0 }

// threadGone reports true: there is nothing to wait for.
func threadGone(tid int) bool { return true }
