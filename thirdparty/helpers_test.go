package thirdparty

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// TestMain checks that no test leaks a goroutine.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hashReply is the "bytes sha256" line the servers in these tests answer with.
func hashReply(n int64, sum []byte) string { return fmt.Sprintf("%d %x", n, sum) }

// wantReply fails the test unless reply says the first total bytes of the zcsend
// pattern were received intact.
func wantReply(t *testing.T, reply string, total int64) {
	t.Helper()
	want := patternSum(total)
	if w := hashReply(total, want[:]); reply != w {
		t.Fatalf("server replied %q, want %q", reply, w)
	}
}

// patternSum is the SHA-256 of the first total bytes of the zcsend pattern.
func patternSum(total int64) [32]byte {
	h := sha256.New()
	p := zcsend.PatternBytes()
	for total > 0 {
		n := min(total, int64(len(p)))
		h.Write(p[:n])
		total -= n
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}
