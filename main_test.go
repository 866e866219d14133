package zcnet

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// TestMain doubles as the separate sender process of tests and benchmarks (see
// zcsend.RunFromEnv), and checks that no test leaks a goroutine.
func TestMain(m *testing.M) {
	if ran, err := zcsend.RunFromEnv(); ran {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
