//go:build !linux

package zcnet

import (
	"errors"
	"os"
)

func newPipe(int) (r, w, got int, err error) { return 0, 0, 0, errors.New("zcnet: no splice") }
func closePipe(r, w int)                     {}
func appending(*os.File) bool                { return true }
