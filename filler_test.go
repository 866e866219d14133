//go:build linux

package zcnet

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// These tests drive fills alone over the fake kernel (no socket, no Read/Next/WriteTo):
// what a fill does with the choice it is given, and what its result says.

// newFakeFiller returns a ModeZeroCopy conn over a fake kernel that sends total bytes
// with faults f; the test calls its filler directly.
func newFakeFiller(t *testing.T, total int, f fakeFaults) (*Conn, *fakeKernel) {
	k := newFakeKernel(t, &fakeSrc{}, total, false, f)
	k.inCall = "fill"
	c := newConn(k, k.sys(), ModeZeroCopy, 16*pageSize)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		k.finish()
	})
	return c, k
}

// mapChoice is a mapping fill of up to n bytes, as a Read of n bytes asks for it.
func mapChoice(n int) choice {
	return choice{mapping: true, want: pages(n), copy: n, lowat: 1}
}

// TestFillMaps: a mapping fill that can map maps, into the stream, and does not touch
// the caller's buffer.
func TestFillMaps(t *testing.T) {
	c, _ := newFakeFiller(t, 64*pageSize, fakeFaults{})
	dst := make([]byte, 4*pageSize)
	res := c.f.fill(mapChoice(len(dst)), dst)
	if res.err != nil || res.fellBack || !res.mapped || res.n == 0 || c.s.buffered() != res.n {
		t.Fatalf("fill: %+v, %d buffered; want bytes mapped into the stream", res, c.s.buffered())
	}
	got := make([]byte, res.n)
	c.s.copyTo(got)
	if i := checkFakePat(got, 0); i >= 0 {
		t.Fatalf("mapped byte %d differs from the stream", i)
	}
	for i, b := range dst {
		if b != 0 {
			t.Fatalf("a mapping fill wrote byte %d of the caller's buffer", i)
		}
	}
}

// TestFillFallsBack: a mapping fill whose mapping fails goes on with recv in the same
// fill, into the caller's buffer, says so (fellBack), and records why; the next mapping
// fill falls back at once, without another mapping call.
func TestFillFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults fakeFaults
		reason string
	}{
		{"getsockopt", fakeFaults{kind: faultZerocopy, zcAt: 1, zcErr: unix.ENOPROTOOPT}, "getsockopt TCP_ZEROCOPY_RECEIVE"},
		{"mmap", fakeFaults{kind: faultReserve}, "mmap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, k := newFakeFiller(t, 64*pageSize, tc.faults)
			dst := make([]byte, 4*pageSize)
			off := 0
			for i := range 2 {
				zc := k.zcCalls
				res := c.f.fill(mapChoice(len(dst)), dst)
				if res.err != nil || !res.fellBack || res.mapped || res.n == 0 {
					t.Fatalf("fill %d: %+v; want bytes copied after falling back", i, res)
				}
				if j := checkFakePat(dst[:res.n], off); j >= 0 {
					t.Fatalf("fill %d: byte %d differs from the stream", i, j)
				}
				if c.s.buffered() != 0 {
					t.Fatalf("fill %d: %d bytes in the stream, want them all in the caller's buffer", i, c.s.buffered())
				}
				if i > 0 && k.zcCalls != zc {
					t.Fatalf("fill %d: %d mapping calls after mapping was turned off", i, k.zcCalls-zc)
				}
				off += res.n
			}
			st := c.Stats()
			if c.f.maps() || !strings.Contains(st.FallbackReason, tc.reason) || st.CopiedDisabled != uint64(off) {
				t.Fatalf("maps %v, stats %+v; want mapping off, the reason naming %q, %d bytes copied as disabled",
					c.f.maps(), st, tc.reason, off)
			}
		})
	}
}

// TestFillCopyChoice: a copy fill copies into the stream's buffer when it has no
// destination, as much as the choice asks room for, and never maps.
func TestFillCopyChoice(t *testing.T) {
	c, k := newFakeFiller(t, 64*pageSize, fakeFaults{})
	res := c.f.fill(choice{copy: 2 * pageSize, lowat: 1}, nil)
	if res.err != nil || res.fellBack || res.mapped || res.n == 0 || c.s.buffered() != res.n {
		t.Fatalf("fill: %+v, %d buffered; want bytes copied into the stream", res, c.s.buffered())
	}
	if k.zcCalls != 0 || k.reserves != 0 {
		t.Fatalf("a copy fill made %d mapping calls and %d reservations", k.zcCalls, k.reserves)
	}
	got := make([]byte, res.n)
	c.s.copyTo(got)
	if i := checkFakePat(got, 0); i >= 0 {
		t.Fatalf("copied byte %d differs from the stream", i)
	}
}
