//go:build !linux

package zcnet

// setUserTimeout does nothing: Options.UserTimeout is Linux-only.
func setUserTimeout(fd uintptr, ms int) error { return nil }
