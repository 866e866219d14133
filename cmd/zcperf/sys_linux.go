package main

import (
	"os"

	"github.com/zcnet/zcnet/internal/zcsend"
	"golang.org/x/sys/unix"
)

// setPageMSS sets TCP_MAXSEG to one page of payload plus the timestamp option on the
// socket fd, so that a listener advertises it.
func setPageMSS(fd uintptr) error {
	return zcsend.SetPageMSS(fd)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
