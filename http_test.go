package zcnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// patternReader reads the zcsend pattern from stream offset off on.
type patternReader struct{ off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	pat := zcsend.PatternBytes()
	n := copy(p, pat[r.off%zcsend.Period:])
	r.off += int64(n)
	return n, nil
}

// TestHTTPUpload serves net/http on zcnet.Listen (ModeAuto and, with a page-sized MSS,
// ModeZeroCopy) and uploads a 64 MiB body with Go's HTTP client: the handler reads the
// body intact (SHA-256 compared), and the listener's Stats account for every byte the
// server received, while its conns are open and after they are closed.
func TestHTTPUpload(t *testing.T) {
	const size = 64 << 20
	for _, opts := range []Options{{}, {Mode: ModeZeroCopy, PageAlignedMSS: true}} {
		t.Run(opts.Mode.String(), func(t *testing.T) {
			ln := listenLoopback(t, opts)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				n, err := io.Copy(h, r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
			})}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			defer func() {
				srv.Close()
				if err := <-served; err != http.ErrServerClosed {
					t.Errorf("Serve: %v", err)
				}
			}()

			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			req, err := http.NewRequestWithContext(context.Background(), "POST", "http://"+ln.Addr().String()+"/upload",
				io.LimitReader(&patternReader{}, size))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = size
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			sum := patternSum(size)
			if want := fmt.Sprintf("%d %s", size, hex.EncodeToString(sum[:])); resp.StatusCode != http.StatusOK || string(body) != want {
				t.Fatalf("server answered %s %q, want 200 %q", resp.Status, body, want)
			}

			// The server received the request head and the body: nothing else, nothing lost.
			st := ln.Stats()
			got := st.MappedBytes + st.CopiedBytes
			t.Logf("listener stats: %+v, mapped share %.4f", st, st.MappedShare())
			if got < size || got > size+1024 {
				t.Errorf("listener counts %d received bytes, want the %d of the body plus a request head", got, size)
			}
			if opts.Mode == ModeZeroCopy && Supported() == nil && st.ZerocopyCalls == 0 {
				t.Errorf("ModeZeroCopy never tried to map: %+v", st)
			}
			// Closing the conns moves their counters into the listener's sums.
			srv.Close()
			if after := ln.Stats(); after.MappedBytes+after.CopiedBytes != got {
				t.Errorf("after Close the listener counts %d received bytes, before %d", after.MappedBytes+after.CopiedBytes, got)
			}
			if strings.Contains(st.FallbackReason, "getsockopt") || strings.Contains(st.FallbackReason, "mmap") {
				t.Errorf("mapping failed: %s", st.FallbackReason)
			}
		})
	}
}
