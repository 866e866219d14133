//go:build !linux

package main

import (
	"errors"
	"os"
)

// setPageMSS fails: zcperf sets TCP_MAXSEG only on Linux.
func setPageMSS(fd uintptr) error {
	return errors.New("zcperf: -mss needs Linux")
}

// isTerminal reports false: progress is printed as plain lines.
func isTerminal(f *os.File) bool { return false }
