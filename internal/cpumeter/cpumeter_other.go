//go:build !linux

package cpumeter

import "time"

// Outside Linux nothing is measured: CPU times are 0 and there is no thread to wait for.

func processCPU() time.Duration  { return 0 }
func threadCPU() time.Duration   { return 0 }
func threadID() int              { return 0 }
func threadStopped(tid int) bool { return true }
