package zcnet

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand"
	"testing"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// requireSupported skips a test that needs the fast path where this process cannot map,
// naming the reason.
func requireSupported(t testing.TB) {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skipf("fast path unavailable here: %v", err)
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

// sendMappable starts a goroutine sending total pattern bytes to addr with a page MSS and
// MSG_ZEROCOPY (mappable payload on loopback); the returned channel yields its error.
func sendMappable(t testing.TB, addr string, total int64) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		o := zcsend.Options{PageMSS: true, ZeroCopy: true}
		c, err := zcsend.Dial(context.Background(), addr, o)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- zcsend.Send(c, total, o)
	}()
	return done
}

// TestFastPathIntegrity receives a 256 MiB mappable stream with random read sizes (1 byte
// to 1 MiB) in ModeZeroCopy and checks that at least 99% of it was mapped and that the
// bytes are exactly the ones sent.
func TestFastPathIntegrity(t *testing.T) {
	requireSupported(t)
	const total = 256 << 20
	lc := ListenConfig{Options: Options{Mode: ModeZeroCopy, PageAlignedMSS: true}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sent := sendMappable(t, ln.Addr().String(), total)
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*Conn)
	h := sha256.New()
	rnd := rand.New(rand.NewSource(1))
	buf := make([]byte, 1<<20)
	var got int64
	for {
		n, err := c.Read(buf[:1+rnd.Intn(len(buf))])
		h.Write(buf[:n])
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if want := patternSum(total); got != total || [32]byte(h.Sum(nil)) != want {
		t.Fatalf("received %d bytes, want %d; sha256 match: %v", got, int64(total), [32]byte(h.Sum(nil)) == want)
	}
	st := c.Stats()
	t.Logf("stats: %+v, mapped share %.4f", st, st.MappedShare())
	if st.MappedShare() < 0.99 {
		t.Fatalf("mapped share %.4f < 0.99: %+v", st.MappedShare(), st)
	}
	if ls := ln.Stats(); ls.MappedBytes != st.MappedBytes {
		t.Fatalf("listener stats %+v do not sum the conn's %+v", ls, st)
	}
}
