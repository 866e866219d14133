//go:build linux

package zcnet

import (
	"context"
	"io"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zcnet/zcnet/internal/zcsend"
)

// TestCopyCauses forces each reason for copying on a real loopback stream and checks
// that Stats names it: the causes add up to CopiedBytes, and the forced cause carries
// the bulk of them (or all, where nothing else can copy).
func TestCopyCauses(t *testing.T) {
	requireSupported(t)
	const total = 8 << 20
	causes := func(st Stats) map[string]uint64 {
		return map[string]uint64{"policy": st.CopiedPolicy, "disabled": st.CopiedDisabled,
			"tail": st.CopiedTail, "segment": st.CopiedSegment, "pagekind": st.CopiedPageKind}
	}
	cases := []struct {
		name     string
		opts     Options
		pageMSS  bool // the listener advertises a page-sized MSS
		mappable bool // the sender uses MSG_ZEROCOPY
		seam     string
		want     string
		all      bool // every copied byte has the cause
	}{
		{"policy", Options{Mode: ModeCopy}, true, true, "", "policy", true},
		{"disabled", Options{Mode: ModeZeroCopy}, true, true, opMmap, "disabled", true},
		{"segment", Options{Mode: ModeZeroCopy}, false, true, "", "segment", false},
		{"pagekind", Options{Mode: ModeZeroCopy}, true, false, "", "pagekind", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln := loopbackListen(t, tc.pageMSS)
			defer ln.Close()
			var s *net.TCPConn
			if tc.mappable && !tc.pageMSS {
				// MSG_ZEROCOPY, with the sender's own MSS left alone too.
				var err error
				if s, err = zcsend.Dial(context.Background(), ln.Addr().String(), zcsend.Options{ZeroCopy: true}); err != nil {
					t.Fatal(err)
				}
				defer s.Close()
			} else {
				s = dialSender(t, ln.Addr().String(), tc.mappable)
			}
			sys := linuxSys
			if tc.seam != "" {
				sys = newFaultSeam(tc.seam, unix.ENOMEM, true).sys
			}
			c := acceptConn(t, seamListener{ln, tc.opts, &sys})
			sent := sendStream(s, total, tc.mappable, false)
			w := &patternWriter{}
			if _, err := io.CopyBuffer(w, struct{ io.Reader }{c}, make([]byte, 512<<10)); err != nil {
				t.Fatal(err)
			}
			checkStream(t, w, nil, sent, total)
			st := c.Stats()
			cs := causes(st)
			var sum uint64
			for _, v := range cs {
				sum += v
			}
			t.Logf("%s: mapped %d, copied %d, causes %v, reason %q", tc.name, st.MappedBytes, st.CopiedBytes, cs, st.FallbackReason)
			if sum != st.CopiedBytes {
				t.Fatalf("causes add up to %d, CopiedBytes is %d: %v", sum, st.CopiedBytes, cs)
			}
			if st.CopiedBytes == 0 {
				t.Fatalf("nothing was copied: the case does not force a cause: %+v", st)
			}
			for name, v := range cs {
				if name != tc.want && v > cs[tc.want] {
					t.Fatalf("cause %s (%d bytes) outweighs the forced %s (%d): %v", name, v, tc.want, cs[tc.want], cs)
				}
			}
			if tc.all && cs[tc.want] != st.CopiedBytes {
				t.Fatalf("%d of %d copied bytes have the cause %s: %v", cs[tc.want], st.CopiedBytes, tc.want, cs)
			}
		})
	}
}
