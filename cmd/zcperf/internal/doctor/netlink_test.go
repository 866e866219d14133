package doctor

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestNetlink(t *testing.T) {
	// A request as the ethtool query sends it, parsed back.
	hdr := nlAttr(2, append([]byte("eth0"), 0)) // ETHTOOL_A_HEADER_DEV_NAME
	req := genlMsg(0x1a, 7, 0xf, 1, nlAttr(1|0x8000, hdr))
	if len(req)%4 != 0 || int(binary.NativeEndian.Uint32(req)) != len(req) {
		t.Fatalf("request length field %d, length %d", binary.NativeEndian.Uint32(req), len(req))
	}
	msgs, err := parseNlMsgs(req)
	if err != nil || len(msgs) != 1 || msgs[0].typ != 0x1a || msgs[0].seq != 7 {
		t.Fatalf("parsed %+v, %v", msgs, err)
	}
	if msgs[0].data[0] != 0xf || msgs[0].data[1] != 1 {
		t.Errorf("genetlink header %x", msgs[0].data[:4])
	}
	attrs, err := parseNlAttrs(msgs[0].data[genlHdrLen:])
	if err != nil {
		t.Fatal(err)
	}
	nested, ok := attrs[1] // the nested flag is masked off
	if !ok {
		t.Fatalf("no header attribute in %v", attrs)
	}
	inner, err := parseNlAttrs(nested)
	if err != nil || string(inner[2]) != "eth0\x00" {
		t.Errorf("device name %q, %v", inner[2], err)
	}

	// A rings reply (fixture: a header, rx 1024, tcp-data-split) in a datagram that
	// starts with another message, and the split setting read from it.
	reply := func(split []byte) []byte {
		var a []byte
		a = append(a, nlAttr(1|0x8000, nlAttr(2, append([]byte("eth0"), 0)))...)
		a = append(a, nlAttr(6, binary.NativeEndian.AppendUint32(nil, 1024))...)
		if split != nil {
			a = append(a, nlAttr(ringsTCPDataSplit, split)...)
		}
		return append(genlMsg(0x1a, 3, 0x10, 1, nil), genlMsg(0x1a, 8, 0x10, 1, a)...)
	}
	for _, c := range []struct {
		split []byte
		want  string
		why   string
	}{
		{[]byte{2}, "enabled", ""},
		{[]byte{1}, "disabled", ""},
		{[]byte{0}, "unknown", "reports tcp-data-split as unknown"},
		{nil, "unknown", "does not report"},
		{[]byte{9}, "unknown", "value 9"},
	} {
		msgs, err := parseNlMsgs(reply(c.split))
		if err != nil || len(msgs) != 2 || msgs[1].seq != 8 {
			t.Fatalf("parsed %d messages, %v", len(msgs), err)
		}
		attrs, err := parseNlAttrs(msgs[1].data[genlHdrLen:])
		if err != nil {
			t.Fatal(err)
		}
		got, why := dataSplit(attrs)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("split %v: %q (%s), want %q (%s)", c.split, got, why, c.want, c.why)
		}
	}

	// Truncated input is an error, never a panic.
	full := reply([]byte{2})
	for n := 1; n < len(full); n++ {
		msgs, err := parseNlMsgs(full[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if len(m.data) >= genlHdrLen {
				parseNlAttrs(m.data[genlHdrLen:])
			}
		}
	}
	if _, err := parseNlMsgs(full[:10]); err == nil {
		t.Error("a 10-byte message parsed")
	}
	if _, err := parseNlAttrs([]byte{8, 0, 1, 0, 1}); err == nil {
		t.Error("an attribute longer than its buffer parsed")
	}
	if _, err := parseNlAttrs([]byte{2, 0, 1, 0}); err == nil {
		t.Error("an attribute shorter than its header parsed")
	}
}
