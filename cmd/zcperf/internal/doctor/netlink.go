package doctor

// Netlink message encoding and parsing for the doctor's ethtool query, kept free of
// system calls so that they can be tested on fixtures.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Netlink layout (linux/netlink.h, linux/genetlink.h).
const (
	nlmsgHdrLen   = 16     // struct nlmsghdr
	genlHdrLen    = 4      // struct genlmsghdr
	nlaHdrLen     = 4      // struct nlattr
	nlmFRequest   = 0x1    // NLM_F_REQUEST
	nlaTypeMask   = 0x3fff // ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
	nlmsgAlignTo  = 4
	nlmsgErrorTyp = 0x2 // NLMSG_ERROR
)

func align4(n int) int { return (n + nlmsgAlignTo - 1) &^ (nlmsgAlignTo - 1) }

// nlAttr encodes one netlink attribute, padded to 4 bytes.
func nlAttr(typ uint16, payload []byte) []byte {
	b := make([]byte, align4(nlaHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[0:], uint16(nlaHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[nlaHdrLen:], payload)
	return b
}

// genlMsg encodes a generic netlink request: a netlink header of type family with
// NLM_F_REQUEST and sequence number seq, a genetlink header with cmd and version, and
// attrs (already encoded).
func genlMsg(family uint16, seq uint32, cmd, version uint8, attrs []byte) []byte {
	b := make([]byte, nlmsgHdrLen+genlHdrLen, nlmsgHdrLen+genlHdrLen+len(attrs))
	b = append(b, attrs...)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], family)
	binary.NativeEndian.PutUint16(b[6:], nlmFRequest)
	binary.NativeEndian.PutUint32(b[8:], seq)
	// b[12:16], the port id, stays 0: the kernel.
	b[nlmsgHdrLen] = cmd
	b[nlmsgHdrLen+1] = version
	return b
}

// nlMsg is one netlink message of a datagram.
type nlMsg struct {
	typ  uint16
	seq  uint32
	data []byte // after the netlink header
}

var errNlShort = errors.New("truncated netlink message")

// parseNlMsgs splits a netlink datagram into its messages.
func parseNlMsgs(b []byte) ([]nlMsg, error) {
	var msgs []nlMsg
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return nil, errNlShort
		}
		n := int(binary.NativeEndian.Uint32(b[0:]))
		if n < nlmsgHdrLen || n > len(b) {
			return nil, errNlShort
		}
		msgs = append(msgs, nlMsg{
			typ:  binary.NativeEndian.Uint16(b[4:]),
			seq:  binary.NativeEndian.Uint32(b[8:]),
			data: b[nlmsgHdrLen:n],
		})
		b = b[min(align4(n), len(b)):]
	}
	return msgs, nil
}

// parseNlAttrs returns the attributes of b by type (flags masked off; the last one of
// a type wins).
func parseNlAttrs(b []byte) (map[uint16][]byte, error) {
	attrs := make(map[uint16][]byte)
	for len(b) > 0 {
		if len(b) < nlaHdrLen {
			return nil, errNlShort
		}
		n := int(binary.NativeEndian.Uint16(b[0:]))
		if n < nlaHdrLen || n > len(b) {
			return nil, errNlShort
		}
		attrs[binary.NativeEndian.Uint16(b[2:])&nlaTypeMask] = b[nlaHdrLen:n]
		b = b[min(align4(n), len(b)):]
	}
	return attrs, nil
}

// ETHTOOL_A_RINGS_TCP_DATA_SPLIT (linux/ethtool_netlink.h) and its values (enum
// ethtool_tcp_data_split).
const (
	ringsTCPDataSplit = 0xb
	splitUnknown      = 0
	splitDisabled     = 1
	splitEnabled      = 2
)

// dataSplit reads the tcp-data-split setting from the attributes of an ethtool rings
// reply: "enabled", "disabled" or "unknown" with the reason.
func dataSplit(attrs map[uint16][]byte) (string, string) {
	v, ok := attrs[ringsTCPDataSplit]
	if !ok || len(v) < 1 {
		return "unknown", "the device does not report tcp-data-split"
	}
	switch v[0] {
	case splitEnabled:
		return "enabled", ""
	case splitDisabled:
		return "disabled", ""
	case splitUnknown:
		return "unknown", "the device reports tcp-data-split as unknown"
	}
	return "unknown", fmt.Sprintf("tcp-data-split value %d", v[0])
}
