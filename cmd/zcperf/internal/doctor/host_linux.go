package doctor

import (
	"encoding/binary"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// hostOS adds the facts only Linux has to h: kernel, seccomp, container, the map count
// and address-space limits, and the sysctls that bear on mapping.
func hostOS(h *Host) {
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		if v, ok := statusField(string(b), "Seccomp"); ok {
			h.Seccomp = parseInt([]byte(v))
		}
	}
	cg, _ := os.ReadFile("/proc/1/cgroup")
	h.Container = containerHint(func(p string) bool { _, err := os.Stat(p); return err == nil }, os.Getenv, string(cg))
	if b, err := os.ReadFile("/proc/sys/vm/max_map_count"); err == nil {
		h.MaxMapCount = parseInt(b)
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_AS, &rl) == nil {
		if rl.Cur == unix.RLIM_INFINITY {
			h.RlimitAS = -1
		} else {
			h.RlimitAS = int64(min(rl.Cur, 1<<62))
		}
	}
	if b, err := os.ReadFile("/proc/sys/net/core/high_order_alloc_disable"); err == nil {
		h.HighOrderAllocDisable = parseInt(b)
	}
}

// headerSplit asks the kernel's ethtool netlink family whether device name splits TCP
// headers from payload: "enabled", "disabled" or "unknown" with the reason.
func headerSplit(name string) (string, string) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return "unknown", "no generic netlink socket: " + err.Error()
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return "unknown", "cannot bind a netlink socket: " + err.Error()
	}

	// Resolve the ethtool family's id.
	req := genlMsg(unix.GENL_ID_CTRL, 1, unix.CTRL_CMD_GETFAMILY, 1,
		nlAttr(unix.CTRL_ATTR_FAMILY_NAME, append([]byte(unix.ETHTOOL_GENL_NAME), 0)))
	attrs, err := nlRoundTrip(fd, req, 1)
	if errors.Is(err, unix.ENOENT) {
		return "unknown", "the kernel has no ethtool netlink family (Linux 5.6+)"
	}
	if err != nil {
		return "unknown", "generic netlink family lookup: " + err.Error()
	}
	id, ok := attrs[unix.CTRL_ATTR_FAMILY_ID]
	if !ok || len(id) < 2 {
		return "unknown", "generic netlink gave no ethtool family id"
	}
	family := binary.NativeEndian.Uint16(id)

	// ETHTOOL_MSG_RINGS_GET for the device.
	hdr := nlAttr(unix.ETHTOOL_A_HEADER_DEV_NAME, append([]byte(name), 0))
	req = genlMsg(family, 2, unix.ETHTOOL_MSG_RINGS_GET, unix.ETHTOOL_GENL_VERSION,
		nlAttr(unix.ETHTOOL_A_RINGS_HEADER|unix.NLA_F_NESTED, hdr))
	attrs, err = nlRoundTrip(fd, req, 2)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return "unknown", "the driver reports no ring parameters"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return "unknown", "not permitted to query the driver: " + err.Error()
	case err != nil:
		return "unknown", "ethtool rings query: " + err.Error()
	}
	return dataSplit(attrs)
}

// nlRoundTrip sends a generic netlink request and returns the top-level attributes of
// its reply, or the errno the kernel answered with.
func nlRoundTrip(fd int, req []byte, seq uint32) (map[uint16][]byte, error) {
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		msgs, err := parseNlMsgs(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.seq != seq {
				continue // a late answer to something else
			}
			if m.typ == unix.NLMSG_ERROR {
				if len(m.data) < 4 {
					return nil, errors.New("short netlink error message")
				}
				if e := int32(binary.NativeEndian.Uint32(m.data)); e != 0 {
					return nil, unix.Errno(-e)
				}
				return nil, errors.New("netlink acknowledged without a reply")
			}
			if len(m.data) < unix.GENL_HDRLEN {
				return nil, errors.New("short generic netlink reply")
			}
			return parseNlAttrs(m.data[unix.GENL_HDRLEN:])
		}
	}
}

// The netlink constants netlink.go spells out must match the system's.
var (
	_ [unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT - ringsTCPDataSplit]struct{}
	_ [ringsTCPDataSplit - unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT]struct{}
	_ [unix.NLMSG_ERROR - nlmsgErrorTyp]struct{}
	_ [nlmsgErrorTyp - unix.NLMSG_ERROR]struct{}
)
