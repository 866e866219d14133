//go:build linux

package zcnet

import (
	"io"
	"math/bits"
	"testing"
)

// readFake reads n bytes of the fake stream from c with Read into buf, checking each
// byte against the stream's pattern from offset off.
func readFake(t *testing.T, c *Conn, k *fakeKernel, buf []byte, off, n int) {
	t.Helper()
	k.inCall = "Read"
	for end := off + n; off < end; {
		m, err := c.Read(buf[:min(len(buf), end-off)])
		for i := range m {
			if buf[i] != fakePat(int64(off+i)) {
				t.Fatalf("byte %d of the stream is %#x, want %#x (%v)", off+i, buf[i], fakePat(int64(off+i)), k)
			}
		}
		off += m
		if err != nil {
			t.Fatalf("Read at %d: %v (%v)", off, err, k)
		}
	}
}

// TestZerocopyBackoffFake: over the fake kernel, a ModeZeroCopy conn whose stream
// arrives in compound pages backs off (few mapping calls, the copies counted as page
// kind, MapBackoffs set), and maps again once the stream arrives in mappable pages.
func TestZerocopyBackoffFake(t *testing.T) {
	const (
		burst      = 16 * 4096 // the fake's skb: one arrives per wait
		unmappable = 128 * burst
		mappable   = 384 * burst
	)
	if pageSize != 4096 {
		t.Skip("the fake stream's shape assumes 4 KiB pages")
	}
	k := newFakeKernel(t, &fakeSrc{}, unmappable+mappable, false, fakeFaults{})
	k.shape = func(start int) bool { return start >= unmappable }
	c := newConn(k, k.sys(), ModeZeroCopy, DefaultRingSize)
	defer k.finish()
	buf := make([]byte, 512<<10)

	readFake(t, c, k, buf, 0, unmappable)
	st := c.Stats()
	fills := unmappable / burst
	// unmappableFills fills, then one try per stretch (doubling from backoffFirst bytes); a
	// fill that starts on an empty queue may make a second mapping call that finds it so.
	want := 2 * (unmappableFills + bits.Len(uint(unmappable/backoffFirst)) + 1)
	t.Logf("unmappable part: %d mapping calls, %d backoffs, %+v", k.zcCalls, st.MapBackoffs, st)
	if k.zcCalls > want || st.ZerocopyCalls != uint64(k.zcCalls) {
		t.Fatalf("%d mapping calls (Stats: %d) for %d fills of unmappable pages, want at most %d", k.zcCalls, st.ZerocopyCalls, fills, want)
	}
	if st.MapBackoffs == 0 || st.MappedBytes != 0 || st.CopiedPageKind != unmappable || st.CopiedBytes != unmappable {
		t.Fatalf("after %d bytes in compound pages: %+v, want them all copied as page kind with a backoff", unmappable, st)
	}

	readFake(t, c, k, buf, unmappable, mappable)
	st = c.Stats()
	t.Logf("whole stream: %+v", st)
	// Mapping resumes at the next try: the stretch under way when the stream turns
	// mappable is under the unmappable part plus backoffFirst, so that more than
	// mappable-2*unmappable bytes map.
	if st.MappedBytes < mappable-2*unmappable {
		t.Fatalf("%d of the %d mappable bytes were mapped: %+v", st.MappedBytes, mappable, st)
	}
	k.inCall = "Read"
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read at the end = %d, %v", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// readPatternInto reads n bytes of c with Reads into buf and writes them to w, which
// checks them.
func readPatternInto(t *testing.T, c *Conn, w *patternWriter, buf []byte, n int64) {
	t.Helper()
	for end := w.off + n; w.off < end; {
		m, err := c.Read(buf[:min(int64(len(buf)), end-w.off)])
		if _, werr := w.Write(buf[:m]); werr != nil {
			t.Fatal(werr)
		}
		if err != nil {
			t.Fatalf("Read at %d: %v", w.off, err)
		}
	}
}

// TestZerocopyBackoffSockets: a ModeZeroCopy conn whose peer writes plain (compound
// pages, which the kernel never maps) backs off and makes few mapping calls; when the same
// peer turns to MSG_ZEROCOPY (order-0 pages with a page-sized MSS), the conn maps again;
// and a stream that maps from the start never backs off.
func TestZerocopyBackoffSockets(t *testing.T) {
	requireSupported(t)
	const plain, mappable = 32 << 20, 64 << 20
	buf := make([]byte, 64<<10)

	c, sc := pairWith(t, Options{Mode: ModeZeroCopy}, true)
	w := &patternWriter{}
	sent := make(chan error, 1)
	go func() { sent <- patternSender{}.write(sc, 0, plain) }()
	readPatternInto(t, c, w, buf, plain)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	t.Logf("plain part: %+v", st)
	if st.MapBackoffs == 0 || st.MappedBytes != 0 || st.CopiedPageKind == 0 || st.CopiedPolicy != 0 {
		t.Fatalf("a plain sender's stream: %+v, want no byte mapped, copies as page kind and a backoff", st)
	}
	// unmappableFills mapping fills, then one try per stretch (doubling from backoffFirst
	// bytes); a fill that starts on an empty queue may make a second mapping call.
	if want := uint64(2 * (unmappableFills + bits.Len(uint(plain/backoffFirst)) + 1)); st.ZerocopyCalls > want {
		t.Fatalf("%d mapping calls for %d bytes of an unmappable stream, want at most %d: no backoff", st.ZerocopyCalls, plain, want)
	}

	go func() {
		err := patternSender{zerocopy: true}.write(sc, plain, mappable)
		if cerr := sc.CloseWrite(); err == nil {
			err = cerr
		}
		sent <- err
	}()
	// The stretch under way when the sender turns is at most about the plain part (the
	// stretches double from backoffFirst): at most that much is copied before a mapping
	// try finds pages that map, and most of the rest then maps.
	small := make([]byte, 16<<10)
	readPatternInto(t, c, w, small, mappable)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read at the end = %d, %v", n, err)
	}
	st2 := c.Stats()
	t.Logf("whole stream: %+v", st2)
	if want := uint64(mappable-plain-backoffFirst) / 2; st2.MappedBytes < want {
		t.Fatalf("%d of %d bytes mapped after the sender turned to MSG_ZEROCOPY, want at least %d: %+v", st2.MappedBytes, mappable, want, st2)
	}

	c, sc = pairWith(t, Options{Mode: ModeZeroCopy}, true)
	done := sendStream(sc, mappable, true, true)
	w = &patternWriter{}
	readPatternInto(t, c, w, make([]byte, 512<<10), mappable)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st = c.Stats()
	t.Logf("aligned stream: %+v (%.3f%% mapped)", st, 100*st.MappedShare())
	if st.MapBackoffs != 0 || st.MappedBytes == 0 || st.MappedBytes < st.CopiedBytes {
		t.Fatalf("a MSG_ZEROCOPY sender's stream: %+v, want it mapped without a backoff", st)
	}
}
