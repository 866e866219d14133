package zcnet

import (
	"encoding/json"
	"expvar"
	"io"
	"strings"
	"testing"
)

// TestListenerPublish checks that a Listener's Stats appear in expvar, counting the bytes
// its conns received, and that publishing a taken name is an error, not a panic.
func TestListenerPublish(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ln.Publish("zcnet_test_listener"); err != nil {
		t.Fatal(err)
	}
	if err := ln.Publish("zcnet_test_listener"); err == nil {
		t.Fatal("second Publish under the same name succeeded")
	}
	sent := sendPattern(dialSender(t, ln.Addr().String(), false), 12345, patternSender{})
	c := acceptConn(t, ln)
	w := &patternWriter{}
	_, err = io.Copy(w, c)
	checkStream(t, w, err, sent, 12345)
	c.Close()
	var st Stats
	if err := json.Unmarshal([]byte(expvar.Get("zcnet_test_listener").String()), &st); err != nil {
		t.Fatal(err)
	}
	if st.MappedBytes+st.CopiedBytes != 12345 {
		t.Fatalf("expvar stats %+v do not count the 12345 bytes received", st)
	}
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
			s := startUploadServer(t, ln, nil)
			s.check(t, goUpload(t, s.url, nil, size, true), size)

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
			s.srv.Close()
			if after := ln.Stats(); after.MappedBytes+after.CopiedBytes != got {
				t.Errorf("after Close the listener counts %d received bytes, before %d", after.MappedBytes+after.CopiedBytes, got)
			}
			if strings.Contains(st.FallbackReason, "getsockopt") || strings.Contains(st.FallbackReason, "mmap") {
				t.Errorf("mapping failed: %s", st.FallbackReason)
			}
		})
	}
}
