package main

// Netlink message encoding and parsing for the doctor's ethtool query, kept free of
// system calls so that they can be tested on fixtures.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Netlink layout (linux/netlink.h, linux/genetlink.h).
const (
	docNlmsgHdrLen   = 16     // struct nlmsghdr
	docGenlHdrLen    = 4      // struct genlmsghdr
	docNlaHdrLen     = 4      // struct nlattr
	docNlmFRequest   = 0x1    // NLM_F_REQUEST
	docNlaTypeMask   = 0x3fff // ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
	docNlmsgAlignTo  = 4
	docNlmsgErrorTyp = 0x2 // NLMSG_ERROR
)

func docAlign4(n int) int { return (n + docNlmsgAlignTo - 1) &^ (docNlmsgAlignTo - 1) }

// docNlAttr encodes one netlink attribute, padded to 4 bytes.
func docNlAttr(typ uint16, payload []byte) []byte {
	b := make([]byte, docAlign4(docNlaHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[0:], uint16(docNlaHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[docNlaHdrLen:], payload)
	return b
}

// docGenlMsg encodes a generic netlink request: a netlink header of type family with
// NLM_F_REQUEST and sequence number seq, a genetlink header with cmd and version, and
// attrs (already encoded).
func docGenlMsg(family uint16, seq uint32, cmd, version uint8, attrs []byte) []byte {
	b := make([]byte, docNlmsgHdrLen+docGenlHdrLen, docNlmsgHdrLen+docGenlHdrLen+len(attrs))
	b = append(b, attrs...)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], family)
	binary.NativeEndian.PutUint16(b[6:], docNlmFRequest)
	binary.NativeEndian.PutUint32(b[8:], seq)
	// b[12:16], the port id, stays 0: the kernel.
	b[docNlmsgHdrLen] = cmd
	b[docNlmsgHdrLen+1] = version
	return b
}

// docNlMsg is one netlink message of a datagram.
type docNlMsg struct {
	typ  uint16
	seq  uint32
	data []byte // after the netlink header
}

var errDocNlShort = errors.New("truncated netlink message")

// docParseNlMsgs splits a netlink datagram into its messages.
func docParseNlMsgs(b []byte) ([]docNlMsg, error) {
	var msgs []docNlMsg
	for len(b) > 0 {
		if len(b) < docNlmsgHdrLen {
			return nil, errDocNlShort
		}
		n := int(binary.NativeEndian.Uint32(b[0:]))
		if n < docNlmsgHdrLen || n > len(b) {
			return nil, errDocNlShort
		}
		msgs = append(msgs, docNlMsg{
			typ:  binary.NativeEndian.Uint16(b[4:]),
			seq:  binary.NativeEndian.Uint32(b[8:]),
			data: b[docNlmsgHdrLen:n],
		})
		b = b[min(docAlign4(n), len(b)):]
	}
	return msgs, nil
}

// docParseNlAttrs returns the attributes of b by type (flags masked off; the last one of
// a type wins).
func docParseNlAttrs(b []byte) (map[uint16][]byte, error) {
	attrs := make(map[uint16][]byte)
	for len(b) > 0 {
		if len(b) < docNlaHdrLen {
			return nil, errDocNlShort
		}
		n := int(binary.NativeEndian.Uint16(b[0:]))
		if n < docNlaHdrLen || n > len(b) {
			return nil, errDocNlShort
		}
		attrs[binary.NativeEndian.Uint16(b[2:])&docNlaTypeMask] = b[docNlaHdrLen:n]
		b = b[min(docAlign4(n), len(b)):]
	}
	return attrs, nil
}

// ETHTOOL_A_RINGS_TCP_DATA_SPLIT (linux/ethtool_netlink.h) and its values (enum
// ethtool_tcp_data_split).
const (
	docRingsTCPDataSplit = 0xb
	docDataSplitUnknown  = 0
	docDataSplitDisabled = 1
	docDataSplitEnabled  = 2
)

// docDataSplit reads the tcp-data-split setting from the attributes of an ethtool rings
// reply: "enabled", "disabled" or "unknown" with the reason.
func docDataSplit(attrs map[uint16][]byte) (string, string) {
	v, ok := attrs[docRingsTCPDataSplit]
	if !ok || len(v) < 1 {
		return "unknown", "the device does not report tcp-data-split"
	}
	switch v[0] {
	case docDataSplitEnabled:
		return "enabled", ""
	case docDataSplitDisabled:
		return "disabled", ""
	case docDataSplitUnknown:
		return "unknown", "the device reports tcp-data-split as unknown"
	}
	return "unknown", fmt.Sprintf("tcp-data-split value %d", v[0])
}
